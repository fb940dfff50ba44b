/* The response-slot protocol where it meets dead and stopped processes
 * (rr_slots.c, modelled in rr_slots.pml): a writer other than the taker, a
 * cancel or clear that lands while a reply is written, writers found dead,
 * receivers killed after their wake-up, forged sweep clocks. The replier
 * steps (claim, publish) are driven one at a time through the core's
 * internal calls, so each interleaving is exact rather than hoped for. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rr_chan.h"
#include "tu.h"
#include "format_info.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR RR_VARIANT_STR
#define INT RR_VARIANT_INT

static rr_stats stats(rr_chan *c)
{
    rr_stats s;
    rr_get_stats(c, &s);
    return s;
}

/* A process that took request `id` (recorded as its taker), then exited. */
static void take_and_exit(void *p)
{
    rr_chan *c = p;
    int n = rr_str_recv_begin(c, tu_ms(5000));
    if (n <= 0) {
        tu_fail(__FILE__, __LINE__, "recv_begin %d", n);
        return;
    }
    rr_str_recv_end(c, 1);
}

static pid_t dead_taker(rr_chan *c)
{
    pid_t pid = tu_fork(take_and_exit, c, 10);
    tu_wait_ok(pid, tu_ms(10000), "taker");
    return pid;
}

/* Defect: the slot named its taker, not its writer. A taker that handed the
 * id on and died must not let anyone free the slot under the live writer,
 * whose publish would then land on the slot's next request. */
TEST("slots", slots_writer_other_than_dead_taker)
{
    rr_chan *c = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(c);
    uint64_t id, next;
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id), 0);
    pid_t taker = dead_taker(c);
    CHECK_EQ(rr_resp_worker(c, id), taker);
    CHECK_EQ(rr_resp_check(c, id), -EOWNERDEAD); /* nobody writes yet: the dead taker counts */
    /* we are the writer the id was handed to */
    rr_slot *s = rr_slot_claim(&c->slots, id);
    REQUIRE(s);
    CHECK_EQ(rr_resp_worker(c, id), getpid());
    CHECK_EQ(rr_slot_claim(&c->slots, id), NULL); /* one writer at a time */
    CHECK_EQ(rr_resp_check(c, id), 0);    /* the writer is alive */
    CHECK_EQ(rr_resp_abandon_dead(c, id), -EAGAIN);
    rr_slots_sweep(&c->slots, 0);
    CHECK_EQ(rr_str_send(c, "next", 4, 0, RR_NOWAIT, &next), -EAGAIN); /* the slot is held */
    memcpy(rr_slot_data_for(s, 5), "reply", 5);
    s->len = 5;
    CHECK_EQ(rr_slot_publish(&c->slots, s, id), 0);
    rr_resp r;
    REQUIRE_EQ(rr_resp_view(c, id, &r), 0);
    CHECK(r.len == 5 && memcmp(r.data, "reply", 5) == 0);
    CHECK_EQ(rr_resp_release(c, id), 0);
    CHECK_EQ(stats(c).slots_free, 1);
    rr_close(c);
}

/* A writer taken for dead (here: its record forged to a dead process) that
 * publishes after all: its publish is refused and the slot's next request is
 * untouched. */
