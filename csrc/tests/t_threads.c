/* Thread concurrency: many producers and consumers on one anonymous channel
 * (each with its own handle from rr_chan_share, or all on one handle), and
 * cancel-vs-reply races. This group is what run.sh runs under TSan. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "echo.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

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
