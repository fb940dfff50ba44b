/* Response slots. Each slot's ctl word holds its generation in the high half
 * and, in the low half (the futex word), the state plus the generation's low
 * bits, so every transition is one CAS and changes the futex word.
 *
 *   FREE --acquire(gen+1)--> ACQUIRED --claim--> WRITING --publish--> READY
 *     ^         |  cancel(gen+1), clear(gen+1)                        |  view
 *     |         |                                                     v
 *     +---------+--- clear(gen+1) from READY, release from ------- READING
 *
 * A slot in WRITING belongs to the replier and one in READING to the client
 * copying the reply out: cancel and clear lose against both, so nobody ever
 * writes a slot while somebody else reads it.
 * Ownership is two words: `owner` is claimed (0 -> me) before ctl leaves FREE
 * and cleared after ctl is back to FREE, so a FREE slot with a set owner is
 * being acquired or released right now (or its owner died doing so).
 *
 * Every CAS that frees a slot is acq_rel: acquire, so that whatever the
 * previous holders wrote or read (the acquirer's bell, the replier's data)
 * happens before the next acquirer prepares the slot; release for the same
 * reason one step further.
 *
 * `worker` records who took the request: generation (24 bits) << 40 | start
 * time (18 bits) << 22 | pid (22 bits). A record of an older generation is
 * ignored by readers and overwritten by writers, so a worker that took a
 * request of a cancelled generation cannot hide the worker of the current one.
 * Nobody clears it on acquire: that would pull its line (see rr_slot) away
 * from the next worker on every request. A stale record could be taken for a
 * new one only after 2^24 generations of the slot without a single take. */
#include "rr_internal.h"

#include <limits.h>
#include <stdlib.h>

enum { SLOT_FREE = 0, SLOT_ACQUIRED = 1, SLOT_WRITING = 2, SLOT_READY = 3, SLOT_READING = 4 };

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
    /* release ↔ the acquire CAS of owner in try_acquire; an exchange, not a
     * store, so that the wake-up needs no fence of its own */
    atomic_exchange_explicit(&s->owner, 0, memory_order_release);
    rr_waitq_wake_after_rmw(&c->hdr->slot_free, 1);
}

/* Frees a slot from the state in *v (CAS to FREE of generation gen) and wakes
 * whoever waits on it; false, with *v updated, if the slot moved meanwhile.
 * acq_rel: see the top of this file. */
static bool take_back(rr_slot *s, uint64_t *v, uint32_t gen)
{
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, v, mk_ctl(gen, SLOT_FREE),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    rr_word_wake_after_rmw(ctl_futex(s), &s->waiters, INT_MAX);
    return true;
}

#define RR_REUSE_MAX 2048 /* replies up to this size leave their slot to be taken again */

