/* Replies written in place (rr_str_reply_begin/commit/abort; rr_slot_unclaim
 * in rr_slots.c, S14 in rr_slots.pml): sizes, the claim's contract (only its
 * process commits or aborts, once), cancel and clear against it, writers
 * killed between begin and commit and between the abort's two CASes, the
 * freers' re-check of a dead writer's record after a claim given back (F3),
 * and threads racing begin, abort, commit and cancel (the "threads" group,
 * which run.sh also runs under TSan). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rr_chan.h"
#include "rr_test_hooks.h" /* rr_test_mid_unclaim, rr_test_before_verdict */
#include "tu.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR RR_VARIANT_STR

static rr_stats stats(rr_chan *c)
{
    rr_stats s;
    rr_get_stats(c, &s);
    return s;
}

static rr_slot *slot_of_id(rr_chan *c, uint64_t id)
{
    return rr_slot_at(&c->slots, rr_id_index(id));
}

/* Sends a request and takes it in this process (recorded as its taker). */
static bool send_and_take(rr_chan *c, uint64_t *id)
{
    if (rr_str_send(c, "q", 1, 0, RR_NOWAIT, id) != 0)
        return false;
    int n = rr_str_recv_begin(c, RR_NOWAIT);
    if (n <= 0)
        return false;
    rr_entry e;
    bool ok = rr_str_recv_peek(c, 0, &e) == 0 && e.id == *id;
    rr_str_recv_end(c, 1);
    return ok;
}

/* The reply to id is there, len bytes of tu_fill(tag), with flags. */
static void check_reply(rr_chan *c, uint64_t id, uint32_t len, uint64_t tag, uint32_t flags)
{
    rr_resp r;
    int rc = rr_resp_view(c, id, &r);
    CHECK_MSG(rc == 0, "view: %s", tu_err(rc));
    if (rc != 0)
        return;
    CHECK_EQ(r.len, len);
    CHECK_EQ(r.flags, flags);
    CHECK_MSG(r.len != len || tu_check(r.data, len, tag) < 0, "reply bytes wrong at %ld",
              tu_check(r.data, len, tag));
    /* a reply that fits the slot's first line is read from there */
    rr_slot *s = slot_of_id(c, id);
    CHECK(r.data == (len <= RR_SLOT_INLINE ? (const void *)s->small
                                           : (const void *)rr_slot_data_for(s, UINT64_MAX)));
    CHECK_EQ(rr_resp_release(c, id), 0);
}

/* begin, fill len bytes, commit: the client sees exactly them. */
TEST("slots", inplace_commit_sizes)
{
    rr_chan *c = tu_anon(STR, 4, 2, 256, 0);
    REQUIRE(c);
    size_t lens[] = {200, 256, 0, 1, 20, RR_SLOT_INLINE, RR_SLOT_INLINE + 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint64_t id, tok;
        REQUIRE(send_and_take(c, &id));
        void *data;
        size_t cap;
        REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
        CHECK_EQ(cap, 256);
        CHECK(data == rr_slot_data_for(slot_of_id(c, id), UINT64_MAX));
        tu_fill(data, lens[i], 1000 + i);
        uint32_t flags = i % 2 ? RR_FLAG_UTF8 : 0;
        CHECK_EQ(rr_str_reply_commit(c, id, lens[i], flags), 0);
        check_reply(c, id, (uint32_t)lens[i], 1000 + i, flags);
    }
    CHECK_EQ(stats(c).slots_free, 2);
    rr_close(c);
}

/* Beyond cap: -EMSGSIZE, and the claim stays (nobody else may reply, this
 * process's own replies are told it holds the claim). */
typedef struct other_arg {
    rr_chan *c;
    uint64_t id;
    int expect;
} other_arg;

static void other_replies(void *p)
{
    other_arg *a = p;
    void *data;
    size_t cap;
    uint64_t tok;
    CHECK_EQ(rr_str_reply(a->c, a->id, "other", 5, 0), a->expect);
    CHECK_EQ(rr_str_reply_begin(a->c, a->id, &data, &cap, &tok), a->expect);
    /* not this process's claim: refused, nothing written */
    CHECK_EQ(rr_str_reply_commit(a->c, a->id, 3, 0), -ESTALE);
    CHECK_EQ(rr_str_reply_abort(a->c, a->id, 0), -ESTALE);
}

