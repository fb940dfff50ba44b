/* The channel file format: every struct that lives in shared memory, every
 * word encoding (as static inline encoders and decoders) and every constant.
 * This is the only definition of the format: the core's code uses it, and
 * rr_format_describe() (rr_format.c) exports it to every other reader (the
 * Python reqrep._format, the CLI, the tests' format_info.h).
 *
 * Shared memory holds offsets, never pointers: each region lies at an offset
 * (the header's off_* fields) from wherever a process maps the file.
 *
 * uses: reqrep.h (variants, geometry limits) */
#ifndef RR_FORMAT_H
#define RR_FORMAT_H

#include "reqrep.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "futex words are the low halves of 64-bit words (the lock, a slot's ctl)");

/* ---- the file ---- */

#define RR_LINE 64
#define RR_MAGIC UINT64_C(0x31504552514552ff) /* "\xffRREQPE1" little-endian */
#define RR_FORMAT_VERSION 7u /* 7: arena pins; 6: the codec's name, Int error replies */
#define RR_HEADER_SIZE 1024u
#define RR_PAGE 4096u                         /* the file's size is a multiple of it */
#define RR_MAX_TOTAL ((uint64_t)1 << 42)      /* no file is larger */
#define RR_SLOT_HEADER 128u
#define RR_SLOT_INLINE 32u /* Str responses up to this size live in the slot's first line */
#define RR_STR_INLINE 32u  /* Str requests up to this size live in their cell */
#define RR_BELLS 64

#define RR_ALIGNED __attribute__((aligned(RR_LINE)))
#define RR_ROUND_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))

/* The regions, in this order: header (RR_HEADER_SIZE), RR_BELLS bells,
 * req_cap request cells (one line each), resp_slots slots (slot_stride
 * each), the Str arena (arena_cap); the total rounded up to RR_PAGE
 * (rr_layout_compute). Every region is valid when all zero. */

/* ---- identity words ----
 * A process as the Str lock's holder and a bell's owner name it: the low 32
 * bits of its start time (field 22 of /proc/PID/stat) << 32 | pid. A process
 * that reuses a dead one's pid has another start time. */
#define RR_IDENT_PID_BITS 32
#define RR_PID_LIMIT (1u << 22)             /* the kernel's PID_MAX_LIMIT */
/* In the lock word: somebody sleeps on it. Above every pid, in the futex half. */
#define RR_LOCK_WAITERS (UINT64_C(1) << 31)

static inline uint64_t rr_ident(uint32_t pid, uint32_t start)
{
    return (uint64_t)start << RR_IDENT_PID_BITS | pid;
}
static inline uint32_t rr_ident_pid(uint64_t ident) { return (uint32_t)ident; }
/* The identity in a lock word (its waiters flag dropped). */
static inline uint64_t rr_lock_holder(uint64_t lock) { return lock & ~RR_LOCK_WAITERS; }
static inline uint32_t rr_ident_start(uint64_t ident)
{
    return (uint32_t)(ident >> RR_IDENT_PID_BITS);
}

/* ---- process bits: the low 40 bits of a slot's worker record and owner word ----
 * start time (RR_WORKER_START_BITS) << RR_WORKER_PID_BITS | pid */
#define RR_WORKER_START_BITS 18
#define RR_WORKER_PID_BITS 22
#define RR_PROC_BITS (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)
#define RR_PROC_MASK (((uint64_t)1 << RR_PROC_BITS) - 1)
#define RR_PROC_PID_MASK ((UINT32_C(1) << RR_WORKER_PID_BITS) - 1)
#define RR_PROC_START_MASK ((UINT32_C(1) << RR_WORKER_START_BITS) - 1)

static inline uint64_t rr_proc_bits(uint64_t ident)
{
    return (uint64_t)(rr_ident_start(ident) & RR_PROC_START_MASK) << RR_WORKER_PID_BITS
        | (rr_ident_pid(ident) & RR_PROC_PID_MASK);
}
static inline uint32_t rr_proc_pid(uint64_t w) { return (uint32_t)w & RR_PROC_PID_MASK; }
static inline uint32_t rr_proc_start(uint64_t w)
{
    return (uint32_t)(w >> RR_WORKER_PID_BITS) & RR_PROC_START_MASK;
}

/* ---- a slot's worker record (rr_slots.c) ----
 * generation (23 bits) << 41 | writing << 40 | process bits: who took the
 * request (writing 0) or writes its reply (writing 1). 0 = nobody. */
