/* Response slots (their interface: rr_slots.h). Modelled in rr_slots.pml,
 * checked by csrc/tests/spin.sh. The words below are encoded in rr_format.h.
 *
 * Each slot's ctl word holds its generation in the high half and, in the low
 * half (the futex word), the state plus the generation's low bits, so every
 * transition is one CAS on the exact value and changes the futex word.
 *
 *   FREE --acquire(gen+1)--> ACQUIRED --claim--> WRITING --publish--> READY
 *    ^  ^       | cancel, clear, abandon  |  ^  unclaim             |  view, pin
 *    |  |       v (gen+1)                 v  +-- (ACQUIRED)          v
 *    |  +----------------------------- CANCELLED (publish frees it) READING, PINNED
 *    +----- release (gen+1), clear from READY, abandon/sweep ----------+
 *
 * A slot in WRITING belongs to its writer and one in READING or PINNED to the
 * client reading the reply: nothing else writes it. READING may be looked at
 * twice (two threads of one handle, or another process holding the id, which
 * may die in READING: the client still collects it; one release wins; S18 and
 * S19 in rr_slots.pml);
 * PINNED is a View's (SPEC §9), collected: every other look finds it stale.
 * Cancel and clear turn WRITING into CANCELLED, which the writer's publish
 * CAS then finds: its reply is refused and it frees the slot. Only a writer
 * found dead lets anyone else free a WRITING or CANCELLED slot.
 *
 * A writer may give its claim back unpublished (rr_slot_unclaim, for
 * rr_str_reply_abort; S14 in rr_slots.pml): WRITING -> ACQUIRED, then its
 * record back to what its claim replaced; any replier may claim it again.
 * So WRITING(g) may come back with another writer, the same ctl value:
 * whoever frees a slot for a dead worker reads the record again after its
 * verdict and goes on only if it is unchanged (record_still), and the
 * claimant's later calls check ctl as well as the record (rr_slot_claimed),
 * which outlives the claim.
 *
 * Ownership is two words: `owner` (generation tag (24 bits) << 40 | start
 * time (18 bits) << 22 | pid) is claimed for the generation being acquired
 * before ctl leaves FREE, and cleared after ctl is back to FREE, so it is
 * stable while ctl is not FREE. A FREE(g) slot whose owner is tagged g + 1 is
 * being acquired right now (or its acquirer died doing so); one tagged with an
 * older generation is a leftover: its freer is about to clear it, or died
 * before it could, and the next acquirer takes it over. Whoever frees a slot
 * read its owner after seeing the generation it frees, and clears exactly
 * that owner by a CAS: never a blind store, which could wipe the next
 * acquirer's.
 *
 * Every CAS that frees a slot is acq_rel: acquire, so that whatever the
 * previous holders wrote or read (the acquirer's bell, the replier's data)
 * happens before the next acquirer prepares the slot; release for the same
 * reason one step further.
 *
 * `worker` records generation (23 bits) << 41 | writing << 40 | start time
 * (18 bits) << 22 | pid (22 bits): the process that took the request
 * (writing 0), or the one writing its reply (writing 1). A writer records
 * itself before its claim CAS (release), so whoever sees WRITING sees the
 * writer's record; nobody overwrites a writing record of the same generation.
 * A client learns of a dead worker from this record, and a WRITING slot is
 * taken back only when its *writer* is dead: the process that took a request
 * may hand its id to another, which replies. A record of an older generation
 * is ignored by readers and overwritten by writers; nobody clears it on
 * acquire (that would pull its line, see rr_slot, away from the next worker
 * on every request). A stale record could be taken for a new one only after
 * 2^23 generations of the slot without a single take. Only the writer
 * replaces its writing record (unclaim), after ctl is back to ACQUIRED, and
 * with release; a claim's CAS of the record is acquire: a claimant that finds
 * the record given back finds ACQUIRED too, rather than fail on WRITING
 * having recorded itself, which would lock every replier out. */
#include "rr_slots.h"
#include "rr_bells.h"
#include "rr_proc.h"
#include "rr_test_hooks.h"

#include <errno.h>
#include <limits.h>

#ifdef RR_TEST_HOOKS
void (*rr_test_mid_unclaim)(void);    /* rr_test_hooks.h */
void (*rr_test_before_verdict)(void); /* rr_test_hooks.h */
#endif

static rr_slot *slot_of(rr_slots *pool, uint64_t id)
{
    uint32_t idx = rr_id_index(id);
    return idx < pool->n ? rr_slot_at(pool, idx) : NULL;
}

/* ---- process words: the worker record and the owner (rr_format.h) ---- */

/* Writes record `want` (of generation gen) unless a writer of gen or a newer
 * request owns the record; false then. relaxed: a writer's record is ordered
 * by its claim CAS that follows (release); a taker's is read only by liveness
 * checks, which tolerate delay. */