/* Another process replies in place. */
static void other_in_place(void *p)
{
    other_arg *a = p;
    void *data;
    size_t cap;
    uint64_t tok;
    if (rr_str_reply_begin(a->c, a->id, &data, &cap, &tok) != 0) {
        tu_fail(__FILE__, __LINE__, "begin");
        return;
    }
    memcpy(data, "other", 5);
    CHECK_EQ(rr_str_reply_commit(a->c, a->id, 5, 0), 0);
}

static void run_other(rr_chan *c, uint64_t id, int expect)
{
    other_arg a = {c, id, expect};
    pid_t pid = tu_fork(other_replies, &a, 10);
    if (pid > 0)
        tu_wait_ok(pid, tu_ms(10000), "other process");
}

TEST("slots", inplace_commit_beyond_cap)
{
    rr_chan *c = tu_anon(STR, 4, 2, 100, 0);
    REQUIRE(c);
    uint64_t id, tok;
    REQUIRE(send_and_take(c, &id));
    void *data;
    size_t cap;
    REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
    REQUIRE_EQ(cap, 100);
    tu_fill(data, cap, 7);
    CHECK_EQ(rr_str_reply_commit(c, id, cap + 1, 0), -EMSGSIZE);
    CHECK_EQ(rr_str_reply_commit(c, id, SIZE_MAX, 0), -EMSGSIZE);
    CHECK_EQ(rr_resp_check(c, id), 0); /* pending, the claim ours */
    CHECK_EQ(rr_resp_worker(c, id), getpid());
    CHECK_EQ(rr_str_reply(c, id, "x", 1, 0), -EBUSY);
    CHECK_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), -EBUSY);
    run_other(c, id, -ESTALE);
    CHECK_EQ(rr_str_reply_commit(c, id, 100, 0), 0);
    check_reply(c, id, 100, 7, 0);
    rr_close(c);
}

/* An abort gives the request back as it was: garbage written in the slot is
 * never seen, the taker is its worker again, and another process (or this
 * one) replies. */
TEST("slots", inplace_abort_then_another_replies)
{
    rr_chan *c = tu_anon(STR, 4, 2, 256, 0);
    REQUIRE(c);
    for (int round = 0; round < 2; round++) {
        uint64_t id, tok;
        REQUIRE(send_and_take(c, &id));
        void *data;
        size_t cap;
        REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
        memset(data, 0xAA, cap);
        memset(slot_of_id(c, id)->small, 0xAA, RR_SLOT_INLINE);
        CHECK_EQ(rr_str_reply_abort(c, id, tok), 0);
        CHECK_EQ(rr_resp_check(c, id), 0);
        CHECK_EQ(rr_resp_worker(c, id), getpid()); /* the taker's record again */
        rr_resp r;
        CHECK_EQ(rr_resp_view(c, id, &r), -EAGAIN);
        /* the claim is over: nothing of ours may touch it */
        CHECK_EQ(rr_str_reply_commit(c, id, 4, 0), -ESTALE);
        CHECK_EQ(rr_str_reply_abort(c, id, tok), -ESTALE);
        CHECK_EQ(stats(c).slots_acquired, 1);
        if (round == 0) {
            /* another process replies, in place */
            other_arg a = {c, id, 0};
            pid_t pid = tu_fork(other_in_place, &a, 10);
            REQUIRE(pid > 0);
            tu_wait_ok(pid, tu_ms(10000), "other replier");
            REQUIRE_EQ(rr_resp_view(c, id, &r), 0);
            CHECK(r.len == 5 && memcmp(r.data, "other", 5) == 0);
            CHECK_EQ(rr_resp_release(c, id), 0);
        } else {
            /* this process again */
            REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
            tu_fill(data, 40, 9);
            CHECK_EQ(rr_str_reply_commit(c, id, 40, 0), 0);
            check_reply(c, id, 40, 9, 0);
        }
    }
    CHECK_EQ(stats(c).slots_free, 2);
    rr_close(c);
}

