/* The Int request queue: a lock-free bounded MPMC ring after Vyukov's, in
 * which every cell's `turn` word holds the lap of the ring the cell is on, its
 * state, and who is inside an operation there:
 *
 *   turn = lap (32 bits) << 32 | state (2 bits) << 30 | who (30 bits)
 *
 *   FREE(L) --claim--> CLAIMED(L, producer) --publish--> FULL(L)
 *   FULL(L) --take--> TAKEN(L, consumer) --release--> FREE(L + 1)
 *
 * Every step is a CAS or is made by the one process the cell names, so a
 * process killed half-way leaves a cell that says who it was. A consumer
 * that finds such a cell at the head for RR_CLAIM_STALL_NS, its process dead,
 * repairs it: a dead producer's claim is skipped (that request was never
 * sent), a dead consumer's take is recorded as its own in the request's slot
 * (its client then learns that the worker died) and the cell released. A
 * consumer records itself in the slot only after its take, so the record
 * names the one worker that has the request. head and tail only say where to
 * look: whoever finds one behind a cell that has moved on advances it, so a
 * process that dies before it advanced them leaves nothing stuck. All-zero is
 * the empty ring at lap 0, and a ring of one cell works too.
 * Modelled in rr_intq.pml, checked by csrc/tests/spin.sh. Its interface:
 * rr_intq.h, rr_queue.h. */
#include "rr_intq.h"
#include "rr_proc.h"

#include <errno.h>
#include <limits.h>

/* Retries after which a position that never becomes usable (a forged file)
 * counts as full/empty. */
#define RR_INTQ_RETRIES 4096
/* How long a claimed or taken cell at the head must stay so before a
 * consumer asks whether the process it names is alive, and how often it asks
 * again. */
#define RR_CLAIM_STALL_NS 20000000

static inline rr_int_cell *cell_at(const rr_intq *q, uint64_t pos)
{
    return (rr_int_cell *)q->ring.cells + (pos & q->ring.mask);
}
static inline uint32_t lap_of(const rr_intq *q, uint64_t pos)
{
    return (uint32_t)(pos >> q->ring.shift);
}

/* This process as a claimant: pid and the low bits of its start time. */
static uint32_t self_who(void)
{
    return rr_who(rr_self_ident());
}

/* Moves a position counter from pos to pos + 1 unless somebody already did.
 * The cells' turns order the data; head and tail only say where to look, and
 * every reader checks the cell it finds there. release, though, keeps a
 * receiver's free of its cell before this RMW, which rr_intq_recv's wake-up
 * counts on as its barrier (rr_waitq_wake_after_rmw). */
static void advance(_Atomic uint64_t *ctr, uint64_t pos)
{
    atomic_compare_exchange_strong_explicit(ctr, &pos, pos + 1, memory_order_release,
                                            memory_order_relaxed);
}

static int push_attempt(void *qv, const rr_request *op)
{
    rr_intq *q = qv;
    rr_header *h = q->ring.hdr;
    uint32_t who = self_who();
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(q, pos);
        uint32_t lap = lap_of(q, pos);
        /* acquire ↔ the release of the cell by the last lap's consumer (or
         * its repairer): it is done with the cell before we write it */
        uint64_t t = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int32_t ahead = (int32_t)(rr_turn_lap(t) - lap);
        if (t == rr_turn(lap, RR_TURN_FREE, 0)) {
            uint64_t claimed = rr_turn(lap, RR_TURN_CLAIMED, who);
            /* the claim makes the position ours; acquire as for the load */
            if (!atomic_compare_exchange_strong_explicit(&cell->turn, &t, claimed,
                                                         memory_order_acquire,
                                                         memory_order_relaxed))
                continue; /* lost the claim: look at the cell again */
            advance(&h->tail, pos);
            /* release fence ↔ the acquire fence in repair(): a repairer that
             * reads our id below also sees our claim, and leaves the id alone */
            rr_fence_release();
            /* relaxed atomics: the publish below orders them */
            RR_WRITE_ONCE(cell->value, op->value);
            RR_WRITE_ONCE(cell->id, op->id);
            /* release ↔ the consumer's acquire load of turn: the entry is
             * visible before FULL is. A CAS, not a store: a claim taken for
             * dead (see claim_stalled) must not be overwritten. */
            if (atomic_compare_exchange_strong_explicit(&cell->turn, &claimed,
                                                        rr_turn(lap, RR_TURN_FULL, 0),
                                                        memory_order_release,
                                                        memory_order_relaxed))
                return 1;
            pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
            continue; /* our claim was revoked: the request is not queued, go again */
        }
        if ((ahead == 0 && rr_turn_state(t) != RR_TURN_FREE) || ahead >= 1)
            advance(&h->tail, pos); /* taken at this lap, or done with: tail is behind */
        else if (ahead == -1 && rr_turn_state(t) != RR_TURN_FREE)
            return 0; /* the previous lap's entry is still here: full */
        pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    }
    return RR_AGAIN_SOON; /* contention or a forged ring: not now, look again soon */
}

