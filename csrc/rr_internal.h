/* Internal layout and helpers shared by the core's files. Not installed. */
#ifndef RR_INTERNAL_H
#define RR_INTERNAL_H

#include "reqrep.h"
#include "rr_barrier.h"
#include "rr_format.h"
#include "rr_lock.h"
#include "rr_proc.h"
#include "rr_test_hooks.h"
#include "rr_wait.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the process-local handle ---- */

typedef struct rr_map {
    _Atomic uint32_t refs;
    uint8_t *base;
    uint64_t size;
    int fd;          /* file or memfd, -1 for anonymous */
    int is_memfd;
} rr_map;

struct rr_chan {
    rr_map *map;
    rr_header *hdr;
    rr_geometry geom;     /* private copy, validated at open: never re-read */
    uint64_t mask;        /* req_cap - 1 */
    uint32_t shift;       /* log2(req_cap) */
    uint64_t slot_stride;
    rr_bell *bells;
    uint32_t bell;        /* 1 + the bell this handle's requests ring, 0 = none */
    uint8_t *cells;
    uint8_t *slots;
    uint8_t *arena;
    _Atomic uint32_t slot_hint; /* where the next slot scan starts (relaxed: a hint) */
    uint32_t locked_n;    /* Str: entries visible to the current recv_begin */
    _Atomic uint32_t sends; /* counts acquires, to look at the sweep clock now and then */
    _Atomic int64_t next_worker_check; /* when a waiting client next checks its worker */
    _Atomic uint64_t checked_id;       /* ...of this request: another request checks at once */
    _Atomic uint32_t first_looks; /* counts reply waits (relaxed: a tick, see rr_slots.c) */
    _Atomic uint32_t stop_wait;   /* rr_wake_receivers: end this handle's rr_wait_request */
    /* Int: the claimed cell this handle last found at the head, and since when
     * (rr_intq.c; relaxed: a heuristic per handle) */
    _Atomic uint64_t stall_pos, stall_turn;
    _Atomic int64_t stall_since;
    rr_waiter wait; /* this handle's waits (rr_wait.h) */
};

/* ---- layout (rr_layout.c) ---- */
int rr_layout_compute(const rr_geometry *g, rr_hdr_geom *out);
int rr_layout_validate(const rr_hdr_geom *h, uint64_t file_size, uint32_t variant,
                       rr_error *err);

/* ---- waiting on the channel (rr_chan.c, over rr_wait.h) ----
 * rr_wait_until with attempts on the channel and the handle's waiter. */
typedef int (*rr_chan_attempt_fn)(rr_chan *c, void *arg);
typedef bool (*rr_chan_peek_fn)(rr_chan *c, void *arg);
int rr_chan_wait(rr_chan *c, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                 rr_chan_attempt_fn attempt, rr_chan_peek_fn peek, void *arg, int64_t deadline,
                 int64_t poll_ns);
/* Receivers sleep on not_empty, and poll: a send wakes one receiver, and one
 * killed after its wake-up but before its take would otherwise strand the
 * request until the next send. */
#define RR_RECV_POLL_NS 50000000
static inline int rr_recv_wait(rr_chan *c, rr_chan_attempt_fn attempt, rr_chan_peek_fn peek,
                               void *arg, int64_t deadline)
{
    rr_waitq *q = &c->hdr->not_empty;
    return rr_chan_wait(c, &q->seq, &q->waiters, attempt, peek, arg, deadline, RR_RECV_POLL_NS);
}


/* ---- slots (rr_slots.c) ---- */
static inline rr_slot *rr_slot_at(rr_chan *c, uint32_t idx)
{
    return (rr_slot *)(c->slots + (uint64_t)idx * c->slot_stride);
}
int rr_slot_acquire(rr_chan *c, int64_t deadline, uint64_t *id);
void rr_slot_abandon(rr_chan *c, uint64_t id);
bool rr_slot_is_acquired(rr_chan *c, uint64_t id);
/* A worker's reply: claim (records the writer, then ACQUIRED -> WRITING; NULL
 * if stale or claimed by another), fill, publish (-ESTALE if cancelled or
 * taken back meanwhile: nothing was delivered). */
rr_slot *rr_slot_claim(rr_chan *c, uint64_t id);
int rr_slot_publish(rr_chan *c, rr_slot *s, uint64_t id);
void rr_bell_ring(rr_chan *c, uint32_t idx);
void rr_slots_count(rr_chan *c, rr_stats *st);
/* Records this process (or `ident`) as the one that took request `id`: only
 * the one that has it, once it has it (a take is exclusive). */
void rr_slot_mark_taken(rr_chan *c, uint64_t id);
void rr_slot_mark_taken_by(rr_chan *c, uint64_t id, uint64_t ident);
/* Frees the slots of dead clients; at most once per `period_ns` per channel
 * (0: now). */
void rr_slots_sweep(rr_chan *c, int64_t period_ns);
void rr_slots_clear(rr_chan *c);

/* ---- queues (rr_strq.c, rr_intq.c) ---- */
/* Sends share one shape: take a slot, then enqueue with the queue's attempt. */
int rr_send_common(rr_chan *c, rr_chan_attempt_fn push, rr_chan_peek_fn room, void *arg,
                   uint64_t *id, int64_t deadline);
int rr_strq_clear(rr_chan *c);
int rr_strq_wait_request(rr_chan *c, int64_t deadline);
int rr_intq_wait_request(rr_chan *c, int64_t deadline);
/* For the wait_request attempts: -ECANCELED once after rr_wake_receivers. */
static inline int rr_wait_stopped(rr_chan *c)
{
    /* relaxed: the waitq's fences order it against the waker's store */
    return atomic_exchange_explicit(&c->stop_wait, 0, memory_order_relaxed) ? -ECANCELED : 0;
}
uint64_t rr_strq_arena_used(rr_chan *c);
/* Whether request `id` may still be queued (Str: a worker killed between
 * recording itself as the taker and popping it left it there). A look
 * without the lock: "no" can be wrong only while a live worker pops it,
 * which then records itself. */
bool rr_strq_holds(rr_chan *c, uint64_t id);
void rr_intq_clear(rr_chan *c);

#endif
