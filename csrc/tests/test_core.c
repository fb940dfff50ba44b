/* Test runner and shared helpers for the C-level tests of the reqrep core.
 *
 *   test_core [-v] [-l] [-x NAME]... [GROUP|NAME]...
 *
 * Groups: unit, hostile, threads, fork (all of them when none is named).
 * -l lists the tests, -v prints notes, -x skips a test (also RR_TEST_SKIP=a,b).
 * RR_TEST_SCALE multiplies iteration counts (e.g. 0.3 under ThreadSanitizer).
 * The last line is always "N passed, N failed"; the exit status is 1 if any
 * test failed. Every test runs under an alarm() watchdog. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tu.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- registry ---- */

#define MAX_TESTS 256
typedef struct tcase {
    const char *group, *name;
    tu_fn fn;
    unsigned timeout_s;
} tcase;
static tcase tests[MAX_TESTS];
static int ntests;

void tu_register(const char *group, const char *name, tu_fn fn, unsigned timeout_s)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests++] = (tcase){group, name, fn, timeout_s};
}

static const char *const group_order[] = {"unit", "hostile", "threads", "fork", "slots"};
#define NGROUPS (int)(sizeof group_order / sizeof group_order[0])

/* ---- output and failures ---- */

double tu_scale = 1.0;
int tu_verbose;
static _Atomic int fail_count;
static _Atomic int fail_printed;
static const char *volatile cur_name = "";
static int is_child;
static int n_passed, n_failed;

static void out_raw(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void outf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void outf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    out_raw(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void tu_fail(const char *file, int line, const char *fmt, ...)
{
    atomic_fetch_add(&fail_count, 1);
    if (atomic_fetch_add(&fail_printed, 1) >= 25) {
        if (atomic_load(&fail_printed) == 26)
            outf("    ... (further failures not printed)\n");
        return;
    }
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    if (is_child)
        outf("    FAIL %s:%d: %s [child %d]\n", base ? base + 1 : file, line, msg, (int)getpid());
    else
        outf("    FAIL %s:%d: %s\n", base ? base + 1 : file, line, msg);
}

int tu_failures(void) { return atomic_load(&fail_count); }

void tu_note(const char *fmt, ...)
{
    if (!tu_verbose)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    outf("    note: %s\n", msg);
}

/* ---- watchdog ---- */

static void fmt_uint(char *out, unsigned v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *out++ = tmp[--n];
    *out = 0;
}

static void on_alarm(int sig)
{
    (void)sig;
    /* async-signal-safe: write(2) and _exit only */
    const char *name = cur_name;
    if (is_child) {
        out_raw("    FAIL watchdog: a child of ", 30);
        out_raw(name, strlen(name));
        out_raw(" hung (alarm)\n", 14);
        _exit(125);
    }
    char num[16];
    out_raw("    FAIL watchdog: ", 19);
    out_raw(name, strlen(name));
    out_raw(" timed out (alarm)\n[ FAIL ] ", 28);
    out_raw(name, strlen(name));
    out_raw("\n", 1);
    fmt_uint(num, (unsigned)n_passed);
    out_raw(num, strlen(num));
    out_raw(" passed, ", 9);
    fmt_uint(num, (unsigned)n_failed + 1);
    out_raw(num, strlen(num));
    out_raw(" failed\n", 8);
    _exit(124);
}

static void on_usr1(int sig) { (void)sig; }

/* ---- helpers ---- */

void tu_fill(void *buf, size_t len, uint64_t tag)
{
    uint8_t *p = buf;
    uint64_t s = tag * 0x9e3779b97f4a7c15u + 1, r = 0;
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0)
            r = tu_rand(&s);
        p[i] = (uint8_t)(r >> ((i & 7) * 8));
    }
}

long tu_check(const void *buf, size_t len, uint64_t tag)
{
    const uint8_t *p = buf;
    uint64_t s = tag * 0x9e3779b97f4a7c15u + 1, r = 0;
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0)
            r = tu_rand(&s);
        if (p[i] != (uint8_t)(r >> ((i & 7) * 8)))
            return (long)i;
    }
    return -1;
}

void tu_fill_tagged(void *buf, size_t len, uint64_t tag)
{
    memcpy(buf, &tag, 8);
    tu_fill((uint8_t *)buf + 8, len - 8, tag ^ len);
}