static bool has_room(void *qv)
{
    rr_intq *q = qv;
    rr_header *h = q->ring.hdr;
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(q, pos)->turn, memory_order_relaxed)
        == rr_turn(lap_of(q, pos), RR_TURN_FREE, 0);
}

/* True once this handle has seen the turn `t` (claimed or taken) at `pos` for
 * RR_CLAIM_STALL_NS and the process it names is dead. The memo is per handle
 * and relaxed: threads sharing a handle at worst delay the verdict. */
static bool claim_stalled(rr_intq *q, uint64_t pos, uint64_t t)
{
    int64_t now = rr_now_ns();
    if (atomic_load_explicit(&q->stall_pos, memory_order_relaxed) != pos
        || atomic_load_explicit(&q->stall_turn, memory_order_relaxed) != t) {
        atomic_store_explicit(&q->stall_pos, pos, memory_order_relaxed);
        atomic_store_explicit(&q->stall_turn, t, memory_order_relaxed);
        atomic_store_explicit(&q->stall_since, now, memory_order_relaxed);
        return false;
    }
    if (now - atomic_load_explicit(&q->stall_since, memory_order_relaxed) < RR_CLAIM_STALL_NS)
        return false;
    atomic_store_explicit(&q->stall_since, now, memory_order_relaxed); /* ask again later */
    uint32_t who = rr_turn_who(t);
    return !rr_who_alive(who);
}

/* Frees a cell whose claim or take `t` belongs to a dead process; the slot
 * of a request a dead consumer took records that consumer as its taker, so
 * its client learns of the death. */
static void repair(rr_intq *q, rr_int_cell *cell, uint64_t t, uint32_t lap)
{
    rr_header *h = q->ring.hdr;
    if (rr_turn_state(t) == RR_TURN_TAKEN) {
        uint32_t who = rr_turn_who(t);
        uint64_t dead = rr_ident(rr_who_pid(who), rr_who_start(who));
        /* relaxed atomic: checked below, seqlock-style */
        uint64_t id = RR_READ_ONCE(cell->id);
        /* The id is the taken request's only if the cell is still in the turn
         * we judged: the taker may have released it just before it died, and
         * the next lap's producer be writing its own id there (found by
         * rr_intq.pml). acquire fence ↔ the producer's release fence after
         * its claim. */
        rr_fence_acquire();
        if (atomic_load_explicit(&cell->turn, memory_order_relaxed) != t)
            return;
        rr_slot_mark_taken_by(q->ring.slots, id, dead);
    }
    /* release ↔ the next lap's producer's acquire load: nothing to hand over
     * but the position itself */
    if (atomic_compare_exchange_strong_explicit(&cell->turn, &t, rr_turn(lap + 1, RR_TURN_FREE, 0),
                                                memory_order_release, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
        rr_waitq_wake(&h->not_full, INT_MAX);
    }
}

/* What is at the head: 1 an entry (its position and turn in *pos, *turn), 0
 * nothing, RR_AGAIN_SOON nothing while a producer or consumer is inside its
 * operation there. On the way it advances head past cells that have moved on
 * and repairs the cells of dead processes. */
static int head_entry(rr_intq *q, uint64_t *pos_out, uint64_t *turn_out)
{
    rr_header *h = q->ring.hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(q, pos);
        uint32_t lap = lap_of(q, pos);
        /* acquire ↔ the producer's release CAS to FULL */
        uint64_t t = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int32_t ahead = (int32_t)(rr_turn_lap(t) - lap);
        if (ahead == 0) {
            uint32_t state = rr_turn_state(t);
            if (state == RR_TURN_FULL) {
                *pos_out = pos;
                *turn_out = t;
                return 1;
            }
            if (state == RR_TURN_FREE)
                return 0;
            /* claimed or taken: somebody is inside a push or a pop here */
            if (!claim_stalled(q, pos, t))
                return RR_AGAIN_SOON;
            repair(q, cell, t, lap);
            continue; /* look at the cell again */
        }
        if (ahead < 0)
            return 0; /* a cell behind head: a forged ring */
        advance(&h->head, pos); /* done with at this lap already: head is behind */
        pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    }
    return RR_AGAIN_SOON; /* contention or a forged ring: not now, look again soon */
}

