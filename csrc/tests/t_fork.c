/* Forked processes: the echo workload across processes (anonymous mapping
 * inherited by fork, a file reopened by path, a memfd reopened by fd), and
 * the faults of SPEC section 5: lock holders, clients and workers killed with
 * SIGKILL, and PID reuse. Not run under TSan (fork). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "echo.h"
#include "format_info.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR RR_VARIANT_STR
#define INT RR_VARIANT_INT

/* ---- the echo workload in processes ---- */

enum { VIA_INHERIT, VIA_PATH, VIA_FD };

typedef struct fork_echo {
    const echo_cfg *cfg;
    rr_chan *c;
    int via;
    const char *path;
    int fd;
    int idx;
    bool producer;
} fork_echo;

static void echo_child(void *p)
{
    fork_echo *f = p;
    rr_chan *h = f->c;
    rr_error err;
    int rc = 0;
    if (f->via == VIA_PATH)
        rc = rr_open_path(f->path, f->cfg->variant, NULL, &h, &err);
    else if (f->via == VIA_FD)
        rc = rr_open_fd(f->fd, f->cfg->variant, &h, &err);
    if (rc) {
        tu_fail(__FILE__, __LINE__, "child open: %s (%s)", tu_err(rc), err.why);
        return;
    }
    rr_set_spin(h, (uint32_t)(f->idx % 2) * 30);
    if (f->producer)
        echo_producer(h, f->cfg, f->idx);
    else
        echo_consumer(h, f->cfg, f->idx);
    if (h != f->c)
        rr_close(h);
}

static void run_fork_echo(uint32_t variant, int via, int producers, int consumers, long n,
                          uint32_t req_cap, uint32_t slots, uint32_t max_len, uint64_t arena)
{
    if (tu_failures())
        return;
    rr_geometry g = tu_geom(variant, req_cap, slots, variant == STR ? max_len : 0, arena);
    rr_chan *c = NULL;
    rr_error err;
    char path[512];
    int rc;
    if (via == VIA_PATH) {
        tu_path(path, sizeof path, variant == STR ? "echo-str" : "echo-int");
        rc = rr_open_path(path, variant, &g, &c, &err);
    } else if (via == VIA_FD) {
        rc = rr_open_memfd("rr-echo", &g, &c, &err);
    } else {
        rc = rr_open_anon(&g, &c, &err);
    }
    REQUIRE_EQ(rc, 0);
    echo_cfg cfg = {variant, producers, consumers, n, 4, max_len, tu_ms(45000), NULL};
    size_t shsz = echo_shared_size(&cfg);
    cfg.sh = tu_shared(shsz);
    REQUIRE(cfg.sh);
    pid_t pids[32];
    fork_echo fe[32];
    int total = producers + consumers;
    REQUIRE(total <= 32);
    int64_t t0 = rr_now_ns();
    for (int i = 0; i < total; i++) {
        bool prod = i < producers;
        fe[i] = (fork_echo){&cfg, c, via, path, rr_fd(c), prod ? i : i - producers, prod};
        pids[i] = tu_fork(echo_child, &fe[i], 60);
    }
    for (int i = 0; i < total; i++)
        tu_wait_ok(pids[i], tu_ms(70000), i < producers ? "producer" : "consumer");
    double ms = tu_elapsed_ms(t0);
    echo_verify(c, &cfg);
    tu_note("%s %dx%d processes via %s: %ld requests in %.0f ms", variant == STR ? "Str" : "Int",
            producers, consumers, via == VIA_PATH ? "path" : via == VIA_FD ? "memfd" : "fork",
            producers * n, ms);
    rr_close(c);
    tu_shared_free(cfg.sh, shsz);
}

TEST_T("fork", fork_echo_anon, 150)
{
    run_fork_echo(STR, VIA_INHERIT, 3, 2, tu_n(15000), 16, 16, 400, 4096);
    run_fork_echo(INT, VIA_INHERIT, 3, 2, tu_n(20000), 8, 12, 8, 0);
}

TEST_T("fork", fork_echo_file_memfd, 150)
{
    run_fork_echo(STR, VIA_PATH, 2, 2, tu_n(10000), 32, 16, 1000, 8192);
    run_fork_echo(INT, VIA_PATH, 2, 2, tu_n(10000), 16, 16, 8, 0);
    run_fork_echo(STR, VIA_FD, 2, 2, tu_n(8000), 16, 8, 200, 0);
    run_fork_echo(INT, VIA_FD, 2, 2, tu_n(8000), 16, 8, 8, 0);
}

/* ---- a process killed while it holds the Str queue lock ---- */

typedef struct holder_sh {
    _Atomic int state;
    int n;
} holder_sh;

typedef struct holder_arg {
    rr_chan *c;
    holder_sh *sh;
    int mode; /* 0: hold the lock after peek; 1: after recv_end (worker took it) */
} holder_arg;

static void holder_child(void *p)
{
    holder_arg *a = p;
    if (rr_geometry_of(a->c)->variant == INT) {
        int64_t v;
        uint64_t id;
        a->sh->n = rr_int_recv(a->c, tu_ms(5000), &v, &id) == 0;
    } else {
        a->sh->n = rr_str_recv_begin(a->c, tu_ms(5000));
        if (a->sh->n > 0) {
            rr_entry e;
            rr_str_recv_peek(a->c, 0, &e);
            if (a->mode == 1)
                rr_str_recv_end(a->c, 1);
        }
    }
    atomic_store(&a->sh->state, 1);
    for (;;)
        pause();
}

static bool await_state(pid_t pid, char want, int64_t deadline)
{
    while (tu_proc_state(pid) != want) {
        if (rr_now_ns() >= deadline)
            return false;
        usleep(1000);
    }
    return true;
}

