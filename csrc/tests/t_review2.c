/* Second adversarial review of the slot protocol (rr_slots.c, rr_strq.c),
 * after the fixes of the first: generation-tagged owner words and leftover
 * takeover, abandon back to FREE(g-1), record refresh, per-request worker
 * checks, rr_strq_holds. A test whose name says "leaks" or "race" FAILS (or
 * makes TSan report) on the build it was written against. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rr_chan.h"
#include "tu.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define STR RR_VARIANT_STR

/* ctl as rr_slots.c builds it (gen << 32 | (gen & 0x0fffffff) << 4 | state) */
static uint64_t r2_ctl(uint32_t gen, uint32_t state)
{
    return (uint64_t)gen << 32 | ((gen & 0x0fffffffu) << 4 | state);
}

typedef struct r2_sh {
    _Atomic int state;
    uint64_t id;
} r2_sh;

typedef struct r2_arg {
    rr_chan *c;
    r2_sh *sh;
} r2_arg;

/* A client process: sends one request, says so, and dies when told (SIGKILL
 * while waiting for its reply). */
static void client_sends_then_dies(void *p)
{
    r2_arg *a = p;
    if (rr_str_send(a->c, "q", 1, 0, RR_NOWAIT, &a->sh->id) != 0) {
        tu_fail(__FILE__, __LINE__, "send");
        return;
    }
    atomic_store(&a->sh->state, 1);
    while (atomic_load(&a->sh->state) != 2)
        usleep(1000);
    tu_child_exit();
}

/* One round trip in this process: the slot's generation moves on by 2. */
static void r2_round_trip(rr_chan *c)
{
    uint64_t id;
    rr_resp r;
    REQUIRE_EQ(rr_str_send(c, "x", 1, 0, RR_NOWAIT, &id), 0);
    REQUIRE_EQ(rr_str_recv_begin(c, RR_NOWAIT), 1);
    rr_str_recv_end(c, 1);
    REQUIRE_EQ(rr_str_reply(c, id, "y", 1, 0), 0);
    REQUIRE_EQ(rr_resp_view(c, id, &r), 0);
    REQUIRE_EQ(rr_resp_release(c, id), 0);
}

/* FINDING A. try_acquire judges the owner word against a ctl value it read
 * *before* it, relaxed, possibly long ago: v = FREE(g) -> gen = g + 1; o =
 * owner; "o's tag != gen" is taken for a leftover and CASed o -> mine; the
 * re-check of ctl then fails and give_up_owner CASes mine -> 0. If the slot
 * moved on between the two loads (an acquirer preempted after its ctl load),
 * o is the owner of the slot's *current* generation, a live client's, and it
 * is replaced by 0. Here the stale acquirer's steps are run on the words
 * exactly as try_acquire runs them (the window is two loads; a preemption
 * there is all it takes). The slot is then ACQUIRED with owner 0: when its
 * client dies, the sweep (which frees only by a dead owner) never frees it.
 * With 1 slot the channel is dead for good. Wiped while the victim is between
 * its own owner CAS and ctl CAS, it lets a third acquirer pass the re-check
 * too: two acquirers write s->bell, and the loser's give_up leaves owner 0. */
