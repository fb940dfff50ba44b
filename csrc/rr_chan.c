/* The channel's operations (reqrep.h), composed from its parts: a send takes
 * a slot, then pushes through the queue's ops table; a reply claims, fills and
 * publishes the slot; clear, statistics and the waits for a request reach the
 * queue through the same table. The rest hands a call to the part it is
 * about: the variant's own calls (rr_str_*, rr_int_*) to its queue, the
 * others to the slots, the bells, the waiter. No test of the variant here.
 * Contracts: reqrep.h. */
#include "rr_chan.h"
#include "rr_lock.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

/* ---- sends ---- */

#define RR_FULL_POLL_NS 50000000 /* how often a sender waiting for room looks anyway */

typedef struct send_op {
    rr_chan *c;
    const rr_request *r;
} send_op;

/* Pushes only while the slot is still ours: clear() may free it while we
 * wait for room, and a request queued under a freed id could never be answered. */
static int push_if_ours(void *arg)
{
    send_op *op = arg;
    rr_chan *c = op->c;
    return rr_slot_is_acquired(&c->slots, op->r->id) ? c->ops->push(&c->q, op->r) : -ESTALE;
}

static bool room(void *arg)
{
    send_op *op = arg;
    return op->c->ops->room(&op->c->q);
}

/* Takes a slot, then queues r (its id filled in) through the queue's push. */
static int send(rr_chan *c, rr_request *r)
{
    rr_header *h = c->hdr;
    send_op op = {c, r};
    int64_t deadline = r->deadline;
    int rc;
    do {
        rc = rr_slot_acquire(&c->slots, c->bells.mine, deadline, &r->id);
        if (rc == 0) {
            /* Poll: a receiver killed between freeing a cell and waking us
             * leaves room that no waker announces. */
            rc = rr_waitq_wait(&c->wait, &h->not_full, push_if_ours, room, &op, deadline,
                               RR_FULL_POLL_NS);
            if (rc && rc != -ESTALE)
                rr_slot_abandon(&c->slots, r->id); /* the request never became visible */
        }
    } while (rc == -ESTALE); /* cleared while waiting: start again, from a new slot */
    if (rc == -EAGAIN && deadline <= RR_NOWAIT)
        atomic_fetch_add_explicit(&h->send_full, 1, memory_order_relaxed); /* a statistic */
    if (rc == 0) /* a push ends with an RMW: the Int publish CAS, the Str unlock */
        rr_waitq_wake_after_rmw(&h->not_empty, 1);
    return rc;
}

/* A Str send of the n pieces of iov, len bytes in all. */
static int str_send(rr_chan *c, const rr_iovec *iov, uint32_t n, size_t len, uint32_t flags,
                    int64_t deadline, uint64_t *id)
{
    if (!rr_strq_fits(&c->q.strq, len))
        return -EMSGSIZE;
    rr_request r = {.iov = iov, .niov = n, .len = (uint32_t)len, .flags = flags,
                    .deadline = deadline};
    int rc = send(c, &r);
    if (rc == 0)
        *id = r.id;
    return rc;
}

int rr_str_sendv(rr_chan *c, const rr_iovec *iov, uint32_t n, uint32_t flags, int64_t deadline,
                 uint64_t *id)
{
    return str_send(c, iov, n, rr_iov_len(iov, n), flags, deadline, id);
}

int rr_str_send(rr_chan *c, const void *data, size_t len, uint32_t flags, int64_t deadline,
                uint64_t *id)
{
    rr_iovec one = {data, len};
    return str_send(c, &one, 1, len, flags, deadline, id);
}

int rr_int_send(rr_chan *c, int64_t value, int64_t deadline, uint64_t *id)
{
    rr_request r = {.value = value, .deadline = deadline};
    int rc = send(c, &r);
    if (rc == 0)
        *id = r.id;
    return rc;
}

/* ---- receives ---- */

int rr_str_recv_begin(rr_chan *c, int64_t deadline)
{
    return rr_strq_recv_begin(&c->q.strq, deadline);
}

int rr_str_recv_peek(rr_chan *c, uint32_t i, rr_entry *e)
{
    return rr_strq_recv_peek(&c->q.strq, i, e);
}

void rr_str_recv_end(rr_chan *c, uint32_t n) { rr_strq_recv_end(&c->q.strq, n); }

int rr_str_recv_pin(rr_chan *c, uint32_t i, uint32_t *pin)
{
    return rr_strq_recv_pin(&c->q.strq, i, pin);
}

int rr_str_unpin(rr_chan *c, uint32_t pin) { return rr_strq_unpin(&c->q.strq, pin); }

