/* Internal layout and helpers shared by the core's files. Not installed. */
#ifndef RR_INTERNAL_H
#define RR_INTERNAL_H

#include "reqrep.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RR_LINE 64
#define RR_MAGIC UINT64_C(0x31504552514552ff) /* "\xffRREQPE1" little-endian */
#define RR_FORMAT_VERSION 4u
#define RR_HEADER_SIZE 1024u
#define RR_SLOT_HEADER 128u
#define RR_SLOT_INLINE 32u /* Str responses up to this size live in the slot's first line */
/* The worker record in a slot (rr_slots.c): generation | writing | start time | pid. */
#define RR_WORKER_GEN_BITS 23
#define RR_WORKER_START_BITS 18
#define RR_WORKER_PID_BITS 22
#define RR_WORKER_WRITING_SHIFT (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)
#define RR_WORKER_GEN_SHIFT (RR_WORKER_WRITING_SHIFT + 1)
/* A slot's owner word (rr_slots.c): generation tag | start time | pid. */
#define RR_OWNER_TAG_SHIFT (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)
#define RR_OWNER_TAG_BITS (64 - RR_OWNER_TAG_SHIFT)
/* A slot's ctl word (rr_slots.c): generation << 32 | low generation bits << 4 | state. */
enum {
    SLOT_FREE = 0,
    SLOT_ACQUIRED = 1,
    SLOT_WRITING = 2,
    SLOT_READY = 3,
    SLOT_READING = 4,
    SLOT_CANCELLED = 5,
};
#define RR_CTL_STATE_BITS 4
/* An Int cell's turn (rr_intq.c): lap << 32 | state << RR_TURN_WHO_BITS | who. */
#define RR_TURN_WHO_BITS 30
enum { TURN_FREE = 0, TURN_CLAIMED = 1, TURN_FULL = 2, TURN_TAKEN = 3 };
/* A process identity word (the Str lock's holder, a bell's owner): start time
 * (low 32 bits) << 32 | pid. */
#define RR_PID_LIMIT (1u << 22)            /* the kernel's PID_MAX_LIMIT */
#define RR_LOCK_WAITERS (UINT64_C(1) << 31) /* in the lock word: above every pid, in the futex half */

/* Threads of one handle that rr_interrupt can wake at once; more sleep in
 * stretches of RR_INTERRUPT_POLL_NS at most and look at the flag between. */
#define RR_SLEEPERS 16
#define RR_INTERRUPT_POLL_NS 20000000

#define RR_ALIGNED __attribute__((aligned(RR_LINE)))
#define RR_ROUND_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))

/* ---- shared memory: everything below is an offset from the mapping base ---- */

/* Fixed geometry: written once before the magic is published, then only read. */
typedef struct rr_hdr_geom {
    _Atomic uint64_t magic;   /* published last (release) at creation */
    uint32_t version;
    uint32_t variant;
    uint64_t total_size;
    uint32_t req_cap;
    uint32_t resp_slots;
    uint32_t resp_size;
    uint32_t slot_stride;
    uint64_t arena_cap;
    uint64_t off_cells;
    uint64_t off_slots;
    uint64_t off_arena;
    uint64_t off_bells;
} rr_hdr_geom;

/* A futex word with a count of sleepers, so wakers skip the syscall when 0. */
typedef struct rr_waitq {
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
} rr_waitq;

typedef struct rr_header {
    RR_ALIGNED rr_hdr_geom geom;
    /* consumer side: written by receivers */
    RR_ALIGNED _Atomic uint64_t head;  /* Str: under the lock; Int: Vyukov dequeue position */
    /* producer side: written by senders. The Str lock shares their line: a
     * sender takes the lock and moves tail in one line, and receivers watch
     * the cells instead of this line (rr_strq.c). */
    RR_ALIGNED _Atomic uint64_t tail;  /* Str: under the lock; Int: Vyukov enqueue position */
    /* the Str queue lock: owner identity (pid | start time << 32) | RR_LOCK_WAITERS */
    _Atomic uint64_t lock;
    /* Str: the senders' last look at head and at where its entry begins, so
     * that a send need not read the receivers' line while it sees room.
     * Under the lock; both only lag the truth, which errs towards full. */
    uint64_t seen_head, seen_first;
    /* The sleep queues on lines of their own: written only when somebody
     * sleeps, so the other side's look at the waiter count stays a cache hit
     * instead of pulling the head or tail line across cores. */
    RR_ALIGNED rr_waitq not_empty;     /* receivers sleep here */
    RR_ALIGNED rr_waitq not_full;      /* senders sleep here */
    /* slot pool: clients waiting for a free slot */
    RR_ALIGNED rr_waitq slot_free;
    /* rare-path counters (relaxed: statistics only) */
    RR_ALIGNED _Atomic uint64_t send_full;
    _Atomic uint64_t recv_empty;
    _Atomic uint64_t recoveries;
    _Atomic uint64_t clears;
    _Atomic int64_t last_sweep; /* monotonic ns of the last sweep for dead clients' slots */
} rr_header;

