/* Thread concurrency: many producers and consumers on one anonymous channel
 * (each with its own handle from rr_chan_share, or all on one handle), and
 * cancel-vs-reply races. This group is what run.sh runs under TSan. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "echo.h"
#include "rr_test_hooks.h" /* rr_test_before_sleep */

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STR RR_VARIANT_STR
#define INT RR_VARIANT_INT

typedef struct th_arg {
    rr_chan *c;
    const echo_cfg *cfg;
    int idx, producer;
} th_arg;

static void *echo_thread(void *p)
{
    th_arg *a = p;
    if (a->producer)
        echo_producer(a->c, a->cfg, a->idx);
    else
        echo_consumer(a->c, a->cfg, a->idx);
    return NULL;
}

typedef struct poller_arg {
    rr_chan *c;
    echo_shared *sh;
    long polls;
} poller_arg;

/* Reads statistics and sizes while the others work (as a monitoring tool
 * would): must be safe at any moment. */
static void *stats_poller(void *p)
{
    poller_arg *a = p;
    while (!atomic_load(&a->sh->stop_pollers)) {
        rr_stats s;
        rr_get_stats(a->c, &s);
        if (s.size > s.capacity || s.slots_free > s.resp_slots
            || (s.arena_cap && s.arena_used > s.arena_cap))
            tu_fail(__FILE__, __LINE__, "inconsistent stats: size %llu free %u used %llu",
                    (unsigned long long)s.size, s.slots_free, (unsigned long long)s.arena_used);
        (void)rr_size(a->c);
        a->polls++;
        sched_yield();
    }
    return NULL;
}

typedef struct echo_run {
    uint32_t variant;
    int producers, consumers, window;
    long per_producer;
    uint32_t req_cap, slots, max_len;
    uint64_t arena;
    bool share_one_handle;
    bool poll_stats;
} echo_run;

