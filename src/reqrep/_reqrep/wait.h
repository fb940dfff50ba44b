/* Every blocking call of the binding waits here: without the GIL, in slices.
 *
 * A signal that lands outside the kernel's wait (between two polls of a
 * polling wait) interrupts nothing; so long waits go in slices and the
 * signal handlers run between them: Ctrl-C is never late by more than a
 * slice. If no handler raises, the wait goes on to the same deadline (the
 * core's calls are restartable and take absolute deadlines: PEP 475). */
#ifndef REQREP_WAIT_H
#define REQREP_WAIT_H

#include "errors.h" /* first: it includes Python.h */
#include <errno.h>
#include <stdint.h>

#include "reqrep.h"
#include "rr_barrier.h" /* rr_cpu_relax */

#define WAIT_SLICE_NS 100000000

/* A core call on `ch` that waits at most to `deadline` (the core's
 * convention: RR_NOWAIT tries once, RR_TRY also refuses to wait for the Str
 * queue lock); `arg` carries the rest of its arguments and results. */
typedef int (*wait_call)(rr_chan *ch, int64_t deadline, void *arg);

/* Runs call(ch, d, arg), without the GIL, for slices d of at most
 * WAIT_SLICE_NS up to `deadline`, running signal handlers between them.
 * Returns the call's result, with -EAGAIN only once `deadline` is reached,
 * or:
 *   -EINTR     a signal handler raised (its exception is set);
 *   RC_CLOSED  *closing became set: the object was closed (its close()
 *              interrupts the handle, so the call returns at once).
 * `closing` may be NULL (no object yet). With `deadline` RR_NOWAIT this is
 * one call, restarted if a signal interrupts it: the way to run a call
 * that does not wait (or has no deadline) without the GIL. */
int wait_sliced(rr_chan *ch, const int *closing, int64_t deadline, wait_call call, void *arg);

/* A lock-free look (the core's rr_*_hint) that says call(ch, RR_TRY, arg)
 * is worth making. */
typedef int (*wait_hint)(rr_chan *ch, void *arg);

/* An object's record of its spins with the GIL held (wait_spun), which
 * only the GIL's holder touches: after one that found nothing, `skip` waits
 * go straight to wait_sliced, twice as many each time in a row (a peer that
 * is slow, or shares our CPU, is not waited for with the GIL held). */
typedef struct gil_spin {
    uint16_t skip, backoff;
} gil_spin;
#define GIL_SPIN_MAX_SKIP 256

/* wait_sliced, after a first moment of spinning on hint(ch, arg) with the
 * GIL held: what comes within GIL_SPIN_NS (a peer's answer to a ping-pong
 * request) is taken without releasing and re-taking the GIL, two lock round
 * trips on the path of every round trip. Only where the core would spin
 * (rr_spin_advised), within its budget and `deadline`, as `gs` advises; the
 * call is made with RR_TRY (one look, not counted as a receive that found
 * nothing). `gs` NULL: no spin, wait_sliced alone. For a call's first wait
 * only: a caller that waits again after a wait that said "there" found
 * nothing passes NULL, or a state that the hint and the call read
 * differently (a reply being copied out by another reader) would hold the
 * GIL for good. */
#define GIL_SPIN_NS 3000
int wait_spun(rr_chan *ch, const int *closing, gil_spin *gs, int64_t deadline, wait_hint hint,
              wait_call call, void *arg);

#define LOCK_GRACE_NS 20000000

/* wait_try_lock once the lock was found busy (its first try is inline:
 * most find the lock free). */
int wait_lock_busy(rr_chan *ch, const int *closing, int64_t deadline, wait_call call, void *arg,
                   int gil_free);

/* For a Str queue call, which must not wait for the queue lock while it
 * holds the GIL (the lock's holder may be waiting for the GIL): makes
 * call(ch, RR_TRY, arg) with the GIL (without it if `gil_free`: a long
 * copy), and while it finds the lock busy (-EBUSY), waits with wait_sliced
 * until the lock is free (taken over from a dead holder if need be) and
 * tries again. Returns the call's result, or wait_sliced's -EINTR and
 * RC_CLOSED, or -ETIMEDOUT if the lock stayed busy to `deadline` (for
 * RR_NOWAIT: a grace of LOCK_GRACE_NS each time, as holders keep it for
 * microseconds; only a stopped, not dead, holder runs it out). */
static inline int wait_try_lock(rr_chan *ch, const int *closing, int64_t deadline,
                                wait_call call, void *arg, int gil_free)
{
    int rc;
    if (gil_free) {
        Py_BEGIN_ALLOW_THREADS rc = call(ch, RR_TRY, arg);
        Py_END_ALLOW_THREADS
    } else {
        rc = call(ch, RR_TRY, arg);
    }
    return rc == -EBUSY ? wait_lock_busy(ch, closing, deadline, call, arg, gil_free) : rc;
}

#endif