typedef struct int_pop {
    rr_intq *q;
    int64_t value;
    uint64_t id;
} int_pop;

static int pop_attempt(void *arg)
{
    int_pop *op = arg;
    rr_intq *q = op->q;
    rr_header *h = q->ring.hdr;
    uint32_t who = self_who();
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        uint64_t pos, t;
        int rc = head_entry(q, &pos, &t);
        if (rc != 1)
            return rc;
        rr_int_cell *cell = cell_at(q, pos);
        uint32_t lap = lap_of(q, pos);
        /* The take: the entry is ours alone from here. acquire ↔ the
         * producer's release CAS to FULL (as for the load in head_entry) */
        if (!atomic_compare_exchange_strong_explicit(&cell->turn, &t,
                                                     rr_turn(lap, RR_TURN_TAKEN, who),
                                                     memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        int64_t value = RR_READ_ONCE(cell->value);
        uint64_t id = RR_READ_ONCE(cell->id);
        /* Record ourselves as the taker before the request leaves the ring: a
         * worker killed from here on is named either here or in the cell. */
        rr_slot_mark_taken(q->ring.slots, id);
        /* release ↔ the next lap's producer's acquire load of turn: we are
         * done reading the cell */
        atomic_store_explicit(&cell->turn, rr_turn(lap + 1, RR_TURN_FREE, 0), memory_order_release);
        advance(&h->head, pos);
        op->value = value;
        op->id = id;
        return 1;
    }
    return RR_AGAIN_SOON;
}

static bool has_entry(rr_intq *q)
{
    rr_header *h = q->ring.hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(q, pos)->turn, memory_order_relaxed)
        == rr_turn(lap_of(q, pos), RR_TURN_FULL, 0);
}

static bool pop_peek(void *arg)
{
    int_pop *op = arg;
    return has_entry(op->q);
}

static int queued(void *q)
{
    uint64_t pos, t;
    return head_entry(q, &pos, &t);
}

static bool queued_hint(void *q) { return has_entry(q); }

int rr_intq_recv(rr_intq *q, int64_t deadline, int64_t *value, uint64_t *id)
{
    int_pop op = {q, 0, 0};
    int rc;
    if (deadline <= RR_NOWAIT) {
        /* one look; say so when somebody is inside an operation at the head */
        rc = pop_attempt(&op);
        rc = rc == 1 ? 0 : rc == RR_AGAIN_SOON ? -EINPROGRESS : rc < 0 ? rc : -EAGAIN;
        if ((rc == -EAGAIN || rc == -EINPROGRESS) && deadline == RR_NOWAIT) /* RR_TRY: a spinner's */
            atomic_fetch_add_explicit(&q->ring.hdr->recv_empty, 1, memory_order_relaxed);
    } else {
        rc = rr_recv_wait(&q->ring, pop_attempt, pop_peek, &op, deadline);
    }
    if (rc)
        return rc;
    *value = op.value;
    *id = op.id;
    rr_waitq_wake_after_rmw(&q->ring.hdr->not_full, 1); /* after the head's advance CAS */
    /* A wake-up we used may have been meant for the next entry too (its
     * sender woke one receiver, us): pass it on while entries remain. */
    if (has_entry(q))
        rr_waitq_wake(&q->ring.hdr->not_empty, 1);
    return 0;
}

static int clear(void *q)
{
    int_pop op = {q, 0, 0};
    for (uint32_t i = 0; i < op.q->ring.cap && pop_attempt(&op) == 1; i++)
        ;
    return 0;
}

/* A taker records itself only after its take (a CAS): a request whose taker
 * is recorded has left the queue. */
static bool holds(const void *q, uint64_t id) { return false; }

static void arena(void *q, uint64_t *cap, uint64_t *used) { *cap = *used = 0; }

const rr_queue_ops rr_intq_ops = {
    .push = push_attempt,
    .room = has_room,
    .queued = queued,
    .queued_hint = queued_hint,
    .clear = clear,
    .holds = holds,
    .arena = arena,
    .hold_lock = NULL, /* lock-free */
};