TEST("slots", slots_publish_after_takeback_is_refused)
{
    rr_chan *c = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(c);
    uint64_t id, next;
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id), 0);
    pid_t gone = dead_taker(c);
    rr_slot *s = rr_slot_claim(&c->slots, id);
    REQUIRE(s);
    rr_format_info f;
    rr_format(&f);
    uint64_t rec = atomic_load(&s->worker);
    uint64_t pid_mask = ((uint64_t)1 << f.worker_pid_bits) - 1;
    atomic_store(&s->worker, (rec & ~pid_mask) | (uint64_t)gone); /* looks dead now */
    CHECK_EQ(rr_resp_check(c, id), -EOWNERDEAD);
    CHECK_EQ(rr_resp_abandon_dead(c, id), 0);
    CHECK_EQ(rr_resp_check(c, id), -ESTALE);
    REQUIRE_EQ(rr_str_send(c, "next", 4, 0, RR_NOWAIT, &next), 0);
    CHECK_EQ(rr_id_index(next), rr_id_index(id));
    CHECK_EQ(rr_slot_publish(&c->slots, s, id), -ESTALE); /* the late writer */
    CHECK_EQ(rr_resp_check(c, next), 0);           /* still awaiting its own reply */
    CHECK_EQ(rr_str_reply(c, id, "late", 4, 0), -ESTALE);
    int n = rr_str_recv_begin(c, RR_NOWAIT);
    CHECK_EQ(n, 1); /* "next" ("q" left with its taker) */
    rr_str_recv_end(c, n > 0 ? (uint32_t)n : 0);
    CHECK_EQ(rr_str_reply(c, next, "ok", 2, 0), 0);
    rr_resp r;
    REQUIRE_EQ(rr_resp_view(c, next, &r), 0);
    CHECK(r.len == 2 && memcmp(r.data, "ok", 2) == 0);
    CHECK_EQ(rr_resp_release(c, next), 0);
    rr_close(c);
}

/* Defect: cancel lost to a half-written reply, and "cancel, then get" left
 * the request pending with its slot held. */
TEST("slots", slots_cancel_wins_over_writing)
{
    for (int variant = STR; variant <= INT; variant++) {
        rr_chan *c = tu_anon((uint32_t)variant, 4, 2, 64, 0);
        REQUIRE(c);
        uint64_t id;
        int64_t v;
        REQUIRE_EQ(variant == STR ? rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id)
                                  : rr_int_send(c, 1, RR_NOWAIT, &id),
                   0);
        rr_slot *s = rr_slot_claim(&c->slots, id);
        REQUIRE(s);
        CHECK_EQ(rr_cancel(c, id), 0);       /* wins over the writer */
        CHECK_EQ(rr_cancel(c, id), -ESTALE); /* once */
        CHECK_EQ(rr_resp_wait(c, id, tu_ms(1000)), -ESTALE);
        CHECK_EQ(rr_resp_check(c, id), -ESTALE);
        CHECK_EQ(rr_int_peek(c, id, &v), -ESTALE);
        rr_resp r;
        CHECK_EQ(rr_resp_view(c, id, &r), -ESTALE);
        CHECK_EQ(rr_resp_abandon_dead(c, id), -ESTALE);
        CHECK_EQ(stats(c).slots_free, 1); /* the writer has it until it publishes */
        CHECK_EQ(rr_slot_publish(&c->slots, s, id), -ESTALE);
        CHECK_EQ(stats(c).slots_free, 2); /* ...and frees it */
        CHECK_EQ(rr_cancel(c, id), -ESTALE);
        /* the same through clear() */
        REQUIRE_EQ(variant == STR ? rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id)
                                  : rr_int_send(c, 1, RR_NOWAIT, &id),
                   0);
        s = rr_slot_claim(&c->slots, id);
        REQUIRE(s);
        REQUIRE_EQ(rr_clear(c), 0);
        CHECK_EQ(rr_resp_check(c, id), -ESTALE);
        /* this process holds the (cancelled) claim: its own reply is told so */
        CHECK_EQ(variant == STR ? rr_str_reply(c, id, "x", 1, 0) : rr_int_reply(c, id, 2),
                 -EBUSY);
        CHECK_EQ(rr_slot_publish(&c->slots, s, id), -ESTALE);
        CHECK_EQ(stats(c).slots_free, 2);
        CHECK_EQ(variant == STR ? rr_str_reply(c, id, "x", 1, 0) : rr_int_reply(c, id, 2),
                 -ESTALE); /* freed: stale now */
        rr_close(c);
    }
}

/* A cancelled reply whose writer dies before publishing: the sweep frees it
 * (the client forgot the request: nobody else would). */
typedef struct claim_sh {
    _Atomic int state;
    uint64_t id;
} claim_sh;

