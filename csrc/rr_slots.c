/* Response slots. Each slot's ctl word holds its generation in the high half
 * and, in the low half (the futex word), the state plus the generation's low
 * bits, so every transition is one CAS and changes the futex word.
 *
 *   FREE --acquire(gen+1)--> ACQUIRED --claim--> WRITING --publish--> READY
 *     ^         |  cancel(gen+1), clear(gen+1)                           |
 *     +---------+------------------ get (release), clear(gen+1) ---------+
 *
 * A slot in WRITING belongs to the replier: cancel and clear lose against it.
 * Ownership is two words: `owner` is claimed (0 -> me) before ctl leaves FREE
 * and cleared after ctl is back to FREE, so a FREE slot with a set owner is
 * being acquired or released right now. */
#include "rr_internal.h"

#include <limits.h>

enum { SLOT_FREE = 0, SLOT_ACQUIRED = 1, SLOT_WRITING = 2, SLOT_READY = 3 };

static inline uint64_t mk_ctl(uint32_t gen, uint32_t state)
{
    return (uint64_t)gen << 32 | ((gen & 0x0fffffffu) << 4 | state);
}
static inline uint32_t ctl_gen(uint64_t v) { return (uint32_t)(v >> 32); }
static inline uint32_t ctl_state(uint64_t v) { return (uint32_t)v & 0xfu; }
static inline _Atomic uint32_t *ctl_futex(rr_slot *s) { return (_Atomic uint32_t *)&s->ctl; }

static rr_slot *slot_of(rr_chan *c, uint64_t id)
{
    uint32_t idx = rr_id_index(id);
    return idx < c->geom.resp_slots ? rr_slot_at(c, idx) : NULL;
}

static void slot_freed(rr_chan *c, rr_slot *s)
{
    /* release ↔ the acquire CAS of owner in try_acquire */
    atomic_store_explicit(&s->owner, 0, memory_order_release);
    rr_waitq_wake(&c->hdr->slot_free, 1);
}

static int try_acquire(rr_chan *c, void *arg)
{
    uint64_t me = rr_self_ident();
    uint32_t n = c->geom.resp_slots;
    uint32_t hint = atomic_load_explicit(&c->slot_hint, memory_order_relaxed);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t idx = (hint + k) % n;
        rr_slot *s = rr_slot_at(c, idx);
        /* relaxed: a hint only, the CASes below decide */
        if (ctl_state(atomic_load_explicit(&s->ctl, memory_order_relaxed)) != SLOT_FREE)
            continue;
        uint64_t zero = 0;
        /* acquire ↔ the release store of owner in slot_freed */
        if (!atomic_compare_exchange_strong_explicit(&s->owner, &zero, me, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
        /* acq_rel: acquire ↔ the release that freed the slot (the last reader is
         * done with its data); release ↔ the replier's claim CAS */
        if (ctl_state(v) == SLOT_FREE
            && atomic_compare_exchange_strong_explicit(&s->ctl, &v,
                                                       mk_ctl(ctl_gen(v) + 1, SLOT_ACQUIRED),
                                                       memory_order_acq_rel,
                                                       memory_order_relaxed)) {
            atomic_store_explicit(&s->worker, 0, memory_order_relaxed);
            atomic_store_explicit(&c->slot_hint, idx + 1, memory_order_relaxed);
            *(uint64_t *)arg = (uint64_t)(ctl_gen(v) + 1) << 32 | idx;
            return 1;
        }
        atomic_store_explicit(&s->owner, 0, memory_order_release);
    }
    return 0;
}

static bool any_slot(rr_chan *c, void *arg) { return true; }

int rr_slot_acquire(rr_chan *c, int64_t deadline, uint64_t *id)
{
    return rr_waitq_wait(c, &c->hdr->slot_free, try_acquire, any_slot, id, deadline);
}

/* Gives back a slot whose request never reached the queue. */
void rr_slot_abandon(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    uint64_t v = mk_ctl(rr_id_gen(id), SLOT_ACQUIRED);
    /* release ↔ the acquire CAS of the next acquirer */
    if (atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(rr_id_gen(id), SLOT_FREE),
                                                memory_order_release, memory_order_relaxed))
        slot_freed(c, s);
}

rr_slot *rr_slot_claim(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return NULL;
    uint64_t v = mk_ctl(rr_id_gen(id), SLOT_ACQUIRED);
    /* acquire ↔ the client's acq_rel acquire CAS: we own the slot's data now */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(rr_id_gen(id), SLOT_WRITING),
                                                 memory_order_acquire, memory_order_relaxed))
        return NULL;
    return s;
}

