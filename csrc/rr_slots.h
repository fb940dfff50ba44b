/* Response slots: the pool a client takes a slot from for each request,
 * where the request's reply is written and read. The protocol (its states,
 * the owner word, the worker record) is described at the top of rr_slots.c,
 * modelled in rr_slots.pml and checked by csrc/tests/spin.sh.
 *
 * Every call may run in any thread of any process holding the channel, at
 * the same time as any other; what each one may change is in its contract.
 * Errors as in reqrep.h; an id that names no slot of this geometry, or a
 * generation the slot is not at, is -ESTALE.
 *
 * uses: rr_format.h, rr_wait.h */
#ifndef RR_SLOTS_H
#define RR_SLOTS_H

#include "rr_format.h"
#include "rr_wait.h"

#include <stdbool.h>
#include <stdint.h>

/* Asks the request queue whether request `id` may still be queued (rr_queue.h:
 * the queue's `holds`): a Str taker killed between recording itself and its
 * pop left the request there, and its client must wait for the next taker. */
typedef bool (*rr_holds_fn)(const void *queue, uint64_t id);

/* A handle's view of the pool. */
typedef struct rr_slots {
    uint8_t *base;        /* the first slot, in the mapping */
    uint64_t stride;      /* bytes from one slot to the next */
    uint32_t n;           /* resp_slots */
    uint32_t resp_size;   /* the largest Str reply; 0 for Int */
    rr_header *hdr;       /* slot_free, recoveries, last_sweep */
    rr_bell *bells;       /* the channel's bells, rung on reply */
    rr_waiter *wait;      /* the handle's */
    rr_holds_fn holds;    /* the handle's request queue, and its `holds` */
    const void *queue;
    /* Per-handle memos (relaxed: hints and ticks; races between threads of
     * the handle cost a look more or less) */
    _Atomic uint32_t hint;         /* where the next acquire starts looking */
    _Atomic uint32_t sends;        /* acquires, to look at the sweep clock now and then */
    _Atomic uint32_t first_looks;  /* reply waits, to check a worker on one in 64 at once */
    _Atomic int64_t next_worker_check; /* when a waiting client next checks its worker */
    _Atomic uint64_t checked_id;       /* ...of this request: another request checks at once */
} rr_slots;

static inline rr_slot *rr_slot_at(rr_slots *pool, uint32_t idx)
{
    return (rr_slot *)(pool->base + (uint64_t)idx * pool->stride);
}

/* ---- the client's side ---- */

/* Takes a free slot for a new request that rings `bell` (1 + its index, 0:
 * none) on reply: 0 with its id, or -EAGAIN at the deadline (the pool is
 * dry), -EINTR, -ECANCELED. Sweeps for dead clients' slots now and then, and
 * when none is free. */
int rr_slot_acquire(rr_slots *pool, uint32_t bell, int64_t deadline, uint64_t *id);
/* Gives back a slot whose request never reached the queue (the acquire is
 * undone, generation included). Only the acquirer, before anyone saw the id. */
void rr_slot_abandon(rr_slots *pool, uint64_t id);
/* Whether the slot is still ACQUIRED at id's generation (not cleared): a
 * look just before the push, racing a clear() that then counts as later. */
bool rr_slot_is_acquired(rr_slots *pool, uint64_t id);
/* rr_resp_wait, rr_resp_hint, rr_resp_view, rr_resp_pin, rr_resp_unpin,
 * rr_resp_release, rr_resp_unview, rr_resp_discard, rr_int_peek, rr_cancel,
 * rr_resp_check, rr_resp_abandon_dead, rr_resp_worker, rr_id_live: their
 * contracts are in reqrep.h. */
int rr_slot_wait(rr_slots *pool, uint64_t id, int64_t deadline);
bool rr_slot_hint(rr_slots *pool, uint64_t id);
int rr_slot_view(rr_slots *pool, uint64_t id, rr_resp *r);
int rr_slot_pin(rr_slots *pool, uint64_t id, rr_resp *r);
int rr_slot_unpin(rr_slots *pool, uint64_t id, bool free);
int rr_slot_release(rr_slots *pool, uint64_t id);
int rr_slot_unview(rr_slots *pool, uint64_t id);
int rr_slot_discard(rr_slots *pool, uint64_t id);
int rr_slot_int_peek(rr_slots *pool, uint64_t id, int64_t *value);
int rr_slot_cancel(rr_slots *pool, uint64_t id);
int rr_slot_check(rr_slots *pool, uint64_t id);
int rr_slot_abandon_dead(rr_slots *pool, uint64_t id);
int rr_slot_worker(rr_slots *pool, uint64_t id);
int rr_slot_id_live(rr_slots *pool, uint64_t id);

/* ---- the worker's side ---- */

/* Records this process (or the process of identity word `ident`) as the one
 * that took request `id`: only the process that has it, once it has it (a
 * take is exclusive). A record never overwrites the writer of id's reply, nor
 * a newer request's. */
void rr_slot_mark_taken(rr_slots *pool, uint64_t id);
void rr_slot_mark_taken_by(rr_slots *pool, uint64_t id, uint64_t ident);
/* A reply: claim (records the writer, then ACQUIRED -> WRITING; NULL if
 * stale, never taken, or claimed by another), fill the slot, publish
 * (WRITING -> READY: 1 if the requester's bell was rung, 0; -ESTALE if it was
 * cancelled, cleared or taken back meanwhile: nothing was delivered, and the
 * slot was freed). Any process holding the id may claim, any number at once:
 * exactly one claim of a generation succeeds; only its claimant publishes. */
rr_slot *rr_slot_claim(rr_slots *pool, uint64_t id);
int rr_slot_publish(rr_slots *pool, rr_slot *s, uint64_t id);
/* A claim that may be given back: *prev is the record it replaced, for
 * rr_slot_unclaim. */
rr_slot *rr_slot_claim_keeping(rr_slots *pool, uint64_t id, uint64_t *prev);
/* Gives a claim back unpublished (WRITING -> ACQUIRED, then the record
 * back to `prev`, what the claim replaced): 0, or -ESTALE if the request
 * was cancelled or cleared meanwhile (the slot freed, as publish would).
 * Only the claimant, instead of publishing. */
int rr_slot_unclaim(rr_slots *pool, rr_slot *s, uint64_t id, uint64_t prev);
/* The slot of `id` if this process holds its claim (its record says so, and
 * ctl is still WRITING or CANCELLED of id), for the claimant's later calls;
 * NULL if not. */
rr_slot *rr_slot_claimed(rr_slots *pool, uint64_t id);

/* ---- the pool ---- */

/* Frees the slots of dead clients (and of dead writers of cancelled
 * replies); at most once per `period_ns` per channel (0: now). Any process,
 * any time: a slot is freed only when the process that holds it is dead. */
void rr_slots_sweep(rr_slots *pool, int64_t period_ns);
/* clear()'s part: frees every slot that is acquired or ready, cancels every
 * reply being written; a slot being read (READING) loses nothing. */
void rr_slots_clear(rr_slots *pool);
/* Adds the slots' states and reply counts to st (a snapshot, relaxed). */
void rr_slots_count(rr_slots *pool, rr_stats *st);

#endif