static bool record(rr_slot *s, uint32_t gen, uint64_t want)
{
    uint64_t cur = atomic_load_explicit(&s->worker, memory_order_relaxed);
    do {
        if (rr_worker_of(cur, gen) ? (cur & RR_WORKER_WRITING) != 0
                                   : cur != 0 && !rr_worker_older(cur, gen))
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&s->worker, &cur, want, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* The record of generation gen's worker in a slot whose ctl (read with
 * acquire) is `state` of that generation, or 0 if there is none: in WRITING
 * and CANCELLED only a writer's counts (the claim recorded it first). */
static uint64_t worker_for(rr_slot *s, uint32_t gen, uint32_t state)
{
    uint64_t w = atomic_load_explicit(&s->worker, memory_order_relaxed);
    if (!rr_worker_of(w, gen))
        return 0;
    if ((state == RR_SLOT_WRITING || state == RR_SLOT_CANCELLED) && !(w & RR_WORKER_WRITING))
        return 0;
    return w;
}

/* Whether request `id`'s worker (as worker_for found it) is dead and gone
 * with it. A Str taker records itself before it pops: one killed in between
 * left the request queued, for the next worker (which records itself). */
static bool worker_lost(rr_slots *pool, uint64_t id, uint64_t w)
{
    return w && !rr_proc_alive(w)
        && ((w & RR_WORKER_WRITING) || !pool->holds(pool->queue, id));
}

/* After a verdict that the process of record w is dead: whether the record
 * is still w, so that the ctl value loaded before it is still that
 * process's to free (F3 in rr_slots.pml). A writer that gave its claim back
 * and then died may have let a live one claim since: WRITING(g) again, the
 * same value. A writing record is replaced only by its writer, so once that
 * writer is dead an unchanged record stays so, and the WRITING(g) is its.
 * An RMW (a CAS of w to itself), so that it reads the latest record, not a
 * copy from before the dead writer's last change; relaxed: the acq_rel CAS
 * of ctl that follows decides what is freed. */
static bool record_still(rr_slot *s, uint64_t w)
{
    return atomic_compare_exchange_strong_explicit(&s->worker, &w, w, memory_order_relaxed,
                                                   memory_order_relaxed);
}

/* ---- freeing ---- */

/* Frees the slot from state *v (CAS to FREE of gen + 1) and wakes whoever
 * waits on it; false, with *v updated, if the slot is not (or no longer) in
 * *v. The owner word is read after seeing *v (acquire ↔ the acquirer's acq_rel
 * CAS that began this generation, whose RMWs since continue its release
 * sequence), so it is this generation's owner, and then cleared by a CAS. */
static bool free_to(rr_slots *pool, rr_slot *s, uint64_t *v, uint32_t gen)
{
    uint64_t seen = *v;
    *v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (*v != seen || rr_ctl_state(seen) == RR_SLOT_FREE)
        return false;
    uint64_t owner = atomic_load_explicit(&s->owner, memory_order_relaxed);
    /* acq_rel: see the top of this file; acquire on failure, for a caller
     * that decides again from the value it finds */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, v, rr_ctl(gen, RR_SLOT_FREE),
                                                 memory_order_acq_rel, memory_order_acquire))
        return false;
    rr_word_wake_after_rmw(rr_ctl_futex(s), &s->waiters, INT_MAX);
    /* release ↔ the acquire CAS of owner in try_acquire. A failure means a
     * sweeper already cleared a dead owner: the word is not ours to touch. */
    atomic_compare_exchange_strong_explicit(&s->owner, &owner, 0, memory_order_release,
                                            memory_order_relaxed);
    /* the CAS is an RMW even when it fails */
    rr_waitq_wake_after_rmw(&pool->hdr->slot_free, 1);
    return true;
}

static bool free_from(rr_slots *pool, rr_slot *s, uint64_t *v)
{
    return free_to(pool, s, v, rr_ctl_gen(*v) + 1);
}

/* Hands back an owner word claimed by try_acquire for a slot it did not get. */
static void give_up_owner(rr_slot *s, uint64_t mine)
{
    /* release ↔ the acquire CAS of owner in try_acquire */
    atomic_compare_exchange_strong_explicit(&s->owner, &mine, 0, memory_order_release,
                                            memory_order_relaxed);
}

#define RR_REUSE_MAX 2048 /* replies up to this size leave their slot to be taken again */
#define RR_RECORD_REFRESH 0xffffeu /* see try_acquire */

/* An acquire in progress: the pool, the bell the request will ring, where
 * its id goes. */
typedef struct acquire_op {
    rr_slots *pool;
    uint32_t bell;
    uint64_t *id;
} acquire_op;