#define RR_WORKER_GEN_BITS 23
#define RR_WORKER_WRITING_SHIFT RR_PROC_BITS
#define RR_WORKER_GEN_SHIFT (RR_WORKER_WRITING_SHIFT + 1)
#define RR_WORKER_GEN_MASK ((UINT32_C(1) << RR_WORKER_GEN_BITS) - 1)
#define RR_WORKER_WRITING ((uint64_t)1 << RR_WORKER_WRITING_SHIFT)

static inline uint64_t rr_worker_word(uint32_t gen, uint64_t ident)
{
    return (uint64_t)(gen & RR_WORKER_GEN_MASK) << RR_WORKER_GEN_SHIFT | rr_proc_bits(ident);
}
static inline uint32_t rr_worker_gen(uint64_t w) { return (uint32_t)(w >> RR_WORKER_GEN_SHIFT); }
/* The record is of generation `gen` (modulo its bits). */
static inline bool rr_worker_of(uint64_t w, uint32_t gen)
{
    return w != 0 && rr_worker_gen(w) == (gen & RR_WORKER_GEN_MASK);
}
/* The record is of a generation before `gen` (by the sign of the difference). */
static inline bool rr_worker_older(uint64_t w, uint32_t gen)
{
    uint32_t d = (gen - rr_worker_gen(w)) & RR_WORKER_GEN_MASK;
    return d != 0 && d < (RR_WORKER_GEN_MASK >> 1) + 1;
}

/* ---- a slot's owner word (rr_slots.c) ----
 * generation tag (24 bits) << 40 | process bits: who acquired the slot, for
 * which generation. 0 = none. */
#define RR_OWNER_TAG_SHIFT RR_PROC_BITS
#define RR_OWNER_TAG_BITS (64 - RR_OWNER_TAG_SHIFT)
#define RR_OWNER_TAG_MASK ((UINT32_C(1) << RR_OWNER_TAG_BITS) - 1)

static inline uint64_t rr_owner_word(uint32_t gen, uint64_t ident)
{
    return (uint64_t)(gen & RR_OWNER_TAG_MASK) << RR_OWNER_TAG_SHIFT | rr_proc_bits(ident);
}
/* The word was taken for a generation before `gen` (by the sign of the
 * difference): a freed generation's leftover. */
static inline bool rr_owner_older(uint64_t o, uint32_t gen)
{
    uint32_t d = (gen - (uint32_t)(o >> RR_OWNER_TAG_SHIFT)) & RR_OWNER_TAG_MASK;
    return d != 0 && d <= (RR_OWNER_TAG_MASK >> 1);
}

/* ---- a slot's ctl word (rr_slots.c) ----
 * generation << 32 | (generation << RR_CTL_STATE_BITS | state) in 32 bits:
 * the low half is the futex word, and every transition changes it. */
#define RR_CTL_GEN_SHIFT 32
#define RR_CTL_STATE_BITS 4
enum {
    RR_SLOT_FREE = 0,
    RR_SLOT_ACQUIRED = 1,
    RR_SLOT_WRITING = 2,
    RR_SLOT_READY = 3,
    RR_SLOT_READING = 4,
    RR_SLOT_CANCELLED = 5,
    RR_SLOT_PINNED = 6, /* READING for one View (SPEC §9): nobody else looks at it */
};

static inline uint64_t rr_ctl(uint32_t gen, uint32_t state)
{
    return (uint64_t)gen << RR_CTL_GEN_SHIFT | ((uint32_t)(gen << RR_CTL_STATE_BITS) | state);
}
static inline uint32_t rr_ctl_gen(uint64_t v) { return (uint32_t)(v >> RR_CTL_GEN_SHIFT); }
static inline uint32_t rr_ctl_state(uint64_t v)
{
    return (uint32_t)v & ((UINT32_C(1) << RR_CTL_STATE_BITS) - 1);
}

/* ---- an Int cell's turn (rr_intq.c) ----
 * lap (32 bits) << 32 | state (2 bits) << 30 | who (30 bits), where who is
 * start time (low RR_WHO_START_BITS bits) << RR_WORKER_PID_BITS | pid: the
 * process inside a claim or a take, 0 for nobody. */
#define RR_TURN_LAP_SHIFT 32
#define RR_TURN_WHO_BITS 30
#define RR_TURN_WHO_MASK ((UINT32_C(1) << RR_TURN_WHO_BITS) - 1)
#define RR_WHO_START_BITS (RR_TURN_WHO_BITS - RR_WORKER_PID_BITS)
enum { RR_TURN_FREE = 0, RR_TURN_CLAIMED = 1, RR_TURN_FULL = 2, RR_TURN_TAKEN = 3 };