static void run_threads(const echo_run *r)
{
    if (tu_failures())
        return; /* an earlier run of this test failed: its report is enough */
    rr_chan *base = tu_anon(r->variant, r->req_cap, r->slots,
                            r->variant == STR ? r->max_len : 0, r->arena);
    REQUIRE(base);
    echo_cfg cfg = {r->variant, r->producers, r->consumers, r->per_producer, r->window,
                    r->max_len, tu_ms(45000), NULL};
    size_t shsz = echo_shared_size(&cfg);
    cfg.sh = tu_shared(shsz);
    REQUIRE(cfg.sh);
    int n = r->producers + r->consumers;
    pthread_t th[64];
    th_arg args[64];
    rr_chan *h[64];
    REQUIRE(n <= 64);
    for (int i = 0; i < n; i++) {
        h[i] = base;
        if (!r->share_one_handle)
            REQUIRE_EQ(rr_chan_share(base, &h[i]), 0);
        if (!r->share_one_handle)
            rr_set_spin(h[i], i % 3 == 0 ? 0 : i % 3 == 1 ? 20 : 200);
    }
    poller_arg pa = {base, cfg.sh, 0};
    pthread_t pt;
    if (r->poll_stats)
        REQUIRE(pthread_create(&pt, NULL, stats_poller, &pa) == 0);
    int64_t t0 = rr_now_ns();
    for (int i = 0; i < n; i++) {
        bool prod = i < r->producers;
        args[i] = (th_arg){h[i], &cfg, prod ? i : i - r->producers, prod};
        REQUIRE(pthread_create(&th[i], NULL, echo_thread, &args[i]) == 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    double ms = tu_elapsed_ms(t0);
    atomic_store(&cfg.sh->stop_pollers, 1);
    if (r->poll_stats)
        pthread_join(pt, NULL);
    echo_verify(base, &cfg);
    tu_note("%s %dx%d%s: %ld requests in %.0f ms (%.0f/s)%s", r->variant == STR ? "Str" : "Int",
            r->producers, r->consumers, r->share_one_handle ? " one handle" : "",
            r->producers * r->per_producer, ms, r->producers * r->per_producer / (ms / 1000),
            r->poll_stats ? " with a stats poller" : "");
    for (int i = 0; i < n; i++)
        if (h[i] != base)
            rr_close(h[i]);
    rr_close(base);
    tu_shared_free(cfg.sh, shsz);
}

TEST_T("threads", threads_echo_str, 120)
{
    /* a small arena and ring, fewer slots than requests in flight: every
     * wait path (slot, queue room, arena room, reply) is exercised */
    echo_run r = {STR, 4, 3, 6, tu_n(20000), 16, 16, 600, 4096, false, false};
    run_threads(&r);
    echo_run r2 = {STR, 3, 2, 4, tu_n(15000), 64, 64, 300, 0, true, false};
    run_threads(&r2);
    echo_run r3 = {STR, 1, 4, 8, tu_n(20000), 8, 8, 100, 4096, false, false};
    run_threads(&r3);
}

TEST_T("threads", threads_echo_int, 120)
{
    echo_run r = {INT, 4, 3, 6, tu_n(30000), 16, 16, 8, 0, false, false};
    run_threads(&r);
    echo_run r2 = {INT, 3, 3, 4, tu_n(20000), 4, 64, 8, 0, true, false};
    run_threads(&r2);
    echo_run r3 = {INT, 5, 1, 3, tu_n(1000), 1, 4, 8, 0, false, false}; /* ring of one */
    run_threads(&r3);
}

/* rr_get_stats and rr_size while requests flow (what `python -m reqrep stats`
 * or a monitoring thread does). */
TEST_T("threads", threads_stats_while_busy, 120)
{
    echo_run r = {STR, 2, 2, 4, tu_n(15000), 16, 16, 200, 4096, false, true};
    run_threads(&r);
    echo_run r2 = {INT, 2, 2, 4, tu_n(15000), 16, 16, 8, 0, false, true};
    run_threads(&r2);
}

/* ---- cancel against reply ---- */

typedef struct race {
    rr_chan *cc, *wc;
    uint32_t variant;
    long rounds;
    bool overlap; /* after winning a cancel, send the next request at once */
    _Atomic long ready, done;
    _Atomic int *wrc; /* the worker's reply result, per round */
    long cancel_wins, reply_wins;
} race;

static void spin_a_little(uint64_t *seed)
{
    unsigned n = (unsigned)(tu_rand(seed) % 400);
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static bool await_long(_Atomic long *v, long want, int64_t deadline)
{
    while (atomic_load(v) < want) {
        if (rr_now_ns() >= deadline)
            return false;
        sched_yield();
    }
    return true;
}

static int race_send(race *r, long k, uint64_t *id)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "req %ld", k);
    return r->variant == STR ? rr_str_send(r->cc, buf, (size_t)n, 0, tu_ms(5000), id)
                             : rr_int_send(r->cc, k, tu_ms(5000), id);
}

static bool race_check_reply(race *r, uint64_t id, long k)
{
    rr_resp resp;
    int rc = rr_resp_view(r->cc, id, &resp);
    if (rc != 0) {
        tu_fail(__FILE__, __LINE__, "round %ld: view: %s", k, tu_err(rc));
        return false;
    }
    char want[32];
    int n = snprintf(want, sizeof want, "resp %ld", k);
    bool ok = r->variant == STR ? resp.len == (uint32_t)n && memcmp(resp.data, want, (size_t)n) == 0
                                : resp.value == -k;
    if (!ok)
        tu_fail(__FILE__, __LINE__, "round %ld: the response is another request's", k);
    rc = rr_resp_release(r->cc, id);
    if (rc != 0)
        tu_fail(__FILE__, __LINE__, "round %ld: release: %s", k, tu_err(rc));
    return ok;
}

static void *race_worker(void *p)
{
    race *r = p;
    uint64_t seed = 99, prev = 0;
    for (long k = 1; k <= r->rounds && tu_failures() == 0; k++) {
        uint64_t id = 0;
        long got = -1;
        if (r->variant == STR) {
            int n = rr_str_recv_begin(r->wc, tu_ms(5000));
            if (n <= 0) {
                tu_fail(__FILE__, __LINE__, "round %ld: recv_begin %d", k, n);
                break;
            }
            rr_entry e;
            if (rr_str_recv_peek(r->wc, 0, &e) == 0 && e.len < 31) {
                char tmp[32];
                memcpy(tmp, e.data, e.len);
                tmp[e.len] = 0;
                sscanf(tmp, "req %ld", &got);
                id = e.id;
            }
            rr_str_recv_end(r->wc, 1);
        } else {
            int64_t v;
            int rc = rr_int_recv(r->wc, tu_ms(5000), &v, &id);
            if (rc != 0) {
                tu_fail(__FILE__, __LINE__, "round %ld: int_recv %s", k, tu_err(rc));
                break;
            }
            got = (long)v;
        }
        if (got != k) {
            tu_fail(__FILE__, __LINE__, "round %ld: worker received request %ld", k, got);
            break;
        }
        /* the previous round's id is dead by now, whoever won */
        if (prev) {
            int rc = r->variant == STR ? rr_str_reply(r->wc, prev, "stale", 5, 0)
                                       : rr_int_reply(r->wc, prev, 0);
            if (rc != -ESTALE)
                tu_fail(__FILE__, __LINE__, "round %ld: reply to the previous id gave %d", k, rc);
        }
        atomic_store(&r->ready, k);
        spin_a_little(&seed);
        char buf[32];
        int n = snprintf(buf, sizeof buf, "resp %ld", k);
        int rc = r->variant == STR ? rr_str_reply(r->wc, id, buf, (size_t)n, 0)
                                   : rr_int_reply(r->wc, id, -k);
        atomic_store(&r->wrc[k], rc);
        atomic_store(&r->done, k);
        prev = id;
    }
    return NULL;
}

static void run_race(uint32_t variant, bool one_handle, bool overlap, long rounds)
{
    if (tu_failures())
        return;
    race r = {0};
    r.variant = variant;
    r.rounds = rounds;
    r.overlap = overlap;
    r.cc = tu_anon(variant, 4, 1, variant == STR ? 64 : 0, 0); /* one slot: always reused */
    REQUIRE(r.cc);
    r.wc = r.cc;
    if (!one_handle)
        REQUIRE_EQ(rr_chan_share(r.cc, &r.wc), 0);
    r.wrc = calloc((size_t)rounds + 2, sizeof *r.wrc);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, race_worker, &r) == 0);
    uint64_t seed = 7, id = 0, prev = 0;
    bool have = false;
    for (long k = 1; k <= rounds && tu_failures() == 0; k++) {
        if (!have) {
            int rc = race_send(&r, k, &id);
            if (rc != 0) {
                tu_fail(__FILE__, __LINE__, "round %ld: send %s", k, tu_err(rc));
                break;
            }
        }
        have = false;
        if (!await_long(&r.ready, k, tu_ms(5000))) {
            tu_fail(__FILE__, __LINE__, "round %ld: worker never took the request", k);
            break;
        }
        spin_a_little(&seed);
        int crc = rr_cancel(r.cc, id);
        uint64_t next = 0;
        if (overlap && crc == 0 && k < rounds) {
            /* re-acquire the same slot while the worker may still be replying
             * to the cancelled id */
            int rc = race_send(&r, k + 1, &next);
            if (rc != 0) {
                tu_fail(__FILE__, __LINE__, "round %ld: send %s", k + 1, tu_err(rc));
                break;
            }
            have = true;
        }
        if (!await_long(&r.done, k, tu_ms(5000))) {
            tu_fail(__FILE__, __LINE__, "round %ld: worker never replied", k);
            break;
        }
        int wrc = atomic_load(&r.wrc[k]);
        if (crc == 0 && wrc == -ESTALE) {
            r.cancel_wins++;
            rr_resp resp;
            CHECK_EQ(rr_resp_view(r.cc, id, &resp), -ESTALE);
            CHECK_EQ(rr_id_live(r.cc, id), 0);
        } else if (crc == -EBUSY && wrc == 0) {
            r.reply_wins++;
            int rc = rr_resp_wait(r.cc, id, tu_ms(5000));
            if (rc != 0)
                tu_fail(__FILE__, __LINE__, "round %ld: resp_wait after -EBUSY: %s", k, tu_err(rc));
            else
                race_check_reply(&r, id, k);
        } else {
            tu_fail(__FILE__, __LINE__, "round %ld: cancel gave %d and reply gave %d", k, crc, wrc);
        }
        if (prev)
            CHECK_EQ(rr_cancel(r.cc, prev), -ESTALE);
        prev = id;
        if (have) {
            id = next;
            /* the cancelled reply did not land in the new request's slot (the
             * worker may have answered the new one already: then it is that) */
            rr_resp resp;
            int v = rr_resp_view(r.cc, id, &resp);
            if (v == 0) {
                char want[32];
                int n = snprintf(want, sizeof want, "resp %ld", k + 1);
                bool ok = variant == STR
                    ? resp.len == (uint32_t)n && memcmp(resp.data, want, (size_t)n) == 0
                    : resp.value == -(k + 1);
                CHECK_MSG(ok, "round %ld: the new request holds another request's reply", k + 1);
            } else {
                CHECK_MSG(v == -EAGAIN, "round %ld: view of the new request: %d", k + 1, v);
            }
        }
    }
    pthread_join(th, NULL);
    tu_note("%s%s%s: %ld rounds, cancel won %ld, reply won %ld", variant == STR ? "Str" : "Int",
            one_handle ? " one handle" : "", overlap ? " overlapping" : "", rounds, r.cancel_wins,
            r.reply_wins);
    CHECK_EQ(r.cancel_wins + r.reply_wins, rounds);
    rr_stats s;
    rr_get_stats(r.cc, &s);
    CHECK_EQ(s.slots_free, 1);
    CHECK_EQ(s.size, 0);
    if (r.wc != r.cc)
        rr_close(r.wc);
    rr_close(r.cc);
    free(r.wrc);
}