static int try_acquire(rr_slots *pool, uint32_t bell, uint64_t *id)
{
    uint64_t me = rr_self_ident();
    uint32_t n = pool->n;
    uint32_t hint = atomic_load_explicit(&pool->hint, memory_order_relaxed);
    /* From the slot this handle took last: with one request at a time that
     * is the one it just freed, still in this core's cache. Not after a large
     * reply, though: its bytes are cached here, and the next replier would
     * have to take every one of those lines back. (relaxed atomic read of
     * len: a hint, written by repliers) */
    if (hint < n && RR_READ_ONCE(rr_slot_at(pool, hint)->len) > RR_REUSE_MAX)
        hint++;
    if (hint >= n)
        hint = 0;
    for (uint32_t k = 0, idx = hint; k < n; k++, idx = idx + 1 < n ? idx + 1 : 0) {
        rr_slot *s = rr_slot_at(pool, idx);
        /* relaxed: the CASes below decide */
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
        if (rr_ctl_state(v) != RR_SLOT_FREE)
            continue;
        uint32_t gen = rr_ctl_gen(v) + 1;
        uint64_t o = atomic_load_explicit(&s->owner, memory_order_relaxed);
        /* g + 1: somebody is acquiring it; later: the FREE we read is out of
         * date, and the word may be an acquire in progress */
        if (o != 0 && !rr_owner_older(o, gen))
            continue;
        uint64_t mine = rr_owner_word(gen, me);
        /* 0, or a leftover of an earlier generation whose freer has not
         * cleared it (or died before it could): ours to take over. acquire ↔
         * the release CAS of owner in free_from and the sweep */
        if (!atomic_compare_exchange_strong_explicit(&s->owner, &o, mine, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        /* acquire ↔ the acq_rel CAS that freed the slot: a leftover owner we
         * took over was not cleared with release, so this is what orders the
         * last holders' reads and writes (the writer's look at bell) before
         * ours */
        if (atomic_load_explicit(&s->ctl, memory_order_acquire) != v) {
            give_up_owner(s, mine); /* only a forged file moves a slot we own */
            continue;
        }
        /* A FREE slot whose owner word we hold is ours to prepare: nobody reads
         * it until it is acquired, and the CAS below publishes it. */
        s->bell = bell;
        /* acq_rel: acquire ↔ the release that freed the slot (the last reader is
         * done with its data); release ↔ the replier's claim CAS */
        if (atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_ACQUIRED),
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            atomic_store_explicit(&pool->hint, idx, memory_order_relaxed);
            *id = rr_id(gen, idx);
            if ((gen & RR_RECORD_REFRESH) == 0) {
                /* Once every 2^20 generations: a worker record (23 bits of
                 * generation) left from long ago would otherwise come to look
                 * newer than the requests it is compared with. relaxed: the
                 * record's readers tolerate a lost or late change */
                uint64_t w = atomic_load_explicit(&s->worker, memory_order_relaxed);
                if (w != 0 && !rr_worker_of(w, gen))
                    atomic_compare_exchange_strong_explicit(&s->worker, &w, 0,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed);
            }
            return 1;
        }
        give_up_owner(s, mine);
    }
    return 0;
}

static bool any_slot(void *arg) { return true; }

#define RR_SWEEP_PERIOD_NS 1000000000 /* dead clients' slots come back within this */
#define RR_SWEEP_DRY_NS 10000000      /* and as often as this when the pool is dry */

static int acquire_or_sweep(void *arg)
{
    acquire_op *op = arg;
    int rc = try_acquire(op->pool, op->bell, op->id);
    if (rc == 0) {
        rr_slots_sweep(op->pool, RR_SWEEP_DRY_NS);
        rc = try_acquire(op->pool, op->bell, op->id);
    }
    return rc;
}

int rr_slot_acquire(rr_slots *pool, uint32_t bell, int64_t deadline, uint64_t *id)
{
    /* relaxed, no RMW: a tick count that may lose ticks between threads */
    uint32_t tick = atomic_load_explicit(&pool->sends, memory_order_relaxed);
    atomic_store_explicit(&pool->sends, tick + 1, memory_order_relaxed);
    if ((tick & 63) == 0) /* look at the sweep clock on every 64th send */
        rr_slots_sweep(pool, RR_SWEEP_PERIOD_NS);
    /* Poll: a dead client's slots come back by a sweep, which no waker announces. */
    acquire_op op = {pool, bell, id};
    return rr_waitq_wait(pool->wait, &pool->hdr->slot_free, acquire_or_sweep, any_slot, &op,
                         deadline, RR_SWEEP_DRY_NS * 2);
}

/* Gives back a slot whose request never reached the queue: the acquire is
 * undone, generation included (the id was never seen by anyone), so that
 * failed sends do not age the slot's worker record. */
void rr_slot_abandon(rr_slots *pool, uint64_t id)
{
    uint64_t v = rr_ctl(rr_id_gen(id), RR_SLOT_ACQUIRED);
    free_to(pool, slot_of(pool, id), &v, rr_id_gen(id) - 1);
}

/* Contract: any process holding the id may call it, any number at once;
 * exactly one claim of a generation succeeds, and only while nobody
 * cancelled, cleared or took the slot back. *prev: the record it replaced. */
static rr_slot *claim(rr_slots *pool, uint64_t id, uint64_t *prev)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return NULL;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = rr_ctl(gen, RR_SLOT_ACQUIRED);
    uint64_t want = rr_worker_word(gen, rr_self_ident()) | RR_WORKER_WRITING;
    /* relaxed: the CAS of the record below decides */
    uint64_t cur = atomic_load_explicit(&s->worker, memory_order_relaxed);
    do {
        if (rr_worker_of(cur, gen)) {
            if (cur & RR_WORKER_WRITING)
                return NULL; /* another replier has it */
        } else if (atomic_load_explicit(&s->ctl, memory_order_relaxed) != v
                   || (cur != 0 && !rr_worker_older(cur, gen))) {
            /* No take of this generation is recorded: a reply to an id never
             * taken, or a stale or future one. Only while ctl says the id is
             * current (relaxed: the CAS below decides), or a future id's
             * record would lock the real writer out. */
            return NULL;
        }
        /* acquire ↔ the release CAS of the record in rr_slot_unclaim: a
         * record given back comes after its ACQUIRED, which the CAS of ctl
         * below then finds. Our record is ordered by that CAS (release). */
    } while (!atomic_compare_exchange_weak_explicit(&s->worker, &cur, want, memory_order_acquire,
                                                    memory_order_relaxed));
    /* acq_rel: acquire ↔ the client's acq_rel acquire CAS (the slot's data is
     * ours now); release ↔ the acquire loads of ctl in rr_slot_check,
     * rr_slot_abandon_dead and the sweep: whoever sees WRITING sees our record */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_WRITING),
                                                 memory_order_acq_rel, memory_order_relaxed))
        return NULL;
    *prev = cur;
    return s;
}