static void lock_holder_killed(bool reap_first)
{
    rr_chan *c = tu_anon(STR, 8, 8, 64, 0);
    REQUIRE(c);
    uint64_t a, b;
    REQUIRE_EQ(rr_str_send(c, "A", 1, 0, RR_NOWAIT, &a), 0);
    holder_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    holder_arg arg = {c, sh, 0};
    pid_t pid = tu_fork(holder_child, &arg, 30);
    REQUIRE(pid > 0);
    if (!tu_await(&sh->state, 1, tu_ms(5000))) {
        tu_fail(__FILE__, __LINE__, "the child never took the lock");
        kill(pid, SIGKILL);
        tu_wait(pid, tu_ms(5000));
        return;
    }
    CHECK_EQ(sh->n, 1);

    /* a live holder keeps its lock, sleeping or stopped */
    int64_t t0 = rr_now_ns();
    CHECK_EQ(rr_str_send(c, "B", 1, 0, tu_ms(60), &b), -EAGAIN);
    double ms = tu_elapsed_ms(t0);
    CHECK_MSG(ms >= 59, "send gave up after %.1f ms", ms);
    CHECK_EQ(rr_str_recv_begin(c, tu_ms(30)), -EAGAIN);
    /* RR_TRY does not wait for the lock at all, and changes nothing */
    rr_stats st;
    rr_get_stats(c, &st);
    uint32_t free_before = st.slots_free;
    t0 = rr_now_ns();
    CHECK_EQ(rr_str_send(c, "B", 1, 0, RR_TRY, &b), -EBUSY);
    CHECK_EQ(rr_str_recv_begin(c, RR_TRY), -EBUSY);
    CHECK_MSG(tu_elapsed_ms(t0) < 50, "RR_TRY calls took %.1f ms", tu_elapsed_ms(t0));
    rr_get_stats(c, &st);
    CHECK_EQ(st.slots_free, free_before);
    CHECK_EQ(st.size, 1);
    kill(pid, SIGSTOP);
    CHECK(await_state(pid, 'T', tu_ms(5000)));
    CHECK_EQ(rr_str_send(c, "B", 1, 0, tu_ms(60), &b), -EAGAIN);
    rr_stats s0;
    rr_get_stats(c, &s0);

    kill(pid, SIGKILL);
    if (reap_first) {
        int st = tu_wait(pid, tu_ms(5000));
        CHECK(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    } else {
        CHECK(await_state(pid, 'Z', tu_ms(5000))); /* dead, not yet reaped */
    }
    t0 = rr_now_ns();
    int rc = rr_str_send(c, "B", 1, 0, tu_ms(5000), &b);
    ms = tu_elapsed_ms(t0);
    CHECK_EQ(rc, 0);
    tu_note("lock of a dead holder (%s) taken over in %.1f ms", reap_first ? "reaped" : "zombie",
            ms);
    CHECK_MSG(ms < 1000, "taking over a dead holder's lock took %.1f ms", ms);
    rr_stats s1;
    rr_get_stats(c, &s1);
    CHECK_EQ(s1.recoveries, s0.recoveries + 1);
    /* the queue is intact: A (read but not consumed by the dead) then B */
    CHECK_EQ(rr_str_recv_begin(c, RR_NOWAIT), 2);
    rr_entry e;
    CHECK(rr_str_recv_peek(c, 0, &e) == 0 && e.len == 1 && memcmp(e.data, "A", 1) == 0
          && e.id == a);
    CHECK(rr_str_recv_peek(c, 1, &e) == 0 && e.len == 1 && memcmp(e.data, "B", 1) == 0
          && e.id == b);
    rr_str_recv_end(c, 2);
    CHECK_EQ(rr_str_reply(c, a, "ra", 2, 0), 0);
    CHECK_EQ(rr_resp_release(c, a), 0);
    if (!reap_first) {
        int st = tu_wait(pid, tu_ms(5000));
        CHECK(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

TEST_T("fork", fork_lock_holder_killed, 60)
{
    lock_holder_killed(false);
    lock_holder_killed(true);
}

/* ---- random SIGKILLs of a process looping push/pop ---- */

#define KS_K 4
#define KS_MAXSEQ (1 << 15)
#define KS_WINDOW 4

typedef struct ks_shared {
    _Atomic int stop, started, finished, survivors;
    _Atomic uint32_t sent[KS_K];
    _Atomic uint64_t inflight[KS_K]; /* tag + 1 of a request being taken or answered */
    _Atomic uint32_t norphan[KS_K];
    _Atomic uint64_t orphan[KS_K][8]; /* tag + 1 of own requests given up */
    _Atomic uint64_t ops[KS_K];
    _Atomic uint8_t seen[KS_K * KS_MAXSEQ];
} ks_shared;

typedef struct ks_arg {
    rr_chan *c;
    const char *path;
    ks_shared *sh;
    int idx;
    uint64_t round;
} ks_arg;

typedef struct ks_out {
    uint64_t id, tag;
    uint32_t len;
} ks_out;

static bool ks_tag_ok(const ks_arg *a, uint64_t tag)
{
    return (tag >> 40) == a->round && ((tag >> 32) & 0xff) < KS_K
        && (tag & 0xffffffffu) < KS_MAXSEQ;
}

static size_t ks_index(uint64_t tag)
{
    return (size_t)((tag >> 32) & 0xff) * KS_MAXSEQ + (size_t)(tag & 0xffffffffu);
}

/* Takes one request if there is one: counts it, answers it. */
static void ks_serve(const ks_arg *a, rr_chan *h, int idx, int64_t deadline)
{
    int n = rr_str_recv_begin(h, deadline);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        tu_fail(__FILE__, __LINE__, "recv_begin: %d", n);
        return;
    }
    rr_entry e;
    uint8_t buf[512];
    int rc = rr_str_recv_peek(h, 0, &e);
    uint32_t len = e.len;
    uint64_t id = e.id, tag = 0;
    bool ok = rc == 0 && len <= sizeof buf;
    if (ok)
        memcpy(buf, e.data, len);
    ok = ok && tu_check_tagged(buf, len, &tag) && ks_tag_ok(a, tag);
    if (!ok) {
        rr_str_recv_end(h, 0);
        tu_fail(__FILE__, __LINE__, "corrupt or foreign request (rc %d, len %u, tag %#llx)", rc,
                len, (unsigned long long)tag);
        return;
    }
    if (idx >= 0)
        atomic_store(&a->sh->inflight[idx], tag + 1);
    rr_str_recv_end(h, 1);
    uint8_t before = atomic_fetch_add(&a->sh->seen[ks_index(tag)], 1);
    if (before)
        tu_fail(__FILE__, __LINE__, "request %#llx delivered twice", (unsigned long long)tag);
    for (uint32_t i = 0; i < len; i++)
        buf[i] ^= 0xa5;
    rc = rr_str_reply(h, id, buf, len, 0);
    if (rc != 0 && rc != -ESTALE) /* -ESTALE: its client died and its slot was reclaimed */
        tu_fail(__FILE__, __LINE__, "reply: %s", tu_err(rc));
    if (idx >= 0)
        atomic_store(&a->sh->inflight[idx], 0);
}

static bool ks_check_resp(rr_chan *h, const ks_out *o)
{
    rr_resp r;
    if (rr_resp_view(h, o->id, &r) != 0)
        return false;
    uint8_t want[512];
    tu_fill_tagged(want, o->len, o->tag);
    bool ok = r.len == o->len;
    for (uint32_t i = 0; ok && i < o->len; i++)
        ok = ((const uint8_t *)r.data)[i] == (uint8_t)(want[i] ^ 0xa5);
    if (!ok)
        tu_fail(__FILE__, __LINE__, "response to %#llx is wrong", (unsigned long long)o->tag);
    int rc = rr_resp_release(h, o->id);
    if (rc != 0)
        tu_fail(__FILE__, __LINE__, "release: %s", tu_err(rc));
    return true;
}

static void ks_give_up(const ks_arg *a, rr_chan *h, const ks_out *o, int why)
{
    int rc;
    if (why == -EOWNERDEAD) {
        rc = rr_resp_abandon_dead(h, o->id);
        if (rc != 0)
            tu_fail(__FILE__, __LINE__, "abandon_dead: %s", tu_err(rc));
    } else {
        rc = rr_cancel(h, o->id);
        if (rc == -EBUSY) {
            /* answered after all */
            if (rr_resp_wait(h, o->id, tu_ms(5000)) == 0 && ks_check_resp(h, o))
                return;
        }
    }
    uint32_t k = atomic_fetch_add(&a->sh->norphan[a->idx], 1);
    if (k < 8)
        atomic_store(&a->sh->orphan[a->idx][k], o->tag + 1);
}

static void ks_child(void *p)
{
    ks_arg *a = p;
    rr_chan *h = a->c;
    rr_error err;
    if (a->path) {
        int rc = rr_open_path(a->path, STR, NULL, &h, &err);
        if (rc) {
            tu_fail(__FILE__, __LINE__, "open: %s", tu_err(rc));
            return;
        }
    }
    rr_set_spin(h, a->idx % 2 ? 20 : 0);
    uint64_t seed = (uint64_t)getpid() * 31 + a->round;
    ks_out out[KS_WINDOW];
    int nout = 0;
    uint32_t seq = 0;
    uint8_t buf[512];
    atomic_fetch_add(&a->sh->started, 1);
    bool counted = false;
    int64_t hard = tu_ms(40000);
    while (tu_failures() == 0 && rr_now_ns() < hard) {
        bool stopping = atomic_load(&a->sh->stop);
        atomic_fetch_add_explicit(&a->sh->ops[a->idx], 1, memory_order_relaxed);
        if (!stopping && nout < KS_WINDOW && seq < KS_MAXSEQ) {
            uint32_t len = 8 + (uint32_t)(tu_rand(&seed) % 200);
            uint64_t tag = a->round << 40 | (uint64_t)a->idx << 32 | seq;
            tu_fill_tagged(buf, len, tag);
            uint64_t id;
            int rc = rr_str_send(h, buf, len, 0, tu_ms(200), &id);
            if (rc == 0) {
                out[nout++] = (ks_out){id, tag, len};
                atomic_store(&a->sh->sent[a->idx], ++seq);
            } else if (rc != -EAGAIN) {
                tu_fail(__FILE__, __LINE__, "send: %s", tu_err(rc));
            }
        }
        ks_serve(a, h, a->idx, tu_ms(2));
        for (int i = 0; i < nout;) {
            rr_resp r;
            if (rr_resp_view(h, out[i].id, &r) == 0) {
                ks_check_resp(h, &out[i]);
                out[i] = out[--nout];
            } else {
                i++;
            }
        }
        /* When stopping, serve the queue first, then wait (long enough, over
         * 100 ms, for a dead worker to be noticed). */
        if (nout == KS_WINDOW || (stopping && nout && rr_size(h) == 0)) {
            int rc = rr_resp_wait(h, out[0].id, tu_ms(stopping ? 300 : 3000));
            if (rc == 0) {
                ks_check_resp(h, &out[0]);
                out[0] = out[--nout];
            } else if (rc == -EOWNERDEAD || (rc == -EAGAIN && !stopping)) {
                ks_give_up(a, h, &out[0], rc);
                out[0] = out[--nout];
            } else if (rc != -EAGAIN) {
                tu_fail(__FILE__, __LINE__, "resp_wait: %s", tu_err(rc));
            }
        }
        if (stopping && nout == 0) {
            if (!counted) {
                atomic_fetch_add(&a->sh->finished, 1);
                counted = true;
            }
            /* keep serving until every survivor has all its answers */
            if (atomic_load(&a->sh->finished) >= atomic_load(&a->sh->survivors))
                break;
        }
        if (stopping && rr_now_ns() >= hard - 1000000000) {
            /* give up what is left (bounded) and report it */
            while (nout) {
                ks_give_up(a, h, &out[0], -EAGAIN);
                out[0] = out[--nout];
            }
        }
    }
    if (rr_now_ns() >= hard)
        tu_fail(__FILE__, __LINE__, "child %d ran out of time", a->idx);
    if (h != a->c)
        rr_close(h);
}

static void kill_storm(bool on_file, int rounds)
{
    rr_geometry g = tu_geom(STR, 32, 64, 512, 8192);
    rr_chan *c = NULL;
    rr_error err;
    char path[512];
    if (on_file) {
        tu_path(path, sizeof path, "storm");
        REQUIRE_EQ(rr_open_path(path, STR, &g, &c, &err), 0);
    } else {
        REQUIRE_EQ(rr_open_anon(&g, &c, &err), 0);
    }
    ks_shared *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    uint64_t seed = on_file ? 1234 : 4321;
    int lock_takeovers = 0, orphans = 0;
    for (int round = 1; round <= rounds && tu_failures() == 0; round++) {
        memset(sh, 0, sizeof *sh);
        rr_stats s0;
        rr_get_stats(c, &s0);
        ks_arg args[KS_K];
        pid_t pids[KS_K];
        int victim = (int)(tu_rand(&seed) % KS_K);
        atomic_store(&sh->survivors, KS_K - 1);
        for (int i = 0; i < KS_K; i++) {
            args[i] = (ks_arg){c, on_file ? path : NULL, sh, i, (uint64_t)round};
            pids[i] = tu_fork(ks_child, &args[i], 60);
        }
        int started_ok = 1;
        {
            _Atomic int *st = &sh->started;
            if (!tu_await(st, KS_K, tu_ms(10000))) {
                tu_fail(__FILE__, __LINE__, "children did not start");
                started_ok = 0;
            }
        }
        /* let the victim get going, then kill it wherever it is */
        usleep((useconds_t)(20000 + tu_rand(&seed) % 100000));
        uint64_t vops = atomic_load(&sh->ops[victim]);
        kill(pids[victim], SIGKILL);
        int st = tu_wait(pids[victim], tu_ms(5000));
        CHECK(st != -1 && WIFSIGNALED(st));
        uint64_t vin = atomic_load(&sh->inflight[victim]);
        /* the others must carry on */
        uint64_t before[KS_K];
        for (int i = 0; i < KS_K; i++)
            before[i] = atomic_load(&sh->ops[i]);
        /* long enough for a client whose request the victim took to learn
         * of the death (first check after 100 ms, then every 250 ms) */
        usleep(500000);
        for (int i = 0; i < KS_K && started_ok; i++)
            if (i != victim)
                CHECK_MSG(atomic_load(&sh->ops[i]) > before[i] + 5,
                          "round %d: child %d stalled after the kill", round, i);
        atomic_store(&sh->stop, 1);
        for (int i = 0; i < KS_K; i++)
            if (i != victim)
                tu_wait_ok(pids[i], tu_ms(50000), "survivor");

        /* what is still queued (the victim's requests) is taken by us */
        while (rr_size(c) > 0 && tu_failures() == 0)
            ks_serve(&args[0], c, -1, tu_ms(100));
        rr_reclaim(c);
        rr_stats s1;
        rr_get_stats(c, &s1);
        if (s1.recoveries > s0.recoveries)
            lock_takeovers++;

        /* accounting: every request whose send returned was delivered once,
         * except possibly the one the victim was taking or answering */
        for (int i = 0; i < KS_K; i++) {
            uint32_t sent = atomic_load(&sh->sent[i]);
            for (uint32_t q = 0; q < KS_MAXSEQ; q++) {
                uint64_t tag = (uint64_t)round << 40 | (uint64_t)i << 32 | q;
                uint8_t seen = atomic_load(&sh->seen[ks_index(tag)]);
                bool maybe = tag + 1 == vin || (i == victim && q == sent);
                if (seen > 1)
                    tu_fail(__FILE__, __LINE__, "round %d: request %#llx delivered %u times",
                            round, (unsigned long long)tag, seen);
                else if (q < sent && seen == 0 && !maybe)
                    tu_fail(__FILE__, __LINE__,
                            "round %d: request %#llx (child %d%s) was sent and lost", round,
                            (unsigned long long)tag, i, i == victim ? ", the victim" : "");
                else if (q >= sent && seen && !maybe)
                    tu_fail(__FILE__, __LINE__, "round %d: request %#llx delivered, never sent",
                            round, (unsigned long long)tag);
            }
            uint32_t no = atomic_load(&sh->norphan[i]);
            if (i == victim)
                continue;
            orphans += (int)no;
            for (uint32_t k = 0; k < no && k < 8; k++) {
                uint64_t t = atomic_load(&sh->orphan[i][k]);
                CHECK_MSG(t == vin, "round %d: child %d gave up on %#llx, which the victim "
                          "was not handling (victim had %#llx)", round, i,
                          (unsigned long long)(t - 1), (unsigned long long)(vin - 1));
            }
        }
        CHECK_EQ(s1.size, 0);
        CHECK_MSG(s1.slots_free == s1.resp_slots,
                  "round %d: %u of %u slots free after the round (acquired %u, ready %u; the "
                  "victim, child %d, was handling %#llx)", round, s1.slots_free, s1.resp_slots,
                  s1.slots_acquired, s1.slots_ready, victim,
                  (unsigned long long)(vin ? vin - 1 : 0));
        tu_note("round %d: victim %d killed after %llu ops (inflight %#llx), %llu sent in all, "
                "recoveries %llu", round, victim, (unsigned long long)vops,
                (unsigned long long)(vin ? vin - 1 : 0), (unsigned long long)s1.requests,
                (unsigned long long)s1.recoveries);
    }
    tu_note("%s: %d rounds, lock taken over from the victim in %d, %d requests given up",
            on_file ? "file" : "anon", rounds, lock_takeovers, orphans);
    /* the channel is still fine */
    uint64_t id;
    CHECK_EQ(rr_str_send(c, "end", 3, 0, tu_ms(1000), &id), 0);
    CHECK_EQ(rr_str_recv_begin(c, tu_ms(1000)), 1);
    rr_str_recv_end(c, 1);
    CHECK_EQ(rr_cancel(c, id), 0);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

TEST_T("fork", fork_kill_storm, 240)
{
    int rounds = (int)tu_n(6);
    kill_storm(false, rounds);
    kill_storm(true, rounds);
}

/* ---- a client killed while owning slots ---- */

typedef struct client_sh {
    _Atomic int greedy_ready, sender_started;
    int sender_rc;
    double sender_ms;
} client_sh;

typedef struct client_arg {
    rr_chan *c;
    client_sh *sh;
    int n;
} client_arg;

static void greedy_client(void *p)
{
    client_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        uint64_t id;
        if (rr_str_send(a->c, "mine", 4, 0, RR_NOWAIT, &id) != 0)
            tu_fail(__FILE__, __LINE__, "send %d", i);
    }
    atomic_store(&a->sh->greedy_ready, 1);
    for (;;)
        pause();
}

/* Blocks for a slot while the pool is dry (and its owner dies meanwhile). */
static void blocked_sender(void *p)
{
    client_arg *a = p;
    atomic_store(&a->sh->sender_started, 1);
    int64_t t0 = rr_now_ns();
    uint64_t id;
    a->sh->sender_rc = rr_str_send(a->c, "wait", 4, 0, tu_ms(5000), &id);
    a->sh->sender_ms = tu_elapsed_ms(t0);
    if (a->sh->sender_rc == 0)
        rr_cancel(a->c, id);
}

TEST_T("fork", fork_dead_client_slots, 60)
{
    rr_chan *c = tu_anon(STR, 16, 4, 64, 0);
    REQUIRE(c);
    client_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    client_arg arg = {c, sh, 4};
    pid_t pid = tu_fork(greedy_client, &arg, 30);
    REQUIRE(pid > 0);
    CHECK(tu_await(&sh->greedy_ready, 1, tu_ms(5000)));
    uint64_t x;
    CHECK_EQ(rr_str_send(c, "x", 1, 0, RR_NOWAIT, &x), -EAGAIN);
    CHECK_EQ(rr_str_send(c, "x", 1, 0, tu_ms(100), &x), -EAGAIN); /* the owner is alive */
    /* one of the dead client's requests gets its reply before the death */
    int n = rr_str_recv_begin(c, RR_NOWAIT);
    CHECK_EQ(n, 4);
    rr_entry e;
    uint64_t first = 0;
    if (n > 0 && rr_str_recv_peek(c, 0, &e) == 0)
        first = e.id;
    if (n > 0)
        rr_str_recv_end(c, 1);
    CHECK_EQ(rr_str_reply(c, first, "late", 4, 0), 0);

    /* another client goes to sleep waiting for a slot... */
    pid_t spid = tu_fork(blocked_sender, &arg, 30);
    REQUIRE(spid > 0);
    CHECK(tu_await(&sh->sender_started, 1, tu_ms(5000)));
    usleep(200000);
    /* ...and the owner of every slot dies */
    kill(pid, SIGKILL);
    int st = tu_wait(pid, tu_ms(5000));
    CHECK(st != -1 && WIFSIGNALED(st));
    tu_wait_ok(spid, tu_ms(10000), "blocked sender");
    CHECK_MSG(sh->sender_rc == 0,
              "a send blocked on a dry pool did not get a dead client's slot: %d (%s) after "
              "%.0f ms", sh->sender_rc, tu_err(sh->sender_rc), sh->sender_ms);
    tu_note("a sender sleeping on the pool got a dead client's slot after %.0f ms (200 ms "
            "before the death)", sh->sender_ms);
    CHECK_MSG(sh->sender_ms < 2200, "the sleeping sender got a slot after %.0f ms",
              sh->sender_ms);

    /* a fresh send gets one at once */
    int64_t t0 = rr_now_ns();
    uint64_t mine;
    int rc = rr_str_send(c, "x", 1, 0, tu_ms(5000), &mine);
    double ms = tu_elapsed_ms(t0);
    CHECK_EQ(rc, 0);
    tu_note("slot of a dead client back after %.1f ms", ms);
    CHECK_MSG(ms < 2000, "a dead client's slot came back after %.0f ms", ms);
    rr_reclaim(c);
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK_EQ(s.slots_free, 3);
    CHECK_EQ(s.slots_acquired, 1);
    CHECK_EQ(s.slots_ready, 0);
    CHECK(s.recoveries >= 4);
    /* queued: the dead client's three, the sender's (cancelled), mine; the
     * replies to all but mine are refused */
    n = rr_str_recv_begin(c, RR_NOWAIT);
    CHECK_EQ(n, sh->sender_rc == 0 ? 5 : 4);
    uint64_t ids[8] = {0};
    for (int i = 0; i < n && i < 8; i++)
        if (rr_str_recv_peek(c, (uint32_t)i, &e) == 0)
            ids[i] = e.id;
    if (n > 0)
        rr_str_recv_end(c, (uint32_t)n);
    for (int i = 0; i < n - 1 && i < 8; i++)
        CHECK_EQ(rr_str_reply(c, ids[i], "r", 1, 0), -ESTALE);
    if (n > 0 && n <= 8)
        CHECK_EQ(ids[n - 1], mine);
    CHECK_EQ(rr_str_reply(c, mine, "r", 1, 0), 0);
    CHECK_EQ(rr_resp_release(c, mine), 0);
    rr_get_stats(c, &s);
    CHECK_EQ(s.slots_free, 4);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* ---- a worker killed after taking a request ---- */

static void dead_worker(uint32_t variant, int mode)
{
    rr_chan *c = tu_anon(variant, 8, 4, variant == STR ? 64 : 0, 0);
    REQUIRE(c);
    uint64_t a;
    if (variant == STR)
        REQUIRE_EQ(rr_str_send(c, "job", 3, 0, RR_NOWAIT, &a), 0);
    else
        REQUIRE_EQ(rr_int_send(c, 11, RR_NOWAIT, &a), 0);
    holder_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    holder_arg arg = {c, sh, mode};
    pid_t pid = tu_fork(holder_child, &arg, 30);
    REQUIRE(pid > 0);
    CHECK(tu_await(&sh->state, 1, tu_ms(5000)));
    CHECK_EQ(sh->n, 1);
    /* alive and silent: a plain timeout, not a death */
    CHECK_EQ(rr_resp_wait(c, a, tu_ms(400)), -EAGAIN);
    if (mode == 1)
        CHECK_EQ(rr_resp_worker(c, a), pid);
    kill(pid, SIGKILL);
    int st = tu_wait(pid, tu_ms(5000));
    CHECK(st != -1 && WIFSIGNALED(st));
    int64_t t0 = rr_now_ns();
    int rc = rr_resp_wait(c, a, tu_ms(mode == 1 ? 5000 : 500));
    double ms = tu_elapsed_ms(t0);
    if (mode == 1) {
        /* it had taken the request: the client learns of the death */
        CHECK_MSG(rc == -EOWNERDEAD, "resp_wait after the worker died: %d (%s)", rc, tu_err(rc));
        tu_note("%s: worker death noticed after %.0f ms", variant == STR ? "Str" : "Int", ms);
        CHECK_MSG(ms < 2000, "worker death noticed after %.0f ms", ms);
        CHECK_EQ(rr_resp_abandon_dead(c, a), 0);
        CHECK_EQ(rr_resp_abandon_dead(c, a), -ESTALE);
        CHECK_EQ(rr_id_live(c, a), 0);
        CHECK_EQ(rr_cancel(c, a), -ESTALE);
        if (variant == STR)
            CHECK_EQ(rr_str_reply(c, a, "r", 1, 0), -ESTALE);
        else
            CHECK_EQ(rr_int_reply(c, a, 1), -ESTALE);
    } else {
        /* it died holding the lock, before consuming: the request is still
         * queued, nobody took it, nobody is dead on it */
        CHECK_EQ(rc, -EAGAIN);
        CHECK_EQ(rr_str_recv_begin(c, tu_ms(2000)), 1);
        rr_entry e;
        CHECK(rr_str_recv_peek(c, 0, &e) == 0 && e.id == a && e.len == 3);
        rr_str_recv_end(c, 1);
        CHECK_EQ(rr_str_reply(c, a, "done", 4, 0), 0);
        CHECK_EQ(rr_resp_wait(c, a, tu_ms(1000)), 0);
        CHECK_EQ(rr_resp_release(c, a), 0);
    }
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK_EQ(s.slots_free, 4);
    CHECK_EQ(s.size, 0);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

TEST_T("fork", fork_dead_worker, 60)
{
    dead_worker(STR, 1);
    dead_worker(INT, 1);
    dead_worker(STR, 0);
}

/* ---- the lock word naming processes: dead, impossible, reused pids ---- */

static void sleeper(void *p)
{
    (void)p;
    for (;;)
        pause();
}

static void quitter(void *p) { (void)p; }

/* The pid of a process that has exited and been reaped (0 if fork failed). */
static pid_t reaped_pid(void)
{
    pid_t pid = tu_fork(quitter, NULL, 30);
    if (pid > 0)
        tu_wait(pid, tu_ms(5000));
    return pid > 0 ? pid : 0;
}

static void put_lock(int fd, uint32_t off, uint64_t v)
{
    if (pwrite(fd, &v, 8, off) != 8)
        tu_fail(__FILE__, __LINE__, "pwrite lock: %s", strerror(errno));
}

static void expect_taken(rr_chan *c, int fd, uint32_t off, uint64_t v, const char *what)
{
    put_lock(fd, off, v);
    rr_stats s0, s1;
    rr_get_stats(c, &s0);
    uint64_t id;
    int64_t t0 = rr_now_ns();
    int rc = rr_str_send(c, "p", 1, 0, tu_ms(3000), &id);
    double ms = tu_elapsed_ms(t0);
    CHECK_MSG(rc == 0, "%s: lock not taken over (%s)", what, tu_err(rc));
    CHECK_MSG(ms < 1000, "%s: taken over after %.0f ms", what, ms);
    rr_get_stats(c, &s1);
    CHECK_MSG(s1.recoveries == s0.recoveries + 1, "%s: recoveries %llu -> %llu", what,
              (unsigned long long)s0.recoveries, (unsigned long long)s1.recoveries);
    if (rc == 0)
        rr_cancel(c, id);
    tu_note("%s: taken over in %.1f ms", what, ms);
}

static void expect_kept(rr_chan *c, int fd, uint32_t off, uint64_t v, const char *what)
{
    put_lock(fd, off, v);
    uint64_t id;
    int rc = rr_str_send(c, "p", 1, 0, tu_ms(80), &id);
    CHECK_MSG(rc == -EAGAIN, "%s: a live owner's lock was taken (%d)", what, rc);
    if (rc == 0)
        rr_cancel(c, id);
    put_lock(fd, off, 0);
}

TEST_T("fork", fork_forged_lock_owner, 60)
{
    char path[512];
    tu_path(path, sizeof path, "forged");
    rr_geometry g = tu_geom(STR, 8, 8, 64, 0);
    rr_chan *c = NULL;
    rr_error err;
    REQUIRE_EQ(rr_open_path(path, STR, &g, &c, &err), 0);
    rr_format_info fi;
    rr_format(&fi);
    int fd = rr_fd(c);
    REQUIRE(fd >= 0);
    pid_t live = tu_fork(sleeper, NULL, 30);
    REQUIRE(live > 0);
    pid_t gone = reaped_pid();
    REQUIRE(gone > 0);
    uint64_t start = 0;
    for (int i = 0; i < 100 && !start; i++, usleep(1000))
        start = tu_proc_start(live);
    CHECK(start != 0);
    uint64_t s32 = start & 0xffffffffu;

    /* A lock word is pid | start time << 32 (rr_ident, rr_format.h). */
    expect_kept(c, fd, fi.off_lock, s32 << 32 | (uint32_t)live, "live owner");
    expect_kept(c, fd, fi.off_lock, (uint32_t)live, "live owner, no start time recorded");
    expect_taken(c, fd, fi.off_lock, ((s32 + 777) & 0xffffffffu) << 32 | (uint32_t)live,
                 "pid reused by another process");
    expect_taken(c, fd, fi.off_lock, s32 << 32 | (uint32_t)gone, "dead and reaped owner");
    expect_taken(c, fd, fi.off_lock, (uint64_t)0x12345678 << 32 | 0x3fffffffu,
                 "impossible pid");
    expect_taken(c, fd, fi.off_lock, (uint64_t)0xdeadbeef << 32, "pid 0");
    expect_taken(c, fd, fi.off_lock, UINT64_MAX, "all ones");
    put_lock(fd, fi.off_lock, 0);
    kill(live, SIGKILL);
    tu_wait(live, tu_ms(5000));
    /* and with the owner now dead, its old identity is free to take */
    expect_taken(c, fd, fi.off_lock, s32 << 32 | (uint32_t)live, "owner died since");
    rr_close(c);
}

/* ---- an Int producer killed between claiming a cell and publishing it ----
 * The window is a few instructions wide, so the crash state is made directly:
 * a cell whose turn says "claimed at this lap by <who>", with or without the
 * tail moved past it (the producer may die before or after that). A dead
 * claimant's position is skipped after a short stall; a live one's is waited
 * for; a consumer that died after its take (one CAS) left only head behind. */

static uint64_t turn_word(const rr_format_info *fi, uint64_t lap, uint64_t state, uint64_t who)
{
    return lap << 32 | state << fi->turn_who_bits | who;
}

static uint64_t who_of(const rr_format_info *fi, pid_t pid, uint64_t start)
{
    uint64_t start_bits = fi->turn_who_bits - fi->worker_pid_bits;
    return (start & ((1u << start_bits) - 1)) << fi->worker_pid_bits | (uint32_t)pid;
}

static void put_u64_at(int fd, uint64_t off, uint64_t v)
{
    REQUIRE(pwrite(fd, &v, 8, (off_t)off) == 8);
}

static uint64_t get_u64_at(int fd, uint64_t off)
{
    uint64_t v = 0;
    CHECK(pread(fd, &v, 8, (off_t)off) == 8);
    return v;
}

/* An Int channel in a file, with what the tests below poke at. */
typedef struct int_file {
    rr_chan *c;
    int fd;
    rr_regions r;
    rr_format_info fi;
} int_file;

static bool int_file_open(int_file *f, const char *name, uint32_t cap)
{
    char path[512];
    tu_path(path, sizeof path, name);
    rr_geometry g = tu_geom(INT, cap, 8, 0, 0);
    rr_error err;
    f->c = NULL;
    if (rr_open_path(path, INT, &g, &f->c, &err) != 0)
        return false;
    f->fd = rr_fd(f->c);
    rr_regions_of(f->c, &f->r);
    rr_format(&f->fi);
    return f->fd >= 0;
}

/* n round trips (send, take, reply, collect) that must all work, FIFO. */
static void int_echo_rounds(rr_chan *c, int n, int64_t base)
{
    for (int i = 0; i < n; i++) {
        uint64_t a, id;
        int64_t v;
        REQUIRE_EQ(rr_int_send(c, base + i, RR_NOWAIT, &a), 0);
        REQUIRE_EQ(rr_int_recv(c, RR_NOWAIT, &v, &id), 0);
        CHECK_EQ(v, base + i);
        CHECK_EQ(id, a);
        REQUIRE_EQ(rr_int_reply(c, id, v), 0);
        REQUIRE_EQ(rr_int_peek(c, id, &v), 0);
        REQUIRE_EQ(rr_resp_discard(c, id), 0);
    }
}

TEST_T("fork", fork_int_producer_died_mid_push, 60)
{
    pid_t gone = reaped_pid();
    REQUIRE(gone > 0);
    for (int moved_tail = 0; moved_tail < 2; moved_tail++) {
        int_file f;
        REQUIRE(int_file_open(&f, moved_tail ? "int-hole-tail" : "int-hole", 8));
        uint64_t a, b, id;
        int64_t v;
        REQUIRE_EQ(rr_int_send(f.c, 1, RR_NOWAIT, &a), 0);
        /* cell 1 claimed at lap 0 by a dead producer */
        put_u64_at(f.fd, f.r.off_cells + f.fi.cell_size,
                   turn_word(&f.fi, 0, 1, who_of(&f.fi, gone, 0)));
        if (moved_tail)
            put_u64_at(f.fd, f.fi.off_tail, 2);
        REQUIRE_EQ(rr_int_send(f.c, 2, RR_NOWAIT, &b), 0);
        CHECK_EQ(get_u64_at(f.fd, f.fi.off_tail), 3);
        REQUIRE_EQ(rr_int_recv(f.c, tu_ms(1000), &v, &id), 0);
        CHECK_EQ(v, 1);
        int64_t t0 = rr_now_ns();
        int rc = rr_int_recv(f.c, tu_ms(3000), &v, &id);
        CHECK_MSG(rc == 0 && v == 2 && id == b,
                  "a fully sent request stuck behind a cell claimed by a dead producer: "
                  "rr_int_recv gave %d (%s)", rc, tu_err(rc));
        tu_note("dead claim skipped in %.1f ms (tail %s)", tu_elapsed_ms(t0),
                moved_tail ? "moved" : "not moved");
        if (rc == 0)
            rr_int_reply(f.c, id, 0);
        rr_stats st;
        rr_get_stats(f.c, &st);
        CHECK_EQ(st.recoveries, 1);
        CHECK_EQ(st.size, 0);
        int_echo_rounds(f.c, 20, 100); /* round again, over the repaired cell */
        CHECK_EQ(rr_clear(f.c), 0);
        rr_close(f.c);
    }
}

TEST_T("fork", fork_int_live_claim_is_waited_for, 60)
{
    int_file f;
    REQUIRE(int_file_open(&f, "int-live-claim", 8));
    uint64_t id = (uint64_t)5 << 32 | 3, got; /* what the producer would have sent */
    int64_t v;
    /* cell 0 claimed by us (alive, however slow), tail moved past it */
    uint64_t me = who_of(&f.fi, getpid(), tu_proc_start(getpid()));
    put_u64_at(f.fd, f.r.off_cells, turn_word(&f.fi, 0, 1, me));
    put_u64_at(f.fd, f.fi.off_tail, 1);
    CHECK_EQ(rr_int_recv(f.c, tu_ms(200), &v, &got), -EAGAIN);
    CHECK_EQ(rr_int_recv(f.c, RR_NOWAIT, &v, &got), -EINPROGRESS);
    /* the producer publishes at last: value, id, then FULL */
    put_u64_at(f.fd, f.r.off_cells + 8, 77);
    put_u64_at(f.fd, f.r.off_cells + 16, id);
    put_u64_at(f.fd, f.r.off_cells, turn_word(&f.fi, 0, 2, 0));
    REQUIRE_EQ(rr_int_recv(f.c, tu_ms(1000), &v, &got), 0);
    CHECK_EQ(v, 77);
    CHECK_EQ(got, id);
    rr_stats st;
    rr_get_stats(f.c, &st);
    CHECK_EQ(st.recoveries, 0);
    rr_close(f.c);
}

/* A consumer killed after freeing the cell it took, before moving head. */
TEST_T("fork", fork_int_consumer_died_after_take, 60)
{
    int_file f;
    REQUIRE(int_file_open(&f, "int-taken", 4));
    uint64_t a, b, id;
    int64_t v;
    REQUIRE_EQ(rr_int_send(f.c, 1, RR_NOWAIT, &a), 0);
    REQUIRE_EQ(rr_int_send(f.c, 2, RR_NOWAIT, &b), 0);
    put_u64_at(f.fd, f.r.off_cells, turn_word(&f.fi, 1, 0, 0));
    CHECK_EQ(get_u64_at(f.fd, f.fi.off_head), 0);
    REQUIRE_EQ(rr_int_recv(f.c, RR_NOWAIT, &v, &id), 0);
    CHECK_EQ(v, 2);
    CHECK_EQ(id, b);
    CHECK_EQ(get_u64_at(f.fd, f.fi.off_head), 2);
    int_echo_rounds(f.c, 12, 10); /* and the ring keeps going round */
    rr_close(f.c);
}

/* A consumer killed after its take, before head moved, while senders went on
 * and reused its cell on the next lap: head is a whole lap behind that cell. */
TEST_T("fork", fork_int_head_a_lap_behind, 60)
{
    int_file f;
    REQUIRE(int_file_open(&f, "int-lap-behind", 4));
    uint64_t ids[5], id;
    int64_t v;
    REQUIRE_EQ(rr_int_send(f.c, 0, RR_NOWAIT, &ids[0]), 0);
    put_u64_at(f.fd, f.r.off_cells, turn_word(&f.fi, 1, 0, 0)); /* taken, freed, head stays */
    for (int i = 1; i < 5; i++)
        REQUIRE_EQ(rr_int_send(f.c, i, RR_NOWAIT, &ids[i]), 0); /* the last one reuses cell 0 */
    CHECK_EQ(get_u64_at(f.fd, f.r.off_cells), turn_word(&f.fi, 1, 2, 0));
    for (int i = 1; i < 5; i++) {
        int rc = rr_int_recv(f.c, tu_ms(1000), &v, &id);
        CHECK_MSG(rc == 0 && v == i && id == ids[i], "entry %d: rc %d value %lld", i, rc,
                  (long long)v);
    }
    CHECK_EQ(rr_int_recv(f.c, RR_NOWAIT, &v, &id), -EAGAIN);
    rr_close(f.c);
}

/* A consumer killed between its take and releasing the cell: the cell names
 * it; the next consumer records it as the request's taker and frees the cell,
 * and the request's client learns that its worker died. */
TEST_T("fork", fork_int_consumer_died_mid_take, 60)
{
    pid_t gone = reaped_pid();
    REQUIRE(gone > 0);
    int_file f;
    REQUIRE(int_file_open(&f, "int-mid-take", 4));
    uint64_t a, b, id;
    int64_t v;
    REQUIRE_EQ(rr_int_send(f.c, 1, RR_NOWAIT, &a), 0);
    REQUIRE_EQ(rr_int_send(f.c, 2, RR_NOWAIT, &b), 0);
    put_u64_at(f.fd, f.r.off_cells, turn_word(&f.fi, 0, 3, who_of(&f.fi, gone, 0)));
    CHECK_EQ(rr_int_recv(f.c, RR_NOWAIT, &v, &id), -EINPROGRESS); /* just seen: not yet */
    int rc = rr_int_recv(f.c, tu_ms(3000), &v, &id);
    CHECK_MSG(rc == 0 && v == 2 && id == b, "the entry behind a dead take: %d (%s)", rc,
              tu_err(rc));
    CHECK_EQ(rr_resp_worker(f.c, a), (int)gone);
    CHECK_EQ(rr_resp_check(f.c, a), -EOWNERDEAD);
    CHECK_EQ(rr_resp_abandon_dead(f.c, a), 0);
    rr_stats st;
    rr_get_stats(f.c, &st);
    CHECK(st.recoveries >= 2); /* the repair, then the dead worker's slot */
    CHECK_EQ(st.size, 0);
    rr_close(f.c);
}

/* ---- a worker killed in the middle of writing a reply ----
 * A large reply (tens of MiB into fresh shared pages) keeps the slot in its
 * "being written" state long enough to kill the writer there. The client must
 * learn of the death, and if the client is dead too (a process answering its
 * own request), the slot must still come back to the pool. */

#define BIG_REPLY (48u << 20)

typedef struct midreply_sh {
    _Atomic int state;
    uint64_t id;
} midreply_sh;

typedef struct midreply_arg {
    rr_chan *c;
    midreply_sh *sh;
    bool own_request;
} midreply_arg;

static void midreply_child(void *p)
{
    midreply_arg *a = p;
    uint8_t *big = malloc(BIG_REPLY);
    if (!big)
        return;
    memset(big, 0x3c, BIG_REPLY);
    if (a->own_request) {
        uint64_t mine;
        if (rr_str_send(a->c, "self", 4, 0, RR_NOWAIT, &mine) != 0)
            tu_fail(__FILE__, __LINE__, "send");
    }
    int n = rr_str_recv_begin(a->c, tu_ms(5000));
    rr_entry e;
    if (n <= 0 || rr_str_recv_peek(a->c, 0, &e) != 0) {
        tu_fail(__FILE__, __LINE__, "recv %d", n);
        return;
    }
    a->sh->id = e.id;
    rr_str_recv_end(a->c, 1);
    atomic_store(&a->sh->state, 1);
    rr_str_reply(a->c, a->sh->id, big, BIG_REPLY, 0);
    atomic_store(&a->sh->state, 2);
    for (;;)
        pause();
}

static void killed_mid_reply(bool own_request)
{
    rr_chan *c = tu_anon(STR, 4, 2, BIG_REPLY, 0);
    REQUIRE(c);
    midreply_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    uint64_t a = 0;
    if (!own_request)
        REQUIRE_EQ(rr_str_send(c, "big one", 7, 0, RR_NOWAIT, &a), 0);
    midreply_arg arg = {c, sh, own_request};
    bool hit = false;
    for (int attempt = 0; attempt < 3 && !hit; attempt++) {
        atomic_store(&sh->state, 0);
        pid_t pid = tu_fork(midreply_child, &arg, 30);
        REQUIRE(pid > 0);
        CHECK(tu_await(&sh->state, 1, tu_ms(10000)));
        usleep(1000);
        kill(pid, SIGKILL);
        tu_wait(pid, tu_ms(5000));
        hit = atomic_load(&sh->state) == 1;
        if (!hit) {
            tu_note("the reply finished before the kill; again");
            rr_clear(c);
            if (!own_request)
                REQUIRE_EQ(rr_str_send(c, "big one", 7, 0, RR_NOWAIT, &a), 0);
        }
    }
    if (!hit) {
        tu_note("skipped: could not kill a worker inside rr_str_reply");
        rr_close(c);
        return;
    }
    if (!own_request) {
        int64_t t0 = rr_now_ns();
        int rc = rr_resp_wait(c, a, tu_ms(5000));
        CHECK_MSG(rc == -EOWNERDEAD, "client of a worker killed mid-reply: resp_wait gave %d (%s)",
                  rc, tu_err(rc));
        tu_note("worker killed mid-reply: noticed after %.0f ms", tu_elapsed_ms(t0));
        CHECK_EQ(rr_resp_abandon_dead(c, a), 0);
    }
    rr_reclaim(c);
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK_MSG(s.slots_free == 2,
              "%s: %u of 2 slots free after the writer died mid-reply (acquired %u, ready %u)",
              own_request ? "client and worker both dead" : "client alive", s.slots_free,
              s.slots_acquired, s.slots_ready);
    uint64_t x, y;
    CHECK_EQ(rr_str_send(c, "x", 1, 0, tu_ms(2000), &x), 0);
    CHECK_EQ(rr_str_send(c, "y", 1, 0, tu_ms(2000), &y), 0);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

TEST_T("fork", fork_worker_killed_mid_reply, 60)
{
    killed_mid_reply(false);
    killed_mid_reply(true);
}

/* ---- rr_interrupt in a child forked while a thread waits ----
 * The child inherits the handle's table of sleepers, naming a thread that
 * does not exist in it: its rr_interrupt must not wait for that thread. */
typedef struct fork_sleeper {
    rr_chan *h;
    _Atomic int rc;
} fork_sleeper;

static void *fork_sleeper_thread(void *p)
{
    fork_sleeper *s = p;
    atomic_store(&s->rc, rr_wait_request(s->h, RR_FOREVER));
    return NULL;
}

static void interrupt_child(void *p)
{
    rr_chan *h = p;
    int64_t t0 = rr_now_ns();
    rr_interrupt(h); /* the parent's sleeper is not here: returns at once */
    CHECK(rr_now_ns() - t0 < 5000000000LL);
    CHECK_EQ(rr_wait_request(h, RR_FOREVER), -ECANCELED);
    uint64_t id;
    CHECK_EQ(rr_str_send(h, "c", 1, 0, RR_NOWAIT, &id), 0); /* no wait: still works */
}

TEST_T("fork", fork_interrupt_with_a_sleeping_thread, 60)
{
    rr_chan *c = tu_anon(STR, 4, 4, 16, 0), *h;
    REQUIRE(c);
    REQUIRE_EQ(rr_chan_share(c, &h), 0);
    rr_set_spin(h, 0);
    fork_sleeper s = {h, 1};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, fork_sleeper_thread, &s) == 0);
    struct timespec ts = {0, 50000000};
    nanosleep(&ts, NULL); /* asleep, most likely (the child must cope either way) */
    pid_t pid = tu_fork(interrupt_child, h, 20);
    tu_wait_ok(pid, tu_ms(30000), "interrupting child");
    /* the child's interrupt was its own: the parent's sleeper ends for the
     * request the child sent, not cancelled */
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&s.rc), 0);
    CHECK_EQ(rr_size(c), 1);
    rr_close(h);
    rr_close(c);
}