/* A taker that died and a writer that gave its claim back: the taker's death
 * counts again (its record is back). */
static void take_and_exit(void *p)
{
    rr_chan *c = p;
    int n = rr_str_recv_begin(c, tu_ms(5000));
    CHECK(n > 0);
    if (n > 0)
        rr_str_recv_end(c, 1);
}

TEST("slots", inplace_abort_gives_back_a_dead_taker)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    uint64_t id, tok;
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id), 0);
    pid_t taker = tu_fork(take_and_exit, c, 10);
    REQUIRE(taker > 0);
    tu_wait_ok(taker, tu_ms(10000), "taker");
    CHECK_EQ(rr_resp_check(c, id), -EOWNERDEAD);
    void *data;
    size_t cap;
    REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
    CHECK_EQ(rr_resp_check(c, id), 0); /* we write: alive */
    CHECK_EQ(rr_resp_abandon_dead(c, id), -EAGAIN);
    CHECK_EQ(rr_str_reply_abort(c, id, tok), 0);
    CHECK_EQ(rr_resp_worker(c, id), taker);
    CHECK_EQ(rr_resp_check(c, id), -EOWNERDEAD);
    CHECK_EQ(rr_resp_abandon_dead(c, id), 0);
    CHECK_EQ(stats(c).slots_free, 2);
    rr_close(c);
}

/* Cancel or clear while a reply is written in place: commit is refused and
 * frees the slot, and so is abort. */
TEST("slots", inplace_cancel_then_commit_or_abort)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    for (int way = 0; way < 4; way++) {
        bool commit = way & 1, by_clear = way & 2;
        uint64_t id, tok;
        REQUIRE(send_and_take(c, &id));
        void *data;
        size_t cap;
        REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
        tu_fill(data, 10, 3);
        if (by_clear)
            CHECK_EQ(rr_clear(c), 0);
        else
            CHECK_EQ(rr_cancel(c, id), 0);
        CHECK_EQ(stats(c).slots_free, 1); /* still the writer's */
        CHECK_EQ(rr_resp_check(c, id), -ESTALE);
        CHECK_EQ(rr_str_reply(c, id, "x", 1, 0), -EBUSY); /* our claim, cancelled */
        if (commit)
            CHECK_EQ(rr_str_reply_commit(c, id, 10, 0), -ESTALE);
        else
            CHECK_EQ(rr_str_reply_abort(c, id, tok), -ESTALE);
        CHECK_EQ(stats(c).slots_free, 2); /* freed by the writer */
        CHECK_EQ(rr_id_live(c, id), 0);
        /* and nothing more of it touches the slot, now free or someone else's */
        uint64_t next;
        REQUIRE_EQ(rr_str_send(c, "n", 1, 0, RR_NOWAIT, &next), 0);
        CHECK_EQ(rr_str_reply_commit(c, id, 10, 0), -ESTALE);
        CHECK_EQ(rr_str_reply_abort(c, id, tok), -ESTALE);
        CHECK_EQ(rr_str_reply(c, id, "x", 1, 0), -ESTALE);
        CHECK_EQ(rr_resp_check(c, next), 0);
        CHECK_EQ(rr_cancel(c, next), 0);
        int n = rr_str_recv_begin(c, RR_NOWAIT);
        rr_str_recv_end(c, n > 0 ? (uint32_t)n : 0); /* drop "n" (stale now) */
    }
    CHECK_EQ(stats(c).slots_free, 2);
    rr_close(c);
}

/* Commit and abort by a process that holds no claim, or no longer: refused,
 * and nothing changes (a second commit does not rewrite a published reply). */
