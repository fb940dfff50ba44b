/* Process identity, liveness, and the Str queue lock that survives its holder.
 *
 * An identity is pid | (start time & 0xffffffff) << 32, the start time being
 * field 22 of /proc/PID/stat: a new process that reuses a dead one's pid has
 * another start time, so it is not taken for the dead owner. */
#define _GNU_SOURCE
#include "rr_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RR_LOCK_POLL_NS 10000000           /* liveness check period while blocked */

#define RR_PF_KTHREAD 0x00200000u /* field 9 flags: a kernel thread */

/* Reads state and start time of pid; -ENOENT if it has gone. A kernel
 * thread reads as state 'K': it cannot be one of ours. */
static int read_proc_stat(uint32_t pid, char *state, uint64_t *start)
{
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? -e : -ENOENT;
    buf[n] = 0;
    /* comm may hold spaces and parentheses: fields resume after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EINVAL;
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -EINVAL;
        p++;
        if (field == 8 && (strtoull(p, NULL, 10) & RR_PF_KTHREAD))
            *state = 'K';
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

/* The identity is per process: cached, and forgotten in a forked child. */
static _Atomic uint64_t self_ident_cache;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_ident(void)
{
    atomic_store_explicit(&self_ident_cache, 0, memory_order_relaxed);
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, forget_ident); }

uint64_t rr_self_ident(void)
{
    /* relaxed: each thread computes the same value, any copy is right */
    uint64_t v = atomic_load_explicit(&self_ident_cache, memory_order_relaxed);
    if (v)
        return v;
    pthread_once(&atfork_once, register_atfork);
    uint32_t pid = (uint32_t)getpid();
    char state;
    uint64_t start = 0;
    if (read_proc_stat(pid, &state, &start) != 0)
        start = 0;
    v = rr_ident(pid, (uint32_t)start);
    atomic_store_explicit(&self_ident_cache, v, memory_order_relaxed);
    return v;
}

int rr_self_pid(void) { return (int)(uint32_t)rr_self_ident(); }

int rr_process_alive(uint32_t pid, uint32_t start_bits, int bits)
{
    if (pid == 0 || pid >= RR_PID_LIMIT)
        return false; /* garbage or a forged file: nobody could hold this */
    bool signalable = kill((pid_t)pid, 0) == 0;
    if (!signalable && errno == ESRCH)
        return false;
    char state;
    uint64_t start;
    int rc = read_proc_stat(pid, &state, &start);
    /* Gone since kill() looked, unless kill() said EPERM: another user's
     * process, which /proc may hide (hidepid) while it lives. */
    if (rc == -ENOENT && signalable && access("/proc/self/stat", F_OK) == 0)
        return false;
    if (rc != 0)
        return true; /* cannot tell (no /proc?): never steal from a live owner */
    if (state == 'Z' || state == 'X' || state == 'K')
        return false;
    uint64_t mask = bits >= 32 ? 0xffffffffu : (UINT64_C(1) << bits) - 1;
    return start_bits == 0 || start_bits == (uint32_t)(start & mask);
}

bool rr_ident_alive(uint64_t ident)
{
    return rr_process_alive(rr_ident_pid(ident), rr_ident_start(ident), RR_IDENT_PID_BITS);
}

/* Takes the Str queue lock (-ECANCELED instead of sleeping for it once
 * rr_interrupt(c)). A holder that died (SIGKILL anywhere inside a
 * push or pop) is detected within RR_LOCK_POLL_NS and its lock taken over:
 * pushes and pops commit with one store of tail or head, so a half-done
 * operation is invisible and nothing needs repair. */
int rr_lock(rr_chan *c, int64_t deadline)
{
    rr_header *h = c->hdr;
    uint64_t me = rr_self_ident(), v = 0;
    /* acquire ↔ the release exchange in rr_unlock: we see the last holder's writes */
    if (atomic_compare_exchange_strong_explicit(&h->lock, &v, me, memory_order_acquire,
                                                memory_order_relaxed))
        return 0;
    for (int i = 0; i < 200; i++) {
        rr_cpu_relax();
        v = 0;
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) == 0
            && atomic_compare_exchange_weak_explicit(&h->lock, &v, me, memory_order_acquire,
                                                     memory_order_relaxed))
            return 0;
    }
    if (deadline == RR_TRY)
        return -EBUSY;
    for (;;) {
        v = atomic_load_explicit(&h->lock, memory_order_relaxed);
        if (v == 0) {
            /* Take it marked contended: we cannot know whether others sleep. */
            if (atomic_compare_exchange_weak_explicit(&h->lock, &v, me | RR_LOCK_WAITERS,
                                                      memory_order_acquire, memory_order_relaxed))
                return 0;
            continue;
        }
        if (!(v & RR_LOCK_WAITERS)) {
            /* relaxed: only tells the holder to wake us; the futex re-checks */
            if (!atomic_compare_exchange_weak_explicit(&h->lock, &v, v | RR_LOCK_WAITERS,
                                                       memory_order_relaxed,
                                                       memory_order_relaxed))
                continue;
            v |= RR_LOCK_WAITERS;
        }
        int64_t now = rr_now_ns();
        if (now >= deadline)
            return -EAGAIN;
        int64_t until = now + RR_LOCK_POLL_NS < deadline ? now + RR_LOCK_POLL_NS : deadline;
        int entry = rr_sleep_enter(&c->wait, rr_lock_futex(h));
        /* seq_cst ↔ the fence in rr_interrupt: it sees our entry or we its flag */
        rr_fence_full();
        int rc = rr_interrupted(&c->wait) ? -ECANCELED : rr_futex_wait(rr_lock_futex(h), (uint32_t)v, until);
        rr_sleep_leave(&c->wait, entry);
        if (rc == -EINTR || rc == -ECANCELED)
            return rc;
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) != v || rr_now_ns() < until)
            continue;
        /* The same holder for a whole poll period: is it still alive? */
        if (rr_ident_alive(v & ~RR_LOCK_WAITERS))
            continue;
        /* acquire: as above; only one of the racing waiters wins the steal */
        if (atomic_compare_exchange_strong_explicit(&h->lock, &v, me | RR_LOCK_WAITERS,
                                                    memory_order_acquire, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
            return 0;
        }
    }
}

int rr_lock_settle(rr_chan *c, int64_t deadline)
{
    int rc = rr_lock(c, deadline <= RR_NOWAIT ? RR_FOREVER : deadline);
    if (rc == 0)
        rr_unlock(c);
    return rc;
}

void rr_unlock(rr_chan *c)
{
    rr_header *h = c->hdr;
    /* release ↔ the acquire CAS of the next holder in rr_lock */
    uint64_t v = atomic_exchange_explicit(&h->lock, 0, memory_order_release);
    if (v & RR_LOCK_WAITERS)
        rr_futex_wake(rr_lock_futex(h), 1);
}
