/* Internal layout and helpers shared by the core's files. Not installed. */
#ifndef RR_INTERNAL_H
#define RR_INTERNAL_H

#include "reqrep.h"
#include "rr_barrier.h"
#include "rr_format.h"
#include "rr_test_hooks.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Threads of one handle that rr_interrupt can wake at once; more sleep in
 * stretches of RR_INTERRUPT_POLL_NS at most and look at the flag between. */
#define RR_SLEEPERS 16
#define RR_INTERRUPT_POLL_NS 20000000

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
    uint32_t spin_us;
    /* self-tuning (rr_wait.c); relaxed: per-handle heuristics, races only
     * cost a spin more or less */
    _Atomic uint32_t spin_fails, spin_skip, spin_backoff;
    _Atomic uint32_t slot_hint; /* where the next slot scan starts (relaxed: a hint) */
    uint32_t locked_n;    /* Str: entries visible to the current recv_begin */
    _Atomic uint32_t sends; /* counts acquires, to look at the sweep clock now and then */
    _Atomic int64_t next_worker_check; /* when a waiting client next checks its worker */
    _Atomic uint64_t checked_id;       /* ...of this request: another request checks at once */
    _Atomic uint32_t first_looks; /* counts reply waits (relaxed: a tick, see rr_slots.c) */
    _Atomic uint32_t stop_wait;   /* rr_wake_receivers: end this handle's rr_wait_request */
    /* rr_interrupt: set once and for good; every wait on this handle ends */
    _Atomic uint32_t interrupted;
    /* Who sleeps on which shared word, for rr_interrupt to wake (rr_wait.c):
     * an entry is claimed by writing this process's pid (another pid is a
     * leftover of the parent this process was forked from), then its word. */
    _Atomic int sleep_pid[RR_SLEEPERS];
    _Atomic uintptr_t sleep_word[RR_SLEEPERS];
    /* Int: the claimed cell this handle last found at the head, and since when
     * (rr_intq.c; relaxed: a heuristic per handle) */
    _Atomic uint64_t stall_pos, stall_turn;
    _Atomic int64_t stall_since;
};

/* ---- layout (rr_layout.c) ---- */
int rr_layout_compute(const rr_geometry *g, rr_hdr_geom *out);
int rr_layout_validate(const rr_hdr_geom *h, uint64_t file_size, uint32_t variant,
                       rr_error *err);

/* ---- waiting (rr_wait.c) ---- */
int rr_futex_wait(_Atomic uint32_t *word, uint32_t expect, int64_t deadline);
void rr_futex_wake(_Atomic uint32_t *word, int n);
/* A blocking operation as two callbacks: `attempt` tries it once (1 = done,
 * 0 = not now, RR_AGAIN_SOON, < 0 = error); `peek` is a cheap lock-free hint that an attempt
 * may succeed, polled while spinning. rr_wait_until spins (up to the handle's
 * budget), then sleeps on `q` until the attempt succeeds, the deadline passes
 * (-EAGAIN), a signal arrives (-EINTR) or rr_interrupt(c) was called
 * (-ECANCELED, also at once if it was before). `poll_ns` > 0 bounds each sleep so
 * that `attempt` can also notice what no waker announces (a dead peer). */
typedef int (*rr_attempt_fn)(rr_chan *c, void *arg);
/* An attempt's "not now, and look again within RR_SOON_NS even if nobody
 * wakes you": what it waits for may need a check that no waker announces. */
#define RR_AGAIN_SOON 2
#define RR_SOON_NS 10000000
typedef bool (*rr_peek_fn)(rr_chan *c, void *arg);
int rr_wait_until(rr_chan *c, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                  rr_attempt_fn attempt, rr_peek_fn peek, void *arg, int64_t deadline,
                  int64_t poll_ns);
/* For rr_interrupt: a thread about to sleep on `word` for handle c enters
 * it in c's table (the entry, or -1 when the table is full: then it sleeps
 * RR_INTERRUPT_POLL_NS at most at a time). It must then issue a seq_cst
 * fence before each look at rr_interrupted(c), and leave once awake. */
int rr_sleep_enter(rr_chan *c, _Atomic uint32_t *word);
void rr_sleep_leave(rr_chan *c, int entry);
static inline bool rr_interrupted(rr_chan *c)
{
    /* relaxed: the sleep protocol's fences order it (see rr_interrupt) */
    return atomic_load_explicit(&c->interrupted, memory_order_relaxed) != 0;
}
/* Wakes sleepers of a word whose value the caller has already changed. */
void rr_word_wake(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n);
/* Wakes sleepers of a waitq (bumps its sequence so that none can miss it). */
void rr_waitq_wake(rr_waitq *q, int n);
/* The same, for a caller whose changes are followed by an atomic
 * read-modify-write (the last of them, or one after them): on x86 that RMW is
 * already the full barrier the wake-up needs, and the fence is saved. */
void rr_word_wake_after_rmw(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n);
void rr_waitq_wake_after_rmw(rr_waitq *q, int n);
/* Receivers sleep on not_empty, and poll: a send wakes one receiver, and one
 * killed after its wake-up but before its take would otherwise strand the
 * request until the next send. */
#define RR_RECV_POLL_NS 50000000
static inline int rr_recv_wait(rr_chan *c, rr_attempt_fn attempt, rr_peek_fn peek, void *arg,
                               int64_t deadline)
{
    rr_waitq *q = &c->hdr->not_empty;
    return rr_wait_until(c, &q->seq, &q->waiters, attempt, peek, arg, deadline, RR_RECV_POLL_NS);
}

/* ---- process identity and recovery (rr_recover.c) ---- */
uint64_t rr_self_ident(void);
bool rr_ident_alive(uint64_t ident);
int rr_lock(rr_chan *c, int64_t deadline);
void rr_unlock(rr_chan *c);

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
int rr_send_common(rr_chan *c, rr_attempt_fn push, rr_peek_fn room, void *arg, uint64_t *id,
                   int64_t deadline);
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
