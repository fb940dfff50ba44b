/* The Int request queue: a lock-free bounded MPMC ring (Vyukov). A cell's
 * `turn` counts its uses: at position pos (lap L = pos / req_cap) it is free
 * for a producer when turn == 2L and holds that lap's entry when turn == 2L+1.
 * All-zero is the empty state, and a ring of one cell works too. */
#include "rr_internal.h"

#include <limits.h>

/* Retries after which a position that never becomes usable (a forged file, or
 * a peer that died between claiming and publishing a cell) counts as full/empty. */
#define RR_INTQ_RETRIES 4096

static inline rr_int_cell *cell_at(rr_chan *c, uint64_t pos)
{
    return (rr_int_cell *)c->cells + (pos & c->mask);
}

typedef struct int_op {
    int64_t value;
    uint64_t id;
} int_op;

static int push_attempt(rr_chan *c, void *arg)
{
    int_op *op = arg;
    rr_header *h = c->hdr;
    /* relaxed: the CAS below and the cell's turn decide */
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(c, pos);
        uint64_t lap = 2 * (pos >> c->shift);
        /* acquire ↔ the consumer's release of the cell in pop_attempt */
        uint64_t turn = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int64_t dif = (int64_t)(turn - lap);
        if (dif == 0) {
            /* relaxed: the cell's turn orders the data, not tail */
            if (atomic_compare_exchange_weak_explicit(&h->tail, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                /* relaxed atomics: consumers read them before they own the cell */
                __atomic_store_n(&cell->value, op->value, __ATOMIC_RELAXED);
                __atomic_store_n(&cell->id, op->id, __ATOMIC_RELAXED);
                /* release ↔ the consumer's acquire load of turn */
                atomic_store_explicit(&cell->turn, lap + 1, memory_order_release);
                return 1;
            }
        } else if (dif < 0) {
            return 0; /* the cell still holds an entry from the previous lap */
        } else {
            pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
        }
    }
    return 0;
}

static bool has_room(rr_chan *c, void *arg)
{
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->tail, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(c, pos)->turn, memory_order_relaxed)
        == 2 * (pos >> c->shift);
}

int rr_int_send(rr_chan *c, int64_t value, int64_t deadline, uint64_t *id)
{
    int_op op = {value, 0};
    int rc = rr_send_common(c, push_attempt, has_room, &op, &op.id, deadline);
    if (rc == 0)
        *id = op.id;
    return rc;
}

static int pop_attempt(rr_chan *c, void *arg)
{
    int_op *op = arg;
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (int i = 0; i < RR_INTQ_RETRIES; i++) {
        rr_int_cell *cell = cell_at(c, pos);
        uint64_t lap = 2 * (pos >> c->shift);
        /* acquire ↔ the producer's release store of turn */
        uint64_t turn = atomic_load_explicit(&cell->turn, memory_order_acquire);
        int64_t dif = (int64_t)(turn - (lap + 1));
        if (dif == 0) {
            /* Read the entry and record ourselves as its taker before taking
             * it: a worker killed after the head CAS must not leave a taken
             * request that nobody is known to hold. The reads are relaxed
             * atomics: a later lap may be writing the cell if we lose the CAS,
             * and then we drop what we read. */
            int64_t value = __atomic_load_n(&cell->value, __ATOMIC_RELAXED);
            uint64_t id = __atomic_load_n(&cell->id, __ATOMIC_RELAXED), prev = 0;
            bool marked = rr_slot_mark_taken(c, id, &prev);
            /* relaxed: the cell's turn orders the data, not head */
            if (atomic_compare_exchange_strong_explicit(&h->head, &pos, pos + 1,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed)) {
                op->value = value;
                op->id = id;
                /* release ↔ the next producer's acquire load: we are done reading */
                atomic_store_explicit(&cell->turn, lap + 2, memory_order_release);
                return 1;
            }
            if (marked)
                rr_slot_unmark(c, id, prev);
        } else if (dif < 0) {
            return 0;
        } else {
            pos = atomic_load_explicit(&h->head, memory_order_relaxed);
        }
    }
    return 0;
}

static bool has_entry(rr_chan *c, void *arg)
{
    rr_header *h = c->hdr;
    uint64_t pos = atomic_load_explicit(&h->head, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(c, pos)->turn, memory_order_relaxed)
        == 2 * (pos >> c->shift) + 1;
}

static int entry_attempt(rr_chan *c, void *arg) { return has_entry(c, arg); }

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
