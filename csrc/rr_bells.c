/* Bells: wake-ups for clients that wait in an event loop rather than in a
 * call. A bell is an event count: ringing bumps seq, so a sleeper that read
 * seq before looking at its requests cannot miss a reply. */
#include "rr_internal.h"

#include <limits.h>

static rr_bell *bell_of(rr_chan *c)
{
    return c->bell ? &c->bells[c->bell - 1] : NULL;
}

int rr_bell_claim(rr_chan *c)
{
    if (c->bell)
        return 0;
    uint64_t me = rr_self_ident();
    for (uint32_t i = 0; i < RR_BELLS; i++) {
        rr_bell *b = &c->bells[i];
        /* relaxed: the owner word only elects a holder; no data hangs off it */
        uint64_t owner = atomic_load_explicit(&b->owner, memory_order_relaxed);
        if (owner != 0 && owner != me && rr_ident_alive(owner))
            continue;
        if (owner == me)
            continue; /* another handle of this process has it */
        if (atomic_compare_exchange_strong_explicit(&b->owner, &owner, me, memory_order_relaxed,
                                                    memory_order_relaxed)) {
            c->bell = i + 1;
            return 0;
        }
    }
    return -EBUSY;
}

void rr_bell_release(rr_chan *c)
{
    rr_bell *b = bell_of(c);
    if (!b)
        return;
    uint64_t me = rr_self_ident();
    atomic_compare_exchange_strong_explicit(&b->owner, &me, 0, memory_order_relaxed,
                                            memory_order_relaxed);
    c->bell = 0;
}

void rr_bell_ring(rr_chan *c, uint32_t idx)
{
    rr_bell *b = &c->bells[idx];
    /* seq_cst RMW ↔ the sleeper's seq_cst waiters increment (Dekker): either
     * we see the sleeper, or it sees the new count and does not sleep */
    atomic_fetch_add_explicit(&b->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&b->waiters, memory_order_seq_cst) != 0)
        rr_futex_wake(&b->seq, INT_MAX);
}

void rr_bell_poke(rr_chan *c)
{
    if (c->bell)
        rr_bell_ring(c, c->bell - 1);
}

uint32_t rr_bell_seq(rr_chan *c)
{
    rr_bell *b = bell_of(c);
    /* acquire ↔ the ring's RMW, itself after the reply's release publish */
    return b ? atomic_load_explicit(&b->seq, memory_order_acquire) : 0;
}

typedef struct bell_wait {
    rr_bell *b;
    uint32_t seen;
} bell_wait;

static int bell_moved(rr_chan *c, void *arg)
{
    bell_wait *w = arg;
    return atomic_load_explicit(&w->b->seq, memory_order_seq_cst) != w->seen;
}

static bool bell_peek(rr_chan *c, void *arg) { return bell_moved(c, arg); }

int rr_bell_wait(rr_chan *c, uint32_t seen, int64_t deadline)
{
    rr_bell *b = bell_of(c);
    if (!b)
        return -EINVAL;
    bell_wait w = {b, seen};
    return rr_chan_wait(c, &b->seq, &b->waiters, bell_moved, bell_peek, &w, deadline, 0);
}