bool tu_check_tagged(const void *buf, size_t len, uint64_t *tag)
{
    if (len < 8)
        return false;
    memcpy(tag, buf, 8);
    return tu_check((const uint8_t *)buf + 8, len - 8, *tag ^ len) < 0;
}

rr_geometry tu_geom(uint32_t variant, uint32_t req_cap, uint32_t slots, uint32_t resp_size,
                    uint64_t arena)
{
    rr_geometry g = {variant, req_cap, slots, resp_size, arena, ""};
    rr_error err;
    int rc = rr_geometry_normalise(&g, &err);
    if (rc)
        tu_fail(__FILE__, __LINE__, "rr_geometry_normalise: %s (%s)", tu_err(rc), err.why);
    return g;
}

rr_chan *tu_anon(uint32_t variant, uint32_t req_cap, uint32_t slots, uint32_t resp_size,
                 uint64_t arena)
{
    rr_geometry g = tu_geom(variant, req_cap, slots, resp_size, arena);
    rr_error err;
    rr_chan *c = NULL;
    int rc = rr_open_anon(&g, &c, &err);
    if (rc) {
        tu_fail(__FILE__, __LINE__, "rr_open_anon: %s (%s)", tu_err(rc), err.why);
        return NULL;
    }
    return c;
}

static char tmp_root[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void cleanup_tmp(void)
{
    if (tmp_root[0] && !is_child)
        nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tu_tmpdir(void)
{
    if (!tmp_root[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root, "%s/rr_test.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmp_root)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmp_root;
}

void tu_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s.%s", tu_tmpdir(), cur_name, name);
}

void *tu_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        tu_fail(__FILE__, __LINE__, "mmap shared %zu: %s", size, strerror(errno));
        return NULL;
    }
    return p;
}

void tu_shared_free(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}

bool tu_in_child(void) { return is_child; }

void tu_child_exit(void)
{
    _exit(tu_failures() ? 1 : 0);
}

pid_t tu_fork(void (*fn)(void *), void *arg, unsigned alarm_s)
{
    pid_t pid = fork();
    if (pid < 0) {
        tu_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        is_child = 1;
        atomic_store(&fail_count, 0);
        atomic_store(&fail_printed, 0);
        alarm(alarm_s);
        fn(arg);
        tu_child_exit();
    }
    return pid;
}

int tu_wait(pid_t pid, int64_t deadline)
{
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR) {
            tu_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
            return -1;
        }
        if (rr_now_ns() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            tu_fail(__FILE__, __LINE__, "child %d did not finish in time (killed)", (int)pid);
            return -1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

void tu_wait_ok(pid_t pid, int64_t deadline, const char *what)
{
    if (pid <= 0)
        return;
    int st = tu_wait(pid, deadline);
    if (st == -1)
        return;
    if (WIFSIGNALED(st))
        tu_fail(__FILE__, __LINE__, "%s (pid %d) killed by signal %d", what, (int)pid,
                WTERMSIG(st));
    else if (WEXITSTATUS(st) != 0)
        tu_fail(__FILE__, __LINE__, "%s (pid %d) exited with %d", what, (int)pid,
                WEXITSTATUS(st));
}

struct tu_interrupt {
    pthread_t th, target;
    unsigned ms;
    _Atomic int stop;
};

/* Signals the target every `ms` until joined: a signal that lands between two
 * sleeps of a polling wait (outside the futex call) cannot interrupt it, as
 * with any wait that is not a single system call; the next one does. */
static void *interrupt_main(void *arg)
{
    tu_interrupt *t = arg;
    while (!atomic_load(&t->stop)) {
        struct timespec ts = {t->ms / 1000, (long)(t->ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        if (!atomic_load(&t->stop))
            pthread_kill(t->target, SIGUSR1);
    }
    return NULL;
}

tu_interrupt *tu_interrupt_start(unsigned delay_ms)
{
    tu_interrupt *t = calloc(1, sizeof *t);
    t->target = pthread_self();
    t->ms = delay_ms;
    if (pthread_create(&t->th, NULL, interrupt_main, t) != 0) {
        tu_fail(__FILE__, __LINE__, "pthread_create failed");
        free(t);
        return NULL;
    }
    return t;
}

void tu_interrupt_join(tu_interrupt *t)
{
    if (!t)
        return;
    atomic_store(&t->stop, 1);
    pthread_join(t->th, NULL);
    free(t);
}

static int read_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    p += 2;
    *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 0;
}

uint64_t tu_proc_start(pid_t pid)
{
    char st;
    uint64_t start;
    return read_stat(pid, &st, &start) == 0 ? start : 0;
}

char tu_proc_state(pid_t pid)
{
    char st;
    uint64_t start;
    return read_stat(pid, &st, &start) == 0 ? st : 0;
}

bool tu_await(_Atomic int *flag, int want, int64_t deadline)
{
    while (atomic_load(flag) < want) {
        if (rr_now_ns() >= deadline)
            return false;
        sched_yield();
    }
    return true;
}

/* ---- runner ---- */

static bool selected(const tcase *t, int nsel, char **sel, int nskip, char **skip)
{
    for (int i = 0; i < nskip; i++)
        if (strcmp(skip[i], t->name) == 0)
            return false;
    if (nsel == 0)
        return true;
    for (int i = 0; i < nsel; i++)
        if (strcmp(sel[i], t->group) == 0 || strcmp(sel[i], t->name) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    char *sel[64], *skip[64];
    int nsel = 0, nskip = 0, list = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            tu_verbose = 1;
        else if (strcmp(argv[i], "-l") == 0)
            list = 1;
        else if (strcmp(argv[i], "-x") == 0 && i + 1 < argc && nskip < 64)
            skip[nskip++] = argv[++i];
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [-v] [-l] [-x NAME]... [GROUP|NAME]...\n", argv[0]);
            return 2;
        } else if (nsel < 64)
            sel[nsel++] = argv[i];
    }
    const char *env_skip = getenv("RR_TEST_SKIP");
    char *skip_copy = env_skip ? strdup(env_skip) : NULL;
    for (char *save = NULL, *tok = skip_copy ? strtok_r(skip_copy, ",", &save) : NULL;
         tok && nskip < 64; tok = strtok_r(NULL, ",", &save))
        skip[nskip++] = tok;
    const char *env_scale = getenv("RR_TEST_SCALE");
    if (env_scale && atof(env_scale) > 0)
        tu_scale = atof(env_scale);
    for (int i = 0; i < nsel; i++) {
        bool known = false;
        for (int k = 0; k < ntests; k++)
            known = known || strcmp(sel[i], tests[k].group) == 0
                || strcmp(sel[i], tests[k].name) == 0;
        if (!known) {
            fprintf(stderr, "no test or group named '%s' (try -l)\n", sel[i]);
            return 2;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_usr1; /* no SA_RESTART: blocking calls see EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup_tmp);

    int64_t t_all = rr_now_ns();
    for (int g = 0; g < NGROUPS; g++) {
        for (int i = 0; i < ntests; i++) {
            tcase *t = &tests[i];
            if (strcmp(t->group, group_order[g]) != 0 || !selected(t, nsel, sel, nskip, skip))
                continue;
            if (list) {
                outf("%s %s\n", t->group, t->name);
                continue;
            }
            cur_name = t->name;
            outf("[ RUN  ] %s/%s\n", t->group, t->name);
            atomic_store(&fail_count, 0);
            atomic_store(&fail_printed, 0);
            unsigned limit = t->timeout_s ? t->timeout_s : 60;
            limit = (unsigned)(limit * (tu_scale > 1 ? tu_scale : 1));
            int64_t t0 = rr_now_ns();
            alarm(limit);
            t->fn();
            alarm(0);
            double ms = tu_elapsed_ms(t0);
            if (tu_failures() == 0) {
                n_passed++;
                outf("[  OK  ] %s/%s (%.0f ms)\n", t->group, t->name, ms);
            } else {
                n_failed++;
                outf("[ FAIL ] %s/%s (%.0f ms, %d failed checks)\n", t->group, t->name, ms,
                     tu_failures());
            }
        }
    }
    free(skip_copy);
    if (list)
        return 0;
    cur_name = "";
    outf("total %.1f s\n", tu_elapsed_ms(t_all) / 1000);
    outf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