TEST_T("threads", threads_cancel_vs_reply, 120)
{
    long n = tu_n(5000);
    run_race(STR, false, false, n);
    run_race(INT, false, false, n);
    run_race(STR, true, false, n / 2);
    run_race(INT, true, false, n / 2);
    run_race(STR, false, true, n);
    run_race(INT, false, true, n);
}

/* Many clients waiting on their own slots, one worker answering in random
 * order: each wakes for its own reply only. */
typedef struct waiter_arg {
    rr_chan *c;
    int idx;
    long rounds;
    _Atomic long *sent;
} waiter_arg;

static void *waiter_thread(void *p)
{
    waiter_arg *a = p;
    for (long k = 0; k < a->rounds && tu_failures() == 0; k++) {
        uint64_t id;
        int64_t v = (int64_t)a->idx * 1000000 + k;
        int rc = rr_int_send(a->c, v, tu_ms(10000), &id);
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "send: %s", tu_err(rc));
            break;
        }
        rc = rr_resp_wait(a->c, id, tu_ms(10000));
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "waiter %d: resp_wait: %s", a->idx, tu_err(rc));
            break;
        }
        rr_resp r;
        rc = rr_resp_view(a->c, id, &r);
        if (rc != 0 || r.value != v * 2)
            tu_fail(__FILE__, __LINE__, "waiter %d got %lld for %lld", a->idx, (long long)r.value,
                    (long long)v);
        rr_resp_release(a->c, id);
    }
    atomic_fetch_add(a->sent, 1);
    return NULL;
}

