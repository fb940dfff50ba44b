/* Adversarial review of the slot protocol of format 4 (rr_slots.c) and the
 * client paths. Each test is an exact interleaving forced through the core's
 * internal steps or a plain API sequence; the ones named in the review
 * report FAIL on the build they were written against. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rr_chan.h"
#include "tu.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define STR RR_VARIANT_STR
#define INT RR_VARIANT_INT

static rr_stats rv_stats(rr_chan *c)
{
    rr_stats s;
    rr_get_stats(c, &s);
    return s;
}

/* ctl as rr_slots.c builds it (gen << 32 | (gen & 0x0fffffff) << 4 | state) */
static uint64_t rv_ctl(uint32_t gen, uint32_t state)
{
    return (uint64_t)gen << 32 | ((gen & 0x0fffffffu) << 4 | state);
}

/* FINDING 1. The worker record keeps 23 bits of generation and orders them
 * by the sign of the difference. A slot's generation moves by 2 on every
 * acquire + give-back, with no take: a non-blocking send() on a full queue
 * does exactly that (acquire, push fails, abandon). After 2^21 such sends
 * the last take's record looks *newer* than the slot's generation, so the
 * next request in that slot can neither record its taker (record()) nor be
 * claimed (rr_slot_claim): its reply is refused, nobody notices a dead
 * worker, and the client waits forever. It lasts for the next 2^21 cycles
 * of the slot, and the client's slot hint keeps it on that slot. */
TEST_T("slots", review_gen_window_failed_sends_lock_out_replies, 120)
{
    rr_chan *c = tu_anon(STR, 1, 2, 64, 0);
    REQUIRE(c);
    /* both slots get a taker record: a round trip on each (the pool's hint picks it) */
    rr_resp r;
    for (uint32_t i = 0; i < 2; i++) {
        uint64_t id;
        atomic_store(&c->slots.hint, i);
        REQUIRE_EQ(rr_str_send(c, "a", 1, 0, RR_NOWAIT, &id), 0);
        REQUIRE_EQ(rr_id_index(id), i);
        REQUIRE_EQ(rr_str_recv_begin(c, RR_NOWAIT), 1);
        rr_str_recv_end(c, 1);
        REQUIRE_EQ(rr_str_reply(c, id, "r", 1, 0), 0);
        REQUIRE_EQ(rr_resp_view(c, id, &r), 0);
        REQUIRE_EQ(rr_resp_release(c, id), 0);
    }
    uint32_t rec_gen = (uint32_t)(atomic_load(&rr_slot_at(&c->slots, 0)->worker) >> RR_WORKER_GEN_SHIFT);
    /* the queue (capacity 1) is full with a request in slot 1 */
    uint64_t fill;
    atomic_store(&c->slots.hint, 1);
    REQUIRE_EQ(rr_str_send(c, "fill", 4, 0, RR_NOWAIT, &fill), 0);
    REQUIRE_EQ(rr_id_index(fill), 1);
    atomic_store(&c->slots.hint, 0);
    int n;
    /* a client polling send() while the workers are busy */
    long fails = 0;
    for (long i = 0; i < (1L << 21) + 8; i++) {
        uint64_t id;
        int rc = rr_str_send(c, "x", 1, 0, RR_NOWAIT, &id);
        if (rc != -EAGAIN) {
            tu_fail(__FILE__, __LINE__, "send %d at %ld", rc, i);
            break;
        }
        fails++;
    }
    tu_note("%ld failed sends", fails);
    /* the workers catch up */
    n = rr_str_recv_begin(c, RR_NOWAIT);
    REQUIRE_EQ(n, 1);
    rr_str_recv_end(c, 1);
    REQUIRE_EQ(rr_str_reply(c, fill, "f", 1, 0), 0);
    REQUIRE_EQ(rr_resp_view(c, fill, &r), 0);
    REQUIRE_EQ(rr_resp_release(c, fill), 0);
    /* the next request lands on the hammered slot */
    uint64_t victim;
    REQUIRE_EQ(rr_str_send(c, "victim", 6, 0, RR_NOWAIT, &victim), 0);
    tu_note("victim on slot %u gen %u (record of gen %u)", rr_id_index(victim), rr_id_gen(victim),
            rec_gen);
    REQUIRE_EQ(rr_id_index(victim), 0);
    n = rr_str_recv_begin(c, RR_NOWAIT);
    REQUIRE_EQ(n, 1);
    rr_str_recv_end(c, 1);
    CHECK_MSG(rr_resp_worker(c, victim) == getpid(), "the taker was not recorded (worker %d)",
              rr_resp_worker(c, victim));
    CHECK_MSG(rr_str_reply(c, victim, "ok", 2, 0) == 0,
              "the reply to a live, taken request was refused");
    CHECK_EQ(rr_resp_wait(c, victim, tu_ms(300)), 0);
    rr_close(c);
}

