/* core_bench: round trips per second of the reqrep C core, without Python.
 *
 *   core_bench [TEST [SECONDS [WARMUP [SPIN_US]]]]
 *
 * TEST is one of
 *   floor       two processes ping-ponging one shared cache line (spin-waiting
 *               with the pause instruction on an atomic in an anonymous
 *               MAP_SHARED mapping): the floor for any cross-process round trip
 *   int, str    the core's 1:1 cross-process round trip on an anonymous channel
 *               shared by fork: this process is the client, a forked child the worker
 *   int-single, str-single
 *               send -> recv -> reply -> wait/view/release in one process
 *   all         (the default) every test, 3 runs each, median printed as a table
 * A single TEST prints one line "rt_per_s=<float>". SECONDS (default 1) is the
 * timed part, after WARMUP seconds (default SECONDS / 10). SPIN_US sets the
 * handles' spin budget (default: the core's default). Every process runs under
 * an alarm() watchdog and the worker dies with its parent, so it cannot hang.
 *
 * Build (from the repository root):
 *   cc -O2 -std=gnu11 -pthread -Icsrc benchmarks/c/core_bench.c csrc/rr_*.c \
 *      -o benchmarks/c/core_bench
 */
#define _GNU_SOURCE
#include "reqrep.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

#define MSG "reqrep-bench"
#define MSG_LEN 12
#define STOP UINT64_MAX
#define CHUNK 64

static double secs = 1.0, warm = -1.0;
static long spin_us = -1;

static void die(const char *what, int rc)
{
    fprintf(stderr, "core_bench: %s: %s\n", what, rc < 0 ? strerror(-rc) : "failed");
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void watchdog(void) { alarm((unsigned)(secs + (warm > 0 ? warm : 0)) * 3 + 30); }

/* ---- the timed loop: warm-up, then count ops until the time is up ---- */

typedef void (*op_fn)(void *ctx);

static double time_ops(op_fn op, void *ctx)
{
    double end = now_s() + warm;
    long done = 0;
    while (done < 100 || now_s() < end) {
        for (int i = 0; i < CHUNK; i++)
            op(ctx);
        done += CHUNK;
    }
    long n = 0;
    double t0 = now_s(), t1;
    end = t0 + secs;
    do {
        for (int i = 0; i < CHUNK; i++)
            op(ctx);
        n += CHUNK;
        t1 = now_s();
    } while (t1 < end);
    return (double)n / (t1 - t0);
}

/* ---- a worker child that dies with us ---- */

static pid_t fork_worker(void (*body)(void *), void *arg)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", -errno);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(3);
        watchdog();
        body(arg);
        _exit(0);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the worker process failed", 0);
}

/* ---- (a) the floor: one shared cache line ---- */

typedef struct line {
    _Alignas(64) _Atomic uint64_t word;
    uint64_t next;
} line;

static uint64_t wait_word(line *l, uint64_t want)
{
    unsigned spins = 0;
    uint64_t v;
    while ((v = atomic_load_explicit(&l->word, memory_order_acquire)) != want && v != STOP) {
        cpu_relax();
        if (++spins == 1u << 20) { /* the peer is descheduled: let it run */
            sched_yield();
            spins = 0;
        }
    }
    return v;
}

static void floor_worker(void *arg)
{
    line *l = arg;
    for (uint64_t want = 1;; want += 2) {
        if (wait_word(l, want) == STOP)
            return;
        atomic_store_explicit(&l->word, want + 1, memory_order_release);
    }
}

static void floor_op(void *arg)
{
    line *l = arg;
    uint64_t v = l->next;
    atomic_store_explicit(&l->word, v, memory_order_release);
    wait_word(l, v + 1);
    l->next = v + 2;
}