rr_slot *rr_slot_claim(rr_slots *pool, uint64_t id)
{
    uint64_t prev;
    return claim(pool, id, &prev);
}

rr_slot *rr_slot_claim_keeping(rr_slots *pool, uint64_t id, uint64_t *prev)
{
    return claim(pool, id, prev);
}

/* Returns 1 if the requester waits in an event loop (its bell was rung), 0,
 * or -ESTALE if the request was cancelled or cleared while we wrote (then we
 * free the slot: nobody else may) or taken back from us for dead. */
int rr_slot_publish(rr_slots *pool, rr_slot *s, uint64_t id)
{
    uint32_t gen = rr_id_gen(id);
    uint32_t bell = s->bell; /* read while we own the slot */
    /* relaxed, and no RMW: only the replier holding the WRITING claim writes it */
    atomic_store_explicit(&s->replies,
                          atomic_load_explicit(&s->replies, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    uint64_t v = rr_ctl(gen, RR_SLOT_WRITING);
    /* release ↔ the client's acquire of ctl in rr_slot_view / rr_slot_int_peek: the
     * response bytes are visible before READY is. A CAS, never a blind store:
     * a slot that left our claim belongs to somebody else now. */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_READY),
                                                 memory_order_release, memory_order_relaxed)) {
        if (v == rr_ctl(gen, RR_SLOT_CANCELLED)) {
            /* still ours until freed: the reply is not counted after all */
            atomic_store_explicit(&s->replies,
                                  atomic_load_explicit(&s->replies, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
            free_from(pool, s, &v);
        }
        return -ESTALE;
    }
    rr_word_wake_after_rmw(rr_ctl_futex(s), &s->waiters, INT_MAX);
    if (bell == 0 || bell > RR_BELLS)
        return 0;
    rr_bell_ring(pool->bells, bell - 1);
    return 1;
}

int rr_slot_unclaim(rr_slots *pool, rr_slot *s, uint64_t id, uint64_t prev)
{
    uint32_t gen = rr_id_gen(id);
    uint64_t v = rr_ctl(gen, RR_SLOT_WRITING);
    /* release ↔ the next claimant's acq_rel claim CAS: what we wrote in the
     * slot is void, and written before it writes; acquire on failure, for
     * free_from */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_ACQUIRED),
                                                 memory_order_release, memory_order_acquire)) {
        if (v == rr_ctl(gen, RR_SLOT_CANCELLED))
            free_from(pool, s, &v); /* still ours until freed, as in publish */
        return -ESTALE;
    }
    rr_word_wake_after_rmw(rr_ctl_futex(s), &s->waiters, INT_MAX);
    RR_TEST_HOOK(rr_test_mid_unclaim);
    /* Then the record, back to what the claim replaced (the taker's, most
     * often), so that another claimant may record itself and the client
     * judges the taker again, not us. Before this CAS, ACQUIRED with our
     * writing record: a claim finds the record and fails (as while we
     * wrote), and if we die here, the client finds its worker dead
     * (worker_lost). Nobody else writes a writing record of its generation,
     * so ours is there to replace. release ↔ the acquire CAS of the record
     * in claim: a claimant that sees this record sees ACQUIRED (relaxed, it
     * could find WRITING, fail having recorded itself, and lock every
     * replier out: MUT_UNCLAIM_ORDER in rr_slots.pml). A claim never
     * replaces a writing record of its generation; a token that names one
     * would lock them out too. */
    if (rr_worker_of(prev, gen))
        prev &= ~RR_WORKER_WRITING;
    uint64_t mine = rr_worker_word(gen, rr_self_ident()) | RR_WORKER_WRITING;
    atomic_compare_exchange_strong_explicit(&s->worker, &mine, prev, memory_order_release,
                                            memory_order_relaxed);
    return 0;
}