TEST_T("threads", threads_many_sleepers, 120)
{
    enum { W = 12 };
    rr_chan *c = tu_anon(INT, 16, W, 0, 0);
    REQUIRE(c);
    rr_set_spin(c, 0); /* everybody sleeps in the kernel */
    _Atomic long finished = 0;
    pthread_t th[W];
    waiter_arg args[W];
    rr_chan *h[W];
    long rounds = tu_n(1000);
    for (int i = 0; i < W; i++) {
        REQUIRE_EQ(rr_chan_share(c, &h[i]), 0);
        rr_set_spin(h[i], 0);
        args[i] = (waiter_arg){h[i], i, rounds, &finished};
        REQUIRE(pthread_create(&th[i], NULL, waiter_thread, &args[i]) == 0);
    }
    /* the worker: take several, answer them in a shuffled order */
    uint64_t seed = 5;
    int64_t deadline = tu_ms(60000);
    while (atomic_load(&finished) < W && rr_now_ns() < deadline && tu_failures() == 0) {
        int64_t vals[W];
        uint64_t ids[W];
        int n = 0;
        while (n < W && rr_int_recv(c, n ? RR_NOWAIT : tu_ms(5), &vals[n], &ids[n]) == 0)
            n++;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(tu_rand(&seed) % (uint64_t)(i + 1));
            int64_t tv = vals[i];
            uint64_t ti = ids[i];
            vals[i] = vals[j];
            ids[i] = ids[j];
            vals[j] = tv;
            ids[j] = ti;
        }
        for (int i = 0; i < n; i++)
            CHECK_EQ(rr_int_reply(c, ids[i], vals[i] * 2), 0);
    }
    CHECK(rr_now_ns() < deadline);
    for (int i = 0; i < W; i++) {
        pthread_join(th[i], NULL);
        rr_close(h[i]);
    }
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK_EQ(s.slots_free, W);
    CHECK_EQ(s.replies, (uint64_t)W * (uint64_t)rounds);
    rr_close(c);
}

/* ---- clear while requests flow ----
 * Clear may drop any request and free any slot at any moment; what must hold
 * is that nobody ever reads a response meant for another request (a copy is
 * only trusted when rr_resp_release succeeds) and that the channel is whole
 * at the end. */
typedef struct clr {
    rr_chan *c;
    _Atomic int stop;
    _Atomic long verified, dropped, cleared;
    int idx;
} clr;

typedef struct clr_arg {
    clr *s;
    rr_chan *h;
    int idx;
} clr_arg;

/* The reader's copy of a response: rr_resp_view pins the slot, so clear()
 * cannot free it (nor a writer reuse it) while this runs. */
__attribute__((noinline)) static void copy_response(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
}

static void *clr_producer(void *p)
{
    clr_arg *a = p;
    uint8_t buf[72], want[72], copy[72];
    uint64_t seed = (uint64_t)a->idx + 1;
    for (uint32_t seq = 0; !atomic_load(&a->s->stop) && tu_failures() == 0; seq++) {
        uint32_t len = 8 + (uint32_t)(tu_rand(&seed) % 57);
        uint64_t tag = (uint64_t)a->idx << 32 | seq;
        tu_fill_tagged(buf, len, tag);
        uint64_t id;
        int rc = rr_str_send(a->h, buf, len, 0, tu_ms(200), &id);
        if (rc == -EAGAIN)
            continue;
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "send: %s", tu_err(rc));
            break;
        }
        rc = rr_resp_wait(a->h, id, tu_ms(200));
        if (rc == -ESTALE) {
            atomic_fetch_add(&a->s->dropped, 1); /* cleared */
            continue;
        }
        if (rc == -EAGAIN) {
            rc = rr_cancel(a->h, id);
            if (rc == 0 || rc == -ESTALE) {
                atomic_fetch_add(&a->s->dropped, 1);
                continue;
            }
            rc = rr_resp_wait(a->h, id, tu_ms(2000)); /* -EBUSY: it is coming */
            if (rc == -ESTALE) {
                atomic_fetch_add(&a->s->dropped, 1);
                continue;
            }
        }
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "resp_wait: %s", tu_err(rc));
            break;
        }
        rr_resp r;
        rc = rr_resp_view(a->h, id, &r);
        uint32_t rlen = 0;
        if (rc == 0) {
            rlen = r.len <= sizeof copy ? r.len : 0;
            copy_response(copy, r.data, rlen);
        }
        if (rc != 0 || rr_resp_release(a->h, id) != 0) {
            atomic_fetch_add(&a->s->dropped, 1); /* moved under us: discard */
            continue;
        }
        tu_fill_tagged(want, len, tag);
        bool ok = rlen == len;
        for (uint32_t i = 0; ok && i < len; i++)
            ok = copy[i] == (uint8_t)(want[i] ^ 0xa5);
        if (!ok)
            tu_fail(__FILE__, __LINE__, "a response that is not the answer to %#llx",
                    (unsigned long long)tag);
        atomic_fetch_add(&a->s->verified, 1);
    }
    return NULL;
}

