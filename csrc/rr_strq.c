/* The Str request queue (its interface: rr_strq.h, rr_queue.h): a ring of
 * cells pointing into a circular arena, both guarded by the queue lock
 * (rr_lock.c). A push commits with its store of
 * tail and a pop with its store of head, so an operation cut short by the
 * death of its process leaves no trace. Small entries live in their cell, so
 * that a round trip moves one line for the request, not a cell and arena.
 * Receivers watch the cell at head (its `mark`), not tail: the line with
 * tail and the lock then stays with the senders until a receiver locks.
 *
 * Arena pins (SPEC §9): a receiver may take a large entry without copying
 * it out, pinning its bytes (rr_pin in rr_format.h) past the pop. Pinned
 * entries are older than every queued one, so the oldest byte in use is the
 * least of head's begin and the pins' begins, and nothing restarts at the
 * arena's beginning while any pin lives (place). A pin is taken under the
 * lock and given back without it, by one CAS of its owner word; senders
 * read those words only under the lock and only when the header's count of
 * pins is not 0, and take back the pins of dead receivers when short of
 * room. */
#include "rr_strq.h"
#include "rr_lock.h"
#include "rr_proc.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define RR_STR_VIEW_MAX 1024 /* entries from this size up always look at head */

static inline rr_str_cell *cell_at(const rr_strq *q, uint64_t pos)
{
    return (rr_str_cell *)q->ring.cells + (pos & q->ring.mask);
}

/* Where an entry that begins its charge at `beg` puts its data, and where it
 * ends: an entry never wraps, the leftover tail of the arena is charged to it.
 * An entry kept in its cell takes no arena. */
static void entry_span(const rr_strq *q, uint64_t beg, uint32_t len, uint64_t *start, uint64_t *end)
{
    uint64_t cap = q->arena_cap, off = beg % cap;
    uint64_t size = len <= RR_STR_INLINE ? 0 : RR_ROUND_UP((uint64_t)len, 8);
    *start = off + size > cap ? beg + (cap - off) : beg;
    *end = *start + size;
}

/* Arena bytes in use, pinned ones included (an estimate when read without
 * the lock). */
static uint64_t arena_used(const rr_strq *q, uint64_t head, uint64_t tail)
{
    rr_header *h = q->ring.hdr;
    uint64_t first = UINT64_MAX;
    /* relaxed atomic reads: statistics may read cells and pins without the lock */
    if (atomic_load_explicit(&h->pins, memory_order_relaxed))
        for (uint32_t i = 0; i < RR_ARENA_PINS; i++)
            if (atomic_load_explicit(&h->pin[i].owner, memory_order_relaxed)
                && RR_READ_ONCE(h->pin[i].beg) < first)
                first = RR_READ_ONCE(h->pin[i].beg);
    if (head != tail && RR_READ_ONCE(cell_at(q, head)->beg) < first)
        first = RR_READ_ONCE(cell_at(q, head)->beg);
    if (first == UINT64_MAX)
        return 0;
    rr_str_cell *last = cell_at(q, tail - 1);
    uint64_t start, end;
    entry_span(q, RR_READ_ONCE(last->beg), RR_READ_ONCE(last->len), &start, &end);
    uint64_t used = end - first;
    return used <= q->arena_cap ? used : q->arena_cap;
}

/* How long an attempt may wait for the lock: RR_TRY not at all, a
 * non-blocking call as long as a holder takes, a blocking one to its deadline. */
static int64_t lock_deadline(int64_t deadline)
{
    return deadline == RR_TRY ? RR_TRY : deadline > RR_NOWAIT ? deadline : RR_FOREVER;
}

static void arena_op(void *qv, uint64_t *cap, uint64_t *used)
{
    rr_strq *q = qv;
    rr_header *h = q->ring.hdr;
    *cap = q->arena_cap;
    /* acquire ↔ the release stores of head (rr_strq_recv_end, clear) and tail
     * (push_attempt): the cells between were written before */
    *used = arena_used(q, atomic_load_explicit(&h->head, memory_order_acquire),
                       atomic_load_explicit(&h->tail, memory_order_acquire));
}