int rr_int_recv(rr_chan *c, int64_t deadline, int64_t *value, uint64_t *id)
{
    return rr_intq_recv(&c->q.intq, deadline, value, id);
}

/* rr_wait_request's attempt: -ECANCELED once after rr_wake_receivers, else
 * the queue's look. */
static int request_queued(void *arg)
{
    rr_chan *c = arg;
    /* relaxed: the waitq's fences order it against the waker's store */
    if (atomic_exchange_explicit(&c->stop_wait, 0, memory_order_relaxed))
        return -ECANCELED;
    return c->ops->queued(&c->q);
}

int rr_request_hint(rr_chan *c) { return c->ops->queued_hint(&c->q); }

static bool request_hint(void *arg) { return rr_request_hint(arg); }

int rr_wait_request(rr_chan *c, int64_t deadline)
{
    return rr_recv_wait(&c->q.ring, request_queued, request_hint, c, deadline);
}

void rr_wake_receivers(rr_chan *c)
{
    atomic_store_explicit(&c->stop_wait, 1, memory_order_relaxed); /* the wake's fence orders it */
    rr_waitq_wake(&c->hdr->not_empty, INT_MAX);
}

/* ---- replies ---- */

/* Why a reply could not claim id: this process holds its claim (-EBUSY,
 * an open reply in place), or it is stale or another's (-ESTALE). */
static int no_claim(rr_chan *c, uint64_t id)
{
    return rr_slot_claimed(&c->slots, id) ? -EBUSY : -ESTALE;
}

/* A Str reply of the n pieces of iov, len bytes in all. */
static inline int str_reply(rr_chan *c, uint64_t id, const rr_iovec *iov, uint32_t n, size_t len,
                            uint32_t flags)
{
    if (len > c->geom.resp_size)
        return -EMSGSIZE;
    rr_slot *s = rr_slot_claim(&c->slots, id);
    if (!s)
        return no_claim(c, id);
    rr_iov_gather(rr_slot_data_for(s, len), iov, n);
    /* relaxed atomic: try_acquire peeks at it as a hint without owning the slot */
    RR_WRITE_ONCE(s->len, (uint32_t)len);
    s->flags = flags;
    return rr_slot_publish(&c->slots, s, id);
}

int rr_str_reply_begin(rr_chan *c, uint64_t id, void **data, size_t *cap, uint64_t *token)
{
    rr_slot *s = rr_slot_claim_keeping(&c->slots, id, token);
    if (!s)
        return no_claim(c, id);
    /* the large place: commit moves a reply that fits the slot's first line */
    *data = rr_slot_data_for(s, UINT64_MAX);
    *cap = c->geom.resp_size;
    return 0;
}

int rr_str_reply_commit(rr_chan *c, uint64_t id, size_t len, uint32_t flags)
{
    if (len > c->geom.resp_size)
        return -EMSGSIZE;
    rr_slot *s = rr_slot_claimed(&c->slots, id);
    if (!s)
        return -ESTALE;
    uint8_t *at = rr_slot_data_for(s, len);
    if (at != rr_slot_data_for(s, UINT64_MAX))
        memcpy(at, rr_slot_data_for(s, UINT64_MAX), len);
    /* relaxed atomic: as in str_reply */
    RR_WRITE_ONCE(s->len, (uint32_t)len);
    s->flags = flags;
    return rr_slot_publish(&c->slots, s, id);
}

int rr_str_reply_abort(rr_chan *c, uint64_t id, uint64_t token)
{
    rr_slot *s = rr_slot_claimed(&c->slots, id);
    return s ? rr_slot_unclaim(&c->slots, s, id, token) : -ESTALE;
}

int rr_str_replyv(rr_chan *c, uint64_t id, const rr_iovec *iov, uint32_t n, uint32_t flags)
{
    return str_reply(c, id, iov, n, rr_iov_len(iov, n), flags);
}

int rr_str_reply(rr_chan *c, uint64_t id, const void *data, size_t len, uint32_t flags)
{
    rr_iovec one = {data, len};
    return str_reply(c, id, &one, 1, len, flags);
}

int rr_int_reply(rr_chan *c, uint64_t id, int64_t value)
{
    rr_slot *s = rr_slot_claim(&c->slots, id);
    if (!s)
        return no_claim(c, id);
    /* relaxed atomics: rr_int_peek may read them after losing to clear() */
    RR_WRITE_ONCE(s->value, value);
    RR_WRITE_ONCE(s->flags, 0u); /* a slot's last reply may have been an error */
    return rr_slot_publish(&c->slots, s, id);
}