typedef struct claim_arg {
    rr_chan *c;
    claim_sh *sh;
} claim_arg;

static void claim_and_hang(void *p)
{
    claim_arg *a = p;
    if (!rr_slot_claim(&a->c->slots, a->sh->id)) {
        tu_fail(__FILE__, __LINE__, "claim");
        return;
    }
    atomic_store(&a->sh->state, 1);
    for (;;)
        pause();
}

static pid_t writer_holding(rr_chan *c, claim_sh *sh)
{
    claim_arg arg = {c, sh};
    atomic_store(&sh->state, 0);
    pid_t pid = tu_fork(claim_and_hang, &arg, 30);
    if (pid > 0)
        CHECK(tu_await(&sh->state, 1, tu_ms(10000)));
    return pid;
}

TEST_T("slots", slots_dead_writer_of_cancelled_reply, 60)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    claim_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &sh->id), 0);
    pid_t w = writer_holding(c, sh);
    REQUIRE(w > 0);
    CHECK_EQ(rr_resp_worker(c, sh->id), w);
    CHECK_EQ(rr_cancel(c, sh->id), 0);
    rr_slots_sweep(&c->slots, 0);
    CHECK_EQ(stats(c).slots_free, 1); /* a live writer keeps it */
    kill(w, SIGKILL);
    tu_wait(w, tu_ms(5000));
    rr_slots_sweep(&c->slots, 0);
    CHECK_EQ(stats(c).slots_free, 2);
    /* and a writer killed mid-reply whose client still waits: WorkerDied */
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &sh->id), 0);
    w = writer_holding(c, sh);
    REQUIRE(w > 0);
    CHECK_EQ(rr_resp_abandon_dead(c, sh->id), -EAGAIN);
    kill(w, SIGKILL);
    tu_wait(w, tu_ms(5000));
    CHECK_EQ(rr_resp_wait(c, sh->id, tu_ms(5000)), -EOWNERDEAD);
    CHECK_EQ(rr_resp_abandon_dead(c, sh->id), 0);
    CHECK_EQ(stats(c).slots_free, 2);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* Defect: a forged last_sweep made `now - last` overflow (UBSan). */
TEST("slots", slots_forged_sweep_clock)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    int64_t forged[] = {INT64_MIN, INT64_MAX, -1, 1};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        atomic_store(&c->hdr->last_sweep, forged[i]);
        rr_slots_sweep(&c->slots, 1000000000);
        rr_reclaim(c);
        uint64_t id;
        CHECK_EQ(rr_str_send(c, "x", 1, 0, RR_NOWAIT, &id), 0);
        CHECK_EQ(rr_cancel(c, id), 0);
    }
    rr_close(c);
}

/* Defect: a sweep that read ctl before owner could find "FREE with a dead
 * owner" for a client that had since acquired and died, clear the owner of
 * an ACQUIRED slot, and strand it. Clients killed at random points of their
 * acquires and releases while others sweep: at the end every slot is back. */
static void acquire_forever(void *p)
{
    rr_chan *c = p;
    for (;;) {
        uint64_t id;
        if (rr_slot_acquire(&c->slots, c->bells.mine, RR_NOWAIT, &id) == 0)
            rr_slot_abandon(&c->slots, id);
    }
}

static void sweep_forever(void *p)
{
    rr_chan *c = p;
    for (;;)
        rr_slots_sweep(&c->slots, 0);
}