static int try_acquire(rr_chan *c, void *arg)
{
    uint64_t me = rr_self_ident();
    uint32_t n = c->geom.resp_slots;
    uint32_t hint = atomic_load_explicit(&c->slot_hint, memory_order_relaxed);
    /* From the slot this handle took last: with one request at a time that
     * is the one it just freed, still in this core's cache. Not after a large
     * reply, though: its bytes are cached here, and the next replier would
     * have to take every one of those lines back. (relaxed atomic read of
     * len: a hint, written by repliers) */
    if (hint < n && __atomic_load_n(&rr_slot_at(c, hint)->len, __ATOMIC_RELAXED) > RR_REUSE_MAX)
        hint++;
    if (hint >= n)
        hint = 0;
    for (uint32_t k = 0, idx = hint; k < n; k++, idx = idx + 1 < n ? idx + 1 : 0) {
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
        if (ctl_state(v) != SLOT_FREE) {
            atomic_store_explicit(&s->owner, 0, memory_order_release);
            continue;
        }
        /* A FREE slot whose owner word we hold is ours to prepare: nobody reads
         * it until it is acquired, and the CAS below publishes it. */
        s->bell = c->bell;
        /* acq_rel: acquire ↔ the release that freed the slot (the last reader is
         * done with its data); release ↔ the replier's claim CAS */
        if (atomic_compare_exchange_strong_explicit(&s->ctl, &v,
                                                    mk_ctl(ctl_gen(v) + 1, SLOT_ACQUIRED),
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            atomic_store_explicit(&c->slot_hint, idx, memory_order_relaxed);
            *(uint64_t *)arg = (uint64_t)(ctl_gen(v) + 1) << 32 | idx;
            return 1;
        }
        atomic_store_explicit(&s->owner, 0, memory_order_release);
    }
    return 0;
}

static bool any_slot(rr_chan *c, void *arg) { return true; }

#define RR_SWEEP_PERIOD_NS 1000000000 /* dead clients' slots come back within this */
#define RR_SWEEP_DRY_NS 10000000      /* and as often as this when the pool is dry */

static int acquire_or_sweep(rr_chan *c, void *arg)
{
    int rc = try_acquire(c, arg);
    if (rc == 0) {
        rr_slots_sweep(c, RR_SWEEP_DRY_NS);
        rc = try_acquire(c, arg);
    }
    return rc;
}

int rr_slot_acquire(rr_chan *c, int64_t deadline, uint64_t *id)
{
    /* relaxed, no RMW: a tick count that may lose ticks between threads */
    uint32_t tick = atomic_load_explicit(&c->sends, memory_order_relaxed);
    atomic_store_explicit(&c->sends, tick + 1, memory_order_relaxed);
    if ((tick & 63) == 0) /* look at the sweep clock on every 64th send */
        rr_slots_sweep(c, RR_SWEEP_PERIOD_NS);
    /* Poll: a dead client's slots come back by a sweep, which no waker announces. */
    rr_waitq *q = &c->hdr->slot_free;
    return rr_wait_until(c, &q->seq, &q->waiters, acquire_or_sweep, any_slot, id, deadline,
                         RR_SWEEP_DRY_NS * 2);
}

/* Gives back a slot whose request never reached the queue. */
void rr_slot_abandon(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    uint64_t v = mk_ctl(rr_id_gen(id), SLOT_ACQUIRED);
    if (take_back(s, &v, rr_id_gen(id)))
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

/* Returns 1 if the requester waits in an event loop (its bell was rung). */
int rr_slot_publish(rr_chan *c, rr_slot *s, uint64_t id)
{
    uint32_t bell = s->bell; /* read while we own the slot */
    /* relaxed, and no RMW: only the replier holding the WRITING claim writes it */
    atomic_store_explicit(&s->replies,
                          atomic_load_explicit(&s->replies, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    /* release ↔ the client's acquire load of ctl in rr_resp_view: the response
     * bytes are visible before READY is. An exchange, not a store: the
     * wake-up after it then needs no fence of its own. */
    atomic_exchange_explicit(&s->ctl, mk_ctl(rr_id_gen(id), SLOT_READY), memory_order_release);
    rr_word_wake_after_rmw(ctl_futex(s), &s->waiters, INT_MAX);
    if (bell == 0 || bell > RR_BELLS)
        return 0;
    rr_bell_ring(c, bell - 1);
    return 1;
}

#define GEN_MASK ((UINT32_C(1) << RR_WORKER_GEN_BITS) - 1)
#define START_MASK ((UINT32_C(1) << RR_WORKER_START_BITS) - 1)
#define PID_MASK ((UINT32_C(1) << RR_WORKER_PID_BITS) - 1)
#define GEN_SHIFT (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)

static inline uint64_t worker_word(uint32_t gen, uint64_t ident)
{
    return (uint64_t)(gen & GEN_MASK) << GEN_SHIFT
        | ((ident >> 32) & START_MASK) << RR_WORKER_PID_BITS | (ident & PID_MASK);
}

static inline uint32_t worker_gen(uint64_t w) { return (uint32_t)(w >> GEN_SHIFT); }

/* The record is of request `id`'s generation (modulo its bits). */
static inline bool worker_of(uint64_t w, uint64_t id)
{
    return w != 0 && worker_gen(w) == (rr_id_gen(id) & GEN_MASK);
}

static inline bool worker_alive(uint64_t w)
{
    return rr_pid_alive((uint32_t)(w & PID_MASK),
                        (uint32_t)(w >> RR_WORKER_PID_BITS) & START_MASK, RR_WORKER_START_BITS);
}

/* The record is of a generation before `gen` (by the sign of the difference). */
static inline bool worker_older(uint64_t w, uint32_t gen)
{
    uint32_t d = (gen - worker_gen(w)) & GEN_MASK;
    return d != 0 && d < (GEN_MASK >> 1) + 1;
}

void rr_slot_mark_taken_by(rr_chan *c, uint64_t id, uint64_t ident)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return;
    uint64_t want = worker_word(rr_id_gen(id), ident);
    /* relaxed: read only by the owner's liveness poll, which tolerates delay */
    uint64_t cur = atomic_load_explicit(&s->worker, memory_order_relaxed);
    do {
        if (cur != 0 && !worker_older(cur, rr_id_gen(id)) && worker_gen(cur) != worker_gen(want))
            return; /* a newer request owns the record */
    } while (!atomic_compare_exchange_weak_explicit(&s->worker, &cur, want, memory_order_relaxed,
                                                    memory_order_relaxed));
}

void rr_slot_mark_taken(rr_chan *c, uint64_t id) { rr_slot_mark_taken_by(c, id, rr_self_ident()); }

int rr_resp_worker(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return 0;
    uint64_t w = atomic_load_explicit(&s->worker, memory_order_relaxed);
    return worker_of(w, id) ? (int)(w & PID_MASK) : 0;
}

#define RR_WORKER_CHECK_NS 250000000 /* how often a waiting client checks its worker */

typedef struct resp_wait {
    uint64_t id;
    bool first; /* the attempt before any spin or sleep: no worker check yet */
} resp_wait;

static int resp_ready(rr_chan *c, void *arg)
{
    resp_wait *w = arg;
    rr_slot *s = slot_of(c, w->id);
    /* acquire ↔ the release store in rr_slot_publish */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (ctl_gen(v) != rr_id_gen(w->id) || ctl_state(v) == SLOT_FREE)
        return -ESTALE;
    if (ctl_state(v) == SLOT_READY || ctl_state(v) == SLOT_READING)
        return 1; /* READING: pinned by a view, and there to be seen */
    if (w->first) {
        /* A wait that goes on comes back here before it sleeps: the first look
         * reads no clock, but for one in 64 (a loop of waits that end at once) */
        w->first = false;
        uint32_t n = atomic_load_explicit(&c->first_looks, memory_order_relaxed);
        atomic_store_explicit(&c->first_looks, n + 1, memory_order_relaxed); /* a tick, no RMW */
        if (n & 63)
            return 0;
    }
    /* per handle, so that short waits in a loop still notice a dead worker */
    int64_t now = rr_now_ns();
    if (now < atomic_load_explicit(&c->next_worker_check, memory_order_relaxed))
        return 0;
    atomic_store_explicit(&c->next_worker_check, now + RR_WORKER_CHECK_NS, memory_order_relaxed);
    return rr_resp_check(c, w->id);
}

static bool resp_peek(rr_chan *c, void *arg)
{
    resp_wait *w = arg;
    uint64_t v = atomic_load_explicit(&slot_of(c, w->id)->ctl, memory_order_relaxed);
    return ctl_gen(v) != rr_id_gen(w->id) || ctl_state(v) == SLOT_READY
        || ctl_state(v) == SLOT_READING || ctl_state(v) == SLOT_FREE;
}

int rr_resp_wait(rr_chan *c, uint64_t id, int64_t deadline)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    resp_wait w = {id, true};
    return rr_wait_until(c, ctl_futex(s), &s->waiters, resp_ready, resp_peek, &w, deadline,
                         RR_WORKER_CHECK_NS);
}

int rr_resp_check(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    /* acquire ↔ the release store in rr_slot_publish */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (ctl_gen(v) != rr_id_gen(id) || ctl_state(v) == SLOT_FREE)
        return -ESTALE;
    if (ctl_state(v) == SLOT_READY || ctl_state(v) == SLOT_READING)
        return 1;
    uint64_t rec = atomic_load_explicit(&s->worker, memory_order_relaxed);
    if (worker_of(rec, id) && !worker_alive(rec))
        return -EOWNERDEAD;
    return 0;
}

int rr_resp_abandon_dead(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
    while (ctl_gen(v) == gen && (ctl_state(v) == SLOT_ACQUIRED || ctl_state(v) == SLOT_WRITING)) {
        /* A dead replier's WRITING claim is taken back too: it will never publish. */
        if (take_back(s, &v, gen + 1)) {
            slot_freed(c, s);
            atomic_fetch_add_explicit(&c->hdr->recoveries, 1, memory_order_relaxed);
            return 0;
        }
    }
    return -ESTALE;
}

int rr_resp_view(rr_chan *c, uint64_t id, rr_resp *r)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = mk_ctl(gen, SLOT_READY);
    /* acquire ↔ the release store in rr_slot_publish: the reply is visible.
     * Already pinned (READING) is fine too: a second look at the same reply. */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(gen, SLOT_READING),
                                                 memory_order_acquire, memory_order_acquire)
        && v != mk_ctl(gen, SLOT_READING))
        return ctl_gen(v) == gen && ctl_state(v) != SLOT_FREE ? -EAGAIN : -ESTALE;
    /* Bound what a hostile writer could have put in len. */
    uint32_t len = s->len;
    r->len = len <= c->geom.resp_size ? len : c->geom.resp_size;
    r->data = rr_slot_data_for(s, r->len);
    r->flags = s->flags;
    r->value = s->value;
    return 0;
}

