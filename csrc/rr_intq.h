/* The Int request queue: a lock-free bounded MPMC ring (described at the
 * top of rr_intq.c, modelled in rr_intq.pml). Its channel operations go
 * through rr_intq_ops (rr_queue.h); the receive is here.
 *
 * Errors as in reqrep.h. uses: rr_queue.h */
#ifndef RR_INTQ_H
#define RR_INTQ_H

#include "rr_queue.h"

#include <stdint.h>

typedef struct rr_intq {
    rr_ring ring; /* first: see rr_ring */
    /* the claimed or taken cell this handle last found at the head, and
     * since when (relaxed: a heuristic per handle) */
    _Atomic uint64_t stall_pos, stall_turn;
    _Atomic int64_t stall_since;
} rr_intq;

extern const rr_queue_ops rr_intq_ops;

/* rr_int_recv (reqrep.h). Any thread, any number at once. */
int rr_intq_recv(rr_intq *q, int64_t deadline, int64_t *value, uint64_t *id);

#endif