TEST("slots", inplace_commit_abort_without_claim)
{
    rr_chan *c = tu_anon(STR, 4, 2, 256, 0);
    REQUIRE(c);
    uint64_t id, tok;
    REQUIRE(send_and_take(c, &id));
    /* never begun */
    CHECK_EQ(rr_str_reply_commit(c, id, 4, 0), -ESTALE);
    CHECK_EQ(rr_str_reply_abort(c, id, 0), -ESTALE);
    CHECK_EQ(rr_resp_check(c, id), 0);
    CHECK_EQ(rr_resp_worker(c, id), getpid());
    void *data;
    size_t cap;
    REQUIRE_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), 0);
    tu_fill(data, 100, 5);
    /* another process, while we hold the claim */
    run_other(c, id, -ESTALE);
    CHECK_EQ(rr_resp_check(c, id), 0);
    CHECK_EQ(rr_str_reply_commit(c, id, 100, 0), 0);
    /* twice: refused, and the published reply is as it was (a commit of 10
     * bytes would have moved them into the slot's first line, and its len) */
    CHECK_EQ(rr_str_reply_commit(c, id, 10, RR_FLAG_UTF8), -ESTALE);
    CHECK_EQ(rr_str_reply_abort(c, id, tok), -ESTALE);
    CHECK_EQ(rr_cancel(c, id), -EBUSY); /* the reply is there */
    check_reply(c, id, 100, 5, 0);
    /* a stale id */
    CHECK_EQ(rr_str_reply_begin(c, id, &data, &cap, &tok), -ESTALE);
    CHECK_EQ(rr_str_reply_commit(c, id, 1, 0), -ESTALE);
    CHECK_EQ(stats(c).slots_free, 2);
    rr_close(c);
}

/* ---- writers killed ---- */

typedef struct kill_sh {
    _Atomic int state;
    uint64_t id;
} kill_sh;

typedef struct kill_arg {
    rr_chan *c;
    kill_sh *sh;
} kill_arg;

static kill_sh *hook_sh;

static void hang_here(void)
{
    atomic_store(&hook_sh->state, 1);
    for (;;)
        pause();
}

/* Begins a reply, then hangs (mid == 0) or aborts and hangs between the
 * abort's two CASes (mid == 1). */
static void begin_and_hang(void *p, bool mid)
{
    kill_arg *a = p;
    void *data;
    size_t cap;
    uint64_t tok;
    if (rr_str_reply_begin(a->c, a->sh->id, &data, &cap, &tok) != 0) {
        tu_fail(__FILE__, __LINE__, "begin");
        return;
    }
    memset(data, 0xEE, cap);
    hook_sh = a->sh;
    if (mid) {
        rr_test_mid_unclaim = hang_here;
        rr_str_reply_abort(a->c, a->sh->id, tok);
        tu_fail(__FILE__, __LINE__, "the abort returned past its hook");
        return;
    }
    hang_here();
}

static void begin_then_hang(void *p) { begin_and_hang(p, false); }
static void abort_then_hang(void *p) { begin_and_hang(p, true); }

static void killed_writer(bool mid_abort)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    kill_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    REQUIRE(send_and_take(c, &sh->id));
    kill_arg arg = {c, sh};
    pid_t w = tu_fork(mid_abort ? abort_then_hang : begin_then_hang, &arg, 30);
    REQUIRE(w > 0);
    REQUIRE(tu_await(&sh->state, 1, tu_ms(10000)));
    rr_slot *s = slot_of_id(c, sh->id);
    uint64_t v = atomic_load(&s->ctl);
    CHECK_EQ(rr_ctl_state(v), mid_abort ? RR_SLOT_ACQUIRED : RR_SLOT_WRITING);
    CHECK_EQ(rr_resp_worker(c, sh->id), w); /* the writer, in both */
    CHECK_EQ(rr_resp_check(c, sh->id), 0);
    CHECK_EQ(rr_resp_abandon_dead(c, sh->id), -EAGAIN);
    CHECK_EQ(rr_str_reply(c, sh->id, "x", 1, 0), -ESTALE); /* its claim, or its record */
    rr_slots_sweep(&c->slots, 0);
    CHECK_EQ(stats(c).slots_free, 1); /* the client lives: the sweep leaves it */
    kill(w, SIGKILL);
    tu_wait(w, tu_ms(5000));
    CHECK_EQ(rr_resp_check(c, sh->id), -EOWNERDEAD);
    CHECK_EQ(rr_resp_wait(c, sh->id, tu_ms(5000)), -EOWNERDEAD);
    CHECK_EQ(rr_resp_abandon_dead(c, sh->id), 0);
    CHECK_EQ(rr_resp_check(c, sh->id), -ESTALE);
    CHECK_EQ(stats(c).slots_free, 2);
    uint64_t x, y;
    CHECK_EQ(rr_str_send(c, "x", 1, 0, RR_NOWAIT, &x), 0);
    CHECK_EQ(rr_str_send(c, "y", 1, 0, RR_NOWAIT, &y), 0);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* A claimant killed between begin and commit is a dead worker to its client. */
