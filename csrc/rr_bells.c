/* Bells (contracts in rr_bells.h). */
#include "rr_bells.h"
#include "rr_proc.h"

#include <errno.h>
#include <limits.h>

static rr_bell *bell_of(rr_bells *bs)
{
    return bs->mine ? &bs->base[bs->mine - 1] : NULL;
}

int rr_bells_claim(rr_bells *bs)
{
    if (bs->mine)
        return 0;
    uint64_t me = rr_self_ident();
    for (uint32_t i = 0; i < RR_BELLS; i++) {
        rr_bell *b = &bs->base[i];
        /* relaxed: the owner word only elects a holder; no data hangs off it */
        uint64_t owner = atomic_load_explicit(&b->owner, memory_order_relaxed);
        if (owner != 0 && owner != me && rr_ident_alive(owner))
            continue;
        if (owner == me)
            continue; /* another handle of this process has it */
        if (atomic_compare_exchange_strong_explicit(&b->owner, &owner, me, memory_order_relaxed,
                                                    memory_order_relaxed)) {
            bs->mine = i + 1;
            return 0;
        }
    }
    return -EBUSY;
}

void rr_bells_release(rr_bells *bs)
{
    rr_bell *b = bell_of(bs);
    if (!b)
        return;
    uint64_t me = rr_self_ident();
    atomic_compare_exchange_strong_explicit(&b->owner, &me, 0, memory_order_relaxed,
                                            memory_order_relaxed);
    bs->mine = 0;
}

void rr_bell_ring(rr_bell *base, uint32_t idx)
{
    rr_bell *b = &base[idx];
    /* seq_cst RMW ↔ the sleeper's seq_cst waiters increment (Dekker): either
     * we see the sleeper, or it sees the new count and does not sleep */
    atomic_fetch_add_explicit(&b->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&b->waiters, memory_order_seq_cst) != 0)
        rr_futex_wake(&b->seq, INT_MAX);
}

void rr_bells_poke(rr_bells *bs)
{
    if (bs->mine)
        rr_bell_ring(bs->base, bs->mine - 1);
}

uint32_t rr_bells_seq(rr_bells *bs)
{
    rr_bell *b = bell_of(bs);
    /* acquire ↔ the ring's RMW, itself after the reply's release publish */
    return b ? atomic_load_explicit(&b->seq, memory_order_acquire) : 0;
}

typedef struct bell_wait {
    rr_bell *b;
    uint32_t seen;
} bell_wait;

static int bell_moved(void *arg)
{
    bell_wait *w = arg;
    /* seq_cst ↔ the seq_cst RMW of seq in rr_bell_ring, which follows the
     * reply's release publish */
    return atomic_load_explicit(&w->b->seq, memory_order_seq_cst) != w->seen;
}

static bool bell_peek(void *arg) { return bell_moved(arg); }

int rr_bells_wait(rr_bells *bs, uint32_t seen, int64_t deadline)
{
    rr_bell *b = bell_of(bs);
    if (!b)
        return -EINVAL;
    bell_wait w = {b, seen};
    return rr_wait_until(bs->wait, &b->seq, &b->waiters, bell_moved, bell_peek, &w, deadline, 0);
}