TEST_T("slots", slots_sweep_vs_killed_acquirers, 120)
{
    rr_chan *c = tu_anon(STR, 4, 4, 64, 0);
    REQUIRE(c);
    uint64_t seed = 42;
    pid_t sweeper = tu_fork(sweep_forever, c, 110);
    REQUIRE(sweeper > 0);
    for (long round = 0; round < tu_n(300); round++) {
        pid_t a = tu_fork(acquire_forever, c, 30);
        REQUIRE(a > 0);
        usleep((useconds_t)(200 + tu_rand(&seed) % 2000));
        kill(a, SIGKILL);
        tu_wait(a, tu_ms(5000));
        if (round % 16 == 0)
            rr_slots_clear(&c->slots); /* clear's owner hand-back races the sweeps too */
    }
    kill(sweeper, SIGKILL);
    tu_wait(sweeper, tu_ms(5000));
    rr_slots_sweep(&c->slots, 0);
    rr_stats s = stats(c);
    CHECK_MSG(s.slots_free == 4, "%u of 4 slots free (acquired %u)", s.slots_free,
              s.slots_acquired);
    for (uint32_t i = 0; i < 4; i++) {
        rr_slot *slot = rr_slot_at(&c->slots, i);
        CHECK_MSG(atomic_load(&slot->owner) == 0, "slot %u keeps owner %llx", i,
                  (unsigned long long)atomic_load(&slot->owner));
    }
    uint64_t ids[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ(rr_slot_acquire(&c->slots, c->bells.mine, RR_NOWAIT, &ids[i]), 0);
    rr_close(c);
}

/* Defect: a send wakes one receiver; one killed after that wake-up but
 * before its take stranded the request while others slept on. */
typedef struct recv_sh {
    _Atomic int took;
} recv_sh;

typedef struct recv_arg {
    rr_chan *c;
    recv_sh *sh;
    uint32_t variant;
} recv_arg;

static void receive_one(void *p)
{
    recv_arg *a = p;
    int rc;
    if (a->variant == STR) {
        rc = rr_str_recv_begin(a->c, RR_FOREVER);
        if (rc > 0)
            rr_str_recv_end(a->c, 1);
    } else {
        int64_t v;
        uint64_t id;
        rc = rr_int_recv(a->c, RR_FOREVER, &v, &id);
        rc = rc == 0 ? 1 : rc;
    }
    if (rc == 1)
        atomic_fetch_add(&a->sh->took, 1);
    else
        tu_fail(__FILE__, __LINE__, "recv %d", rc);
}

static bool asleep(pid_t pid)
{
    for (int i = 0; i < 500; i++) {
        if (tu_proc_state(pid) == 'S')
            return true;
        usleep(10000);
    }
    return false;
}

/* Sleeps on not_empty as a receiver does, and leaves at its wake-up without
 * taking anything (or saying it no longer sleeps): a receiver killed there. */
static void woken_then_gone(void *p)
{
    rr_chan *c = p;
    rr_waitq *q = &c->hdr->not_empty;
    atomic_fetch_add(&q->waiters, 1);
    uint32_t seen = atomic_load(&q->seq);
    rr_futex_wait(&q->seq, seen, tu_ms(20000));
    _exit(0);
}

TEST_T("slots", recv_woken_receiver_killed, 60)
{
    for (uint32_t variant = STR; variant <= INT; variant++) {
        rr_chan *c = tu_anon(variant, 4, 2, 64, 0);
        REQUIRE(c);
        rr_set_spin(c, 0); /* receivers go straight to sleep */
        recv_sh *sh = tu_shared(sizeof *sh);
        REQUIRE(sh);
        recv_arg arg = {c, sh, variant};
        /* futex queues are FIFO: the first sleeper gets the send's wake-up */
        pid_t first = tu_fork(woken_then_gone, c, 30);
        REQUIRE(first > 0);
        CHECK(asleep(first));
        pid_t second = tu_fork(receive_one, &arg, 30);
        REQUIRE(second > 0);
        CHECK(asleep(second));
        usleep(50000);
        uint64_t id;
        REQUIRE_EQ(variant == STR ? rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id)
                                  : rr_int_send(c, 1, RR_NOWAIT, &id),
                   0);
        tu_wait(first, tu_ms(5000));
        CHECK_MSG(tu_await(&sh->took, 1, tu_ms(5000)), "the request stayed with the dead receiver");
        tu_wait_ok(second, tu_ms(5000), "second receiver");
        CHECK_EQ(rr_size(c), 0);
        tu_shared_free(sh, sizeof *sh);
        rr_close(c);
    }
}