/* READING -> `to`; frees the slot when `to` is FREE. */
static int end_reading(rr_chan *c, uint64_t id, uint32_t from, uint32_t to)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint64_t v = mk_ctl(rr_id_gen(id), from);
    /* acq_rel (top of file): our reads of the data are done before it moves on */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, mk_ctl(rr_id_gen(id), to),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return -ESTALE;
    if (to == SLOT_FREE)
        slot_freed(c, s);
    return 0;
}

int rr_int_peek(rr_chan *c, uint64_t id, int64_t *value)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* acquire ↔ the release store in rr_slot_publish: the value is visible */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (v != mk_ctl(gen, SLOT_READY)) /* READING too: pinned by a view, not ours */
        return ctl_gen(v) == gen && ctl_state(v) != SLOT_FREE ? -EAGAIN : -ESTALE;
    /* relaxed atomic: if clear() frees the slot now, a new replier may write
     * it; the caller's rr_resp_discard then fails and drops what we read */
    *value = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
    return 0;
}

int rr_resp_release(rr_chan *c, uint64_t id)
{
    /* pinned by rr_resp_view, or (a caller that read nothing) still READY */
    int rc = end_reading(c, id, SLOT_READING, SLOT_FREE);
    return rc == 0 ? 0 : end_reading(c, id, SLOT_READY, SLOT_FREE);
}