static void *clr_consumer(void *p)
{
    clr_arg *a = p;
    uint8_t buf[72];
    while (!atomic_load(&a->s->stop) && tu_failures() == 0) {
        int n = rr_str_recv_begin(a->h, tu_ms(10));
        if (n == -EAGAIN)
            continue;
        if (n <= 0) {
            tu_fail(__FILE__, __LINE__, "recv_begin: %d", n);
            break;
        }
        rr_entry e;
        int rc = rr_str_recv_peek(a->h, 0, &e);
        uint32_t len = rc == 0 && e.len <= sizeof buf ? e.len : 0;
        uint64_t id = e.id, tag;
        if (len)
            memcpy(buf, e.data, len);
        rr_str_recv_end(a->h, 1);
        if (!tu_check_tagged(buf, len, &tag)) {
            tu_fail(__FILE__, __LINE__, "corrupt request (%u bytes)", len);
            continue;
        }
        for (uint32_t i = 0; i < len; i++)
            buf[i] ^= 0xa5;
        rc = rr_str_reply(a->h, id, buf, len, 0);
        if (rc != 0 && rc != -ESTALE)
            tu_fail(__FILE__, __LINE__, "reply: %s", tu_err(rc));
    }
    return NULL;
}

static void *clr_clearer(void *p)
{
    clr_arg *a = p;
    while (!atomic_load(&a->s->stop)) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        int rc = rr_clear(a->h);
        if (rc != 0)
            tu_fail(__FILE__, __LINE__, "clear: %s", tu_err(rc));
        atomic_fetch_add(&a->s->cleared, 1);
    }
    return NULL;
}

TEST_T("threads", threads_clear_under_load, 120)
{
    clr s = {0};
    s.c = tu_anon(STR, 16, 8, 64, 0);
    REQUIRE(s.c);
    enum { N = 5 };
    pthread_t th[N];
    clr_arg args[N];
    void *(*fns[N])(void *) = {clr_producer, clr_producer, clr_consumer, clr_consumer,
                               clr_clearer};
    for (int i = 0; i < N; i++) {
        args[i] = (clr_arg){&s, NULL, i};
        REQUIRE_EQ(rr_chan_share(s.c, &args[i].h), 0);
        REQUIRE(pthread_create(&th[i], NULL, fns[i], &args[i]) == 0);
    }
    struct timespec ts = {0, (long)(tu_n(1000) < 1000 ? tu_n(1000) : 999) * 1000000};
    nanosleep(&ts, NULL);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        rr_close(args[i].h);
    }
    CHECK_EQ(rr_clear(s.c), 0);
    rr_stats st;
    rr_get_stats(s.c, &st);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.slots_free, 8);
    CHECK_EQ(st.arena_used, 0);
    tu_note("%ld responses verified, %ld dropped by %ld clears", atomic_load(&s.verified),
            atomic_load(&s.dropped), atomic_load(&s.cleared));
    CHECK(atomic_load(&s.verified) > 0);
    uint64_t id;
    CHECK_EQ(rr_str_send(s.c, "ok", 2, 0, RR_NOWAIT, &id), 0);
    rr_close(s.c);
}

/* ---- rr_interrupt: closing a handle that other threads wait on ----
 * Each blocking call, asleep in a thread (or spinning), ends with -ECANCELED
 * once the main thread interrupts its handle, and had no effect. */

enum wait_op {
    OP_RESP_WAIT,    /* a reply that never comes */
    OP_STR_RECV,     /* an empty queue */
    OP_INT_RECV,
    OP_STR_SEND_SLOT, /* no free response slot */
    OP_INT_SEND_SLOT,
    OP_STR_SEND_ROOM, /* a full queue */
    OP_INT_SEND_ROOM,
    OP_BELL,         /* a bell nobody rings */
    OP_WAIT_REQUEST, /* rr_wait_request on an empty queue */
    OP_LOCK_SETTLE,  /* the Str queue lock held (by another handle of ours) */
    OP_LOCK_RECV,    /* a queued request behind the held lock */
    OP_LOCK_SEND,
    OP_LOCK_CLEAR,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    "resp_wait", "str_recv", "int_recv", "str_send(slot)", "int_send(slot)", "str_send(room)",
    "int_send(room)", "bell_wait", "wait_request", "lock_settle", "recv(lock)", "send(lock)",
    "clear(lock)",
};

