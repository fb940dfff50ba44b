/* The request queues' interface: what a channel needs of its queue, as a
 * const table of functions (rr_queue_ops), and what the two queues share
 * (the ring's geometry, the receivers' wait). The Str queue (rr_strq.c)
 * and the Int queue (rr_intq.c) each provide one table; the channel picks
 * it by variant when the handle is built (rr_open.c), and composes its
 * operations through it (rr_chan.c). Queues never call into the channel.
 *
 * Errors as in reqrep.h. uses: rr_format.h, rr_iov.h, rr_wait.h, rr_slots.h */
#ifndef RR_QUEUE_H
#define RR_QUEUE_H

#include "rr_format.h"
#include "rr_iov.h"
#include "rr_slots.h"
#include "rr_wait.h"

#include <stdbool.h>
#include <stdint.h>

/* What both queues hold of their ring; the first member of each queue's
 * state, so that the channel can read it whatever the variant. */
typedef struct rr_ring {
    rr_header *hdr;
    uint8_t *cells;     /* req_cap cells of one line */
    uint64_t mask;      /* req_cap - 1 */
    uint32_t cap;       /* req_cap, a power of two */
    uint32_t shift;     /* log2(req_cap) */
    rr_waiter *wait;    /* the handle's: receivers' waits, the Str lock */
    rr_slots *slots;    /* the handle's: a take records its taker there */
} rr_ring;

/* A request on its way into a queue: its slot's id, and its payload. */
typedef struct rr_request {
    uint64_t id;
    const rr_iovec *iov; /* Str: the payload's pieces, len bytes in all */
    uint32_t niov;      /* Str */
    uint32_t len, flags; /* Str */
    int64_t value;      /* Int */
    int64_t deadline;   /* the send's: how long a Str push may wait for the lock */
} rr_request;

typedef struct rr_queue_ops {
    /* One try at queueing r: 1 queued, 0 full, RR_AGAIN_SOON (look again
     * soon), < 0 an error. Any thread; after it queued r a receiver may take
     * it at once. The caller wakes the receivers (the push ends with an
     * RMW: rr_waitq_wake_after_rmw). */
    int (*push)(void *q, const rr_request *r);
    /* A cheap lock-free hint that a push may succeed (polled while spinning). */
    bool (*room)(void *q);
    /* rr_wait_request's look: 1 a request is queued, 0 none, RR_AGAIN_SOON
     * somebody is inside an operation at the head; takes nothing. */
    int (*queued)(void *q);
    /* A cheap hint that `queued` may say 1 (polled while spinning). */
    bool (*queued_hint)(void *q);
    /* clear()'s part: drops every queued request; 0, or an error on which
     * nothing changed (-EINTR, -ECANCELED). */
    int (*clear)(void *q);
    /* Whether request `id` may still be queued (rr_holds_fn, rr_slots.h). */
    bool (*holds)(const void *q, uint64_t id);
    /* The arena's size and the bytes in use (an estimate while sends run);
     * 0 and 0 for a queue without one. For statistics. */
    void (*arena)(void *q, uint64_t *cap, uint64_t *used);
    /* Testing: takes the queue's lock and keeps it; NULL for a queue without. */
    int (*hold_lock)(void *q);
} rr_queue_ops;

/* Receivers sleep on not_empty, and poll: a send wakes one receiver, and one
 * killed after its wake-up but before its take would otherwise strand the
 * request until the next send. */
#define RR_RECV_POLL_NS 50000000
static inline int rr_recv_wait(rr_ring *ring, rr_attempt_fn attempt, rr_peek_fn peek, void *arg,
                               int64_t deadline)
{
    return rr_waitq_wait(ring->wait, &ring->hdr->not_empty, attempt, peek, arg, deadline,
                         RR_RECV_POLL_NS);
}

#endif