int rr_resp_unview(rr_chan *c, uint64_t id)
{
    return end_reading(c, id, SLOT_READING, SLOT_READY);
}

int rr_resp_discard(rr_chan *c, uint64_t id)
{
    return end_reading(c, id, SLOT_READY, SLOT_FREE);
}

int rr_cancel(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = mk_ctl(gen, SLOT_ACQUIRED);
    /* the replier's claim CAS then fails on the new generation */
    if (take_back(s, &v, gen + 1)) {
        slot_freed(c, s);
        return 0;
    }
    if (ctl_gen(v) == gen && ctl_state(v) >= SLOT_WRITING)
        return -EBUSY; /* WRITING, READY or READING: the reply won */
    return -ESTALE;
}

bool rr_slot_is_acquired(rr_chan *c, uint64_t id)
{
    rr_slot *s = slot_of(c, id);
    /* relaxed: a check before the push; clear() racing past it is a clear
     * that came just after the send */
    return s && atomic_load_explicit(&s->ctl, memory_order_relaxed)
        == mk_ctl(rr_id_gen(id), SLOT_ACQUIRED);
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
                break; /* free, or a replier or reader owns it: it loses nothing */
            if (take_back(s, &v, ctl_gen(v) + 1)) {
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
        else if (state == SLOT_READY || state == SLOT_READING)
            st->slots_ready++;
        else
            st->slots_acquired++;
        st->replies += atomic_load_explicit(&s->replies, memory_order_relaxed);
    }
}