TEST_T("slots", inplace_writer_killed_before_commit, 60) { killed_writer(false); }

/* ...and one killed between the abort's two CASes (ACQUIRED, its writing
 * record still there): no other claim gets in, and it is a dead worker. */
TEST_T("slots", inplace_writer_killed_mid_abort, 60) { killed_writer(true); }

/* ---- F3: a freer's verdict against a claim given back since ----
 * Writer A claims; a freer reads A's record; A aborts and dies; B claims
 * (WRITING again, the same ctl value); the freer finds A dead. It must not
 * free B's claim (B would write a slot that is free, or a newer request's). */

typedef struct f3 {
    rr_chan *c;
    kill_sh *sh;
    pid_t a;
    uint64_t tok_b;
    int began_b;
    int hooked;
} f3;

static f3 *f3_now;

/* A: begin, wait for the word, abort, exit. */
static void f3_writer_a(void *p)
{
    kill_arg *a = p;
    void *data;
    size_t cap;
    uint64_t tok;
    if (rr_str_reply_begin(a->c, a->sh->id, &data, &cap, &tok) != 0) {
        tu_fail(__FILE__, __LINE__, "A's begin");
        return;
    }
    memset(data, 0xEE, cap);
    atomic_store(&a->sh->state, 1);
    if (!tu_await(&a->sh->state, 2, tu_ms(20000)))
        return;
    CHECK_EQ(rr_str_reply_abort(a->c, a->sh->id, tok), 0);
}

/* In the freer, after its read of A's record: A aborts and exits, and this
 * process (B) claims. */
static void f3_hook(void)
{
    f3 *t = f3_now;
    if (t->hooked++)
        return;
    atomic_store(&t->sh->state, 2);
    tu_wait_ok(t->a, tu_ms(10000), "writer A");
    void *data;
    size_t cap;
    t->began_b = rr_str_reply_begin(t->c, t->sh->id, &data, &cap, &t->tok_b);
    if (t->began_b == 0)
        tu_fill(data, 30, 11);
}

static void f3_client_sends(void *p)
{
    kill_arg *a = p;
    CHECK_EQ(rr_str_send(a->c, "q", 1, 0, RR_NOWAIT, &a->sh->id), 0);
}

static void f3_run(bool by_sweep)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    kill_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    kill_arg arg = {c, sh};
    if (by_sweep) {
        /* the client is gone: the sweep judges its slot */
        pid_t cl = tu_fork(f3_client_sends, &arg, 10);
        REQUIRE(cl > 0);
        tu_wait_ok(cl, tu_ms(10000), "client");
        int n = rr_str_recv_begin(c, RR_NOWAIT);
        REQUIRE_EQ(n, 1);
        rr_str_recv_end(c, 1);
    } else {
        REQUIRE(send_and_take(c, &sh->id));
    }
    f3 t = {c, sh, 0, 0, -1, 0};
    t.a = tu_fork(f3_writer_a, &arg, 30);
    REQUIRE(t.a > 0);
    REQUIRE(tu_await(&sh->state, 1, tu_ms(10000)));
    f3_now = &t;
    rr_test_before_verdict = f3_hook;
    if (by_sweep)
        rr_slots_sweep(&c->slots, 0);
    else
        CHECK_EQ(rr_resp_abandon_dead(c, sh->id), -EAGAIN); /* B lives */
    rr_test_before_verdict = NULL;
    CHECK_EQ(t.hooked > 0, 1);
    REQUIRE_EQ(t.began_b, 0);
    /* B's claim survived the verdict on A */
    CHECK_EQ(rr_ctl_state(atomic_load(&slot_of_id(c, sh->id)->ctl)), RR_SLOT_WRITING);
    CHECK_EQ(rr_resp_worker(c, sh->id), getpid());
    CHECK_EQ(rr_str_reply_commit(c, sh->id, 30, 0), 0);
    if (by_sweep) {
        rr_slots_sweep(&c->slots, 0); /* now a dead client's reply: freed */
    } else {
        check_reply(c, sh->id, 30, 11, 0);
    }
    CHECK_EQ(stats(c).slots_free, 2);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