static inline uint64_t rr_turn(uint32_t lap, uint32_t state, uint32_t who)
{
    return (uint64_t)lap << RR_TURN_LAP_SHIFT | (uint64_t)state << RR_TURN_WHO_BITS | who;
}
static inline uint32_t rr_turn_lap(uint64_t t) { return (uint32_t)(t >> RR_TURN_LAP_SHIFT); }
static inline uint32_t rr_turn_state(uint64_t t)
{
    return (uint32_t)(t >> RR_TURN_WHO_BITS) & 3u;
}
static inline uint32_t rr_turn_who(uint64_t t) { return (uint32_t)t & RR_TURN_WHO_MASK; }
static inline uint32_t rr_who(uint64_t ident)
{
    return (rr_ident_start(ident) << RR_WORKER_PID_BITS | (rr_ident_pid(ident) & RR_PROC_PID_MASK))
        & RR_TURN_WHO_MASK;
}
static inline uint32_t rr_who_pid(uint32_t who) { return who & RR_PROC_PID_MASK; }
static inline uint32_t rr_who_start(uint32_t who) { return who >> RR_WORKER_PID_BITS; }

/* ---- response ids: generation << 32 | slot index (decoded in reqrep.h) ---- */
static inline uint64_t rr_id(uint32_t gen, uint32_t idx) { return (uint64_t)gen << 32 | idx; }

/* ---- the header ---- */

/* Fixed geometry: written once before the magic is published, then only read. */
typedef struct rr_hdr_geom {
    _Atomic uint64_t magic;   /* published last (release) at creation */
    uint32_t version;
    uint32_t variant;
    uint64_t total_size;
    uint32_t req_cap;
    uint32_t resp_slots;
    uint32_t resp_size;
    uint32_t slot_stride;
    uint64_t arena_cap;
    uint64_t off_cells;
    uint64_t off_slots;
    uint64_t off_arena;
    uint64_t off_bells;
    char codec[RR_CODEC_MAX]; /* rr_geometry.codec, NUL-terminated (validated) */
} rr_hdr_geom;

/* A futex word with a count of sleepers, so wakers skip the syscall when 0. */
typedef struct rr_waitq {
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
} rr_waitq;

/* An arena pin (SPEC §9): a Str request a receiver took without copying it
 * out, whose arena bytes (and all after them) stay until it unpins them.
 * Taken under the queue lock (beg, then owner); given back by its owner with one CAS of
 * owner to 0, without the lock, or, once its owner is dead, by a sender
 * under the lock (rr_strq.c). */
#define RR_ARENA_PINS 16u
typedef struct rr_pin {
    _Atomic uint64_t owner; /* identity word of the receiver that holds it; 0 = free */
    uint64_t beg;           /* where the entry's charge in the arena begins (virtual) */
} rr_pin;

typedef struct rr_header {
    RR_ALIGNED rr_hdr_geom geom;
    /* consumer side: written by receivers */
    RR_ALIGNED _Atomic uint64_t head;  /* Str: under the lock; Int: Vyukov dequeue position */
    /* producer side: written by senders. The Str lock shares their line: a
     * sender takes the lock and moves tail in one line, and receivers watch
     * the cells instead of this line (rr_strq.c). */
    RR_ALIGNED _Atomic uint64_t tail;  /* Str: under the lock; Int: Vyukov enqueue position */
    /* the Str queue lock (rr_lock.c): the holder's identity | RR_LOCK_WAITERS */
    _Atomic uint64_t lock;
    /* Str: the senders' last look at head and at where its entry begins, so
     * that a send need not read the receivers' line while it sees room.
     * Under the lock; both only lag the truth, which errs towards full. */
    uint64_t seen_head, seen_first;
    /* Str: arena pins in use, counted up before one is taken (under the
     * lock) and down after one is given back: never below the truth, so a
     * sender that reads 0 (under the lock) knows the arena holds no pinned
     * bytes. A process that dies in between leaves it above: harmless. */
    _Atomic uint32_t pins;
    /* The sleep queues on lines of their own: written only when somebody
     * sleeps, so the other side's look at the waiter count stays a cache hit
     * instead of pulling the head or tail line across cores. */
    RR_ALIGNED rr_waitq not_empty;     /* receivers sleep here */
    RR_ALIGNED rr_waitq not_full;      /* senders sleep here */
    /* slot pool: clients waiting for a free slot */
    RR_ALIGNED rr_waitq slot_free;
    /* rare-path counters (relaxed: statistics only) */
    RR_ALIGNED _Atomic uint64_t send_full;
    _Atomic uint64_t recv_empty;
    _Atomic uint64_t recoveries;
    _Atomic int64_t last_sweep; /* monotonic ns of the last sweep for dead clients' slots */
    /* Str: the arena pins, written by receivers (rarely: large requests
     * taken without a copy) and read by senders only when pins is not 0 */
    RR_ALIGNED rr_pin pin[RR_ARENA_PINS];
} rr_header;