/* FINDING 2. free_from: ctl CAS to FREE, then CAS owner o -> 0. The freer
 * need not be the owner: a worker whose publish found CANCELLED, clear() in
 * a server, cancel() by a process the id was handed to. Killed between the
 * two, it leaves FREE with the owner word of a *live* client: try_acquire
 * needs owner 0, and the sweep clears the owner of a FREE slot only when
 * that owner is dead. The slot is lost for as long as the client lives. */
typedef struct rv_sh {
    _Atomic int state;
    uint64_t id;
} rv_sh;

typedef struct rv_arg {
    rr_chan *c;
    rv_sh *sh;
} rv_arg;

/* A writer that claims, waits to be cancelled, then runs its publish: the
 * CAS finds CANCELLED and free_from's ctl CAS runs; SIGKILL lands before
 * the owner CAS (here: _exit at that point). */
static void writer_cancelled_then_killed(void *p)
{
    rv_arg *a = p;
    rr_slot *s = rr_slot_claim(&a->c->slots, a->sh->id);
    if (!s) {
        tu_fail(__FILE__, __LINE__, "claim");
        return;
    }
    atomic_store(&a->sh->state, 1);
    uint32_t gen = rr_id_gen(a->sh->id);
    while (atomic_load(&s->ctl) != rv_ctl(gen, 5 /* CANCELLED */))
        usleep(1000);
    uint64_t v = rv_ctl(gen, 2 /* WRITING */);
    /* rr_slot_publish's CAS: fails, v = CANCELLED(gen) */
    if (atomic_compare_exchange_strong(&s->ctl, &v, rv_ctl(gen, 3))) {
        tu_fail(__FILE__, __LINE__, "publish won over cancel");
        return;
    }
    /* free_from's ctl CAS, then the process dies */
    if (!atomic_compare_exchange_strong(&s->ctl, &v, rv_ctl(gen + 1, 0)))
        tu_fail(__FILE__, __LINE__, "free CAS");
    tu_child_exit();
}

TEST_T("slots", review_freer_killed_before_owner_cas_leaks_slot, 60)
{
    rr_chan *c = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(c);
    rv_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &sh->id), 0);
    rv_arg arg = {c, sh};
    pid_t w = tu_fork(writer_cancelled_then_killed, &arg, 30);
    REQUIRE(w > 0);
    REQUIRE(tu_await(&sh->state, 1, tu_ms(10000)));
    CHECK_EQ(rr_cancel(c, sh->id), 0); /* a req() that timed out */
    tu_wait_ok(w, tu_ms(10000), "writer");
    CHECK_EQ(rv_stats(c).slots_free, 1);
    rr_slots_sweep(&c->slots, 0);
    uint64_t id;
    int rc = rr_slot_acquire(&c->slots, c->bells.mine, tu_ms(2500), &id); /* sweeps on the way too */
    CHECK_MSG(rc == 0, "the only slot is FREE but unusable (owner %llx = this live client): %d",
              (unsigned long long)atomic_load(&rr_slot_at(&c->slots, 0)->owner), rc);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* FINDING 3. next_worker_check is per handle: whichever thread looks first
 * after it passes does the check and pushes it 250 ms on. A thread that
 * waits in short slices on one request (the binding itself waits in 100 ms
 * slices; here 1 ms, as a get_wait(id, 0.001) loop) takes every check, and
 * another thread of the same handle waiting on a request whose worker died
 * never learns of it. */
typedef struct rv_poll {
    rr_chan *c;
    uint64_t id;
    _Atomic int stop;
} rv_poll;