rr_slot *rr_slot_claimed(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return NULL;
    uint32_t gen = rr_id_gen(id);
    uint64_t mine = rr_worker_word(gen, rr_self_ident()) | RR_WORKER_WRITING;
    /* Both: the record outlives the claim (a publish, or a free after
     * CANCELLED, leaves it), and a second commit would write a published slot
     * or a newer request's (F4 in rr_slots.pml). relaxed: our own claim wrote
     * both, and while we hold it only a cancel changes ctl (to CANCELLED,
     * still ours) */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
    bool held = v == rr_ctl(gen, RR_SLOT_WRITING) || v == rr_ctl(gen, RR_SLOT_CANCELLED);
    return held && atomic_load_explicit(&s->worker, memory_order_relaxed) == mine ? s : NULL;
}

void rr_slot_mark_taken_by(rr_slots *pool, uint64_t id, uint64_t ident)
{
    rr_slot *s = slot_of(pool, id);
    if (s)
        record(s, rr_id_gen(id), rr_worker_word(rr_id_gen(id), ident));
}

void rr_slot_mark_taken(rr_slots *pool, uint64_t id)
{
    rr_slot_mark_taken_by(pool, id, rr_self_ident());
}

int rr_slot_worker(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return 0;
    uint64_t w = atomic_load_explicit(&s->worker, memory_order_relaxed);
    return rr_worker_of(w, rr_id_gen(id)) ? (int)rr_proc_pid(w) : 0;
}

/* Still awaiting its reply (taken or not) or being answered. */
static inline bool in_flight(uint32_t state)
{
    return state == RR_SLOT_ACQUIRED || state == RR_SLOT_WRITING;
}

#define RR_WORKER_CHECK_NS 250000000 /* how often a waiting client checks its worker */

typedef struct resp_wait {
    rr_slots *pool;
    uint64_t id;
    bool first; /* the attempt before any spin or sleep: no worker check yet */
} resp_wait;

static int resp_ready(void *arg)
{
    resp_wait *w = arg;
    rr_slots *pool = w->pool;
    rr_slot *s = slot_of(pool, w->id);
    /* acquire ↔ the release CAS in rr_slot_publish */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (rr_ctl_gen(v) != rr_id_gen(w->id))
        return -ESTALE;
    if (rr_ctl_state(v) == RR_SLOT_READY || rr_ctl_state(v) == RR_SLOT_READING)
        return 1; /* READING: pinned by a view, and there to be seen */
    if (rr_ctl_state(v) == RR_SLOT_PINNED)
        return -ESTALE; /* collected, by a View */
    if (!in_flight(rr_ctl_state(v)))
        return -ESTALE; /* FREE, CANCELLED */
    if (w->first) {
        /* A wait that goes on comes back here before it sleeps: the first look
         * reads no clock, but for one in 64 (a loop of waits that end at once) */
        w->first = false;
        uint32_t n = atomic_load_explicit(&pool->first_looks, memory_order_relaxed);
        atomic_store_explicit(&pool->first_looks, n + 1, memory_order_relaxed); /* a tick, no RMW */
        if (n & 63)
            return 0;
    }
    /* Kept in the handle, so that short waits in a loop still notice a dead
     * worker, and for one request: a wait for another (a thread sharing the
     * handle) checks at once, so no thread's checks starve another's. */
    int64_t now = rr_now_ns();
    if (atomic_load_explicit(&pool->checked_id, memory_order_relaxed) == w->id
        && now < atomic_load_explicit(&pool->next_worker_check, memory_order_relaxed))
        return 0;
    atomic_store_explicit(&pool->checked_id, w->id, memory_order_relaxed);
    atomic_store_explicit(&pool->next_worker_check, now + RR_WORKER_CHECK_NS, memory_order_relaxed);
    return rr_slot_check(pool, w->id);
}

bool rr_slot_hint(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return true; /* not an id of ours: the call says so */
    /* relaxed: a hint; the call's own acquire load decides */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_relaxed);
    return rr_ctl_gen(v) != rr_id_gen(id) || !in_flight(rr_ctl_state(v));
}

static bool resp_peek(void *arg)
{
    resp_wait *w = arg;
    return rr_slot_hint(w->pool, w->id);
}

int rr_slot_wait(rr_slots *pool, uint64_t id, int64_t deadline)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    resp_wait w = {pool, id, true};
    return rr_wait_until(pool->wait, rr_ctl_futex(s), &s->waiters, resp_ready, resp_peek, &w,
                         deadline, RR_WORKER_CHECK_NS);
}