/* Remembers a few verdicts so a sweep asks about each process once. */
typedef struct ident_cache {
    uint64_t ident[8];
    bool alive[8];
    int n;
} ident_cache;

static bool cached_alive(ident_cache *k, uint64_t ident)
{
    for (int i = 0; i < k->n; i++)
        if (k->ident[i] == ident)
            return k->alive[i];
    bool alive = rr_ident_alive(ident);
    int i = k->n < 8 ? k->n++ : (int)(ident % 8);
    k->ident[i] = ident;
    k->alive[i] = alive;
    return alive;
}

/* True if the recorded worker of generation gen is known to be dead. */
static bool worker_dead(rr_slot *s, uint32_t gen, ident_cache *k)
{
    uint64_t rec = atomic_load_explicit(&s->worker, memory_order_relaxed);
    if (!worker_of(rec, (uint64_t)gen << 32))
        return false;
    for (int i = 0; i < k->n; i++)
        if ((uint32_t)k->ident[i] == (uint32_t)(rec & PID_MASK)
            && ((k->ident[i] >> 32) & START_MASK) == ((rec >> RR_WORKER_PID_BITS) & START_MASK))
            return !k->alive[i];
    return !worker_alive(rec);
}

void rr_slots_sweep(rr_chan *c, int64_t period_ns)
{
    rr_header *h = c->hdr;
    int64_t now = rr_now_ns();
    /* relaxed: a rate limit; the CAS elects one sweeper per period. A time in
     * the future (a forged file) counts as long ago. */
    int64_t last = atomic_load_explicit(&h->last_sweep, memory_order_relaxed);
    if ((uint64_t)(now - last) < (uint64_t)period_ns && period_ns > 0)
        return;
    if (!atomic_compare_exchange_strong_explicit(&h->last_sweep, &last, now,
                                                 memory_order_relaxed, memory_order_relaxed)
        && period_ns > 0)
        return;
    uint64_t me = rr_self_ident();
    ident_cache k = {.n = 0};
    for (uint32_t i = 0; i < c->geom.resp_slots; i++) {
        rr_slot *s = rr_slot_at(c, i);
        /* acquire ↔ the acquirer's acq_rel CAS: the owner we read is at least
         * as new as the ctl value; a CAS on that exact value decides */
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
        uint64_t owner = atomic_load_explicit(&s->owner, memory_order_relaxed);
        if (owner == 0 || owner == me || cached_alive(&k, owner))
            continue;
        if (ctl_state(v) == SLOT_WRITING && !worker_dead(s, ctl_gen(v), &k))
            continue; /* a live replier owns it: it will publish, then we free it */
        if (ctl_state(v) != SLOT_FREE) {
            if (!take_back(s, &v, ctl_gen(v) + 1))
                continue;
            atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
        }
        /* release ↔ the acquire CAS of owner in try_acquire */
        if (atomic_compare_exchange_strong_explicit(&s->owner, &owner, 0, memory_order_release,
                                                    memory_order_relaxed))
            rr_waitq_wake(&h->slot_free, 1);
    }
}