int rr_int_reply_error(rr_chan *c, uint64_t id, const void *name, size_t len)
{
    if (len > RR_SLOT_ERROR_MAX)
        return -EMSGSIZE;
    rr_slot *s = rr_slot_claim(&c->slots, id);
    if (!s)
        return no_claim(c, id);
    /* The name's first 8 bytes share value's place, which rr_int_peek may
     * read after losing to clear(): stored as rr_int_reply stores value. The
     * rest is only read pinned (rr_slot_view). */
    int64_t first = 0;
    memcpy(&first, name, len < sizeof first ? len : sizeof first);
    RR_WRITE_ONCE(s->value, first);
    if (len > sizeof first)
        memcpy(s->small + sizeof first, (const uint8_t *)name + sizeof first, len - sizeof first);
    RR_WRITE_ONCE(s->len, (uint32_t)len);
    RR_WRITE_ONCE(s->flags, RR_FLAG_ERROR);
    return rr_slot_publish(&c->slots, s, id);
}

/* ---- responses ---- */

int rr_resp_wait(rr_chan *c, uint64_t id, int64_t deadline)
{
    return rr_slot_wait(&c->slots, id, deadline);
}

int rr_resp_hint(rr_chan *c, uint64_t id) { return rr_slot_hint(&c->slots, id); }
int rr_resp_view(rr_chan *c, uint64_t id, rr_resp *r) { return rr_slot_view(&c->slots, id, r); }
int rr_resp_pin(rr_chan *c, uint64_t id, rr_resp *r) { return rr_slot_pin(&c->slots, id, r); }
int rr_resp_unpin(rr_chan *c, uint64_t id, int free)
{
    return rr_slot_unpin(&c->slots, id, free);
}
int rr_resp_release(rr_chan *c, uint64_t id) { return rr_slot_release(&c->slots, id); }
int rr_resp_unview(rr_chan *c, uint64_t id) { return rr_slot_unview(&c->slots, id); }
int rr_resp_discard(rr_chan *c, uint64_t id) { return rr_slot_discard(&c->slots, id); }

int rr_int_peek(rr_chan *c, uint64_t id, int64_t *value)
{
    return rr_slot_int_peek(&c->slots, id, value);
}

int rr_cancel(rr_chan *c, uint64_t id) { return rr_slot_cancel(&c->slots, id); }
int rr_resp_check(rr_chan *c, uint64_t id) { return rr_slot_check(&c->slots, id); }
int rr_resp_abandon_dead(rr_chan *c, uint64_t id) { return rr_slot_abandon_dead(&c->slots, id); }
int rr_resp_worker(rr_chan *c, uint64_t id) { return rr_slot_worker(&c->slots, id); }
int rr_id_live(rr_chan *c, uint64_t id) { return rr_slot_id_live(&c->slots, id); }
void rr_reclaim(rr_chan *c) { rr_slots_sweep(&c->slots, 0); }

/* ---- bells ---- */

int rr_bell_claim(rr_chan *c) { return rr_bells_claim(&c->bells); }
void rr_bell_release(rr_chan *c) { rr_bells_release(&c->bells); }
uint32_t rr_bell_seq(rr_chan *c) { return rr_bells_seq(&c->bells); }

int rr_bell_wait(rr_chan *c, uint32_t seen, int64_t deadline)
{
    return rr_bells_wait(&c->bells, seen, deadline);
}

void rr_bell_poke(rr_chan *c) { rr_bells_poke(&c->bells); }

/* ---- the handle's waits ---- */

void rr_interrupt(rr_chan *c) { rr_waiter_interrupt(&c->wait); }
void rr_set_spin(rr_chan *c, uint32_t spin_us) { c->wait.spin_us = spin_us; }
uint32_t rr_get_spin(const rr_chan *c) { return c->wait.spin_us; }
int rr_spin_advised(const rr_chan *c) { return rr_waiter_spins(&c->wait); }

/* ---- management ---- */

int rr_clear(rr_chan *c)
{
    rr_header *h = c->hdr;
    int rc = c->ops->clear(&c->q);
    if (rc)
        return rc; /* a signal or an interrupt: nothing changed, the caller retries */
    rr_slots_clear(&c->slots);
    rr_waitq_wake(&h->not_full, INT_MAX);
    return 0;
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
    rr_slots_count(&c->slots, st);
    c->ops->arena(&c->q, &st->arena_cap, &st->arena_used);
}

int rr_lock_settle(rr_chan *c, int64_t deadline)
{
    return rr_lock_settle_on(c->hdr, &c->wait, deadline);
}

int rr_test_hold_lock(rr_chan *c)
{
    return c->ops->hold_lock ? c->ops->hold_lock(&c->q) : -EINVAL;
}
