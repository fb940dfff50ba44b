/* Waiting: futexes on shared words, waiter counts, spinning, deadlines, and
 * interrupting a handle's waits. The contracts are in rr_wait.h. */
#define _GNU_SOURCE
#include "rr_wait.h"
#include "rr_test_hooks.h"

#include <errno.h>

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void rr_waiter_init(rr_waiter *w, uint32_t spin_us)
{
    *w = (rr_waiter){.spin_us = spin_us};
}

int64_t rr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Shared (not PRIVATE) futex: the word lives in memory mapped by several
 * processes. */
int rr_futex_wait(_Atomic uint32_t *word, uint32_t expect, int64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline != RR_FOREVER) {
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tp = &ts;
    }
    /* WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline: no drift on retries. */
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expect, tp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0 || errno == EAGAIN)
        return 0;
    return errno == ETIMEDOUT ? -EAGAIN : -errno;
}

void rr_futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

static inline void word_wake_fenced(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    if (atomic_load_explicit(waiters, memory_order_relaxed) != 0)
        rr_futex_wake(word, n);
}

static inline void waitq_wake_fenced(rr_waitq *q, int n)
{
    if (atomic_load_explicit(&q->waiters, memory_order_relaxed) == 0)
        return;
    /* release ↔ the sleeper's acquire load of seq: one that reads the new seq
     * also sees the state change. */
    atomic_fetch_add_explicit(&q->seq, 1, memory_order_release);
    rr_futex_wake(&q->seq, n);
}

void rr_word_wake(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    /* seq_cst fence ↔ the fence in rr_wait_until after waiters++: either this
     * load sees the sleeper, or the sleeper's re-check sees our change.
     * Without it, store-load reordering loses the wake-up. */
    rr_fence_full();
    word_wake_fenced(word, waiters, n);
}

void rr_waitq_wake(rr_waitq *q, int n)
{
    rr_fence_full(); /* as in rr_word_wake */
    waitq_wake_fenced(q, n);
}

void rr_word_wake_after_rmw(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    rr_fence_after_rmw(); /* the caller's RMW ↔ the fence in rr_wait_until, as in rr_word_wake */
    word_wake_fenced(word, waiters, n);
}

void rr_waitq_wake_after_rmw(rr_waitq *q, int n)
{
    rr_fence_after_rmw(); /* as in rr_word_wake_after_rmw */
    waitq_wake_fenced(q, n);
}

/* Spinning pays only while the peer runs on another core. A handle whose
 * spins keep ending in sleep (the peer is descheduled: more runnable
 * processes than cores, or the peer is itself asleep) stops spinning for a
 * stretch of waits that doubles each time, up to RR_SPIN_MAX_SKIP, and
 * probes again after it; one spin that pays resets the stretch. */
#define RR_SPIN_FAILS 4
#define RR_SPIN_MAX_SKIP 1024

static int online_cpus(void)
{
    static _Atomic int cpus; /* a fact about the machine: computed once */
    int n = atomic_load_explicit(&cpus, memory_order_relaxed);
    if (n == 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 2;
        atomic_store_explicit(&cpus, n, memory_order_relaxed);
    }
    return n;
}

/* A spin budget, and another CPU for the peer to run on. */
static bool spin_allowed(const rr_waiter *w) { return w->spin_us && online_cpus() >= 2; }

bool rr_waiter_spins(const rr_waiter *w)
{
    /* relaxed: a heuristic of this handle's, as in spin_wanted */
    return spin_allowed(w)
        && atomic_load_explicit(&((rr_waiter *)w)->spin_skip, memory_order_relaxed) == 0;
}

static bool spin_wanted(rr_waiter *w)
{
    if (!spin_allowed(w))
        return false;
    uint32_t skip = atomic_load_explicit(&w->spin_skip, memory_order_relaxed);
    if (skip == 0)
        return true;
    atomic_store_explicit(&w->spin_skip, skip - 1, memory_order_relaxed);
    return false;
}

static void spin_paid(rr_waiter *w, bool paid)
{
    if (paid) {
        atomic_store_explicit(&w->spin_fails, 0, memory_order_relaxed);
        atomic_store_explicit(&w->spin_backoff, 0, memory_order_relaxed);
        return;
    }
    uint32_t fails = atomic_load_explicit(&w->spin_fails, memory_order_relaxed) + 1;
    if (fails < RR_SPIN_FAILS) {
        atomic_store_explicit(&w->spin_fails, fails, memory_order_relaxed);
        return;
    }
    uint32_t backoff = atomic_load_explicit(&w->spin_backoff, memory_order_relaxed);
    backoff = backoff ? backoff * 2 : 8;
    if (backoff > RR_SPIN_MAX_SKIP)
        backoff = RR_SPIN_MAX_SKIP;
    atomic_store_explicit(&w->spin_backoff, backoff, memory_order_relaxed);
    atomic_store_explicit(&w->spin_skip, backoff, memory_order_relaxed);
    atomic_store_explicit(&w->spin_fails, 0, memory_order_relaxed);
}

static int spin_phase(rr_waiter *w, rr_attempt_fn attempt, rr_peek_fn peek, void *arg,
                      int64_t now, int64_t deadline)
{
    if (!spin_wanted(w))
        return 0;
    int64_t until = now + (int64_t)w->spin_us * 1000;
    if (until > deadline)
        until = deadline;
    for (uint32_t i = 1;; i++) {
        if (peek(arg)) {
            int rc = attempt(arg);
            if (rc && rc != RR_AGAIN_SOON) {
                spin_paid(w, true);
                return rc;
            }
        }
        rr_cpu_relax();
        if ((i & 63) == 0 && (rr_now_ns() >= until || rr_interrupted(w))) {
            spin_paid(w, false);
            return 0;
        }
    }
}

