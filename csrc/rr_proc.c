/* Process identity and liveness (contracts in rr_proc.h). The start time of
 * a process is field 22 of /proc/PID/stat, read here and nowhere else. */
#define _GNU_SOURCE
#include "rr_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
_Atomic uint64_t rr_self_ident_cache; /* rr_proc.h */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_ident(void)
{
    atomic_store_explicit(&rr_self_ident_cache, 0, memory_order_relaxed);
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, forget_ident); }

uint64_t rr_self_ident_compute(void)
{
    pthread_once(&atfork_once, register_atfork);
    uint32_t pid = (uint32_t)getpid();
    char state;
    uint64_t start = 0;
    if (read_proc_stat(pid, &state, &start) != 0)
        start = 0;
    uint64_t v = rr_ident(pid, (uint32_t)start);
    /* relaxed: each thread computes the same value, any copy is right */
    atomic_store_explicit(&rr_self_ident_cache, v, memory_order_relaxed);
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