_Static_assert(sizeof(rr_header) <= RR_HEADER_SIZE, "header too large");

/* The Str queue lock's futex word: the low half of the lock word. */
static inline _Atomic uint32_t *rr_lock_futex(rr_header *h)
{
    return (_Atomic uint32_t *)&h->lock;
}

/* ---- request cells ---- */

/* Str request cell, one cache line. `mark` is 1 + the position of the entry
 * last written here: a hint receivers watch (rr_strq.c). An entry of up to
 * RR_STR_INLINE bytes is kept in `small`; a larger one lies in the arena from
 * `beg`, the virtual offset where its charge begins (its data starts there
 * or, if it would run past the end, at the next wrap). */
typedef struct rr_str_cell {
    RR_ALIGNED _Atomic uint64_t mark;
    uint64_t beg;
    uint32_t len;
    uint32_t flags;
    uint64_t id;
    uint8_t small[RR_STR_INLINE];
} rr_str_cell;

/* Int request cell, one cache line; `turn` as encoded above. */
typedef struct rr_int_cell {
    RR_ALIGNED _Atomic uint64_t turn;
    int64_t value;
    uint64_t id;
} rr_int_cell;

/* A cell per line: no cell straddles two, and neighbours written by different
 * sides (a sender at tail, a receiver at head) do not share one. */
_Static_assert(sizeof(rr_str_cell) == RR_LINE && sizeof(rr_int_cell) == RR_LINE, "cell sizes");

/* ---- response slots ---- */

/* Response slot header, two cache lines; Str response bytes follow it. The
 * first line is what a waiting client spins on and what a reply fills in; the
 * second holds what the worker writes on the way (its taker record, the reply
 * count), so those writes do not pull the line away from the spinning client. */
typedef struct rr_slot {
    RR_ALIGNED _Atomic uint64_t ctl; /* the ctl word above */
    _Atomic uint64_t owner;   /* the owner word above; 0 = none */
    _Atomic uint32_t waiters; /* clients sleeping on ctl */
    uint32_t len;             /* response length (Str) */
    uint32_t flags;
    uint32_t bell;            /* 1 + the bell to ring on reply, 0 for none */
    union {
        int64_t value;        /* Int response */
        uint8_t small[RR_SLOT_INLINE]; /* a Str response that fits: one line to move;
                                        * an Int error's name (flags RR_FLAG_ERROR) */
    };
    RR_ALIGNED _Atomic uint64_t worker; /* the worker record above */
    _Atomic uint64_t replies; /* per-slot reply count, summed by stats */
} rr_slot;

_Static_assert(sizeof(rr_slot) <= RR_SLOT_HEADER, "slot header fits its two lines");
_Static_assert(offsetof(rr_slot, small) + RR_SLOT_INLINE <= RR_LINE, "small replies on line 1");
_Static_assert(RR_SLOT_ERROR_MAX <= RR_SLOT_INLINE, "an Int error's name fits in the slot");

/* Where a Str response of `len` bytes lies in its slot. */
static inline uint8_t *rr_slot_data_for(rr_slot *s, uint64_t len)
{
    return len <= RR_SLOT_INLINE ? s->small : (uint8_t *)s + RR_SLOT_HEADER;
}

/* A slot's futex word: the low half of ctl. */
static inline _Atomic uint32_t *rr_ctl_futex(rr_slot *s) { return (_Atomic uint32_t *)&s->ctl; }

/* ---- bells ---- */

/* A bell: an event count that a client waiting in an event loop sleeps on
 * (in a helper thread) for replies to any of its requests. */
typedef struct rr_bell {
    RR_ALIGNED _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    _Atomic uint64_t owner;   /* identity word of the claiming process, 0 = free */
} rr_bell;

#endif
