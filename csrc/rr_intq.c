/* The Int request queue: a lock-free bounded MPMC ring after Vyukov's, in
 * which every cell's `turn` word holds the lap of the ring the cell is on, its
 * state, and who is inside a push there:
 *
 *   turn = lap (32 bits) << 32 | state (2 bits) << 30 | who (30 bits)
 *
 *   FREE(L) --claim (producer CAS)--> CLAIMED(L, who) --publish--> FULL(L)
 *   FULL(L) --take (consumer CAS)--> FREE(L + 1)
 *   CLAIMED(L, who) --repair (consumer CAS, once `who` is dead)--> FREE(L + 1)
 *
 * A take is one CAS, so a consumer dies before it or after it, never inside
 * it. A producer is inside its push from its claim to its publish; if it dies
 * there, the cell names it (pid and start time bits), and a consumer that
 * finds the cell at the head for RR_CLAIM_STALL_NS, with `who` dead, frees the
 * position: that request was never sent. head and tail only say where to look:
 * whoever finds one of them behind a cell that has moved on advances it, so a
 * process that dies before it advanced them leaves nothing stuck. All-zero is
 * the empty ring at lap 0, and a ring of one cell works too. */
#include "rr_internal.h"

#include <limits.h>

/* Retries after which a position that never becomes usable (a forged file)
 * counts as full/empty. */
#define RR_INTQ_RETRIES 4096
/* How long a claimed cell at the head must stay claimed before a consumer
 * asks whether its producer is alive, and how often it asks again. */
#define RR_CLAIM_STALL_NS 20000000

enum { TURN_FREE = 0, TURN_CLAIMED = 1, TURN_FULL = 2 };

#define WHO_MASK ((UINT32_C(1) << RR_TURN_WHO_BITS) - 1)
#define WHO_PID_MASK ((UINT32_C(1) << RR_WORKER_PID_BITS) - 1)
#define WHO_START_BITS (RR_TURN_WHO_BITS - RR_WORKER_PID_BITS)

static inline uint64_t mk_turn(uint32_t lap, uint32_t state, uint32_t who)
{
    return (uint64_t)lap << 32 | (uint64_t)state << RR_TURN_WHO_BITS | who;
}
static inline uint32_t turn_lap(uint64_t t) { return (uint32_t)(t >> 32); }
static inline uint32_t turn_state(uint64_t t) { return (uint32_t)(t >> RR_TURN_WHO_BITS) & 3u; }
static inline uint32_t turn_who(uint64_t t) { return (uint32_t)t & WHO_MASK; }

static inline rr_int_cell *cell_at(rr_chan *c, uint64_t pos)
{
    return (rr_int_cell *)c->cells + (pos & c->mask);
}
static inline uint32_t lap_of(rr_chan *c, uint64_t pos) { return (uint32_t)(pos >> c->shift); }

/* This process as a claimant: pid and the low bits of its start time. */
static uint32_t self_who(void)
{
    uint64_t me = rr_self_ident();
    return ((uint32_t)(me >> 32) << RR_WORKER_PID_BITS | ((uint32_t)me & WHO_PID_MASK)) & WHO_MASK;
}

/* Moves a position counter from pos to pos + 1 unless somebody already did.
 * relaxed: the cells' turns order the data; head and tail only say where to
 * look, and every reader checks the cell it finds there. */
static void advance(_Atomic uint64_t *ctr, uint64_t pos)
{
    atomic_compare_exchange_strong_explicit(ctr, &pos, pos + 1, memory_order_relaxed,
                                            memory_order_relaxed);
}

typedef struct int_op {
    int64_t value;
    uint64_t id;
} int_op;

static int push_attempt(rr_chan *c, void *arg)
{
    int_op *op = arg;
    rr_header *h = c->hdr;
    uint32_t who = self_who();
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(c, pos);
        uint32_t lap = lap_of(c, pos);
        /* acquire ↔ the release take (or repair) CAS of the last lap's
         * consumer: it is done reading the cell before we write it */
        uint64_t t = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int32_t ahead = (int32_t)(turn_lap(t) - lap);
        if (t == mk_turn(lap, TURN_FREE, 0)) {
            /* the claim makes the position ours; acquire as for the load */
            if (atomic_compare_exchange_strong_explicit(&cell->turn, &t,
                                                        mk_turn(lap, TURN_CLAIMED, who),
                                                        memory_order_acquire,
                                                        memory_order_relaxed)) {
                advance(&h->tail, pos);
                /* relaxed atomics: a consumer that loses its take CAS may read them */
                __atomic_store_n(&cell->value, op->value, __ATOMIC_RELAXED);
                __atomic_store_n(&cell->id, op->id, __ATOMIC_RELAXED);
                /* release ↔ the consumer's acquire load of turn: the entry is
                 * visible before FULL is */
                atomic_store_explicit(&cell->turn, mk_turn(lap, TURN_FULL, 0),
                                      memory_order_release);
                return 1;
            }
            continue; /* lost the claim: look at the cell again */
        }
        if (ahead == 0 || (ahead == 1 && turn_state(t) == TURN_FREE)) {
            advance(&h->tail, pos); /* claimed or done at this lap: tail is behind */
        } else if (ahead == -1) {
            return 0; /* the previous lap's entry is still here: full */
        }
        pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    }
    return 0;
}

static bool has_room(rr_chan *c, void *arg)
{
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(c, pos)->turn, memory_order_relaxed)
        == mk_turn(lap_of(c, pos), TURN_FREE, 0);
}

int rr_int_send(rr_chan *c, int64_t value, int64_t deadline, uint64_t *id)
{
    int_op op = {value, 0};
    int rc = rr_send_common(c, push_attempt, has_room, &op, &op.id, deadline);
    if (rc == 0)
        *id = op.id;
    return rc;
}

