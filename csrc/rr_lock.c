/* The Str queue lock (contracts in rr_lock.h): a futex lock whose word names
 * its holder, so that a holder killed inside a push or pop is found dead and
 * its lock taken over. Pushes and pops commit with one store of tail or head,
 * so a half-done operation is invisible and nothing needs repair. */
#include "rr_lock.h"
#include "rr_proc.h"

#include <errno.h>

#define RR_LOCK_POLL_NS 10000000 /* liveness check period while blocked */
#define RR_LOCK_SPINS 200        /* looks at a held lock before sleeping (or -EBUSY) */

int rr_lock(rr_header *h, rr_waiter *w, int64_t deadline)
{
    uint64_t me = rr_self_ident(), v = 0;
    /* acquire ↔ the release exchange in rr_unlock: we see the last holder's writes */
    if (atomic_compare_exchange_strong_explicit(&h->lock, &v, me, memory_order_acquire,
                                                memory_order_relaxed))
        return 0;
    for (int i = 0; i < RR_LOCK_SPINS; i++) {
        rr_cpu_relax();
        v = 0;
        /* acquire: as above */
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) == 0
            && atomic_compare_exchange_weak_explicit(&h->lock, &v, me, memory_order_acquire,
                                                     memory_order_relaxed))
            return 0;
    }
    if (deadline == RR_TRY)
        return -EBUSY;
    for (;;) {
        v = atomic_load_explicit(&h->lock, memory_order_relaxed);
        if (v == 0) {
            /* Take it marked contended: we cannot know whether others sleep.
             * acquire: as above */
            if (atomic_compare_exchange_weak_explicit(&h->lock, &v, me | RR_LOCK_WAITERS,
                                                      memory_order_acquire, memory_order_relaxed))
                return 0;
            continue;
        }
        if (!(v & RR_LOCK_WAITERS)) {
            /* relaxed: only tells the holder to wake us; the futex re-checks */
            if (!atomic_compare_exchange_weak_explicit(&h->lock, &v, v | RR_LOCK_WAITERS,
                                                       memory_order_relaxed,
                                                       memory_order_relaxed))
                continue;
            v |= RR_LOCK_WAITERS;
        }
        int64_t now = rr_now_ns();
        if (now >= deadline)
            return -EAGAIN;
        int64_t until = now + RR_LOCK_POLL_NS < deadline ? now + RR_LOCK_POLL_NS : deadline;
        int entry = rr_sleep_enter(w, rr_lock_futex(h));
        /* seq_cst ↔ the fence in rr_waiter_interrupt: it sees our entry or we its flag */
        rr_fence_full();
        int rc = rr_interrupted(w) ? -ECANCELED
                                   : rr_futex_wait(rr_lock_futex(h), (uint32_t)v, until);
        rr_sleep_leave(w, entry);
        if (rc == -EINTR || rc == -ECANCELED)
            return rc;
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) != v || rr_now_ns() < until)
            continue;
        /* The same holder for a whole poll period: is it still alive? */
        if (rr_ident_alive(rr_lock_holder(v)))
            continue;
        /* acquire: as above; only one of the racing waiters wins the steal */
        if (atomic_compare_exchange_strong_explicit(&h->lock, &v, me | RR_LOCK_WAITERS,
                                                    memory_order_acquire, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
            return 0;
        }
    }
}

int rr_lock_settle_on(rr_header *h, rr_waiter *w, int64_t deadline)
{
    int rc = rr_lock(h, w, deadline <= RR_NOWAIT ? RR_FOREVER : deadline);
    if (rc == 0)
        rr_unlock(h);
    return rc;
}

void rr_unlock(rr_header *h)
{
    /* release ↔ the acquire CAS of the next holder in rr_lock */
    uint64_t v = atomic_exchange_explicit(&h->lock, 0, memory_order_release);
    if (v & RR_LOCK_WAITERS)
        rr_futex_wake(rr_lock_futex(h), 1);
}