#ifdef RR_TEST_HOOKS
void (*rr_test_before_sleep)(void); /* rr_test_hooks.h */
#endif

int rr_wait_until(rr_waiter *w, _Atomic uint32_t *word, _Atomic uint32_t *waiters,
                  rr_attempt_fn attempt, rr_peek_fn peek, void *arg, int64_t deadline,
                  int64_t poll_ns)
{
    int rc = attempt(arg);
    if (rc && rc != RR_AGAIN_SOON)
        return rc < 0 ? rc : 0;
    if (deadline <= RR_NOWAIT)
        return -EAGAIN;
    if (rr_interrupted(w))
        return -ECANCELED;
    int64_t now = rr_now_ns();
    if (now >= deadline)
        return -EAGAIN;
    rc = spin_phase(w, attempt, peek, arg, now, deadline);
    if (rc)
        return rc < 0 ? rc : 0;
    int entry = rr_sleep_enter(w, word);
    for (;;) {
        /* relaxed add + seq_cst fence ↔ the fence in rr_word_wake; the same
         * fence ↔ the one in rr_waiter_interrupt, for our entry and its flag */
        atomic_fetch_add_explicit(waiters, 1, memory_order_relaxed);
        rr_fence_full();
        /* acquire ↔ the waker's release change of the word */
        uint32_t seen = atomic_load_explicit(word, memory_order_acquire);
        rc = rr_interrupted(w) ? -ECANCELED : attempt(arg);
        bool soon = rc == RR_AGAIN_SOON;
        if (soon)
            rc = 0;
        now = rc ? 0 : rr_now_ns();
        if (rc == 0 && now < deadline) {
            int64_t until = deadline;
            if (poll_ns > 0 && now + poll_ns < until)
                until = now + poll_ns;
            if (soon && now + RR_SOON_NS < until)
                until = now + RR_SOON_NS;
            if (entry < 0 && now + RR_INTERRUPT_POLL_NS < until)
                until = now + RR_INTERRUPT_POLL_NS; /* the interrupt cannot reach us */
            RR_TEST_HOOK(rr_test_before_sleep);
            rc = rr_futex_wait(word, seen, until);
            if (rc == -EAGAIN)
                rc = 0; /* a poll tick or the deadline: the loop re-checks both */
        } else if (rc == 0) {
            rc = -EAGAIN;
        }
        /* relaxed: the count is only a hint for wakers; a stale read costs one syscall */
        atomic_fetch_sub_explicit(waiters, 1, memory_order_relaxed);
        if (rc) {
            rr_sleep_leave(w, entry);
            return rc < 0 ? rc : 0;
        }
    }
}

/* ---- interrupting a handle's waits (rr_interrupt) ----
 * A sleeper enters the word it sleeps on in its waiter's table, then (after
 * a seq_cst fence) looks at the flag before each sleep; rr_waiter_interrupt
 * sets the flag, then (after a seq_cst fence) wakes every word in the table:
 * either the sleeper sees the flag, or the interrupter sees its entry
 * (Dekker). A wake that comes between the sleeper's look and its futex call
 * is lost (the word did not change), so the interrupter wakes again until the
 * entries are gone. */

int rr_sleep_enter(rr_waiter *w, _Atomic uint32_t *word)
{
    int me = rr_self_pid();
    for (int i = 0; i < RR_SLEEPERS; i++) {
        /* relaxed: the pid only elects the entry's user among our threads */
        int pid = atomic_load_explicit(&w->sleep_pid[i], memory_order_relaxed);
        if (pid == me)
            continue; /* another thread of ours sleeps there */
        /* 0 is free; another pid was left by the parent we were forked from,
         * whose threads do not exist here */
        if (atomic_compare_exchange_strong_explicit(&w->sleep_pid[i], &pid, me,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            /* release ↔ the acquire load in rr_waiter_interrupt: who sees the
             * word sees our pid */
            atomic_store_explicit(&w->sleep_word[i], (uintptr_t)word, memory_order_release);
            return i;
        }
    }
    return -1;
}

void rr_sleep_leave(rr_waiter *w, int entry)
{
    if (entry < 0)
        return;
    /* relaxed: the interrupter only waits for these to clear; a stale read
     * costs a wake */
    atomic_store_explicit(&w->sleep_word[entry], 0, memory_order_relaxed);
    atomic_store_explicit(&w->sleep_pid[entry], 0, memory_order_relaxed);
}

void rr_waiter_interrupt(rr_waiter *w)
{
    /* relaxed store, then the seq_cst fence below ↔ the sleepers' fences */
    atomic_store_explicit(&w->interrupted, 1, memory_order_relaxed);
    int me = rr_self_pid();
    for (uint32_t round = 0;; round++) {
        rr_fence_full();
        bool asleep = false;
        for (int i = 0; i < RR_SLEEPERS; i++) {
            /* acquire ↔ the release store in rr_sleep_enter: the pid is the claimant's */
            uintptr_t word = atomic_load_explicit(&w->sleep_word[i], memory_order_acquire);
            if (word && atomic_load_explicit(&w->sleep_pid[i], memory_order_relaxed) == me) {
                /* other processes' sleepers on the word wake too, and sleep again */
                rr_futex_wake((_Atomic uint32_t *)word, INT_MAX);
                asleep = true;
            }
        }
        if (!asleep)
            return;
        /* They need nothing from us to leave: let them run, then look again. */
        if (round < 8) {
            sched_yield();
        } else {
            struct timespec ts = {0, round < 64 ? 20000 : 1000000};
            nanosleep(&ts, NULL);
        }
    }
}