_Static_assert(sizeof(rr_header) <= RR_HEADER_SIZE, "header too large");

/* Str request cell, one cache line. `mark` is 1 + the position of the entry
 * last written here: a hint receivers watch (rr_strq.c). An entry of up to
 * RR_STR_INLINE bytes is kept in `small`; a larger one lies in the arena from
 * `beg`, the virtual offset where its charge begins (its data starts there
 * or, if it would run past the end, at the next wrap). */
#define RR_STR_INLINE 32u
typedef struct rr_str_cell {
    RR_ALIGNED _Atomic uint64_t mark;
    uint64_t beg;
    uint32_t len;
    uint32_t flags;
    uint64_t id;
    uint8_t small[RR_STR_INLINE];
} rr_str_cell;

/* Int request cell, one cache line; `turn` as described in rr_intq.c. */
typedef struct rr_int_cell {
    RR_ALIGNED _Atomic uint64_t turn;
    int64_t value;
    uint64_t id;
} rr_int_cell;

/* A cell per line: no cell straddles two, and neighbours written by different
 * sides (a sender at tail, a receiver at head) do not share one. */
_Static_assert(sizeof(rr_str_cell) == RR_LINE && sizeof(rr_int_cell) == RR_LINE, "cell sizes");

/* Response slot header, two cache lines; Str response bytes follow it. The
 * first line is what a waiting client spins on and what a reply fills in; the
 * second holds what the worker writes on the way (its taker record, the reply
 * count), so those writes do not pull the line away from the spinning client. */
typedef struct rr_slot {
    RR_ALIGNED _Atomic uint64_t ctl; /* generation << 32 | futex word (see rr_slots.c) */
    _Atomic uint64_t owner;   /* who acquired it, for which generation (rr_slots.c); 0 = none */
    _Atomic uint32_t waiters; /* clients sleeping on ctl */
    uint32_t len;             /* response length (Str) */
    uint32_t flags;
    uint32_t bell;            /* 1 + the bell to ring on reply, 0 for none */
    union {
        int64_t value;        /* Int response */
        uint8_t small[RR_SLOT_INLINE]; /* a Str response that fits: one line to move */
    };
    RR_ALIGNED _Atomic uint64_t worker; /* who took the request or writes its reply (rr_slots.c) */
    _Atomic uint64_t replies; /* per-slot reply count, summed by stats */
} rr_slot;

_Static_assert(sizeof(rr_slot) <= RR_SLOT_HEADER, "slot header fits its two lines");
_Static_assert(offsetof(rr_slot, small) + RR_SLOT_INLINE <= RR_LINE, "small replies on line 1");
/* Where a Str response of `len` bytes lies in its slot. */
static inline uint8_t *rr_slot_data_for(rr_slot *s, uint64_t len)
{
    return len <= RR_SLOT_INLINE ? s->small : (uint8_t *)s + RR_SLOT_HEADER;
}

/* A bell: an event count that a client waiting in an event loop sleeps on
 * (in a helper thread) for replies to any of its requests. */
#define RR_BELLS 64
typedef struct rr_bell {
    RR_ALIGNED _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    _Atomic uint64_t owner;   /* identity of the claiming process, 0 = free */
} rr_bell;

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
/* Test builds (-DRR_TEST_HOOKS) call these where a race is too narrow to
 * hit otherwise: rr_test_before_sleep between a sleeper's last look at the
 * interrupt flag and its futex call. */
#ifdef RR_TEST_HOOKS
extern void (*rr_test_before_sleep)(void);
#define RR_TEST_HOOK(fn) \
    do {                 \
        if (fn)          \
            fn();        \
    } while (0)
#else
#define RR_TEST_HOOK(fn) ((void)0)
#endif
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
static inline void rr_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
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