typedef struct blocked {
    rr_chan *h;
    enum wait_op op;
    uint64_t id;      /* OP_RESP_WAIT: the request */
    int64_t deadline; /* of the call */
    _Atomic int tid;  /* set when the thread is about to call */
    _Atomic int rc;   /* the call's result, once it returned */
    _Atomic int done;
    int64_t ended;    /* rr_now_ns() when it returned */
} blocked;

static int run_op(blocked *b)
{
    rr_chan *h = b->h;
    uint64_t id;
    int64_t v;
    switch (b->op) {
    case OP_RESP_WAIT:
        return rr_resp_wait(h, b->id, b->deadline);
    case OP_STR_RECV:
    case OP_LOCK_RECV: {
        int n = rr_str_recv_begin(h, b->deadline);
        if (n >= 0)
            rr_str_recv_end(h, 0);
        return n;
    }
    case OP_INT_RECV:
        return rr_int_recv(h, b->deadline, &v, &id);
    case OP_STR_SEND_SLOT:
    case OP_STR_SEND_ROOM:
    case OP_LOCK_SEND:
        return rr_str_send(h, "late", 4, 0, b->deadline, &id);
    case OP_INT_SEND_SLOT:
    case OP_INT_SEND_ROOM:
        return rr_int_send(h, 7, b->deadline, &id);
    case OP_BELL:
        return rr_bell_wait(h, rr_bell_seq(h), b->deadline);
    case OP_WAIT_REQUEST:
        return rr_wait_request(h, b->deadline);
    case OP_LOCK_SETTLE:
        return rr_lock_settle(h, b->deadline);
    case OP_LOCK_CLEAR:
        return rr_clear(h);
    default:
        return -EINVAL;
    }
}

static void *blocked_thread(void *p)
{
    blocked *b = p;
    atomic_store(&b->tid, (int)syscall(SYS_gettid));
    int rc = run_op(b);
    b->ended = rr_now_ns();
    atomic_store(&b->rc, rc);
    atomic_store(&b->done, 1);
    return NULL;
}

/* State letter of one of our threads, from /proc/self/task/TID/stat. */
static char thread_state(int tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : 0;
}

/* Waits (at most 5 s) until the thread sits in the kernel: asleep in its
 * wait, as far as anyone can tell from outside. */
static bool await_asleep(blocked *b)
{
    int64_t deadline = tu_ms(5000);
    while (rr_now_ns() < deadline) {
        int tid = atomic_load(&b->tid);
        if (atomic_load(&b->done))
            return false;
        if (tid && thread_state(tid) == 'S')
            return true;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* A channel, and the handle `b->h` set up so that b->op blocks on it; the
 * handle that holds the queue lock (OP_LOCK_*) in *holder. */
static rr_chan *setup_op(blocked *b, rr_chan **holder)
{
    bool is_int = b->op == OP_INT_RECV || b->op == OP_INT_SEND_SLOT || b->op == OP_INT_SEND_ROOM;
    uint32_t variant = is_int ? INT : STR;
    uint32_t slots = b->op == OP_STR_SEND_SLOT || b->op == OP_INT_SEND_SLOT ? 1 : 4;
    rr_chan *c = tu_anon(variant, 1, slots, variant == STR ? 64 : 0, 0);
    if (!c)
        return NULL;
    *holder = NULL;
    uint64_t id;
    int rc = 0;
    if (rr_chan_share(c, &b->h) != 0) {
        rr_close(c);
        return NULL;
    }
    switch (b->op) {
    case OP_RESP_WAIT:
        rc = rr_str_send(c, "q", 1, 0, RR_NOWAIT, &b->id);
        break;
    case OP_STR_SEND_SLOT:
    case OP_STR_SEND_ROOM:
    case OP_LOCK_RECV:
        rc = rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id);
        break;
    case OP_INT_SEND_SLOT:
    case OP_INT_SEND_ROOM:
        rc = rr_int_send(c, 1, RR_NOWAIT, &id);
        break;
    case OP_BELL:
        rc = rr_bell_claim(b->h);
        break;
    default:
        break;
    }
    if (rc == 0 && b->op >= OP_LOCK_SETTLE) {
        rc = rr_chan_share(c, holder);
        if (rc == 0)
            rc = rr_test_hold_lock(*holder); /* held by this process, for good */
    }
    CHECK_MSG(rc == 0, "%s: setup: %s", op_names[b->op], tu_err(rc));
    return c;
}

/* Runs op in a thread, interrupts its handle once it sleeps (or, if
 * `at_once`, without waiting for that) and checks that the call ended with
 * -ECANCELED, within a few seconds, and changed nothing. */
static void interrupt_one(enum wait_op op, int64_t deadline_ms, uint32_t spin_us, bool at_once)
{
    blocked b = {.op = op};
    rr_chan *holder, *c = setup_op(&b, &holder);
    REQUIRE(c);
    rr_set_spin(b.h, spin_us);
    rr_stats before, after;
    rr_get_stats(c, &before);
    b.deadline = deadline_ms < 0 ? RR_FOREVER : tu_ms(deadline_ms);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, blocked_thread, &b) == 0);
    bool asleep = true;
    if (spin_us > 0) {
        struct timespec ts = {0, 20000000}; /* into its spin, most likely */
        nanosleep(&ts, NULL);
    } else if (!at_once) {
        asleep = await_asleep(&b);
    }
    CHECK_MSG(asleep, "%s: never went to sleep (rc %d)", op_names[op], atomic_load(&b.rc));
    int64_t t0 = rr_now_ns();
    rr_interrupt(b.h);
    int64_t returned = rr_now_ns();
    bool ended = tu_await(&b.done, 1, tu_ms(5000));
    CHECK_MSG(ended, "%s: still blocked 5 s after rr_interrupt", op_names[op]);
    if (!ended) {
        /* unblock it the hard way before tearing down */
        rr_close(c);
        return;
    }
    pthread_join(th, NULL);
    int rc = atomic_load(&b.rc);
    /* at_once: the call may not have started waiting yet; it still must not wait */
    CHECK_MSG(rc == -ECANCELED, "%s: returned %d (%s), not -ECANCELED", op_names[op], rc,
              tu_err(rc));
    rr_get_stats(c, &after);
    CHECK_EQ(after.slots_free, before.slots_free);
    CHECK_EQ(after.size, before.size);
    CHECK_EQ(after.requests, before.requests);
    if (!at_once && spin_us == 0)
        tu_note("%-15s %s: ended %.3f ms after rr_interrupt (which took %.3f ms)", op_names[op],
                deadline_ms < 0 ? "forever" : "timed  ", (b.ended - t0) / 1e6,
                (returned - t0) / 1e6);
    /* later waits on the handle end at once; calls that need not wait still run */
    b.done = 0;
    b.deadline = RR_FOREVER;
    CHECK_EQ(run_op(&b), -ECANCELED);
    if (op == OP_STR_RECV)
        CHECK_EQ(rr_str_recv_begin(b.h, RR_NOWAIT), -EAGAIN);
    rr_close(b.h);
    rr_close(holder);
    rr_close(c);
}

