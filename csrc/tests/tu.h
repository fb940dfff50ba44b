/* A minimal test framework for the reqrep core (plain C11 + POSIX, no deps).
 *
 * TEST(group, name) { ... } defines and registers a test. Inside a test:
 *   CHECK(cond), CHECK_EQ(a, b)      record a failure and go on
 *   REQUIRE(cond), REQUIRE_EQ(a, b)  record a failure and return from the test
 * Failures may be recorded from any thread, and from forked children (which
 * report through their exit status: see tu_fork / tu_child_exit). */
#ifndef RR_TU_H
#define RR_TU_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "reqrep.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

typedef void (*tu_fn)(void);
void tu_register(const char *group, const char *name, tu_fn fn, unsigned timeout_s);

#define TEST_T(grp, nm, timeout_s)                                                    \
    static void nm(void);                                                             \
    __attribute__((constructor)) static void nm##_register(void)                      \
    {                                                                                 \
        tu_register(grp, #nm, nm, timeout_s);                                         \
    }                                                                                 \
    static void nm(void)
#define TEST(grp, nm) TEST_T(grp, nm, 0)

void tu_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Failures recorded in this process since the current test started. */
int tu_failures(void);
/* Informational line, printed with -v (and always for failures). */
void tu_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(c)                                                                      \
    do {                                                                              \
        if (!(c))                                                                     \
            tu_fail(__FILE__, __LINE__, "CHECK(%s)", #c);                             \
    } while (0)
#define CHECK_EQ(a, b)                                                                \
    do {                                                                              \
        long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);                     \
        if (tu_a_ != tu_b_)                                                           \
            tu_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, tu_a_, tu_b_); \
    } while (0)
#define CHECK_MSG(c, ...)                                                             \
    do {                                                                              \
        if (!(c))                                                                     \
            tu_fail(__FILE__, __LINE__, __VA_ARGS__);                                 \
    } while (0)
#define REQUIRE(c)                                                                    \
    do {                                                                              \
        if (!(c)) {                                                                   \
            tu_fail(__FILE__, __LINE__, "REQUIRE(%s)", #c);                           \
            return;                                                                   \
        }                                                                             \
    } while (0)
#define REQUIRE_EQ(a, b)                                                              \
    do {                                                                              \
        long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);                     \
        if (tu_a_ != tu_b_) {                                                         \
            tu_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, tu_a_, tu_b_); \
            return;                                                                   \
        }                                                                             \
    } while (0)

/* Iteration counts are multiplied by this (RR_TEST_SCALE, default 1). */
extern double tu_scale;
static inline long tu_n(long base)
{
    long n = (long)(base * tu_scale);
    return n < 1 ? 1 : n;
}
extern int tu_verbose;

/* ---- helpers ---- */

static inline int64_t tu_ms(int64_t ms) { return rr_now_ns() + ms * 1000000; }
static inline double tu_elapsed_ms(int64_t since) { return (rr_now_ns() - since) / 1e6; }

/* xorshift64*: deterministic per-seed streams */
static inline uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15u;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1du;
}

/* Payload bytes are a function of (tag, position): any misplaced, shifted or
 * overwritten byte is found. */
void tu_fill(void *buf, size_t len, uint64_t tag);
/* Index of the first wrong byte, or -1 if all are right. */
long tu_check(const void *buf, size_t len, uint64_t tag);
/* Tagged payload: 8-byte tag then tu_fill(tag) bytes; len >= 8. */
void tu_fill_tagged(void *buf, size_t len, uint64_t tag);
/* Returns true and the tag if buf is a well-formed tagged payload. */
bool tu_check_tagged(const void *buf, size_t len, uint64_t *tag);

/* Channel constructors that fail the test (and return NULL) on error. */
rr_chan *tu_anon(uint32_t variant, uint32_t req_cap, uint32_t slots, uint32_t resp_size,
                 uint64_t arena);
rr_geometry tu_geom(uint32_t variant, uint32_t req_cap, uint32_t slots, uint32_t resp_size,
                    uint64_t arena);

/* A fresh private directory for the current test (removed with its files
 * at the end of the run). Returns "dir/name" in a static-per-call buffer. */
const char *tu_tmpdir(void);
void tu_path(char *out, size_t n, const char *name);

/* MAP_SHARED anonymous memory (zeroed) for counters shared with children. */
void *tu_shared(size_t size);
void tu_shared_free(void *p, size_t size);

/* Forks a child that runs fn(arg) with alarm(alarm_s) as a watchdog and
 * exits 0 if it recorded no failure. */
pid_t tu_fork(void (*fn)(void *), void *arg, unsigned alarm_s);
/* Waits for pid until deadline (then SIGKILLs it and fails). Returns the
 * raw wait status, or -1 on timeout. */
int tu_wait(pid_t pid, int64_t deadline);
/* Waits and checks the child exited 0. */
void tu_wait_ok(pid_t pid, int64_t deadline, const char *what);
bool tu_in_child(void);
__attribute__((noreturn)) void tu_child_exit(void);

/* Sends SIGUSR1 (whose handler does nothing, without SA_RESTART) to `thread`
 * after delay_ms from a helper thread; tu_interrupt_join waits for it. */
typedef struct tu_interrupt tu_interrupt;
tu_interrupt *tu_interrupt_start(unsigned delay_ms);
void tu_interrupt_join(tu_interrupt *t);

/* Field 22 of /proc/PID/stat (start time in clock ticks), or 0. */
uint64_t tu_proc_start(pid_t pid);
/* State letter from /proc/PID/stat, or 0. */
char tu_proc_state(pid_t pid);

/* Spin-wait (with sched_yield) until *flag >= want or the deadline. */
bool tu_await(_Atomic int *flag, int want, int64_t deadline);

static inline const char *tu_err(int rc)
{
    return rc == -RR_EFORMAT ? "RR_EFORMAT" : strerror(rc < 0 ? -rc : rc);
}

#endif