/* True once this handle has seen the claim `t` at `pos` for RR_CLAIM_STALL_NS
 * and its producer is dead. The memo is per handle and relaxed: threads
 * sharing a handle at worst delay the verdict. */
static bool claim_abandoned(rr_chan *c, uint64_t pos, uint64_t t)
{
    int64_t now = rr_now_ns();
    if (atomic_load_explicit(&c->stall_pos, memory_order_relaxed) != pos
        || atomic_load_explicit(&c->stall_turn, memory_order_relaxed) != t) {
        atomic_store_explicit(&c->stall_pos, pos, memory_order_relaxed);
        atomic_store_explicit(&c->stall_turn, t, memory_order_relaxed);
        atomic_store_explicit(&c->stall_since, now, memory_order_relaxed);
        return false;
    }
    if (now - atomic_load_explicit(&c->stall_since, memory_order_relaxed) < RR_CLAIM_STALL_NS)
        return false;
    atomic_store_explicit(&c->stall_since, now, memory_order_relaxed); /* ask again later */
    uint32_t who = turn_who(t);
    return !rr_pid_alive(who & WHO_PID_MASK, who >> RR_WORKER_PID_BITS, WHO_START_BITS);
}

/* What is at the head: 1 an entry (its position and turn in *pos, *turn), 0
 * nothing, RR_AGAIN_SOON nothing while a producer is inside its push there.
 * On the way it advances head past taken cells and repairs dead claims. */
static int head_entry(rr_chan *c, uint64_t *pos_out, uint64_t *turn_out)
{
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(c, pos);
        uint32_t lap = lap_of(c, pos);
        /* acquire ↔ the producer's release store of FULL */
        uint64_t t = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int32_t ahead = (int32_t)(turn_lap(t) - lap);
        if (ahead == 0 && turn_state(t) == TURN_FULL) {
            *pos_out = pos;
            *turn_out = t;
            return 1;
        }
        if (ahead == 0 && turn_state(t) == TURN_CLAIMED) {
            if (!claim_abandoned(c, pos, t))
                return RR_AGAIN_SOON;
            /* relaxed: the dead producer hands nothing over, the next lap's
             * producer overwrites whatever it left */
            if (atomic_compare_exchange_strong_explicit(&cell->turn, &t,
                                                        mk_turn(lap + 1, TURN_FREE, 0),
                                                        memory_order_relaxed,
                                                        memory_order_relaxed)) {
                atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
                rr_waitq_wake(&h->not_full, INT_MAX);
            }
            continue; /* look at the cell again */
        }
        if (ahead == 1 && turn_state(t) == TURN_FREE)
            advance(&h->head, pos); /* taken (or repaired): head is behind */
        else if (ahead <= 0)
            return 0; /* FREE at our lap: empty (anything else: a forged cell) */
        pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    }
    return 0;
}

static int pop_attempt(rr_chan *c, void *arg)
{
    int_op *op = arg;
    rr_header *h = c->hdr;
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        uint64_t pos, t;
        int rc = head_entry(c, &pos, &t);
        if (rc != 1)
            return rc;
        rr_int_cell *cell = cell_at(c, pos);
        /* Read the entry and record ourselves as its taker before the take: a
         * worker killed right after it must not leave a taken request that
         * nobody is known to hold. Relaxed atomic reads: if another consumer
         * takes it first, a later lap may be writing the cell, and we drop
         * what we read when our CAS fails. */
        int64_t value = __atomic_load_n(&cell->value, __ATOMIC_RELAXED);
        uint64_t id = __atomic_load_n(&cell->id, __ATOMIC_RELAXED), prev = 0;
        bool marked = rr_slot_mark_taken(c, id, &prev);
        /* The take. release ↔ the next lap's producer's acquire load of turn:
         * our reads of the cell are done before it may write it */
        if (atomic_compare_exchange_strong_explicit(&cell->turn, &t,
                                                    mk_turn(lap_of(c, pos) + 1, TURN_FREE, 0),
                                                    memory_order_release,
                                                    memory_order_relaxed)) {
            advance(&h->head, pos);
            op->value = value;
            op->id = id;
            return 1;
        }
        if (marked)
            rr_slot_unmark(c, id, prev);
    }
    return 0;
}

static bool has_entry(rr_chan *c, void *arg)
{
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(c, pos)->turn, memory_order_relaxed)
        == mk_turn(lap_of(c, pos), TURN_FULL, 0);
}

static int entry_attempt(rr_chan *c, void *arg)
{
    uint64_t pos, t;
    return head_entry(c, &pos, &t);
}

int rr_intq_wait_request(rr_chan *c, int64_t deadline)
{
    return rr_waitq_wait(c, &c->hdr->not_empty, entry_attempt, has_entry, NULL, deadline);
}

int rr_int_recv(rr_chan *c, int64_t deadline, int64_t *value, uint64_t *id)
{
    int_op op = {0, 0};
    int rc = rr_waitq_wait(c, &c->hdr->not_empty, pop_attempt, has_entry, &op, deadline);
    if (rc == -EAGAIN && deadline <= RR_NOWAIT)
        atomic_fetch_add_explicit(&c->hdr->recv_empty, 1, memory_order_relaxed);
    if (rc)
        return rc;
    *value = op.value;
    *id = op.id;
    rr_waitq_wake(&c->hdr->not_full, 1);
    return 0;
}

void rr_intq_clear(rr_chan *c)
{
    int_op op;
    for (uint32_t i = 0; i < c->geom.req_cap && pop_attempt(c, &op) == 1; i++)
        ;
}