TEST_T("slots", inplace_verdict_after_claim_given_back, 60)
{
    f3_run(false);
    f3_run(true);
}

/* ---- threads racing begin, abort, commit and cancel ----
 * One client thread sends a request per round on a one-slot channel (so the
 * slot is reused every round) and cancels it after a random pause; three
 * threads of a handle of their own race to begin its reply; the winner
 * writes, then aborts (the others may then win) or commits. Every round
 * ends with exactly one of a cancel that won or one committed reply, which
 * is a committed one (never bytes written before an abort). */

#define RACERS 3

typedef struct irace {
    rr_chan *cc, *wc;
    long rounds;
    _Atomic uint64_t id;  /* this round's id (0 between rounds) */
    _Atomic long round;   /* the round the racers work on */
    _Atomic int started;  /* racers at work on the round */
    _Atomic int done;     /* racers done with the round */
    _Atomic int commits;  /* commits of the round that published */
    _Atomic long aborts;  /* in all rounds */
    _Atomic long refused; /* commits and aborts that found the request cancelled */
    _Atomic int stop;
} irace;

typedef struct racer {
    irace *r;
    int k;
} racer;

static void irace_pause(uint64_t *seed, unsigned max)
{
    unsigned n = (unsigned)(tu_rand(seed) % max);
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static void *racer_thread(void *p)
{
    racer *me = p;
    irace *r = me->r;
    uint64_t seed = 77 + (uint64_t)me->k;
    long seen = 0;
    while (!atomic_load(&r->stop)) {
        long k = atomic_load(&r->round);
        if (k == seen) {
            sched_yield();
            continue;
        }
        uint64_t id = atomic_load(&r->id);
        atomic_fetch_add(&r->started, 1);
        int64_t deadline = tu_ms(5000);
        for (;;) {
            void *data;
            size_t cap;
            uint64_t tok;
            int rc = rr_str_reply_begin(r->wc, id, &data, &cap, &tok);
            if (rc == -EBUSY) {
                /* another thread of this process holds the claim */
                if (rr_now_ns() > deadline) {
                    tu_fail(__FILE__, __LINE__, "round %ld: -EBUSY for 5 s", k);
                    break;
                }
                sched_yield();
                continue;
            }
            if (rc != 0) {
                CHECK_MSG(rc == -ESTALE, "round %ld: begin %s", k, tu_err(rc));
                break; /* answered, cancelled, or between an abort's CASes */
            }
            memset(data, 0xA0 + me->k, 48);
            irace_pause(&seed, 4000);
            if (tu_rand(&seed) % 3 == 0) {
                rc = rr_str_reply_abort(r->wc, id, tok);
                CHECK_MSG(rc == 0 || rc == -ESTALE, "round %ld: abort %s", k, tu_err(rc));
                atomic_fetch_add(&r->aborts, 1);
                if (rc != 0) {
                    atomic_fetch_add(&r->refused, 1);
                    break; /* cancelled meanwhile: freed */
                }
                continue;  /* pending again: try again */
            }
            char msg[48];
            int n = snprintf(msg, sizeof msg, "resp %ld by %d", k, me->k);
            memcpy(data, msg, (size_t)n);
            rc = rr_str_reply_commit(r->wc, id, (size_t)n, 0);
            CHECK_MSG(rc == 0 || rc == -ESTALE, "round %ld: commit %s", k, tu_err(rc));
            if (rc == 0)
                atomic_fetch_add(&r->commits, 1);
            else
                atomic_fetch_add(&r->refused, 1);
            break;
        }
        seen = k;
        atomic_fetch_add(&r->done, 1);
    }
    return NULL;
}

static void run_irace(long rounds)
{
    irace r = {0};
    r.rounds = rounds;
    r.cc = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(r.cc);
    REQUIRE_EQ(rr_chan_share(r.cc, &r.wc), 0);
    pthread_t th[RACERS];
    racer rs[RACERS];
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (racer){&r, i};
        REQUIRE(pthread_create(&th[i], NULL, racer_thread, &rs[i]) == 0);
    }
    uint64_t seed = 5;
    long cancel_won = 0, reply_won = 0;
    for (long k = 1; k <= rounds && tu_failures() == 0; k++) {
        uint64_t id;
        int rc = rr_str_send(r.cc, "q", 1, 0, tu_ms(5000), &id);
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "round %ld: send %s", k, tu_err(rc));
            break;
        }
        /* take it (the taker's record), then let the racers at it */
        int n = rr_str_recv_begin(r.wc, tu_ms(5000));
        if (n != 1) {
            tu_fail(__FILE__, __LINE__, "round %ld: recv %d", k, n);
            break;
        }
        rr_str_recv_end(r.wc, 1);
        atomic_store(&r.started, 0);
        atomic_store(&r.done, 0);
        atomic_store(&r.commits, 0);
        atomic_store(&r.id, id);
        atomic_store(&r.round, k);
        /* cancel at once, or once the racers are at it, at a random point
         * of their work */
        int64_t deadline = tu_ms(10000);
        unsigned when = (unsigned)(tu_rand(&seed) % 3);
        while (when && atomic_load(&r.started) == 0 && rr_now_ns() < deadline)
            sched_yield();
        if (when == 2)
            irace_pause(&seed, 4000);
        int crc = rr_cancel(r.cc, id);
        deadline = tu_ms(10000);
        while (atomic_load(&r.done) < RACERS && rr_now_ns() < deadline)
            sched_yield();
        if (atomic_load(&r.done) < RACERS) {
            tu_fail(__FILE__, __LINE__, "round %ld: the racers never finished", k);
            break;
        }
        int commits = atomic_load(&r.commits);
        if (crc == 0) {
            cancel_won++;
            CHECK_MSG(commits == 0, "round %ld: cancelled, yet %d commits published", k, commits);
            rr_resp resp;
            CHECK_EQ(rr_resp_view(r.cc, id, &resp), -ESTALE);
        } else if (crc == -EBUSY) {
            reply_won++;
            CHECK_MSG(commits == 1, "round %ld: %d commits published", k, commits);
            rr_resp resp;
            rc = rr_resp_view(r.cc, id, &resp);
            CHECK_MSG(rc == 0, "round %ld: view %s", k, tu_err(rc));
            if (rc == 0) {
                char want[24];
                int m = snprintf(want, sizeof want, "resp %ld by ", k);
                CHECK_MSG(resp.len > (uint32_t)m && memcmp(resp.data, want, (size_t)m) == 0,
                          "round %ld: the reply is not a committed one", k);
                CHECK_EQ(rr_resp_release(r.cc, id), 0);
            }
        } else {
            tu_fail(__FILE__, __LINE__, "round %ld: cancel %s", k, tu_err(crc));
        }
        CHECK_EQ(stats(r.cc).slots_free, 1);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    tu_note("%ld rounds: cancel won %ld (%ld over an open claim), a reply won %ld; %ld aborts",
            rounds, cancel_won, atomic_load(&r.refused), reply_won, atomic_load(&r.aborts));
    CHECK_EQ(cancel_won + reply_won, rounds);
    rr_close(r.wc);
    rr_close(r.cc);
}

TEST_T("threads", threads_inplace_abort_claim_cancel, 120) { run_irace(tu_n(3000)); }