/* Whether an entry's data at virtual offset `start` lies inside the arena.
 * Always, unless a forged cell put its neighbour near 2^64, where the
 * arithmetic wraps: the arena's size need not divide 2^64. */
static bool in_arena(const rr_strq *q, uint64_t start, uint32_t len)
{
    return len <= RR_STR_INLINE || start % q->arena_cap + len <= q->arena_cap;
}

/* Where an entry of len bytes would go after the entries from head to tail
 * (the oldest byte in use, queued or pinned, is at first; `pinned`: some pin
 * may live): 1 with its charge begin and data offset if there is room in the
 * cells and in the arena, 0 if not. */
static int place(const rr_strq *q, uint64_t head, uint64_t tail, uint64_t first, bool pinned,
                 uint32_t len, uint64_t *beg, uint64_t *start)
{
    if (tail - head >= q->ring.cap)
        return 0;
    uint64_t end;
    bool idle = head == tail && !pinned; /* nothing in the arena is in use */
    /* An idle arena starts again at its beginning, still in cache, except
     * for a large entry: it goes on after the last one, into lines the
     * receiver has not read lately, which the sender can then write without
     * taking each back from the receiver's cache (+15-20% on 64 KiB echoes). */
    *beg = 0;
    if (!idle || len >= RR_STR_VIEW_MAX) {
        rr_str_cell *last = cell_at(q, tail - 1);
        entry_span(q, last->beg, last->len, start, beg);
    }
    entry_span(q, *beg, len, start, &end);
    if (idle && (end - *beg > q->arena_cap || !in_arena(q, *start, len))) {
        *beg = 0; /* it would not fit after the wrap: take the whole arena */
        entry_span(q, 0, len, start, &end);
    }
    /* A forged queue or pin that places it outside reads as full until
     * drained (or its pin's owner is found dead). */
    return end - (idle ? *beg : first) <= q->arena_cap && in_arena(q, *start, len);
}

/* ---- arena pins ---- */

/* Gives back pin p held by `owner`: false if it is not (or no longer). */
static bool pin_give_back(rr_header *h, rr_pin *p, uint64_t owner)
{
    /* release ↔ the acquire load of owner in pins_first: the holder's reads
     * of the pinned bytes happen before a sender that sees 0 reuses them */
    if (!atomic_compare_exchange_strong_explicit(&p->owner, &owner, 0, memory_order_release,
                                                 memory_order_relaxed))
        return false;
    /* after the CAS: the count stays at or above the pins that live */
    atomic_fetch_sub_explicit(&h->pins, 1, memory_order_relaxed);
    return true;
}

/* Whether the receiver of identity `owner` is dead: we are not. */
static bool pin_owner_dead(uint64_t owner)
{
    return owner != rr_self_ident() && !rr_ident_alive(owner);
}

/* The oldest begin among the live pins, or `first` if it is older, and
 * whether any pin lives (under the lock, where pins are taken: the answer
 * holds until we unlock, but for give-backs). With `reclaim`, the pins of
 * dead receivers are given back first. */
static uint64_t pins_first(rr_strq *q, uint64_t first, bool reclaim, bool *live)
{
    rr_header *h = q->ring.hdr;
    *live = false;
    for (uint32_t i = 0; i < RR_ARENA_PINS; i++) {
        rr_pin *p = &h->pin[i];
        /* acquire ↔ the release CAS in pin_give_back */
        uint64_t owner = atomic_load_explicit(&p->owner, memory_order_acquire);
        if (!owner)
            continue;
        if (reclaim && pin_owner_dead(owner) && pin_give_back(h, p, owner)) {
            atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
            continue;
        }
        *live = true;
        if (p->beg < first)
            first = p->beg;
    }
    return first;
}

/* Under the lock: whether a pin may live (the count is never below them;
 * a process that died between a pin's two steps leaves it above, which
 * only sends a sender to look at the pins themselves). */