static void *short_waits(void *p)
{
    rv_poll *a = p;
    while (!atomic_load(&a->stop))
        rr_resp_wait(a->c, a->id, tu_ms(1));
    return NULL;
}

static void take_and_exit_rv(void *p)
{
    rr_chan *c = p;
    int n = rr_str_recv_begin(c, tu_ms(5000));
    if (n <= 0) {
        tu_fail(__FILE__, __LINE__, "recv_begin %d", n);
        return;
    }
    rr_str_recv_end(c, 1);
}

TEST_T("slots", review_shared_handle_starves_worker_check, 60)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    uint64_t dead_id, live_id;
    REQUIRE_EQ(rr_str_send(c, "d", 1, 0, RR_NOWAIT, &dead_id), 0);
    pid_t t = tu_fork(take_and_exit_rv, c, 10);
    tu_wait_ok(t, tu_ms(10000), "taker");
    CHECK_EQ(rr_resp_check(c, dead_id), -EOWNERDEAD);
    /* another request of the same handle, still queued: nothing is wrong with it */
    REQUIRE_EQ(rr_str_send(c, "l", 1, 0, RR_NOWAIT, &live_id), 0);
    rv_poll poll = {c, live_id, 0};
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, short_waits, &poll), 0);
    usleep(20000);
    int64_t t0 = rr_now_ns();
    int rc = rr_resp_wait(c, dead_id, tu_ms(4000));
    double ms = tu_elapsed_ms(t0);
    atomic_store(&poll.stop, 1);
    pthread_join(th, NULL);
    CHECK_MSG(rc == -EOWNERDEAD, "dead worker not noticed in %.0f ms (rc %d)", ms, rc);
    rr_close(c);
}

/* FINDING 5. Str: rr_str_recv_end records the taker, then commits head. A
 * worker killed in between leaves the request queued under a record naming
 * a dead taker. Its client was told WorkerDied (and freed the slot), yet the
 * request was then delivered to, and executed by, the next worker, whose
 * reply was refused: a client that retries on WorkerDiedError ran it twice.
 * Now a dead taker whose request is still queued does not count: the client
 * waits on, the next worker takes the request and its reply arrives. */
static void mark_then_die(void *p)
{
    rr_chan *c = p;
    int n = rr_str_recv_begin(c, tu_ms(5000));
    if (n != 1) {
        tu_fail(__FILE__, __LINE__, "recv_begin %d", n);
        return;
    }
    /* rr_str_recv_end's first step, then SIGKILL before the head store */
    rr_slot_mark_taken(&c->slots, ((rr_str_cell *)c->q.ring.cells)[0].id);
    tu_child_exit();
}

TEST_T("slots", review_str_worker_died_before_commit_request_still_delivered, 60)
{
    rr_chan *c = tu_anon(STR, 4, 2, 64, 0);
    REQUIRE(c);
    uint64_t id;
    REQUIRE_EQ(rr_str_send(c, "q", 1, 0, RR_NOWAIT, &id), 0);
    pid_t w = tu_fork(mark_then_die, c, 10);
    tu_wait_ok(w, tu_ms(10000), "worker");
    CHECK_EQ(rr_resp_check(c, id), 0); /* still queued: not lost with its dead taker */
    CHECK_EQ(rr_resp_wait(c, id, tu_ms(600)), -EAGAIN);
    CHECK_EQ(rr_resp_abandon_dead(c, id), -EAGAIN);
    /* the next worker (takes over the dead holder's lock) */
    int n = rr_str_recv_begin(c, tu_ms(3000));
    REQUIRE_EQ(n, 1);
    rr_entry e;
    CHECK_EQ(rr_str_recv_peek(c, 0, &e), 0);
    CHECK_EQ(e.id, id);
    rr_str_recv_end(c, 1);
    CHECK_EQ(rr_resp_check(c, id), 0); /* its record names the live worker now */
    CHECK_EQ(rr_str_reply(c, id, "r", 1, 0), 0);
    rr_resp r;
    REQUIRE_EQ(rr_resp_view(c, id, &r), 0);
    CHECK(r.len == 1 && memcmp(r.data, "r", 1) == 0);
    CHECK_EQ(rr_resp_release(c, id), 0);
    rr_close(c);
}