void rr_slot_publish(rr_chan *c, rr_slot *s, uint64_t id)
{
    /* release ↔ the client's acquire load of ctl in rr_resp_view: the response
     * bytes are visible before READY is */
    atomic_store_explicit(&s->ctl, mk_ctl(rr_id_gen(id), SLOT_READY), memory_order_release);
    /* relaxed: a statistic */
    atomic_fetch_add_explicit(&s->replies, 1, memory_order_relaxed);
    rr_word_wake(ctl_futex(s), &s->waiters, INT_MAX);
}

typedef struct resp_wait {
    uint64_t id;
} resp_wait;

static int resp_ready(rr_chan *c, void *arg)
{
    uint64_t id = ((resp_wait *)arg)->id;
    rr_slot *s = slot_of(c, id);
    /* acquire ↔ the release store in rr_slot_publish */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (ctl_gen(v) != rr_id_gen(id) || ctl_state(v) == SLOT_FREE)
        return -ESTALE;
    return ctl_state(v) == SLOT_READY;
}

static bool resp_peek(rr_chan *c, void *arg) { return true; }

int rr_resp_wait(rr_chan *c, uint64_t id, int64_t deadline)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    resp_wait w = {id};
    return rr_wait_until(c, ctl_futex(s), &s->waiters, resp_ready, resp_peek, &w, deadline, 0);
}

int rr_resp_view(rr_chan *c, uint64_t id, rr_resp *r)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    /* acquire ↔ the release store in rr_slot_publish */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (ctl_gen(v) != rr_id_gen(id) || ctl_state(v) == SLOT_FREE)
        return -ESTALE;
    if (ctl_state(v) != SLOT_READY)
        return -EAGAIN;
    /* Bound what a hostile writer could have put in len. */
    uint32_t len = s->len;
    r->data = rr_slot_data(s);
    r->len = len <= c->geom.resp_size ? len : c->geom.resp_size;
    r->flags = s->flags;
    r->value = s->value;
    return 0;
}

int rr_resp_release(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint64_t v = mk_ctl(rr_id_gen(id), SLOT_READY);
    /* release ↔ the next acquirer's acquire CAS: our reads of the data are done */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(rr_id_gen(id), SLOT_FREE),
                                                 memory_order_release, memory_order_relaxed))
        return -ESTALE;
    slot_freed(c, s);
    return 0;
}

int rr_cancel(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = mk_ctl(gen, SLOT_ACQUIRED);
    /* release ↔ the next acquirer's acquire CAS; the replier's claim CAS then
     * fails on the new generation */
    if (atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(gen + 1, SLOT_FREE),
                                                memory_order_release, memory_order_relaxed)) {
        rr_word_wake(ctl_futex(s), &s->waiters, INT_MAX); /* other waiters on this id */
        slot_freed(c, s);
        return 0;
    }
    if (ctl_gen(v) == gen && (ctl_state(v) == SLOT_WRITING || ctl_state(v) == SLOT_READY))
        return -EBUSY;
    return -ESTALE;
}

int rr_id_live(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return 0;
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    return ctl_gen(v) == rr_id_gen(id) && ctl_state(v) != SLOT_FREE;
}

void rr_slots_clear(rr_chan *c)
{
    for (uint32_t i = 0; i < c->geom.resp_slots; i++) {
        rr_slot *s = rr_slot_at(c, i);
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
        for (;;) {
            uint32_t st = ctl_state(v);
            if (st != SLOT_ACQUIRED && st != SLOT_READY)
                break; /* free, or a replier owns it: it loses nothing */
            /* release ↔ the next acquirer's acquire CAS */
            if (atomic_compare_exchange_weak_explicit(&s->ctl, &v,
                                                      mk_ctl(ctl_gen(v) + 1, SLOT_FREE),
                                                      memory_order_release,
                                                      memory_order_relaxed)) {
                rr_word_wake(ctl_futex(s), &s->waiters, INT_MAX);
                atomic_store_explicit(&s->owner, 0, memory_order_release);
                break;
            }
        }
    }
    rr_waitq_wake(&c->hdr->slot_free, INT_MAX);
}

void rr_slots_count(rr_chan *c, rr_stats *st)
{
    for (uint32_t i = 0; i < c->geom.resp_slots; i++) {
        rr_slot *s = rr_slot_at(c, i);
        /* relaxed: a snapshot for statistics */
        uint32_t state = ctl_state(atomic_load_explicit(&s->ctl, memory_order_relaxed));
        if (state == SLOT_FREE)
            st->slots_free++;
        else if (state == SLOT_READY)
            st->slots_ready++;
        else
            st->slots_acquired++;
        st->replies += atomic_load_explicit(&s->replies, memory_order_relaxed);
    }
}
