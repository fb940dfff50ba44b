/* The Str request queue: a ring of cells pointing into a circular arena,
 * both guarded by the queue lock (rr_lock.h). Its channel operations go
 * through rr_strq_ops (rr_queue.h); the receive, which only Str has in three
 * phases, is here.
 *
 * Errors as in reqrep.h. uses: rr_queue.h */
#ifndef RR_STRQ_H
#define RR_STRQ_H

#include "rr_queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rr_strq {
    rr_ring ring;        /* first: see rr_ring */
    uint8_t *arena;
    uint64_t arena_cap;
    uint32_t locked_n;   /* entries visible to the receive this handle has begun */
} rr_strq;

extern const rr_queue_ops rr_strq_ops;

/* Whether a request of `len` bytes can ever be queued (else -EMSGSIZE):
 * not longer than the arena, each entry's size rounded up to 8. */
static inline bool rr_strq_fits(const rr_strq *q, size_t len)
{
    return len <= UINT32_MAX && RR_ROUND_UP((uint64_t)len, 8) <= q->arena_cap;
}
/* rr_str_recv_begin, rr_str_recv_peek, rr_str_recv_end (reqrep.h). Between
 * begin and end the handle holds the queue lock: one receive at a time per
 * handle, and the same thread ends it. */
int rr_strq_recv_begin(rr_strq *q, int64_t deadline);
int rr_strq_recv_peek(rr_strq *q, uint32_t i, rr_entry *e);
void rr_strq_recv_end(rr_strq *q, uint32_t n);
/* rr_str_recv_pin, rr_str_unpin (reqrep.h) */
int rr_strq_recv_pin(rr_strq *q, uint32_t i, uint32_t *pin);
int rr_strq_unpin(rr_strq *q, uint32_t pin);
/* Whether request `id` may still be queued (Str: a worker killed between
 * recording itself as the taker and popping it left it there). A look
 * without the lock: "no" can be wrong only while a live worker pops it,
 * which then records itself. Any thread. */
bool rr_strq_holds(const rr_strq *q, uint64_t id);

#endif
