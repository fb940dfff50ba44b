/* Waiting: futexes on shared words, sleeper counts, spinning then sleeping,
 * deadlines, and ending a handle's waits (rr_interrupt). No channel here:
 * each handle embeds an rr_waiter (its spin budget, the spin's self-tuning,
 * its interrupt flag and its table of sleepers), and what a wait waits for
 * is an attempt callback on a void *.
 *
 * Errors as in reqrep.h. Deadlines are absolute CLOCK_MONOTONIC ns.
 *
 * uses: rr_format.h (rr_waitq), rr_barrier.h */
#ifndef RR_WAIT_H
#define RR_WAIT_H

#include "rr_barrier.h"
#include "rr_format.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Threads of one handle that rr_interrupt can wake at once; more sleep in
 * stretches of RR_INTERRUPT_POLL_NS at most and look at the flag between. */
#define RR_SLEEPERS 16
#define RR_INTERRUPT_POLL_NS 20000000

/* A handle's waiting state. Thread-safe: threads sharing a handle share it. */
typedef struct rr_waiter {
    uint32_t spin_us; /* the spin budget before sleeping (rr_set_spin) */
    /* self-tuning (rr_wait.c); relaxed: per-handle heuristics, races only
     * cost a spin more or less */
    _Atomic uint32_t spin_fails, spin_skip, spin_backoff;
    /* rr_interrupt: set once and for good; every wait on this waiter ends */
    _Atomic uint32_t interrupted;
    /* Who sleeps on which shared word, for rr_waiter_interrupt to wake: an
     * entry is claimed by writing this process's pid (another pid is a
     * leftover of the parent this process was forked from), then its word. */
    _Atomic int sleep_pid[RR_SLEEPERS];
    _Atomic uintptr_t sleep_word[RR_SLEEPERS];
} rr_waiter;

/* A new waiter (of a new handle): nothing interrupted, nobody asleep. */
void rr_waiter_init(rr_waiter *w, uint32_t spin_us);
/* Whether w's next wait would spin (rr_spin_advised); changes nothing. */
bool rr_waiter_spins(const rr_waiter *w);

/* Sleeps while *word == expect, until `deadline`: 0 woken (or the value
 * changed), -EAGAIN at the deadline, -EINTR. A shared futex: the word may
 * lie in memory that other processes map. */
int rr_futex_wait(_Atomic uint32_t *word, uint32_t expect, int64_t deadline);
void rr_futex_wake(_Atomic uint32_t *word, int n);

/* A blocking operation as two callbacks: `attempt` tries it once (1 = done,
 * 0 = not now, RR_AGAIN_SOON, < 0 = error); `peek` is a cheap lock-free hint
 * that an attempt may succeed, polled while spinning. */
typedef int (*rr_attempt_fn)(void *arg);
typedef bool (*rr_peek_fn)(void *arg);
/* An attempt's "not now, and look again within RR_SOON_NS even if nobody
 * wakes you": what it waits for may need a check that no waker announces. */
#define RR_AGAIN_SOON 2
#define RR_SOON_NS 10000000

/* Runs `attempt` until it succeeds: spins (up to w's budget), then sleeps on
 * `word` (counted in `waiters`) until the attempt succeeds (0), the deadline
 * passes (-EAGAIN; RR_NOWAIT and RR_TRY: one attempt only), a signal arrives
 * (-EINTR) or rr_waiter_interrupt(w) was called (-ECANCELED, also at once if
 * it was before); an attempt's error ends it too. `poll_ns` > 0 bounds each
 * sleep so that `attempt` can also notice what no waker announces (a dead
 * peer). Whoever makes an attempt succeed must change `word` and wake it
 * (rr_word_wake / rr_waitq_wake): the fences pair. Thread-safe. */
int rr_wait_until(rr_waiter *w, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                  rr_attempt_fn attempt, rr_peek_fn peek, void *arg, int64_t deadline,
                  int64_t poll_ns);
/* rr_wait_until on a waitq. */
static inline int rr_waitq_wait(rr_waiter *w, rr_waitq *q, rr_attempt_fn attempt, rr_peek_fn peek,
                                void *arg, int64_t deadline, int64_t poll_ns)
{
    return rr_wait_until(w, &q->seq, &q->waiters, attempt, peek, arg, deadline, poll_ns);
}

/* Wakes sleepers of a word whose value the caller has already changed. */
void rr_word_wake(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n);
/* Wakes sleepers of a waitq (bumps its sequence so that none can miss it). */
void rr_waitq_wake(rr_waitq *q, int n);
/* The same, for a caller whose changes are followed by an atomic
 * read-modify-write (the last of them, or one after them): the RMW is then
 * the barrier (rr_fence_after_rmw). */
void rr_word_wake_after_rmw(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n);
void rr_waitq_wake_after_rmw(rr_waitq *q, int n);

/* For a sleeper of its own (the Str lock's): a thread about to sleep on
 * `word` enters it in w's table (the entry, or -1 when the table is full:
 * then it sleeps RR_INTERRUPT_POLL_NS at most at a time). It must then issue
 * rr_fence_full() before each look at rr_interrupted(w), and leave once
 * awake. */
int rr_sleep_enter(rr_waiter *w, _Atomic uint32_t *word);
void rr_sleep_leave(rr_waiter *w, int entry);
static inline bool rr_interrupted(rr_waiter *w)
{
    /* relaxed: the sleep protocol's fences order it (see rr_waiter_interrupt) */
    return atomic_load_explicit(&w->interrupted, memory_order_relaxed) != 0;
}

/* Ends every wait on w, for good (rr_interrupt's contract, reqrep.h). */
void rr_waiter_interrupt(rr_waiter *w);

#endif