static bool pins_in_use(const rr_header *h)
{
    /* relaxed: raised only under the lock we hold; a give-back that lowers it
     * meanwhile only makes us careful for nothing */
    return atomic_load_explicit(&((rr_header *)h)->pins, memory_order_relaxed) != 0;
}

/* One try at a push under the lock: 1 done, 0 full (cells or arena). */
static int push_attempt(void *qv, const rr_request *p)
{
    rr_strq *q = qv;
    rr_header *h = q->ring.hdr;
    int rc = rr_lock(h, q->ring.wait, lock_deadline(p->deadline));
    if (rc)
        return rc == -EAGAIN ? 0 : rc;
    /* relaxed: both only change under the lock we hold */
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
    uint64_t head = h->seen_head, beg, start;
    bool pinned = pins_in_use(h);
    /* The senders' view of head lags the truth, so it errs towards full; only
     * then is head itself read. A view from a forged file at worst misplaces
     * an entry inside the arena. A large entry reads head anyway: one line is
     * nothing beside its copy, and an empty queue puts it at the arena's
     * start, where the last one was, still in cache. seen_first is never
     * after a live pin's begin: a pin is of an entry at head, after it. */
    rc = p->len < RR_STR_VIEW_MAX
        && place(q, head, tail, h->seen_first, pinned, p->len, &beg, &start);
    for (int look = 0; !rc && look < 1 + pinned; look++) {
        /* the truth; the second look takes back the pins of dead receivers */
        head = atomic_load_explicit(&h->head, memory_order_relaxed);
        h->seen_head = head;
        uint64_t first = head != tail ? cell_at(q, head)->beg : UINT64_MAX;
        if (pinned) /* what the pins say, not the count, which may be stale */
            first = pins_first(q, first, look == 1, &pinned);
        h->seen_first = first != UINT64_MAX ? first : 0;
        rc = place(q, head, tail, h->seen_first, pinned, p->len, &beg, &start);
    }
    if (rc) {
        if (head == tail && !pinned)
            h->seen_first = beg; /* the arena starts again at this entry */
        rr_str_cell *cell = cell_at(q, tail);
        rr_iov_gather(p->len <= RR_STR_INLINE ? cell->small : q->arena + start % q->arena_cap,
                      p->iov, p->niov);
        /* beg and len atomically: statistics read them without the lock */
        RR_WRITE_ONCE(cell->beg, beg);
        RR_WRITE_ONCE(cell->len, p->len);
        cell->flags = p->flags;
        RR_WRITE_ONCE(cell->id, p->id); /* rr_strq_holds reads it without the lock */
        /* relaxed: a hint for receivers, who read the entry under the lock;
         * the wake-up's fence orders it for a receiver about to sleep */
        atomic_store_explicit(&cell->mark, tail + 1, memory_order_relaxed);
        /* release ↔ the acquire loads of tail in rr_size, rr_strq_holds and
         * arena_op (a receiver reads it under the lock, whose acquire
         * orders it): the cell and its bytes are visible before the entry is */
        atomic_store_explicit(&h->tail, tail + 1, memory_order_release);
    }
    rr_unlock(h);
    return rc;
}

static bool has_room(void *qv)
{
    rr_strq *q = qv;
    rr_header *h = q->ring.hdr;
    return atomic_load_explicit(&h->tail, memory_order_relaxed)
        - atomic_load_explicit(&h->head, memory_order_relaxed) < q->ring.cap;
}

typedef struct str_pop {
    rr_strq *q;
    int64_t deadline;
} str_pop;

/* Whether the cell at head holds an entry, by its mark: the cheap look that
 * spinning receivers poll. Only a hint: a sender marks the cell before it
 * moves tail, but a mark can be stale (its sender died in between) or
 * missing (a forged file); tail, under the lock, says for sure. */
static bool has_entry(rr_strq *q)
{
    /* relaxed: head only says which cell to look at, the mark is a hint */
    uint64_t head = atomic_load_explicit(&q->ring.hdr->head, memory_order_relaxed);
    return atomic_load_explicit(&cell_at(q, head)->mark, memory_order_relaxed) == head + 1;
}