TEST_T("slots", review2_stale_acquirer_wipes_live_owner_slot_leaks, 60)
{
    rr_chan *c = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(c);
    rr_slot *s = rr_slot_at(&c->slots, 0);
    /* the stale acquirer D: try_acquire's first load, then D is preempted */
    uint64_t v = atomic_load(&s->ctl);
    REQUIRE_EQ(v, r2_ctl(0, 0));
    uint32_t gen = rr_id_gen(v) + 1; /* rr_ctl_gen(v) + 1 */
    /* meanwhile: the slot serves a request and is taken by client B */
    r2_round_trip(c);
    r2_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    r2_arg arg = {c, sh};
    pid_t b = tu_fork(client_sends_then_dies, &arg, 30);
    REQUIRE(b > 0);
    REQUIRE(tu_await(&sh->state, 1, tu_ms(10000)));
    uint64_t ob = atomic_load(&s->owner);
    tu_note("B's request %llx: ctl %llx owner %llx", (unsigned long long)sh->id,
            (unsigned long long)atomic_load(&s->ctl), (unsigned long long)ob);
    REQUIRE_EQ(atomic_load(&s->ctl), r2_ctl(rr_id_gen(sh->id), 1 /* ACQUIRED */));
    /* D resumes: o = owner. The fix: only a word tagged with an older
     * generation than D's is a leftover; B's is newer, so D skips the slot
     * (as try_acquire's rr_owner_older check does) and B keeps its owner. */
    uint64_t o = atomic_load(&s->owner);
    uint32_t d = (gen - (uint32_t)(o >> RR_OWNER_TAG_SHIFT)) & 0xffffffu;
    CHECK(!(d != 0 && d <= 0x7fffffu)); /* not older: no takeover */
    (void)v;
    /* B dies waiting for its reply: its slot must come back */
    atomic_store(&sh->state, 2);
    tu_wait_ok(b, tu_ms(10000), "client B");
    rr_slots_sweep(&c->slots, 0);
    uint64_t id;
    int rc = rr_slot_acquire(&c->slots, c->bells.mine, tu_ms(2500), &id); /* sweeps on the way too */
    CHECK_MSG(rc == 0,
              "the only slot is held for good by dead client %d: ctl %llx owner %llx (was %llx)"
              " (rc %d)",
              (int)b, (unsigned long long)atomic_load(&s->ctl),
              (unsigned long long)atomic_load(&s->owner), (unsigned long long)ob, rc);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* The control for finding A: the same dead client, without the stale
 * acquirer, gets its slot back by the sweep. */
TEST_T("slots", review2_dead_client_slot_swept_control, 60)
{
    rr_chan *c = tu_anon(STR, 4, 1, 64, 0);
    REQUIRE(c);
    r2_round_trip(c);
    r2_sh *sh = tu_shared(sizeof *sh);
    REQUIRE(sh);
    r2_arg arg = {c, sh};
    pid_t b = tu_fork(client_sends_then_dies, &arg, 30);
    REQUIRE(b > 0);
    REQUIRE(tu_await(&sh->state, 1, tu_ms(10000)));
    atomic_store(&sh->state, 2);
    tu_wait_ok(b, tu_ms(10000), "client B");
    uint64_t id;
    CHECK_EQ(rr_slot_acquire(&c->slots, c->bells.mine, tu_ms(2500), &id), 0);
    tu_shared_free(sh, sizeof *sh);
    rr_close(c);
}

/* FINDING B. rr_strq_holds reads cell ids (relaxed atomic loads) without the
 * lock, from a head and tail that may be stale by the time it reaches a cell;
 * a sender rewriting that cell a lap later writes cell->id with a plain store
 * (push_attempt), under a lock the scanner does not take. Mixed atomic and
 * plain accesses to one location, unordered: a data race in C11 (TSan reports
 * it). Harmless on x86 (aligned 8-byte store), but the comment's pairing does
 * not hold: the writer's store must be atomic too (relaxed suffices). */
typedef struct r2_scan {
    rr_chan *c;
    _Atomic int stop;
    long scans, hits;
} r2_scan;

static void *r2_scanner(void *p)
{
    r2_scan *a = p;
    while (!atomic_load(&a->stop)) {
        /* what rr_resp_check does for a Str request whose taker is dead */
        a->hits += rr_strq_holds(&a->c->q.strq, UINT64_C(1) << 40);
        a->scans++;
    }
    return NULL;
}

TEST_T("slots", review2_race_strq_holds_vs_push_cell_id, 60)
{
    rr_chan *c = tu_anon(STR, 2, 4, 64, 0);
    REQUIRE(c);
    r2_scan a = {c, 0, 0, 0};
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, r2_scanner, &a), 0);
    long n = tu_n(20000);
    for (long i = 0; i < n; i++) {
        uint64_t id[2];
        rr_resp r;
        if (rr_str_send(c, "a", 1, 0, tu_ms(5000), &id[0]) != 0
            || rr_str_send(c, "b", 1, 0, tu_ms(5000), &id[1]) != 0) {
            tu_fail(__FILE__, __LINE__, "send at %ld", i);
            break;
        }
        if (rr_str_recv_begin(c, tu_ms(5000)) != 2) {
            tu_fail(__FILE__, __LINE__, "recv at %ld", i);
            break;
        }
        rr_str_recv_end(c, 2);
        for (int k = 0; k < 2; k++) {
            CHECK_EQ(rr_str_reply(c, id[k], "r", 1, 0), 0);
            CHECK_EQ(rr_resp_view(c, id[k], &r), 0);
            CHECK_EQ(rr_resp_release(c, id[k]), 0);
        }
    }
    atomic_store(&a.stop, 1);
    pthread_join(th, NULL);
    tu_note("%ld scans, %ld hits", a.scans, a.hits);
    rr_close(c);
}
