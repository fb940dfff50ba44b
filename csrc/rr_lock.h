/* The Str queue lock: the header's lock word holds its holder's identity
 * (and RR_LOCK_WAITERS when somebody sleeps on it), so that a holder killed
 * while it holds the lock is found dead and its lock taken over. It guards
 * the Str queue's head, tail, cells and arena (rr_strq.c).
 *
 * Errors as in reqrep.h. uses: rr_format.h, rr_wait.h */
#ifndef RR_LOCK_H
#define RR_LOCK_H

#include "rr_format.h"
#include "rr_wait.h"

/* Takes the lock: 0; -EBUSY at once for RR_TRY if it is held; -EAGAIN at
 * `deadline`; -EINTR; -ECANCELED once rr_waiter_interrupt(w) (instead of
 * sleeping). A holder that died is found within RR_LOCK_POLL_NS of sleeping
 * on it, and its lock taken over (counted in the header's recoveries). Any
 * thread of any process; acquire: the last holder's writes are visible. */
int rr_lock(rr_header *h, rr_waiter *w, int64_t deadline);
/* Gives the lock back (release) and wakes one sleeper. Only the holder. */
void rr_unlock(rr_header *h);
/* Waits until the lock is free (taking it over from a dead holder if need
 * be) without keeping it: rr_lock_settle's contract (reqrep.h). */
int rr_lock_settle_on(rr_header *h, rr_waiter *w, int64_t deadline);

#endif