int rr_slot_check(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* acquire ↔ the release CAS in rr_slot_publish, and the claim's (its record) */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (rr_ctl_gen(v) != gen)
        return -ESTALE;
    if (rr_ctl_state(v) == RR_SLOT_READY || rr_ctl_state(v) == RR_SLOT_READING)
        return 1;
    if (!in_flight(rr_ctl_state(v)))
        return -ESTALE; /* FREE, CANCELLED, PINNED (collected) */
    return worker_lost(pool, id, worker_for(s, gen, rr_ctl_state(v))) ? -EOWNERDEAD : 0;
}

/* Contract: frees the slot only while the worker recorded for the state it
 * frees (the writer's record in WRITING) is dead, re-read after the state. */
int rr_slot_abandon_dead(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* acquire ↔ the claim's release CAS: a WRITING we see comes with its record */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    for (;;) {
        if (rr_ctl_gen(v) != gen)
            return -ESTALE;
        if (rr_ctl_state(v) == RR_SLOT_READY || rr_ctl_state(v) == RR_SLOT_READING)
            return -EBUSY;
        if (!in_flight(rr_ctl_state(v)))
            return -ESTALE;
        uint64_t w = worker_for(s, gen, rr_ctl_state(v));
        RR_TEST_HOOK(rr_test_before_verdict);
        if (!worker_lost(pool, id, w))
            return -EAGAIN;
        if (!record_still(s, w)) {
            /* claimed (or given back) since: decide again. acquire, as above */
            v = atomic_load_explicit(&s->ctl, memory_order_acquire);
            continue;
        }
        if (free_from(pool, s, &v)) {
            atomic_fetch_add_explicit(&pool->hdr->recoveries, 1, memory_order_relaxed);
            return 0;
        }
    }
}

/* Shows the reply in slot s, which the caller has pinned (READING or
 * PINNED): len read once and bounded (LESSONS.md) against what a hostile
 * writer could put there: a Str reply fits resp_size, an Int reply's error
 * name the slot's line. */
static void show_reply(const rr_slots *pool, rr_slot *s, rr_resp *r)
{
    uint32_t len = s->len;
    uint32_t max = pool->resp_size ? pool->resp_size : RR_SLOT_ERROR_MAX;
    r->len = len <= max ? len : max;
    r->data = rr_slot_data_for(s, r->len);
    r->flags = s->flags;
    r->value = s->value;
}

int rr_slot_view(rr_slots *pool, uint64_t id, rr_resp *r)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    uint64_t v = rr_ctl(gen, RR_SLOT_READY);
    /* acquire ↔ the release CAS in rr_slot_publish: the reply is visible.
     * Already pinned (READING) is fine too: a second look at the same reply. */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_READING),
                                                 memory_order_acquire, memory_order_acquire)
        && v != rr_ctl(gen, RR_SLOT_READING))
        return rr_ctl_gen(v) == gen && in_flight(rr_ctl_state(v)) ? -EAGAIN : -ESTALE;
    show_reply(pool, s, r);
    return 0;
}

int rr_slot_pin(rr_slots *pool, uint64_t id, rr_resp *r)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* Only the owner pins: the sweep judges a PINNED slot by its owner, who
     * must then be the one holding it. The whole word, generation tag
     * included: our leftover word in a slot we freed, read just before
     * another process acquired it, must not let us pin its request.
     * relaxed: stable while the slot is not FREE; a stale look only refuses
     * the pin, or loses the CAS below. */
    if (atomic_load_explicit(&s->owner, memory_order_relaxed)
        != rr_owner_word(gen, rr_self_ident()))
        return -EPERM;
    uint64_t v = rr_ctl(gen, RR_SLOT_READY);
    /* acquire ↔ the release CAS in rr_slot_publish: the reply is visible */
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, &v, rr_ctl(gen, RR_SLOT_PINNED),
                                                 memory_order_acquire, memory_order_acquire)) {
        if (rr_ctl_gen(v) != gen)
            return -ESTALE;
        if (rr_ctl_state(v) == RR_SLOT_READING)
            return -EBUSY; /* somebody copies it out (or died doing so): copy it too */
        return in_flight(rr_ctl_state(v)) ? -EAGAIN : -ESTALE;
    }
    show_reply(pool, s, r);
    return 0;
}

int rr_slot_int_peek(rr_slots *pool, uint64_t id, int64_t *value)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* acquire ↔ the release CAS in rr_slot_publish: the value is visible */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    if (v != rr_ctl(gen, RR_SLOT_READY)) {
        if (rr_ctl_gen(v) != gen)
            return -ESTALE;
        /* READING: somebody views it (or died or stopped doing so, which
         * nothing else would end while we live): view it too */
        if (rr_ctl_state(v) == RR_SLOT_READING)
            return -EBUSY;
        return in_flight(rr_ctl_state(v)) ? -EAGAIN : -ESTALE;
    }
    /* relaxed atomics: if clear() frees the slot now, a new replier may write
     * it; the caller's rr_resp_discard then fails and drops what we read */
    if (RR_READ_ONCE(s->flags) & RR_FLAG_ERROR)
        return -EREMOTEIO;
    *value = RR_READ_ONCE(s->value);
    return 0;
}

