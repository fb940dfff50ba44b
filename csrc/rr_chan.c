/* What both variants share: the shape of a send, replies, clear and statistics. */
#include "rr_internal.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>

typedef struct chan_closure {
    rr_chan *c;
    rr_chan_attempt_fn attempt;
    rr_chan_peek_fn peek;
    void *arg;
} chan_closure;

static int closure_attempt(void *p)
{
    chan_closure *k = p;
    return k->attempt(k->c, k->arg);
}

static bool closure_peek(void *p)
{
    chan_closure *k = p;
    return k->peek(k->c, k->arg);
}

int rr_chan_wait(rr_chan *c, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                 rr_chan_attempt_fn attempt, rr_chan_peek_fn peek, void *arg, int64_t deadline,
                 int64_t poll_ns)
{
    chan_closure k = {c, attempt, peek, arg};
    return rr_wait_until(&c->wait, word, waiters, closure_attempt, closure_peek, &k, deadline,
                         poll_ns);
}

void rr_interrupt(rr_chan *c) { rr_waiter_interrupt(&c->wait); }

#define RR_FULL_POLL_NS 50000000 /* how often a sender waiting for room looks anyway */

typedef struct send_op {
    rr_chan_attempt_fn push;
    void *arg;
    const uint64_t *id;
} send_op;

/* Pushes only while the slot is still ours: clear() may free it while we
 * wait for room, and a request queued under a freed id could never be answered. */
static int push_if_ours(rr_chan *c, void *p)
{
    send_op *op = p;
    return rr_slot_is_acquired(c, *op->id) ? op->push(c, op->arg) : -ESTALE;
}

int rr_send_common(rr_chan *c, rr_chan_attempt_fn push, rr_chan_peek_fn room, void *arg,
                   uint64_t *id, int64_t deadline)
{
    rr_header *h = c->hdr;
    send_op op = {push, arg, id};
    int rc;
    do {
        rc = rr_slot_acquire(c, deadline, id);
        if (rc == 0) {
            /* Poll: a receiver killed between freeing a cell and waking us
             * leaves room that no waker announces. */
            rc = rr_chan_wait(c, &h->not_full.seq, &h->not_full.waiters, push_if_ours, room,
                               &op, deadline, RR_FULL_POLL_NS);
            if (rc && rc != -ESTALE)
                rr_slot_abandon(c, *id); /* the request never became visible */
        }
    } while (rc == -ESTALE); /* cleared while waiting: start again, from a new slot */
    if (rc == -EAGAIN && deadline <= RR_NOWAIT)
        atomic_fetch_add_explicit(&h->send_full, 1, memory_order_relaxed); /* a statistic */
    if (rc == 0) /* a push ends with an RMW: the Int publish CAS, the Str unlock */
        rr_waitq_wake_after_rmw(&h->not_empty, 1);
    return rc;
}

int rr_str_reply(rr_chan *c, uint64_t id, const void *data, size_t len, uint32_t flags)
{
    if (len > c->geom.resp_size)
        return -EMSGSIZE;
    rr_slot *s = rr_slot_claim(c, id);
    if (!s)
        return -ESTALE;
    memcpy(rr_slot_data_for(s, len), data, len);
    /* relaxed atomic: try_acquire peeks at it as a hint without owning the slot */
    RR_WRITE_ONCE(s->len, (uint32_t)len);
    s->flags = flags;
    return rr_slot_publish(c, s, id);
}

int rr_int_reply(rr_chan *c, uint64_t id, int64_t value)
{
    rr_slot *s = rr_slot_claim(c, id);
    if (!s)
        return -ESTALE;
    /* relaxed atomic: rr_int_peek may read it after losing to clear() */
    RR_WRITE_ONCE(s->value, value);
    return rr_slot_publish(c, s, id);
}

int rr_clear(rr_chan *c)
{
    rr_header *h = c->hdr;
    if (c->geom.variant == RR_VARIANT_STR) {
        int rc = rr_strq_clear(c);
        if (rc)
            return rc;
    } else {
        rr_intq_clear(c);
    }
    rr_slots_clear(c);
    atomic_fetch_add_explicit(&h->clears, 1, memory_order_relaxed); /* a statistic */
    rr_waitq_wake(&h->not_full, INT_MAX);
    return 0;
}

int rr_wait_request(rr_chan *c, int64_t deadline)
{
    return c->geom.variant == RR_VARIANT_STR ? rr_strq_wait_request(c, deadline)
                                             : rr_intq_wait_request(c, deadline);
}

void rr_wake_receivers(rr_chan *c)
{
    atomic_store_explicit(&c->stop_wait, 1, memory_order_relaxed); /* the wake's fence orders it */
    rr_waitq_wake(&c->hdr->not_empty, INT_MAX);
}

void rr_reclaim(rr_chan *c)
{
    rr_slots_sweep(c, 0);
}

uint64_t rr_size(rr_chan *c)
{
    rr_header *h = c->hdr;
    /* acquire ↔ the Str queue's release stores of head/tail (the Int queue's
     * are relaxed hints; its count is a snapshot). head first, and the clamp
     * below, so the difference never goes negative. */
    uint64_t head = atomic_load_explicit(&h->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    uint64_t n = tail - head;
    return n <= c->geom.req_cap ? n : (int64_t)n < 0 ? 0 : c->geom.req_cap;
}

void rr_get_stats(rr_chan *c, rr_stats *st)
{
    rr_header *h = c->hdr;
    memset(st, 0, sizeof *st);
    /* relaxed: statistics, each counter on its own */
    st->requests = atomic_load_explicit(&h->tail, memory_order_relaxed);
    st->send_full = atomic_load_explicit(&h->send_full, memory_order_relaxed);
    st->recv_empty = atomic_load_explicit(&h->recv_empty, memory_order_relaxed);
    st->recoveries = atomic_load_explicit(&h->recoveries, memory_order_relaxed);
    st->size = rr_size(c);
    st->capacity = c->geom.req_cap;
    st->resp_slots = c->geom.resp_slots;
    st->resp_size = c->geom.resp_size;
    rr_slots_count(c, st);
    if (c->geom.variant == RR_VARIANT_STR) {
        st->arena_cap = c->geom.arena;
        st->arena_used = rr_strq_arena_used(c);
    }
}

int rr_test_hold_lock(rr_chan *c)
{
    return c->geom.variant == RR_VARIANT_STR ? rr_lock(c->hdr, &c->wait, RR_FOREVER) : -EINVAL;
}

int rr_lock_settle(rr_chan *c, int64_t deadline)
{
    return rr_lock_settle_on(c->hdr, &c->wait, deadline);
}