TEST_T("threads", threads_interrupt_each_wait, 120)
{
    for (int op = 0; op < OP_COUNT; op++) {
        interrupt_one(op, -1, 0, false);     /* asleep, no deadline */
        interrupt_one(op, 60000, 0, false);  /* asleep, a deadline far off */
        interrupt_one(op, -1, 2000000, false); /* spinning (a 2 s budget) */
        interrupt_one(op, -1, 0, true);      /* interrupted as it starts */
    }
}

/* More sleepers on one handle than its table holds: those left out sleep in
 * short stretches, and every one ends. Another handle's waits go on. */
typedef struct many_arg {
    rr_chan *h;
    uint64_t id;
    int64_t deadline;
    _Atomic int rc;
} many_arg;

static void *many_waiter(void *p)
{
    many_arg *a = p;
    atomic_store(&a->rc, rr_resp_wait(a->h, a->id, a->deadline));
    return NULL;
}

TEST_T("threads", threads_interrupt_many_sleepers, 120)
{
    enum { W = 40 };
    rr_chan *c = tu_anon(INT, 64, W + 1, 0, 0), *h, *other;
    REQUIRE(c);
    REQUIRE_EQ(rr_chan_share(c, &h), 0);
    REQUIRE_EQ(rr_chan_share(c, &other), 0);
    rr_set_spin(h, 0);
    pthread_t th[W + 1];
    many_arg args[W + 1];
    for (int i = 0; i <= W; i++) {
        uint64_t id;
        REQUIRE_EQ(rr_int_send(c, i, RR_NOWAIT, &id), 0);
        /* the last one waits on the other handle, with a deadline */
        args[i] = (many_arg){i < W ? h : other, id, i < W ? RR_FOREVER : tu_ms(300), 1};
        REQUIRE(pthread_create(&th[i], NULL, many_waiter, &args[i]) == 0);
    }
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL); /* let them fall asleep (not needed for the outcome) */
    int64_t t0 = rr_now_ns();
    rr_interrupt(h);
    for (int i = 0; i < W; i++)
        pthread_join(th[i], NULL);
    tu_note("%d sleepers on one handle ended %.1f ms after rr_interrupt", W, tu_elapsed_ms(t0));
    pthread_join(th[W], NULL);
    for (int i = 0; i < W; i++)
        CHECK_EQ(atomic_load(&args[i].rc), -ECANCELED);
    CHECK_EQ(atomic_load(&args[W].rc), -EAGAIN); /* the other handle's wait ran its course */
    rr_close(h);
    rr_close(other);
    rr_close(c);
}

/* rr_interrupt at every moment of a wait's start (before the sleeper looks
 * at the flag, between its look and its futex call, asleep): no wait
 * survives it. Threads of several handles sleep on the same shared words. */