/* Frees the slot of request `id` from state `from`; -ESTALE if not there. */
static int free_id(rr_slots *pool, uint64_t id, uint32_t from)
{
    rr_slot *s = slot_of(pool, id);
    uint64_t v = rr_ctl(rr_id_gen(id), from);
    return s && free_from(pool, s, &v) ? 0 : -ESTALE;
}

int rr_slot_release(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* Viewed by rr_slot_view, or (a caller that read nothing, or another
     * reader gave it back) READY; never PINNED: that is a View's, which
     * rr_slot_unpin ends. One loop, not a try from each: another reader may
     * move it between READING and READY in between, and both tries would
     * fail on a reply still there (F6 in rr_slots.pml). acquire, as in
     * free_to. */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    while (v == rr_ctl(gen, RR_SLOT_READING) || v == rr_ctl(gen, RR_SLOT_READY))
        if (free_from(pool, s, &v))
            return 0;
    return -ESTALE;
}

/* Gives a reply its reader could not use back (from READING or PINNED to
 * READY), for another try. */
static int back_to_ready(rr_slots *pool, uint64_t id, uint32_t from)
{
    rr_slot *s = slot_of(pool, id);
    uint64_t v = rr_ctl(rr_id_gen(id), from);
    /* release ↔ the next viewer's acquire CAS: our reads are done */
    if (!s || !atomic_compare_exchange_strong_explicit(&s->ctl, &v,
                                                       rr_ctl(rr_id_gen(id), RR_SLOT_READY),
                                                       memory_order_release, memory_order_relaxed))
        return -ESTALE;
    rr_word_wake_after_rmw(rr_ctl_futex(s), &s->waiters, INT_MAX);
    return 0;
}

int rr_slot_unpin(rr_slots *pool, uint64_t id, bool free)
{
    return free ? free_id(pool, id, RR_SLOT_PINNED) : back_to_ready(pool, id, RR_SLOT_PINNED);
}

int rr_slot_unview(rr_slots *pool, uint64_t id) { return back_to_ready(pool, id, RR_SLOT_READING); }

int rr_slot_discard(rr_slots *pool, uint64_t id) { return free_id(pool, id, RR_SLOT_READY); }

/* Ends a reply being written: the writer's publish then fails and frees the
 * slot. false, with *v updated, if the slot moved. */
static bool cancel_writing(rr_slot *s, uint64_t *v)
{
    /* release ↔ the acquire in free_from, which the writer (or a sweep, its
     * writer dead) runs on CANCELLED; acquire on failure: the caller decides
     * again from what it finds */
    uint64_t cancelled = rr_ctl(rr_ctl_gen(*v), RR_SLOT_CANCELLED);
    if (!atomic_compare_exchange_strong_explicit(&s->ctl, v, cancelled,
                                                 memory_order_release, memory_order_acquire))
        return false;
    rr_word_wake_after_rmw(rr_ctl_futex(s), &s->waiters, INT_MAX);
    return true;
}

int rr_slot_cancel(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return -ESTALE;
    uint32_t gen = rr_id_gen(id);
    /* acquire ↔ the release CASes of ctl (the claim, the publish): we decide
     * from the state they left */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    for (;;) {
        if (rr_ctl_gen(v) != gen)
            return -ESTALE;
        switch (rr_ctl_state(v)) {
        case RR_SLOT_ACQUIRED: /* a claim then fails on the new generation */
            if (free_from(pool, s, &v))
                return 0;
            break;
        case RR_SLOT_WRITING:
            if (cancel_writing(s, &v))
                return 0;
            break;
        case RR_SLOT_READY:
        case RR_SLOT_READING:
            return -EBUSY; /* the reply won */
        default:
            return -ESTALE;
        }
    }
}

bool rr_slot_is_acquired(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    /* relaxed: a check before the push; clear() racing past it is a clear
     * that came just after the send */
    return s && atomic_load_explicit(&s->ctl, memory_order_relaxed)
        == rr_ctl(rr_id_gen(id), RR_SLOT_ACQUIRED);
}

int rr_slot_id_live(rr_slots *pool, uint64_t id)
{
    rr_slot *s = slot_of(pool, id);
    if (!s)
        return 0;
    /* acquire ↔ the release CASes of ctl, as in rr_slot_cancel */
    uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
    return rr_ctl_gen(v) == rr_id_gen(id)
        && (in_flight(rr_ctl_state(v)) || rr_ctl_state(v) == RR_SLOT_READY
            || rr_ctl_state(v) == RR_SLOT_READING);
}