static double bench_floor(void)
{
    line *l = mmap(NULL, sizeof *l, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (l == MAP_FAILED)
        die("mmap", -errno);
    atomic_store(&l->word, 0);
    l->next = 1;
    pid_t pid = fork_worker(floor_worker, l);
    double r = time_ops(floor_op, l);
    atomic_store(&l->word, STOP);
    reap(pid);
    munmap(l, sizeof *l);
    return r;
}

/* ---- (b) the core, 1:1 across processes ---- */

typedef struct shared_stop {
    _Atomic int stop;
} shared_stop;

typedef struct chan_ctx {
    rr_chan *c;     /* the worker's handle (inherited by fork) */
    rr_chan *cli;   /* the client's handle */
    shared_stop *st;
    char buf[4096];
} chan_ctx;

static rr_chan *open_chan(uint32_t variant)
{
    rr_geometry g = {variant, 1024, 64, variant == RR_VARIANT_STR ? 4096 : 0, 0};
    rr_error err;
    int rc = rr_geometry_normalise(&g, &err);
    if (rc)
        die(err.why, rc);
    rr_chan *c;
    rc = rr_open_anon(&g, &c, &err);
    if (rc)
        die(err.why, rc);
    if (spin_us >= 0)
        rr_set_spin(c, (uint32_t)spin_us);
    return c;
}

static rr_chan *share(rr_chan *c)
{
    rr_chan *s;
    int rc = rr_chan_share(c, &s);
    if (rc)
        die("rr_chan_share", rc);
    if (spin_us >= 0)
        rr_set_spin(s, (uint32_t)spin_us);
    return s;
}

static int64_t soon(void) { return rr_now_ns() + 50 * 1000 * 1000; }

static void int_worker(void *arg)
{
    chan_ctx *x = arg;
    while (!atomic_load_explicit(&x->st->stop, memory_order_relaxed)) {
        int64_t v;
        uint64_t id;
        int rc = rr_int_recv(x->c, soon(), &v, &id);
        if (rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc)
            die("rr_int_recv", rc);
        if ((rc = rr_int_reply(x->c, id, v)) != 0)
            die("rr_int_reply", rc);
    }
}

static int str_take(rr_chan *c, int64_t deadline, char *buf, uint32_t *len, uint32_t *flags,
                    uint64_t *id)
{
    int n = rr_str_recv_begin(c, deadline);
    if (n <= 0)
        return n ? n : -EAGAIN;
    rr_entry e;
    int rc = rr_str_recv_peek(c, 0, &e);
    if (rc == 0) {
        memcpy(buf, e.data, e.len);
        *len = e.len;
        *flags = e.flags;
        *id = e.id;
    }
    rr_str_recv_end(c, rc == 0 ? 1 : 0);
    return rc;
}

static void str_worker(void *arg)
{
    chan_ctx *x = arg;
    while (!atomic_load_explicit(&x->st->stop, memory_order_relaxed)) {
        uint32_t len, flags;
        uint64_t id;
        int rc = str_take(x->c, soon(), x->buf, &len, &flags, &id);
        if (rc == -EAGAIN || rc == -EINTR)
            continue;
        if (rc)
            die("rr_str_recv", rc);
        if ((rc = rr_str_reply(x->c, id, x->buf, len, flags)) != 0)
            die("rr_str_reply", rc);
    }
}

static void collect(rr_chan *c, uint64_t id, char *out, int64_t *value)
{
    int rc = rr_resp_wait(c, id, RR_FOREVER);
    if (rc)
        die("rr_resp_wait", rc);
    rr_resp r;
    if ((rc = rr_resp_view(c, id, &r)) != 0)
        die("rr_resp_view", rc);
    if (out)
        memcpy(out, r.data, r.len);
    *value = r.value;
    if ((rc = rr_resp_release(c, id)) != 0)
        die("rr_resp_release", rc);
}

static void int_op(void *arg)
{
    chan_ctx *x = arg;
    uint64_t id;
    int64_t v;
    int rc = rr_int_send(x->cli, 42, RR_FOREVER, &id);
    if (rc)
        die("rr_int_send", rc);
    collect(x->cli, id, NULL, &v);
    if (v != 42)
        die("wrong echo", 0);
}

static void str_op(void *arg)
{
    chan_ctx *x = arg;
    uint64_t id;
    int64_t v;
    char out[MSG_LEN];
    int rc = rr_str_send(x->cli, MSG, MSG_LEN, 0, RR_FOREVER, &id);
    if (rc)
        die("rr_str_send", rc);
    collect(x->cli, id, out, &v);
    if (memcmp(out, MSG, MSG_LEN) != 0)
        die("wrong echo", 0);
}

static double bench_pair(uint32_t variant)
{
    chan_ctx *x = calloc(1, sizeof *x);
    if (!x)
        die("out of memory", -ENOMEM);
    x->st = mmap(NULL, sizeof *x->st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (x->st == MAP_FAILED)
        die("mmap", -errno);
    x->c = open_chan(variant);
    pid_t pid = fork_worker(variant == RR_VARIANT_INT ? int_worker : str_worker, x);
    x->cli = share(x->c);
    double r = time_ops(variant == RR_VARIANT_INT ? int_op : str_op, x);
    atomic_store(&x->st->stop, 1);
    reap(pid);
    rr_close(x->cli);
    rr_close(x->c);
    munmap(x->st, sizeof *x->st);
    free(x);
    return r;
}

/* ---- (c) the core, one process ---- */

static void int_single_op(void *arg)
{
    chan_ctx *x = arg;
    uint64_t id, wid;
    int64_t v;
    int rc = rr_int_send(x->cli, 42, RR_NOWAIT, &id);
    if (rc == 0)
        rc = rr_int_recv(x->c, RR_NOWAIT, &v, &wid);
    if (rc == 0)
        rc = rr_int_reply(x->c, wid, v);
    if (rc)
        die("int single round trip", rc);
    collect(x->cli, id, NULL, &v);
}

static void str_single_op(void *arg)
{
    chan_ctx *x = arg;
    uint64_t id, wid;
    uint32_t len, flags;
    int64_t v;
    char out[MSG_LEN];
    int rc = rr_str_send(x->cli, MSG, MSG_LEN, 0, RR_NOWAIT, &id);
    if (rc == 0)
        rc = str_take(x->c, RR_NOWAIT, x->buf, &len, &flags, &wid);
    if (rc == 0)
        rc = rr_str_reply(x->c, wid, x->buf, len, flags);
    if (rc)
        die("str single round trip", rc);
    collect(x->cli, id, out, &v);
}

static double bench_single(uint32_t variant)
{
    chan_ctx *x = calloc(1, sizeof *x);
    if (!x)
        die("out of memory", -ENOMEM);
    x->c = open_chan(variant);
    x->cli = share(x->c);
    double r = time_ops(variant == RR_VARIANT_INT ? int_single_op : str_single_op, x);
    rr_close(x->cli);
    rr_close(x->c);
    free(x);
    return r;
}

/* ---- driver ---- */

static const char *const tests[] = {"floor", "int", "str", "int-single", "str-single"};
#define NTESTS 5

static double run_test(const char *name)
{
    if (!strcmp(name, "floor"))
        return bench_floor();
    if (!strcmp(name, "int"))
        return bench_pair(RR_VARIANT_INT);
    if (!strcmp(name, "str"))
        return bench_pair(RR_VARIANT_STR);
    if (!strcmp(name, "int-single"))
        return bench_single(RR_VARIANT_INT);
    if (!strcmp(name, "str-single"))
        return bench_single(RR_VARIANT_STR);
    fprintf(stderr, "core_bench: unknown test %s\n", name);
    exit(2);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *test = argc > 1 ? argv[1] : "all";
    if (argc > 2)
        secs = atof(argv[2]);
    warm = argc > 3 ? atof(argv[3]) : secs / 10;
    if (argc > 4)
        spin_us = atol(argv[4]);
    if (!(secs > 0) || warm < 0 || !strcmp(test, "-h") || !strcmp(test, "--help")) {
        fprintf(stderr, "usage: core_bench [floor|int|str|int-single|str-single|all] "
                        "[SECONDS [WARMUP [SPIN_US]]]\n");
        return 2;
    }
    watchdog();
    if (strcmp(test, "all") != 0) {
        printf("rt_per_s=%.1f\n", run_test(test));
        return 0;
    }
    printf("%-12s %14s   (median of 3 runs of %g s)\n", "test", "round trips/s", secs);
    for (int t = 0; t < NTESTS; t++) {
        double r[3];
        for (int i = 0; i < 3; i++) {
            watchdog();
            r[i] = run_test(tests[t]);
        }
        qsort(r, 3, sizeof r[0], cmp_double);
        printf("%-12s %14.0f\n", tests[t], r[1]);
        fflush(stdout);
    }
    return 0;
}