/* has_entry, or tail says so when the mark does not: what attempts use, so
 * that a missing mark never hides an entry. */
static bool queued(rr_strq *q)
{
    rr_header *h = q->ring.hdr;
    return has_entry(q)
        || atomic_load_explicit(&h->tail, memory_order_relaxed)
        != atomic_load_explicit(&h->head, memory_order_relaxed);
}

static int pop_attempt(void *arg)
{
    str_pop *p = arg;
    rr_strq *q = p->q;
    rr_header *h = q->ring.hdr;
    /* An empty queue is seen without the lock, which then stays with the
     * senders' core. A stale "empty" only means we wait: the sender's mark
     * and tail and our look pair through the fences of the sleep protocol. */
    if (!queued(q))
        return 0;
    int rc = rr_lock(h, q->ring.wait, lock_deadline(p->deadline));
    if (rc)
        return rc == -EAGAIN ? 0 : rc;
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&h->tail, memory_order_relaxed) - head;
    if (n == 0) {
        /* relaxed: a hint (see has_entry); a stale one is cleared under the
         * lock, or spinning receivers would keep taking the lock for nothing.
         * To head, which is never head + 1 (0 is, for a head of 2^64 - 1). */
        atomic_store_explicit(&cell_at(q, head)->mark, head, memory_order_relaxed);
        rr_unlock(h);
        return 0;
    }
    q->locked_n = n < q->ring.cap ? (uint32_t)n : q->ring.cap;
    return 1;
}

static bool pop_peek(void *arg)
{
    str_pop *p = arg;
    return has_entry(p->q);
}

int rr_strq_recv_begin(rr_strq *q, int64_t deadline)
{
    str_pop p = {q, deadline};
    int rc = rr_recv_wait(&q->ring, pop_attempt, pop_peek, &p, deadline);
    if (rc == -EAGAIN && deadline <= RR_NOWAIT)
        atomic_fetch_add_explicit(&q->ring.hdr->recv_empty, 1, memory_order_relaxed);
    return rc ? rc : (int)q->locked_n;
}

static int queued_op(void *q) { return queued(q); }
static bool queued_hint(void *q) { return has_entry(q); }

int rr_strq_recv_peek(rr_strq *q, uint32_t i, rr_entry *e)
{
    if (i >= q->locked_n)
        return -EINVAL;
    /* relaxed: head only moves under the lock we hold */
    uint64_t head = atomic_load_explicit(&q->ring.hdr->head, memory_order_relaxed);
    const rr_str_cell *cell = cell_at(q, head + i);
    uint64_t start, end, cap = q->arena_cap;
    uint32_t len = cell->len;
    entry_span(q, cell->beg, len, &start, &end);
    e->id = cell->id;
    e->flags = cell->flags;
    if (len <= RR_STR_INLINE) {
        e->data = cell->small;
        e->len = len;
        return 0;
    }
    /* Cells are shared memory: never trust them to stay inside the arena. */
    if (len > cap || start % cap + len > cap) {
        e->data = q->arena;
        e->len = 0;
        return -RR_EFORMAT;
    }
    e->data = q->arena + start % cap;
    e->len = len;
    return 0;
}