void rr_slots_clear(rr_slots *pool)
{
    for (uint32_t i = 0; i < pool->n; i++) {
        rr_slot *s = rr_slot_at(pool, i);
        /* acquire ↔ the release CASes of ctl, as in rr_slot_cancel */
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
        for (;;) {
            uint32_t st = rr_ctl_state(v);
            if (st == RR_SLOT_WRITING) {
                if (cancel_writing(s, &v))
                    break;
            } else if (st == RR_SLOT_ACQUIRED || st == RR_SLOT_READY) {
                if (free_from(pool, s, &v))
                    break;
            } else {
                break; /* free, cancelled, or a reader has it: it loses nothing */
            }
        }
    }
    rr_waitq_wake(&pool->hdr->slot_free, INT_MAX);
}

void rr_slots_count(rr_slots *pool, rr_stats *st)
{
    for (uint32_t i = 0; i < pool->n; i++) {
        rr_slot *s = rr_slot_at(pool, i);
        /* relaxed: a snapshot for statistics */
        uint32_t state = rr_ctl_state(atomic_load_explicit(&s->ctl, memory_order_relaxed));
        if (state == RR_SLOT_FREE)
            st->slots_free++;
        else if (state == RR_SLOT_READY || state == RR_SLOT_READING || state == RR_SLOT_PINNED)
            st->slots_ready++;
        else
            st->slots_acquired++;
        st->replies += atomic_load_explicit(&s->replies, memory_order_relaxed);
    }
}

/* Remembers a few verdicts so a sweep asks about each process once (by the
 * low 40 bits of an owner word or worker record: start time | pid). */
typedef struct proc_cache {
    uint64_t proc[8];
    bool alive[8];
    int n;
} proc_cache;

static bool cached_alive(proc_cache *k, uint64_t word)
{
    uint64_t proc = word & RR_PROC_MASK;
    for (int i = 0; i < k->n; i++)
        if (k->proc[i] == proc)
            return k->alive[i];
    bool alive = rr_proc_alive(proc);
    int i = k->n < 8 ? k->n++ : (int)(proc % 8);
    k->proc[i] = proc;
    k->alive[i] = alive;
    return alive;
}

/* Contract: any process, any time. A slot is freed only when the process that
 * holds it is dead: its owner (judged before its state is read, so the state
 * is the one the dead owner left, and re-read after, so that it is still the
 * same owner's), or its writer in WRITING and CANCELLED. A FREE slot's owner
 * word is cleared when it is a leftover or its acquirer died acquiring. */
void rr_slots_sweep(rr_slots *pool, int64_t period_ns)
{
    rr_header *h = pool->hdr;
    int64_t now = rr_now_ns();
    /* relaxed: a rate limit; the CAS elects one sweeper per period. A time in
     * the future (a forged file) counts as long ago; unsigned arithmetic, as
     * a forged time may be anything. */
    int64_t last = atomic_load_explicit(&h->last_sweep, memory_order_relaxed);
    if ((uint64_t)now - (uint64_t)last < (uint64_t)period_ns && period_ns > 0)
        return;
    if (!atomic_compare_exchange_strong_explicit(&h->last_sweep, &last, now,
                                                 memory_order_relaxed, memory_order_relaxed)
        && period_ns > 0)
        return;
    uint64_t me = rr_proc_bits(rr_self_ident());
    proc_cache k = {.n = 0};
    for (uint32_t i = 0; i < pool->n; i++) {
        rr_slot *s = rr_slot_at(pool, i);
        /* acquire ↔ the release CAS of owner in free_from (an owner we read
         * is not older than the last free) */
        uint64_t owner = atomic_load_explicit(&s->owner, memory_order_acquire);
        bool owner_dead = owner != 0 && (owner & RR_PROC_MASK) != me && !cached_alive(&k, owner);
        /* acquire ↔ the acq_rel CASes on ctl: the owner and record we read
         * next are at least as new as this state */
        uint64_t v = atomic_load_explicit(&s->ctl, memory_order_acquire);
        uint32_t st = rr_ctl_state(v);
        if (atomic_load_explicit(&s->owner, memory_order_relaxed) != owner)
            continue; /* freed and taken again since we read the owner */
        if (st == RR_SLOT_FREE) {
            /* a leftover, or an acquirer that died acquiring: ctl stays FREE */
            if (owner != 0 && (owner_dead || rr_owner_older(owner, rr_ctl_gen(v) + 1))
                /* release ↔ the acquire CAS of owner in try_acquire */
                && atomic_compare_exchange_strong_explicit(&s->owner, &owner, 0,
                                                           memory_order_release,
                                                           memory_order_relaxed))
                rr_waitq_wake_after_rmw(&h->slot_free, 1);
            continue;
        }
        if (st == RR_SLOT_WRITING || st == RR_SLOT_CANCELLED) {
            /* the writer holds it; a CANCELLED one nobody else will free */
            if (!owner_dead && st == RR_SLOT_WRITING)
                continue;
            uint64_t w = worker_for(s, rr_ctl_gen(v), st);
            RR_TEST_HOOK(rr_test_before_verdict);
            if (!w || cached_alive(&k, w) || !record_still(s, w))
                continue;
        } else if (!owner_dead) {
            continue;
        }
        if (free_from(pool, s, &v))
            atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
    }
}