typedef struct storm_arg {
    rr_chan *h;
    int kind;
    _Atomic int rc;
} storm_arg;

static void *storm_waiter(void *p)
{
    storm_arg *a = p;
    int64_t v;
    uint64_t id;
    int rc = a->kind == 0 ? rr_int_recv(a->h, RR_FOREVER, &v, &id)
        : a->kind == 1    ? rr_wait_request(a->h, RR_FOREVER)
                          : rr_int_send(a->h, 1, RR_FOREVER, &id);
    atomic_store(&a->rc, rc);
    return NULL;
}

TEST_T("threads", threads_interrupt_storm, 120)
{
    enum { T = 6 };
    /* receivers wait on an empty channel, senders on a full one (a queue of
     * one, and one slot left for two senders) */
    rr_chan *empty = tu_anon(INT, 4, 4, 0, 0), *full = tu_anon(INT, 1, 2, 0, 0);
    REQUIRE(empty && full);
    uint64_t id;
    REQUIRE_EQ(rr_int_send(full, 0, RR_NOWAIT, &id), 0);
    uint64_t seed = 11;
    long rounds = tu_n(300), late = 0;
    for (long r = 0; r < rounds && tu_failures() == 0; r++) {
        rr_chan *he, *hf;
        REQUIRE_EQ(rr_chan_share(empty, &he), 0);
        REQUIRE_EQ(rr_chan_share(full, &hf), 0);
        rr_set_spin(he, r % 3 == 0 ? 5 : 0);
        rr_set_spin(hf, r % 3 == 0 ? 5 : 0);
        pthread_t th[T];
        storm_arg args[T];
        for (int i = 0; i < T; i++) {
            args[i] = (storm_arg){i % 3 == 2 ? hf : he, i % 3, 1};
            REQUIRE(pthread_create(&th[i], NULL, storm_waiter, &args[i]) == 0);
        }
        struct timespec ts = {0, (long)(tu_rand(&seed) % 300) * 1000};
        nanosleep(&ts, NULL);
        int64_t t0 = rr_now_ns();
        rr_interrupt(he);
        rr_interrupt(hf);
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            int rc = atomic_load(&args[i].rc);
            CHECK_MSG(rc == -ECANCELED, "round %ld kind %d: %d", r, args[i].kind, rc);
        }
        if (rr_now_ns() - t0 > 100000000)
            late++;
        rr_close(he);
        rr_close(hf);
    }
    tu_note("%ld rounds, %ld took over 100 ms to end", rounds, late);
    rr_stats st;
    rr_get_stats(full, &st);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.slots_free, 1);
    rr_get_stats(empty, &st);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.slots_free, 4);
    rr_close(empty);
    rr_close(full);
}

/* The narrow race of rr_interrupt: a sleeper that looked at the flag before
 * it was set, and reaches its futex call only after the first wake-up went
 * out (held there by a test hook). rr_interrupt must wake it again. */
static _Thread_local bool late_sleeper;
static _Atomic int late_in_window;

static void hold_before_sleep(void)
{
    if (!late_sleeper || atomic_load(&late_in_window))
        return;
    atomic_store(&late_in_window, 1);
    struct timespec ts = {0, 50000000}; /* while rr_interrupt makes its first rounds */
    nanosleep(&ts, NULL);
}

typedef struct late_arg {
    rr_chan *h;
    _Atomic int rc, done;
} late_arg;

static void *late_thread(void *p)
{
    late_arg *a = p;
    late_sleeper = true;
    int64_t v;
    uint64_t id;
    atomic_store(&a->rc, rr_int_recv(a->h, RR_FOREVER, &v, &id));
    atomic_store(&a->done, 1);
    return NULL;
}

TEST_T("threads", threads_interrupt_late_sleeper, 60)
{
    rr_chan *c = tu_anon(INT, 4, 4, 0, 0), *h;
    REQUIRE(c);
    REQUIRE_EQ(rr_chan_share(c, &h), 0);
    rr_set_spin(h, 0);
    atomic_store(&late_in_window, 0);
    rr_test_before_sleep = hold_before_sleep;
    late_arg a = {h, 1, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, late_thread, &a) == 0);
    bool in_window = tu_await(&late_in_window, 1, tu_ms(5000));
    CHECK(in_window);
    int64_t t0 = rr_now_ns();
    rr_interrupt(h); /* its first wake-up finds nobody asleep */
    bool ended = tu_await(&a.done, 1, tu_ms(5000));
    CHECK_MSG(ended, "a sleeper that missed the first wake-up sleeps on");
    if (!ended) {
        uint64_t id;
        rr_int_send(c, 1, RR_NOWAIT, &id); /* wakes it (to see the flag) */
    }
    pthread_join(th, NULL);
    rr_test_before_sleep = NULL;
    tu_note("the late sleeper ended %.1f ms after rr_interrupt", tu_elapsed_ms(t0));
    CHECK_EQ(atomic_load(&a.rc), -ECANCELED);
    rr_close(h);
    rr_close(c);
}