int rr_strq_recv_pin(rr_strq *q, uint32_t i, uint32_t *pin)
{
    if (i >= q->locked_n)
        return -EINVAL;
    rr_header *h = q->ring.hdr;
    /* relaxed: head only moves under the lock we hold */
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    const rr_str_cell *cell = cell_at(q, head + i);
    uint64_t beg = cell->beg, start, end;
    uint32_t len = cell->len;
    if (len <= RR_STR_INLINE)
        return -EINVAL; /* in its cell, which the next sender reuses: copy it */
    entry_span(q, beg, len, &start, &end);
    if (len > q->arena_cap || !in_arena(q, start, len))
        return -RR_EFORMAT;
    for (int look = 0; look < 2; look++) {
        for (uint32_t k = 0; k < RR_ARENA_PINS; k++) {
            rr_pin *p = &h->pin[k];
            /* relaxed: free words are taken only under the lock we hold */
            uint64_t owner = atomic_load_explicit(&p->owner, memory_order_relaxed);
            if (owner && (look == 0 || !pin_owner_dead(owner) || !pin_give_back(h, p, owner)))
                continue;
            /* counted first: never below the pins that live */
            atomic_fetch_add_explicit(&h->pins, 1, memory_order_relaxed);
            RR_WRITE_ONCE(p->beg, beg); /* statistics read it without the lock */
            /* relaxed: senders read it under the lock we hold, whose unlock
             * releases it with beg and end */
            atomic_store_explicit(&p->owner, rr_self_ident(), memory_order_relaxed);
            *pin = k;
            return 0;
        }
    }
    return -ENOSPC;
}

int rr_strq_unpin(rr_strq *q, uint32_t pin)
{
    if (pin >= RR_ARENA_PINS)
        return -EINVAL;
    rr_header *h = q->ring.hdr;
    if (!pin_give_back(h, &h->pin[pin], rr_self_ident()))
        return -ESTALE; /* not ours: a forked child's copy of the caller */
    /* senders may wait for the room (the CAS is an RMW) */
    rr_waitq_wake_after_rmw(&h->not_full, INT_MAX);
    return 0;
}

void rr_strq_recv_end(rr_strq *q, uint32_t n)
{
    rr_header *h = q->ring.hdr;
    if (n > q->locked_n)
        n = q->locked_n;
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    /* Mark before the commit: a worker that dies in between leaves the entry
     * queued (another worker takes it and overwrites the mark). */
    for (uint32_t i = 0; i < n; i++)
        rr_slot_mark_taken(q->ring.slots, cell_at(q, head + i)->id);
    /* release ↔ producers' reads under the lock and size(): the entries are
     * consumed only once fully read */
    atomic_store_explicit(&h->head, head + n, memory_order_release);
    q->locked_n = 0;
    rr_unlock(h);
    if (n) /* the unlock is an exchange */
        rr_waitq_wake_after_rmw(&h->not_full, INT_MAX);
}

static int clear(void *qv)
{
    rr_strq *q = qv;
    rr_header *h = q->ring.hdr;
    int rc = rr_lock(h, q->ring.wait, RR_FOREVER);
    if (rc)
        return rc; /* a signal or an interrupt: nothing changed, the caller retries */
    /* release ↔ the acquire loads of head without the lock (rr_size,
     * rr_strq_holds, arena_op); the next holder of the lock sees it
     * through the lock */
    atomic_store_explicit(&h->head, atomic_load_explicit(&h->tail, memory_order_relaxed),
                          memory_order_release);
    rr_unlock(h);
    return 0;
}

bool rr_strq_holds(const rr_strq *q, uint64_t id)
{
    rr_header *h = q->ring.hdr;
    /* acquire ↔ the release stores of head and tail: the cells between were
     * written before */
    uint64_t head = atomic_load_explicit(&h->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    uint64_t n = tail - head;
    if (n > q->ring.cap)
        n = q->ring.cap; /* a forged or moving queue: look at every cell once */
    for (uint64_t i = 0; i < n; i++)
        /* relaxed atomic: a sender may be rewriting a cell we passed */
        if (RR_READ_ONCE(cell_at(q, head + i)->id) == id)
            return true;
    return false;
}

static bool holds_op(const void *q, uint64_t id) { return rr_strq_holds(q, id); }

static int hold_lock(void *qv)
{
    rr_strq *q = qv;
    return rr_lock(q->ring.hdr, q->ring.wait, RR_FOREVER);
}

const rr_queue_ops rr_strq_ops = {
    .push = push_attempt,
    .room = has_room,
    .queued = queued_op,
    .queued_hint = queued_hint,
    .clear = clear,
    .holds = holds_op,
    .arena = arena_op,
    .hold_lock = hold_lock,
};
