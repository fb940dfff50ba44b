/* libFuzzer target (SPEC §10): opens a mutated channel image and runs every
 * operation of reqrep.h on it, never blocking, now and then rewriting the
 * live file under the open handles (SPEC §5: "a file rewritten by another
 * process while it is being used").
 *
 * An input is a program and an image:
 *
 *   byte 0        number of operations (mod FZ_MAX_OPS + 1)
 *   byte 1        flags: bits 0-1 how to open (FZ_OPEN_*), bits 2-3 the variant
 *                 asked for (0 any, 1 Str, 2 Int, 3 the header's), bit 4 fit
 *                 the file to the size its header names (zero-padded), bit 5
 *                 leave a lock held by a dead process for the core to take
 *                 over (slow: a poll period), bits 6-7 the spin budget
 *   16 bytes/op   code (mod OP_COUNT), a (bits 0-1 the handle, 2-4 the deadline:
 *                 pick_deadline, 5-7 where an id comes from: pick_id), and
 *                 arguments b (16 bits), x (32 bits), y (64 bits): see run_op
 *   the rest      the file's bytes (with "fit", trailing zeros may be left out)
 *
 * Nothing blocks: every wait has a deadline of at most a few milliseconds, and
 * the calls that wait for the Str lock without one (a non-blocking send or
 * receive waits "as long as a holder takes", clear and settle take it
 * outright) first get a lock word that names no live process: a live holder
 * legitimately blocks them forever (see lock_safe).
 *
 * Oracles besides the sanitizers: every pointer the core hands out lies in
 * the mapping, statistics add up, a refused file is left as it was, a send
 * or reply that succeeded is visible at once, no fd or mapping outlives an
 * input (an fd leak or a leaked mapping aborts).
 *
 * On a channel the input created (a server on an empty file) that nothing
 * rewrote since, the core's promises hold in full: pinned bytes (a reply's,
 * an arena entry's; SPEC §9) must not change while pinned, and a pinned reply
 * reads as collected to every other look.
 *
 * A reply written in place keeps its contract: each handle has at most one
 * open (rr_str_reply_begin that succeeded), and only that handle commits or
 * aborts it, once (an -EMSGSIZE commit leaves it open); closing a handle
 * aborts its open reply first.
 *
 * Built by fuzz.sh with clang -fsanitize=fuzzer,address,undefined. Built with
 * -DFZ_STANDALONE (any compiler) it is a replayer, `fuzz_chan FILE...`, and
 * both builds write the seed corpus: `fuzz_chan --make-corpus=DIR`. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "reqrep.h"
#include "format_info.h"
#include "rr_chan.h"
#include "rr_layout.h"
#include "rr_lock.h"
#include "rr_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_MAX_OPS 64
#define FZ_OP_SIZE 16
#define FZ_PREFIX 2
#define FZ_MAX_FIT (4u << 20) /* "fit" grows a file to at most this */
#define FZ_HANDLES 4
#define FZ_IDS 32
/* An identity no process has: a pid under the kernel's limit, a start time. */
#define FZ_DEAD_IDENT ((UINT64_C(12345) << 32) | 4194301u)

enum { FZ_OPEN_MEMFD = 0, FZ_OPEN_SERVER = 1, FZ_OPEN_CLIENT = 2, FZ_OPEN_FILE_FD = 3 };
#define FZ_FIT 0x10u
#define FZ_KEEP_DEAD_LOCK 0x20u

#define FZ_CHECK(cond, ...)                                                                \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_chan: %s:%d: oracle failed: %s: ", __FILE__, __LINE__,    \
                    #cond);                                                                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* ---- process-wide state: one memfd and one file, reused by every input ---- */

static struct {
    int memfd;
    char path[512];
    int base_fd; /* the lowest free fd between inputs; -1 until the first */
    uint64_t inputs;
    bool trace;  /* FZ_TRACE set: print each operation (to read a reproducer) */
} G = {-1, "", -1, 0, false};

static void remove_file(void)
{
    if (G.path[0])
        unlink(G.path);
}

static void fz_init(void)
{
    if (G.memfd >= 0)
        return;
    G.memfd = memfd_create("rr-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (G.memfd < 0) {
        perror("memfd_create");
        abort();
    }
    const char *dir = getenv("TMPDIR");
    snprintf(G.path, sizeof G.path, "%s/rr-fuzz-%d.chan", dir && *dir ? dir : "/tmp",
             (int)getpid());
    atexit(remove_file);
    G.trace = getenv("FZ_TRACE") != NULL;
}

/* ---- the state of one input ---- */

typedef struct fz_op {
    uint8_t code, a;
    uint16_t b;
    uint32_t x;
    uint64_t y;
} fz_op;

/* A handle's reply in place, between its begin and its commit or abort. */
typedef struct fz_inplace {
    bool open;
    uint64_t id, token;
    uint8_t *data;
    size_t cap;
} fz_inplace;

/* A pin this input holds (SPEC §9): a reply's (by id) or an arena entry's
 * (by number), taken through handle k, with a sum of its bytes then. */
typedef struct fz_pin {
    bool live, resp;
    int k;
    uint64_t id;
    uint32_t num;
    const uint8_t *data; /* NULL once handle k's mapping may be gone */
    uint32_t len;
    uint64_t sum;
} fz_pin;
#define FZ_PINS 8

typedef struct fz {
    int fd;             /* our own fd on the file: rewrites go through it */
    /* a channel this input created and nobody rewrote: the core's promises
     * hold in full, so pinned bytes must stay as they were */
    bool trusted;
    fz_pin pins[FZ_PINS];
    uint32_t variant;   /* asked for at open (0: any) */
    uint32_t flags;
    rr_chan *h[FZ_HANDLES];
    fz_inplace ip[FZ_HANDLES]; /* each handle's open reply in place */
    int nh;
    int holder;         /* handle inside recv_begin..end, or -1 */
    bool hold_test;     /* the holder took the lock with rr_test_hold_lock */
    uint64_t ids[FZ_IDS];
    uint32_t nids, next_id;
    uint64_t size;      /* the file's (every handle maps all of it) */
} fz;

static volatile uint64_t fz_sink;

static void touch(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    fz_sink += s;
}

/* p .. p + len lies in c's mapping (a reopened handle has a mapping of its own). */
static void in_map(rr_chan *c, const void *p, uint64_t len, const char *what)
{
    const uint8_t *q = p, *base = c->map->base;
    uint64_t size = c->map->size;
    FZ_CHECK(q >= base && len <= size && (uint64_t)(q - base) <= size - len,
             "%s: %p + %llu outside the mapping %p + %llu", what, p, (unsigned long long)len,
             (void *)base, (unsigned long long)size);
}

static void add_id(fz *f, uint64_t id)
{
    f->ids[f->next_id] = id;
    f->next_id = (f->next_id + 1) % FZ_IDS;
    if (f->nids < FZ_IDS)
        f->nids++;
}

/* a bits 2-4: mostly RR_NOWAIT, else RR_TRY, now, or now + 20 us, 200 us, 2 ms */
static int64_t pick_deadline(const fz_op *op)
{
    switch ((op->a >> 2) & 7) {
    case 3:
        return RR_TRY;
    case 4:
        return rr_now_ns();
    case 5:
        return rr_now_ns() + 20000;
    case 6:
        return rr_now_ns() + 200000;
    case 7:
        return rr_now_ns() + 2000000;
    default:
        return RR_NOWAIT;
    }
}

/* The current id of slot idx (its generation from ctl), or a neighbour's. */
static uint64_t slot_id(rr_chan *c, uint32_t idx, int dgen)
{
    if (idx >= c->geom.resp_slots)
        return (uint64_t)1 << 32 | idx; /* out of range: must be refused */
    uint64_t ctl = atomic_load_explicit(&rr_slot_at(&c->slots, idx)->ctl, memory_order_relaxed);
    return (uint64_t)((uint32_t)(ctl >> 32) + (uint32_t)dgen) << 32 | idx;
}

/* a bits 5-7: an id seen in this input (sent, received; x picks it), that id
 * of another generation, the last one seen, the current id of slot x, or y. */
static uint64_t pick_id(fz *f, rr_chan *c, const fz_op *op)
{
    uint32_t kind = op->a >> 5;
    if (f->nids == 0 && kind != 4)
        kind = 3;
    switch (kind) {
    case 3: {
        static const int dgen[4] = {0, 0, 1, -1}; /* mostly its current generation */
        return slot_id(c, op->x % (c->geom.resp_slots + 1), dgen[op->b & 3]);
    }
    case 4:
        return op->y;
    case 5: {
        uint64_t id = f->ids[op->x % f->nids];
        return id + ((op->b & 1) ? (uint64_t)1 << 32 : (uint64_t)-1 << 32); /* a stale generation */
    }
    case 6:
    case 7:
        return f->ids[(f->next_id + FZ_IDS - 1) % FZ_IDS]; /* the last one added */
    default:
        return f->ids[op->x % f->nids];
    }
}

/* Makes the Str lock safe for a call that waits for it without a deadline:
 * ends our own hold, and rewrites a lock word naming a live process (that
 * would block forever, as it should) or, unless the input asks to see the
 * take-over, a dead one (taken over after a poll period: slow). */
static void lock_safe(fz *f)
{
    if (f->holder >= 0) {
        rr_chan *c = f->h[f->holder];
        if (f->hold_test)
            rr_unlock(c->hdr);
        else
            rr_str_recv_end(c, 0);
        f->holder = -1;
        f->hold_test = false;
    }
    if (f->nh == 0)
        return;
    rr_header *hdr = f->h[0]->hdr;
    uint64_t v = atomic_load_explicit(&hdr->lock, memory_order_relaxed);
    if (v == 0)
        return;
    if (!(f->flags & FZ_KEEP_DEAD_LOCK) || rr_ident_alive(v & ~RR_LOCK_WAITERS)) {
        atomic_store_explicit(&hdr->lock, 0, memory_order_relaxed);
        f->trusted = false; /* a lock broken under whoever held it */
    }
}

/* A deadline for a Str call that takes the lock: RR_NOWAIT (and, for clear
 * and settle, RR_TRY) wait for it without a bound. */
static int64_t str_deadline(fz *f, rr_chan *c, const fz_op *op, bool try_blocks)
{
    int64_t d = pick_deadline(op);
    if (c->geom.variant == RR_VARIANT_STR && (d == RR_NOWAIT || (try_blocks && d == RR_TRY)))
        lock_safe(f);
    return d;
}

static void check_stats(fz *f, rr_chan *c)
{
    rr_stats s;
    rr_get_stats(c, &s);
    const rr_geometry *g = rr_geometry_of(c);
    FZ_CHECK(s.size <= s.capacity && s.capacity == g->req_cap, "size %llu capacity %llu",
             (unsigned long long)s.size, (unsigned long long)s.capacity);
    FZ_CHECK(s.slots_free + s.slots_acquired + s.slots_ready == g->resp_slots,
             "slots %u + %u + %u of %u", s.slots_free, s.slots_acquired, s.slots_ready,
             g->resp_slots);
    FZ_CHECK(s.arena_used <= s.arena_cap, "arena %llu of %llu", (unsigned long long)s.arena_used,
             (unsigned long long)s.arena_cap);
    FZ_CHECK(rr_size(c) <= g->req_cap, "size");
    rr_regions r;
    rr_regions_of(c, &r);
    FZ_CHECK(r.total_size == rr_map_size(c) && r.total_size == f->size, "regions");
    FZ_CHECK(r.off_arena + g->arena <= r.total_size, "arena outside");
    rr_format_info fi;
    rr_format(&fi);
    FZ_CHECK(fi.magic == RR_MAGIC && rr_self_pid() == getpid(), "format / pid");
    (void)rr_fd(c);
    (void)rr_memfd(c);
    (void)rr_get_spin(c);
}

/* ---- rewriting the live file ---- */

typedef struct fz_field {
    uint32_t off;
    uint8_t w;
    uint8_t kind; /* what "self" means for it: see self_value */
} fz_field;

enum { K_PLAIN, K_IDENT, K_WORKER, K_TURN };

#define HF(m, w, k) {offsetof(rr_header, m), w, k}
static const fz_field hdr_fields[] = {
    HF(head, 8, K_PLAIN), HF(tail, 8, K_PLAIN), HF(lock, 8, K_IDENT), HF(lock, 4, K_PLAIN),
    HF(seen_head, 8, K_PLAIN), HF(seen_first, 8, K_PLAIN), HF(not_empty.seq, 4, K_PLAIN),
    HF(not_empty.waiters, 4, K_PLAIN), HF(not_full.seq, 4, K_PLAIN),
    HF(not_full.waiters, 4, K_PLAIN), HF(slot_free.seq, 4, K_PLAIN),
    HF(slot_free.waiters, 4, K_PLAIN), HF(send_full, 8, K_PLAIN), HF(recv_empty, 8, K_PLAIN),
    HF(recoveries, 8, K_PLAIN), HF(last_sweep, 8, K_PLAIN),
    HF(geom.magic, 8, K_PLAIN), HF(geom.version, 4, K_PLAIN), HF(geom.variant, 4, K_PLAIN),
    HF(geom.total_size, 8, K_PLAIN), HF(geom.req_cap, 4, K_PLAIN),
    HF(geom.resp_slots, 4, K_PLAIN), HF(geom.resp_size, 4, K_PLAIN),
    HF(geom.slot_stride, 4, K_PLAIN), HF(geom.arena_cap, 8, K_PLAIN),
    HF(geom.off_cells, 8, K_PLAIN), HF(geom.off_slots, 8, K_PLAIN),
    HF(geom.off_arena, 8, K_PLAIN), HF(geom.off_bells, 8, K_PLAIN), HF(geom.codec, 8, K_PLAIN),
};
#undef HF
#define F(t, m, w, k) {offsetof(t, m), w, k}
static const fz_field str_cell_fields[] = {
    F(rr_str_cell, mark, 8, K_PLAIN), F(rr_str_cell, beg, 8, K_PLAIN),
    F(rr_str_cell, len, 4, K_PLAIN), F(rr_str_cell, flags, 4, K_PLAIN),
    F(rr_str_cell, id, 8, K_PLAIN), F(rr_str_cell, small, 8, K_PLAIN),
};
static const fz_field int_cell_fields[] = {
    F(rr_int_cell, turn, 8, K_TURN), F(rr_int_cell, turn, 4, K_PLAIN),
    {offsetof(rr_int_cell, turn) + 4, 4, K_PLAIN}, F(rr_int_cell, value, 8, K_PLAIN),
    F(rr_int_cell, id, 8, K_PLAIN),
};
static const fz_field slot_fields[] = {
    F(rr_slot, ctl, 8, K_PLAIN), F(rr_slot, ctl, 4, K_PLAIN), {offsetof(rr_slot, ctl) + 4, 4, K_PLAIN},
    F(rr_slot, owner, 8, K_IDENT), F(rr_slot, waiters, 4, K_PLAIN), F(rr_slot, len, 4, K_PLAIN),
    F(rr_slot, flags, 4, K_PLAIN), F(rr_slot, bell, 4, K_PLAIN), F(rr_slot, value, 8, K_PLAIN),
    F(rr_slot, worker, 8, K_WORKER), F(rr_slot, replies, 8, K_PLAIN),
};
static const fz_field bell_fields[] = {
    F(rr_bell, seq, 4, K_PLAIN), F(rr_bell, waiters, 4, K_PLAIN), F(rr_bell, owner, 8, K_IDENT),
};
#undef F
#define NF(a) (sizeof a / sizeof a[0])

/* This process as the field would record it (the formats are in rr_format_info). */
static uint64_t self_value(uint8_t kind, uint64_t cur)
{
    uint64_t me = rr_self_ident();
    uint64_t pid = me & 0xffffffffu, start = me >> 32;
    switch (kind) {
    case K_WORKER: /* keep the generation, name us */
        return (cur & ~((UINT64_C(1) << (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)) - 1))
            | (start & ((1u << RR_WORKER_START_BITS) - 1)) << RR_WORKER_PID_BITS
            | (pid & ((1u << RR_WORKER_PID_BITS) - 1));
    case K_TURN: { /* keep lap and state, name us */
        uint64_t who = (start << RR_WORKER_PID_BITS | (pid & ((1u << RR_WORKER_PID_BITS) - 1)))
            & ((1u << RR_TURN_WHO_BITS) - 1);
        return (cur & ~(uint64_t)((1u << RR_TURN_WHO_BITS) - 1)) | who;
    }
    default:
        return me;
    }
}

/* Writes through our own fd, as another process would: the mapping sees it. */
static void rewrite(fz *f, uint64_t off, const void *src, size_t w)
{
    if (f->fd < 0 || w > f->size || off > f->size - w)
        return;
    f->trusted = false;
    ssize_t n = pwrite(f->fd, src, w, (off_t)off);
    (void)n;
}

/* Rewrites one word: x byte 0 picks the region (header, cells, slots, bells,
 * and 4: cells, or with b & 8 a word of the arena), byte 1 the field, bytes
 * 2-3 which cell, slot or bell; b & 7 what to write: y, this process as the
 * field would name it, this process as the lock's holder with waiters, a dead
 * process, a time near now, the old value plus a little, another state of the
 * same generation or lap, or an edge value (y picks which). */
static void poke_field(fz *f, rr_chan *c, const fz_op *op)
{
    uint32_t region = (op->x & 0xff) % 5, sel = (op->x >> 8) & 0xff, elem = op->x >> 16;
    const fz_field *fld;
    uint64_t base;
    const rr_geometry *g = &c->geom;
    uint8_t *base0 = c->map->base;
    bool is_str = g->variant == RR_VARIANT_STR;
    if (region == 4 && is_str && (op->b & 8)) { /* a word of the arena */
        uint64_t off = (uint64_t)(c->q.strq.arena - base0) + ((uint64_t)op->x * 8) % g->arena;
        rewrite(f, off, &op->y, 8);
        return;
    }
    switch (region) {
    case 0:
        fld = &hdr_fields[sel % NF(hdr_fields)];
        base = 0;
        break;
    case 1:
    case 4:
        fld = is_str ? &str_cell_fields[sel % NF(str_cell_fields)]
                     : &int_cell_fields[sel % NF(int_cell_fields)];
        base = (uint64_t)(c->q.ring.cells - base0) + (uint64_t)(elem % g->req_cap) * RR_LINE;
        break;
    case 2:
        fld = &slot_fields[sel % NF(slot_fields)];
        base = (uint64_t)(c->slots.base - base0)
            + (uint64_t)(elem % g->resp_slots) * c->slots.stride;
        break;
    default:
        fld = &bell_fields[sel % NF(bell_fields)];
        base = (uint64_t)((uint8_t *)c->bells.base - base0)
            + (uint64_t)(elem % RR_BELLS) * sizeof(rr_bell);
        break;
    }
    uint64_t off = base + fld->off, cur = 0, v;
    if (off + fld->w > f->size)
        return;
    memcpy(&cur, base0 + off, fld->w);
    switch (op->b & 7) {
    case 1:
        v = self_value(fld->kind, cur);
        break;
    case 2:
        v = rr_self_ident() | RR_LOCK_WAITERS;
        break;
    case 3:
        v = FZ_DEAD_IDENT;
        break;
    case 4:
        v = (uint64_t)(rr_now_ns() + (int64_t)(int16_t)op->y * 1000000);
        break;
    case 5:
        v = cur + (uint64_t)(int64_t)(int8_t)op->y;
        break;
    case 6: /* another state, same generation / lap (the low bits of ctl; turn's state bits) */
        v = fld->kind == K_TURN ? (cur & ~(UINT64_C(3) << RR_TURN_WHO_BITS))
                | (op->y & 3) << RR_TURN_WHO_BITS
                              : (cur & ~UINT64_C(0xf)) | (op->y & 0xf);
        break;
    case 7: { /* an edge: where arithmetic wraps or changes sign */
        uint64_t now = (uint64_t)rr_now_ns();
        const uint64_t edges[] = {
            0, 1, UINT64_MAX, (uint64_t)INT64_MAX, (uint64_t)INT64_MIN, (uint64_t)INT64_MIN + 1,
            UINT32_MAX, (uint64_t)1 << 32, (uint64_t)1 << 31, UINT64_MAX - 63, UINT32_MAX - 1,
            (uint64_t)INT64_MIN + now, now - (uint64_t)INT64_MIN,
        };
        v = edges[op->y % NF(edges)];
        break;
    }
    default:
        v = op->y;
        break;
    }
    rewrite(f, off, &v, fld->w);
}

/* ---- operations ---- */

enum {
    OP_SEND, OP_RECV, OP_PEEK, OP_END, OP_BATCH, OP_REPLY, OP_WAIT, OP_VIEW, OP_RELEASE,
    OP_UNVIEW, OP_DISCARD, OP_INT_PEEK, OP_GET, OP_CANCEL, OP_CHECK, OP_ABANDON, OP_WORKER,
    OP_LIVE, OP_RECLAIM, OP_SWEEP, OP_CLEAR, OP_STATS, OP_SYNC, OP_BELL_CLAIM, OP_BELL_RELEASE,
    OP_BELL_WAIT, OP_BELL_POKE, OP_WAIT_REQ, OP_WAKE_RECV, OP_SETTLE, OP_HOLD, OP_UNHOLD,
    OP_SHARE, OP_REOPEN, OP_CLOSE, OP_POKE, OP_POKE_FIELD, OP_SPIN, OP_MARK_TAKEN, OP_CLAIM,
    OP_AGE, OP_REPLY_BEGIN, OP_REPLY_COMMIT, OP_REPLY_ABORT, OP_PIN, OP_UNPIN, OP_RECV_PIN,
    OP_HINT, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "send", "recv", "peek", "end", "batch", "reply", "wait", "view", "release",
    "unview", "discard", "int_peek", "get", "cancel", "check", "abandon", "worker",
    "live", "reclaim", "sweep", "clear", "stats", "sync", "bell_claim", "bell_release",
    "bell_wait", "bell_poke", "wait_req", "wake_recv", "settle", "hold", "unhold",
    "share", "reopen", "close", "poke", "poke_field", "spin", "mark_taken", "claim", "age",
    "reply_begin", "reply_commit", "reply_abort", "pin", "unpin", "recv_pin",
    "hint",
};

static uint8_t payload[70000];

static void send_one(fz *f, rr_chan *c, const fz_op *op)
{
    uint64_t id = 0;
    int rc;
    if (c->geom.variant == RR_VARIANT_STR) {
        int64_t d = str_deadline(f, c, op, false);
        size_t len = op->b % 4 == 0 ? op->x % sizeof payload : op->b % 300;
        if (op->b & 8) { /* gathered from three pieces */
            rr_iovec iov[3] = {{payload, len / 3}, {payload + len / 3, len / 3},
                               {payload + 2 * (len / 3), len - 2 * (len / 3)}};
            rc = rr_str_sendv(c, iov, 3, (uint32_t)op->y & 3, d, &id);
        } else {
            rc = rr_str_send(c, payload, len, (uint32_t)op->y & 3, d, &id);
        }
        FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EMSGSIZE || rc == -EBUSY || rc == -EINTR,
                 "str_send %d", rc);
    } else {
        rc = rr_int_send(c, (int64_t)op->y, pick_deadline(op), &id);
        FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EINTR, "int_send %d", rc);
    }
    if (rc == 0) {
        /* (a forged worker record of the same generation may say its worker died) */
        rc = rr_resp_check(c, id);
        FZ_CHECK(rr_id_live(c, id) == 1 && (rc == 0 || rc == -EOWNERDEAD),
                 "a sent request is pending (check %d)", rc);
        add_id(f, id);
    }
}

static void peek_one(fz *f, rr_chan *c, uint32_t i)
{
    rr_entry e;
    int rc = rr_str_recv_peek(c, i, &e);
    FZ_CHECK(rc == 0 || rc == -RR_EFORMAT || rc == -EINVAL, "peek %d", rc);
    if (rc == 0) {
        FZ_CHECK(e.len <= c->geom.arena, "entry of %u bytes", e.len);
        in_map(c, e.data, e.len, "entry");
        touch(e.data, e.len);
        add_id(f, e.id);
    }
}

static void reply_one(rr_chan *c, uint64_t id, const fz_op *op)
{
    int rc;
    if (c->geom.variant == RR_VARIANT_STR) {
        size_t len = op->b % 2 ? op->x % (c->geom.resp_size + 2) : op->b % 48;
        if (len > sizeof payload)
            len = sizeof payload;
        if (op->b & 4) {
            rr_iovec iov[2] = {{payload, len / 2}, {payload + len / 2, len - len / 2}};
            rc = rr_str_replyv(c, id, iov, 2, (uint32_t)op->y & 3);
        } else {
            rc = rr_str_reply(c, id, payload, len, (uint32_t)op->y & 3);
        }
        FZ_CHECK(rc == 0 || rc == 1 || rc == -ESTALE || rc == -EMSGSIZE || rc == -EBUSY,
                 "str_reply %d", rc);
    } else if (op->b & 4) { /* an error's name, sometimes too long */
        rc = rr_int_reply_error(c, id, payload, op->x % (RR_SLOT_ERROR_MAX + 4));
        FZ_CHECK(rc == 0 || rc == 1 || rc == -ESTALE || rc == -EMSGSIZE || rc == -EBUSY,
                 "int_reply_error %d", rc);
    } else {
        rc = rr_int_reply(c, id, (int64_t)op->y);
        FZ_CHECK(rc == 0 || rc == 1 || rc == -ESTALE || rc == -EBUSY, "int_reply %d", rc);
    }
    /* -EBUSY: this process holds the id's claim (OP_CLAIM, an open reply in place) */
    if (rc >= 0)
        FZ_CHECK(rr_resp_check(c, id) == 1, "a reply is there at once");
}

/* A reply the core shows (viewed or pinned) is within its bound and the mapping. */
static void check_shown(rr_chan *c, const rr_resp *r, const char *what)
{
    uint32_t max = c->geom.variant == RR_VARIANT_STR ? c->geom.resp_size : RR_SLOT_ERROR_MAX;
    FZ_CHECK(r->len <= max, "%s of %u bytes", what, r->len);
    in_map(c, r->data, r->len, what);
}

static void view_one(rr_chan *c, uint64_t id)
{
    rr_resp r;
    int rc = rr_resp_view(c, id, &r);
    FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -ESTALE, "view %d", rc);
    if (rc == 0) {
        check_shown(c, &r, "reply");
        touch(r.data, r.len);
        fz_sink += (uint64_t)r.value;
    }
}

static void batch(fz *f, rr_chan *c, const fz_op *op)
{
    if (c->geom.variant == RR_VARIANT_INT) {
        for (int i = 0; i <= (op->b & 7); i++) {
            int64_t v;
            uint64_t id;
            int rc = rr_int_recv(c, RR_NOWAIT, &v, &id);
            FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EINPROGRESS, "int_recv %d", rc);
            if (rc)
                break;
            add_id(f, id);
            reply_one(c, id, op);
        }
        return;
    }
    if (f->holder >= 0)
        return;
    int n = rr_str_recv_begin(c, str_deadline(f, c, op, false));
    FZ_CHECK(n > 0 || n == -EAGAIN || n == -EBUSY || n == -EINTR, "recv_begin %d", n);
    if (n <= 0)
        return;
    FZ_CHECK((uint32_t)n <= c->geom.req_cap, "recv_begin %d of %u", n, c->geom.req_cap);
    uint64_t ids[64];
    uint32_t k = 0;
    for (int i = 0; i < n; i++) {
        rr_entry e;
        if (rr_str_recv_peek(c, (uint32_t)i, &e) == 0) {
            in_map(c, e.data, e.len, "entry");
            touch(e.data, e.len);
            if (k < 64)
                ids[k++] = e.id;
        }
    }
    rr_str_recv_end(c, (op->b & 8) ? (uint32_t)n / 2 : (uint32_t)n);
    for (uint32_t i = 0; i < k; i++) {
        add_id(f, ids[i]);
        reply_one(c, ids[i], op);
    }
}

/* Begins a reply in place on handle k (Str): fills part of its room. */
static void inplace_begin(fz *f, int k, rr_chan *c, const fz_op *op)
{
    fz_inplace *ip = &f->ip[k];
    if (ip->open || c->geom.variant != RR_VARIANT_STR)
        return;
    uint64_t id = pick_id(f, c, op);
    void *data = NULL;
    size_t cap = 0;
    uint64_t token = 0;
    int rc = rr_str_reply_begin(c, id, &data, &cap, &token);
    FZ_CHECK(rc == 0 || rc == -ESTALE || rc == -EBUSY, "reply_begin %d", rc);
    if (rc != 0)
        return;
    FZ_CHECK(cap == c->geom.resp_size, "reply_begin: room of %zu, resp_size %u", cap,
             c->geom.resp_size);
    in_map(c, data, cap, "reply room");
    rc = rr_resp_check(c, id);
    FZ_CHECK(rc == 0 && rr_id_live(c, id) == 1, "a reply begun is pending (check %d)", rc);
    size_t n = op->x % (cap + 1);
    memcpy(data, payload, n < sizeof payload ? n : sizeof payload);
    *ip = (fz_inplace){true, id, token, data, cap};
}

/* Commits handle k's reply in place: len up to a little beyond its room
 * (b & 16: just beyond it). */
static void inplace_commit(fz *f, int k, rr_chan *c, const fz_op *op)
{
    fz_inplace *ip = &f->ip[k];
    if (!ip->open)
        return;
    size_t len = op->b & 16 ? ip->cap + 1 : op->b % 2 ? op->x % (ip->cap + 2) : op->b % 48;
    if (op->b & 2) { /* more written just before the commit */
        size_t n = len < ip->cap ? len : ip->cap;
        memcpy(ip->data, payload, n < sizeof payload ? n : sizeof payload);
    }
    int rc = rr_str_reply_commit(c, ip->id, len, (uint32_t)op->y & 3);
    FZ_CHECK(rc == 0 || rc == 1 || rc == -ESTALE || (rc == -EMSGSIZE && len > ip->cap),
             "reply_commit %d (%zu of %zu)", rc, len, ip->cap);
    if (rc == -EMSGSIZE)
        return; /* the claim stays */
    ip->open = false;
    if (rc >= 0)
        FZ_CHECK(rr_resp_check(c, ip->id) == 1, "a reply is there at once");
}

static void inplace_abort(fz *f, int k, rr_chan *c)
{
    fz_inplace *ip = &f->ip[k];
    if (!ip->open)
        return;
    int rc = rr_str_reply_abort(c, ip->id, ip->token);
    FZ_CHECK(rc == 0 || rc == -ESTALE, "reply_abort %d", rc);
    ip->open = false;
}

/* ---- pins (SPEC §9) ---- */

static uint64_t sum_of(const uint8_t *p, uint32_t n)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211u;
    return h;
}

static fz_pin *pin_room(fz *f)
{
    for (int i = 0; i < FZ_PINS; i++)
        if (!f->pins[i].live)
            return &f->pins[i];
    return NULL;
}

static void pin_keep(fz *f, bool resp, int k, uint64_t id, uint32_t num, const void *data,
                     uint32_t len)
{
    fz_pin *p = pin_room(f);
    if (G.trace)
        fprintf(stderr, "fuzz_chan: pinned %s of %u bytes (id %#llx, pin %u)%s%s\n",
                resp ? "a reply" : "an entry", len, (unsigned long long)id, num,
                p ? "" : ", forgotten", f->trusted ? ", checked" : "");
    if (p)
        *p = (fz_pin){true, resp, k, id, num, data, len, sum_of(data, len)};
    /* (no room: forgotten, as a process may forget to unpin: its pins stay) */
}

/* Pins a reply (b & 1: then looks at it again through the other calls). */
static void pin_reply(fz *f, int k, rr_chan *c, const fz_op *op)
{
    uint64_t id = pick_id(f, c, op);
    rr_resp r;
    int rc = rr_resp_pin(c, id, &r);
    FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -ESTALE || rc == -EBUSY || rc == -EPERM,
             "resp_pin %d", rc);
    if (rc != 0)
        return;
    check_shown(c, &r, "pinned reply");
    if (op->b & 1) { /* collected, for every other look */
        rr_resp again;
        FZ_CHECK(rr_resp_view(c, id, &again) == -ESTALE, "a pinned reply is viewed");
        FZ_CHECK(rr_resp_pin(c, id, &again) == -ESTALE, "a pinned reply is pinned twice");
        FZ_CHECK(rr_resp_check(c, id) == -ESTALE, "a pinned reply reads as pending");
        FZ_CHECK(rr_cancel(c, id) == -ESTALE, "a pinned reply is cancelled");
        FZ_CHECK(rr_id_live(c, id) == 0, "a pinned reply reads as pending (live)");
    }
    pin_keep(f, true, k, id, 0, r.data, r.len);
}

/* Under handle k's recv_begin: pins the i-th entry in the arena. */
static void pin_entry(fz *f, int k, rr_chan *c, const fz_op *op)
{
    if (c->geom.variant != RR_VARIANT_STR || f->holder != k || f->hold_test)
        return;
    uint32_t i = op->b % (c->q.strq.locked_n + 2);
    rr_entry e;
    int peeked = rr_str_recv_peek(c, i, &e);
    uint32_t num;
    int rc = rr_str_recv_pin(c, i, &num);
    FZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOSPC || rc == -RR_EFORMAT, "recv_pin %d", rc);
    if (rc != 0)
        return;
    FZ_CHECK(num < RR_ARENA_PINS && peeked == 0, "pin %u of an entry peek refused (%d)", num,
             peeked);
    in_map(c, e.data, e.len, "pinned entry");
    pin_keep(f, false, k, e.id, num, e.data, e.len);
}

/* Gives a pin back: b picks which; a reply's is freed (b & 8) or left READY. */
static void unpin_one(fz *f, const fz_op *op)
{
    if (f->holder >= 0) /* an arena pin is given back with no lock held */
        return;
    fz_pin *p = &f->pins[op->b % FZ_PINS];
    if (!p->live)
        return;
    rr_chan *c = f->h[p->k < f->nh ? p->k : 0];
    int rc;
    if (p->resp) {
        bool free = op->b & 8;
        rc = rr_resp_unpin(c, p->id, free);
        FZ_CHECK(rc == 0 || (rc == -ESTALE && !f->trusted), "resp_unpin %d", rc);
        if (rc == 0 && !free) /* back to READY: collected by one more look */
            FZ_CHECK(rr_resp_check(c, p->id) == 1 || !f->trusted, "an unpinned reply is there");
        if (rc == 0 && free)
            FZ_CHECK(rr_id_live(c, p->id) == 0 || !f->trusted, "a freed pin's id is live");
    } else {
        rc = rr_str_unpin(c, p->num);
        FZ_CHECK(rc == 0 || (rc == -ESTALE && !f->trusted), "str_unpin %d", rc);
    }
    if (G.trace)
        fprintf(stderr, "fuzz_chan: unpinned %s: %d\n", p->resp ? "a reply" : "an entry", rc);
    p->live = false;
}

/* Pinned bytes never change while pinned (a channel nobody rewrote). */
static void check_pins(fz *f)
{
    if (!f->trusted)
        return;
    for (int i = 0; i < FZ_PINS; i++) {
        fz_pin *p = &f->pins[i];
        if (p->live && p->data)
            FZ_CHECK(sum_of(p->data, p->len) == p->sum, "%s pin %d of %u bytes was overwritten",
                     p->resp ? "a reply" : "an arena", i, p->len);
    }
}

static void close_handle(fz *f, int k)
{
    inplace_abort(f, k, f->h[k]); /* its room goes with its mapping */
    /* its pins stay (this process's), their bytes with its mapping; the
     * last handle takes its place */
    for (int i = 0; i < FZ_PINS; i++) {
        if (f->pins[i].k == k)
            f->pins[i].data = NULL;
        else if (f->pins[i].k == f->nh - 1)
            f->pins[i].k = k;
    }
    if (f->holder == k) {
        /* our hold dies with the handle, the lock word stays ours: lock_safe clears it */
        f->holder = -1;
        f->hold_test = false;
    }
    rr_close(f->h[k]);
    f->h[k] = f->h[--f->nh];
    f->ip[k] = f->ip[f->nh];
    f->ip[f->nh].open = false;
    if (f->holder == f->nh)
        f->holder = k;
}

static void run_op(fz *f, const fz_op *op)
{
    if (f->nh == 0)
        return;
    int k = (op->a & 3) % f->nh;
    rr_chan *c = f->h[k];
    bool str = c->geom.variant == RR_VARIANT_STR;
    uint64_t id;
    int rc;
    if (G.trace)
        fprintf(stderr, "fuzz_chan: %-12s handle %d/%d a=%#x b=%u x=%u y=%#llx\n",
                op_names[op->code % OP_COUNT], k, f->nh, op->a, op->b, op->x,
                (unsigned long long)op->y);
    switch (op->code % OP_COUNT) {
    case OP_SEND:
        send_one(f, c, op);
        break;
    case OP_RECV:
        if (str) {
            /* while we hold the lock: RR_TRY or a short deadline, never RR_NOWAIT */
            int64_t d = f->holder < 0 ? str_deadline(f, c, op, false)
                : (op->b & 1) ? RR_TRY : rr_now_ns() + 20000;
            rc = rr_str_recv_begin(c, d);
            FZ_CHECK(rc > 0 || rc == -EAGAIN || rc == -EBUSY || rc == -EINTR, "recv_begin %d", rc);
            if (rc > 0 && f->holder < 0)
                f->holder = k;
        } else {
            int64_t v;
            rc = rr_int_recv(c, pick_deadline(op), &v, &id);
            FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EINPROGRESS || rc == -EINTR,
                     "int_recv %d", rc);
            if (rc == 0)
                add_id(f, id);
        }
        break;
    case OP_PEEK:
        if (str)
            peek_one(f, c, f->holder == k ? op->b % (c->q.strq.locked_n + 2) : op->b);
        break;
    case OP_END:
        if (str && f->holder >= 0 && !f->hold_test) {
            rr_chan *hc = f->h[f->holder];
            rr_str_recv_end(hc, op->b % (hc->q.strq.locked_n + 3));
            f->holder = -1;
        }
        break;
    case OP_BATCH:
        batch(f, c, op);
        break;
    case OP_REPLY:
        reply_one(c, pick_id(f, c, op), op);
        break;
    case OP_WAIT: {
        int64_t d = pick_deadline(op);
        rc = rr_resp_wait(c, pick_id(f, c, op), d);
        FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -ESTALE || rc == -EOWNERDEAD || rc == -EINTR,
                 "resp_wait %d", rc);
        break;
    }
    case OP_VIEW:
        view_one(c, pick_id(f, c, op));
        break;
    case OP_RELEASE:
        rc = rr_resp_release(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == -ESTALE, "release %d", rc);
        break;
    case OP_UNVIEW:
        rc = rr_resp_unview(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == -ESTALE, "unview %d", rc);
        break;
    case OP_DISCARD:
        rc = rr_resp_discard(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == -ESTALE, "discard %d", rc);
        break;
    case OP_INT_PEEK:
        if (!str) {
            int64_t v;
            rc = rr_int_peek(c, pick_id(f, c, op), &v);
            FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -ESTALE || rc == -EREMOTEIO || rc == -EBUSY,
                     "int_peek %d", rc);
        }
        break;
    case OP_GET: /* what the binding's get does */
        id = pick_id(f, c, op);
        rc = rr_resp_wait(c, id, pick_deadline(op) == RR_NOWAIT ? RR_NOWAIT : rr_now_ns() + 100000);
        if (rc == 0) {
            view_one(c, id);
            rc = (op->b & 1) ? rr_resp_unview(c, id) : rr_resp_release(c, id);
            FZ_CHECK(rc == 0 || rc == -ESTALE, "release after view %d", rc);
        } else if (rc == -EOWNERDEAD) {
            rc = rr_resp_abandon_dead(c, id);
            FZ_CHECK(rc == 0 || rc == -ESTALE || rc == -EBUSY || rc == -EAGAIN, "abandon_dead %d", rc);
        }
        break;
    case OP_CANCEL:
        id = pick_id(f, c, op);
        rc = rr_cancel(c, id);
        FZ_CHECK(rc == 0 || rc == -EBUSY || rc == -ESTALE, "cancel %d", rc);
        if (rc == 0) {
            FZ_CHECK(rr_id_live(c, id) == 0, "a cancelled id is not live");
            FZ_CHECK(rr_cancel(c, id) == -ESTALE, "a second cancel is refused");
        }
        break;
    case OP_CHECK:
        rc = rr_resp_check(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == 1 || rc == -ESTALE || rc == -EOWNERDEAD, "resp_check %d", rc);
        break;
    case OP_ABANDON:
        rc = rr_resp_abandon_dead(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == -ESTALE || rc == -EBUSY || rc == -EAGAIN, "abandon_dead %d", rc);
        break;
    case OP_WORKER:
        rc = rr_resp_worker(c, pick_id(f, c, op));
        FZ_CHECK(rc >= 0, "resp_worker %d", rc);
        break;
    case OP_LIVE:
        rc = rr_id_live(c, pick_id(f, c, op));
        FZ_CHECK(rc == 0 || rc == 1, "id_live %d", rc);
        break;
    case OP_RECLAIM:
        rr_reclaim(c);
        break;
    case OP_SWEEP:
        rr_slots_sweep(&c->slots, (op->b & 1) ? 1000000000 : (int64_t)(op->x % 20000000));
        break;
    case OP_CLEAR:
        if (str)
            lock_safe(f);
        rc = rr_clear(c);
        FZ_CHECK(rc == 0 || rc == -EINTR, "clear %d", rc);
        if (rc == 0 && str)
            FZ_CHECK(rr_size(c) == 0, "a cleared Str queue is empty");
        break;
    case OP_STATS:
        check_stats(f, c);
        break;
    case OP_SYNC:
        rc = rr_sync(c);
        FZ_CHECK(rc == 0, "sync %d", rc);
        break;
    case OP_BELL_CLAIM:
        rc = rr_bell_claim(c);
        FZ_CHECK(rc == 0 || rc == -EBUSY, "bell_claim %d", rc);
        break;
    case OP_BELL_RELEASE:
        rr_bell_release(c);
        break;
    case OP_BELL_WAIT: {
        uint32_t seen = rr_bell_seq(c) + (op->b & 1);
        rc = rr_bell_wait(c, seen, pick_deadline(op));
        FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EINVAL || rc == -EINTR, "bell_wait %d", rc);
        break;
    }
    case OP_BELL_POKE:
        rr_bell_poke(c);
        break;
    case OP_WAIT_REQ:
        rc = rr_wait_request(c, (op->b & 1) ? rr_now_ns() : pick_deadline(op));
        FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -ECANCELED || rc == -EINTR, "wait_request %d",
                 rc);
        break;
    case OP_WAKE_RECV:
        rr_wake_receivers(c);
        break;
    case OP_SETTLE:
        if (str) {
            int64_t d = str_deadline(f, c, op, true);
            if (f->holder >= 0 && d > RR_NOWAIT)
                d = rr_now_ns() + 50000; /* our own hold: until a short deadline */
            rc = rr_lock_settle(c, d);
            FZ_CHECK(rc == 0 || rc == -EAGAIN || rc == -EINTR, "settle %d", rc);
        }
        break;
    case OP_HOLD:
        if (str) {
            lock_safe(f);
            rc = rr_test_hold_lock(c);
            FZ_CHECK(rc == 0 || rc == -EINTR, "hold %d", rc);
            if (rc == 0) {
                f->holder = k;
                f->hold_test = true;
            }
        }
        break;
    case OP_UNHOLD:
        if (f->holder >= 0 && f->hold_test) {
            rr_unlock(f->h[f->holder]->hdr);
            f->holder = -1;
            f->hold_test = false;
        }
        break;
    case OP_SHARE:
        if (f->nh < FZ_HANDLES && rr_chan_share(c, &f->h[f->nh]) == 0)
            f->ip[f->nh++].open = false;
        break;
    case OP_REOPEN:
        if (f->nh < FZ_HANDLES && f->fd >= 0) {
            rr_error err;
            rc = rr_open_fd(f->fd, (op->b & 1) ? 0 : c->geom.variant, &f->h[f->nh], &err);
            if (rc == 0) {
                FZ_CHECK(rr_map_size(f->h[f->nh]) == f->size, "reopened at another size");
                f->ip[f->nh++].open = false;
            } else {
                FZ_CHECK(rc == -RR_EFORMAT && err.why[0], "reopen %d", rc);
            }
        }
        break;
    case OP_CLOSE:
        if (f->nh > 1)
            close_handle(f, k);
        break;
    case OP_POKE: {
        uint8_t buf[16];
        size_t w = (op->b % 16) + 1;
        for (size_t i = 0; i < w; i++)
            buf[i] = (uint8_t)((i < 8 ? op->y : ~op->y) >> (8 * (i % 8)));
        rewrite(f, op->x % (f->size ? f->size : 1), buf, w);
        break;
    }
    case OP_POKE_FIELD:
        poke_field(f, c, op);
        break;
    case OP_SPIN:
        rr_set_spin(c, op->b % 4 == 0 ? (op->x % 20) : 0);
        break;
    case OP_MARK_TAKEN: /* a worker recording its take */
        rr_slot_mark_taken(&c->slots, pick_id(f, c, op));
        break;
    case OP_AGE: /* time passes for this handle's memos: no sleeping 20 ms to see a stall */
        atomic_fetch_sub_explicit(&c->q.intq.stall_since, 1000000000, memory_order_relaxed);
        atomic_store_explicit(&c->slots.next_worker_check, 0, memory_order_relaxed);
        break;
    case OP_CLAIM: { /* a replier part-way through: claimed, maybe never published */
        id = pick_id(f, c, op);
        rr_slot *s = rr_slot_claim(&c->slots, id);
        if (s) {
            in_map(c, s, RR_SLOT_HEADER, "claimed slot");
            if (op->b & 1) {
                rc = rr_slot_publish(&c->slots, s, id);
                FZ_CHECK(rc == 0 || rc == 1, "publish %d", rc);
            }
        }
        break;
    }
    case OP_REPLY_BEGIN:
        inplace_begin(f, k, c, op);
        break;
    case OP_REPLY_COMMIT:
        inplace_commit(f, k, c, op);
        break;
    case OP_REPLY_ABORT:
        inplace_abort(f, k, c);
        break;
    case OP_PIN:
        pin_reply(f, k, c, op);
        break;
    case OP_UNPIN:
        unpin_one(f, op);
        break;
    case OP_RECV_PIN:
        pin_entry(f, k, c, op);
        break;
    case OP_HINT:
        rc = rr_request_hint(c);
        FZ_CHECK(rc == 0 || rc == 1, "request_hint %d", rc);
        id = pick_id(f, c, op);
        rc = rr_resp_hint(c, id);
        FZ_CHECK(rc == 0 || rc == 1, "resp_hint %d", rc);
        if (rc == 0 && f->trusted) { /* "nothing to say": the request is in flight */
            rc = rr_resp_check(c, id);
            FZ_CHECK(rc == 0 || rc == -EOWNERDEAD, "resp_hint 0, resp_check %d", rc);
        }
        break;
    }
    check_pins(f);
}

/* ---- one input ---- */

static int lowest_free_fd(void)
{
    int fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* Aborts if an fd other than G.memfd refers to our memfd or file. */
static void check_no_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == G.memfd || fd == dirfd(d))
            continue;
        char link[64], to[600];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, to, sizeof to - 1);
        if (n <= 0)
            continue;
        to[n] = 0;
        FZ_CHECK(!strstr(to, "memfd:rr-fuzz") && strncmp(to, G.path, strlen(G.path)) != 0,
                 "fd %d on %s outlived its handles", fd, to);
    }
    closedir(d);
}

/* Aborts if a mapping of our memfd or file outlived its handles. */
static void check_no_mapping(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    static char buf[1 << 16];
    size_t keep = 0;
    const char *file = strrchr(G.path, '/');
    file = file ? file + 1 : G.path;
    for (;;) {
        ssize_t n = read(fd, buf + keep, sizeof buf - 1 - keep);
        if (n <= 0)
            break;
        buf[keep + (size_t)n] = 0;
        FZ_CHECK(!strstr(buf, "memfd:rr-fuzz") && !strstr(buf, file),
                 "a channel mapping outlived its handles");
        /* keep a line's worth, so a name split across two reads is still seen */
        size_t len = keep + (size_t)n;
        keep = len < 256 ? len : 256;
        memmove(buf, buf + len - keep, keep);
    }
    close(fd);
}

/* Puts the image into fd; returns the file's size, or -1. */
static int64_t write_image(int fd, const uint8_t *img, size_t len, bool fit)
{
    uint64_t size = len;
    if (fit && len >= offsetof(rr_hdr_geom, total_size) + 8) {
        uint64_t total;
        memcpy(&total, img + offsetof(rr_hdr_geom, total_size), 8);
        if (total > 0 && total <= FZ_MAX_FIT)
            size = total;
    }
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0)
        return -1;
    size_t n = len < size ? len : (size_t)size;
    for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(fd, img + done, n - done, (off_t)done);
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return (int64_t)size;
}

/* The file must be as written: a refused open writes nothing. */
static void check_unchanged(int fd, const uint8_t *img, size_t len, uint64_t size)
{
    struct stat st;
    FZ_CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size,
             "a refused file changed size (%lld, was %llu)", (long long)st.st_size,
             (unsigned long long)size);
    static uint8_t buf[65536];
    for (uint64_t off = 0; off < size;) {
        size_t n = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
        FZ_CHECK(pread(fd, buf, n, (off_t)off) == (ssize_t)n, "read back");
        for (size_t i = 0; i < n; i++) {
            uint8_t want = off + i < len ? img[off + i] : 0;
            FZ_CHECK(buf[i] == want, "a refused file was modified at %llu",
                     (unsigned long long)(off + i));
        }
        off += n;
    }
}

/* The geometry the image's header names, as a server would ask for it:
 * normalised or refused, and if small enough, created (anonymous). */
static void try_geometry(const uint8_t *img, size_t len)
{
    rr_hdr_geom h = {0};
    memcpy(&h, img, len < sizeof h ? len : sizeof h);
    rr_geometry g = {h.variant, h.req_cap, h.resp_slots, h.resp_size, h.arena_cap, ""};
    rr_error err;
    if (rr_geometry_normalise(&g, &err) != 0) {
        FZ_CHECK(err.why[0], "a geometry refused without a reason");
        return;
    }
    FZ_CHECK(g.req_cap && !(g.req_cap & (g.req_cap - 1)) && g.req_cap <= RR_MAX_REQ_CAP
                 && g.resp_slots >= 1 && g.resp_slots <= RR_MAX_RESP_SLOTS,
             "normalised geometry out of bounds");
    rr_hdr_geom want;
    FZ_CHECK(rr_layout_compute(&g, &want) == 0, "a normalised geometry has no layout");
    if (want.total_size > (256u << 10))
        return;
    rr_chan *c = NULL;
    if (rr_open_anon(&g, &c, &err) == 0) {
        FZ_CHECK(rr_map_size(c) == want.total_size, "anon size");
        rr_close(c);
    }
}

static uint32_t header_variant(const uint8_t *img, size_t len)
{
    uint32_t v = 0;
    if (len >= offsetof(rr_hdr_geom, variant) + 4)
        memcpy(&v, img + offsetof(rr_hdr_geom, variant), 4);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_init();
    if (G.base_fd < 0)
        G.base_fd = lowest_free_fd();
    if (size < FZ_PREFIX)
        return 0;
    uint32_t nops = data[0] % (FZ_MAX_OPS + 1), flags = data[1];
    if ((size - FZ_PREFIX) / FZ_OP_SIZE < nops)
        nops = (uint32_t)((size - FZ_PREFIX) / FZ_OP_SIZE);
    const uint8_t *img = data + FZ_PREFIX + (size_t)nops * FZ_OP_SIZE;
    size_t img_len = size - FZ_PREFIX - (size_t)nops * FZ_OP_SIZE;

    try_geometry(img, img_len);
    fz f = {.fd = -1, .flags = flags, .holder = -1};
    uint32_t hv = header_variant(img, img_len);
    bool hv_ok = hv == RR_VARIANT_STR || hv == RR_VARIANT_INT;
    switch ((flags >> 2) & 3) {
    case 0:
        f.variant = 0;
        break;
    case 3:
        f.variant = hv_ok ? hv : RR_VARIANT_STR;
        break;
    default:
        f.variant = (flags >> 2) & 3;
        break;
    }
    int mode = flags & 3;
    if (mode == FZ_OPEN_MEMFD) {
        f.fd = G.memfd;
    } else {
        f.fd = open(G.path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (f.fd < 0) {
            perror(G.path);
            abort();
        }
    }
    int64_t fsize = write_image(f.fd, img, img_len, flags & FZ_FIT);
    FZ_CHECK(fsize >= 0, "cannot write the image: %s", strerror(errno));

    rr_error err;
    err.why[0] = 0;
    rr_chan *c = NULL;
    int rc;
    /* the other variant never opens a channel of this one */
    if (hv_ok) {
        rc = rr_open_fd(f.fd, hv == RR_VARIANT_STR ? RR_VARIANT_INT : RR_VARIANT_STR, &c, &err);
        FZ_CHECK(rc != 0, "a variant %u channel opened as the other", hv);
        FZ_CHECK(rc != -RR_EFORMAT || err.why[0], "refused without a reason");
    }
    uint8_t first[8] = {0};
    if (img_len >= 8)
        memcpy(first, img, 8);
    bool zero_start = !memcmp(first, (uint8_t[8]){0}, 8);
    if (mode == FZ_OPEN_SERVER) {
        uint32_t v = f.variant ? f.variant : hv_ok ? hv : RR_VARIANT_STR;
        rr_geometry g = {v, 4, 4, v == RR_VARIANT_STR ? 64 : 0, 0, ""};
        FZ_CHECK(rr_geometry_normalise(&g, &err) == 0, "geometry");
        rc = rr_open_path(G.path, v, &g, &c, &err);
        f.trusted = rc == 0 && zero_start; /* created here, not opened */
        if (rc == 0)
            f.variant = v;
        else if (rc != -EINTR)
            check_unchanged(f.fd, img, img_len, (uint64_t)fsize);
    } else if (mode == FZ_OPEN_CLIENT && !zero_start) {
        /* (a client waits a while for an unpublished file's creator: not here) */
        rc = rr_open_path(G.path, f.variant, NULL, &c, &err);
    } else {
        rc = rr_open_fd(f.fd, f.variant, &c, &err);
    }
    if (G.trace)
        fprintf(stderr, "fuzz_chan: open mode %d variant %u, file of %lld bytes: %d %s\n", mode,
                f.variant, (long long)fsize, rc, rc ? err.why : "");
    if (rc == 0) {
        f.h[0] = c;
        f.nh = 1;
        f.size = rr_map_size(c);
        FZ_CHECK(f.variant == 0 || c->geom.variant == f.variant, "opened as another variant");
        FZ_CHECK(memchr(c->geom.codec, 0, sizeof c->geom.codec) != NULL, "codec unterminated");
        FZ_CHECK(mode == FZ_OPEN_SERVER || f.size == (uint64_t)fsize, "mapped %llu of %lld",
                 (unsigned long long)f.size, (long long)fsize);
        if (mode == FZ_OPEN_SERVER) { /* a server may have initialised the file */
            struct stat st;
            FZ_CHECK(fstat(f.fd, &st) == 0 && (uint64_t)st.st_size == f.size, "server size");
        }
        rr_set_spin(c, (flags >> 6) * 3u);
        check_stats(&f, c);
        for (uint32_t i = 0; i < nops; i++) {
            const uint8_t *p = data + FZ_PREFIX + (size_t)i * FZ_OP_SIZE;
            fz_op op;
            op.code = p[0];
            op.a = p[1];
            memcpy(&op.b, p + 2, 2);
            memcpy(&op.x, p + 4, 4);
            memcpy(&op.y, p + 8, 8);
            run_op(&f, &op);
        }
        if (f.nh)
            check_stats(&f, f.h[0]);
        while (f.nh)
            close_handle(&f, f.nh - 1);
    } else {
        FZ_CHECK(rc < 0, "open %d", rc);
        FZ_CHECK(rc != -RR_EFORMAT || err.why[0], "refused without a reason");
    }
    if (mode != FZ_OPEN_MEMFD) {
        close(f.fd);
        unlink(G.path);
    } else {
        /* from_fd seals a memfd it opens (no shrinking): a fresh one for the
         * next input, on the same descriptor number */
        int fresh = memfd_create("rr-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fresh < 0 || dup3(fresh, G.memfd, O_CLOEXEC) < 0)
            abort();
        close(fresh);
    }
    /* One more fd than before is a leak if it is on our channel; libFuzzer
     * itself keeps some now and then (a symbolizer's pipes). */
    int lf = lowest_free_fd();
    if (lf != G.base_fd || ++G.inputs % 256 == 0) { /* (every 256th, leaks anyway) */
        check_no_fd();
        check_no_mapping();
        G.base_fd = lf;
    }
    return 0;
}

/* ---- the seed corpus ---- */

/* Replaces this process's identity wherever the image records it (slot
 * owners and worker records, bell owners, the lock, Int cells' claims) with
 * a dead one, and the sweep clock with 0: a seed must not depend on the
 * process that made it. */
static void scrub(rr_chan *c, uint8_t *img)
{
    uint64_t me = rr_self_ident();
    rr_header *h = (rr_header *)img;
    atomic_store(&h->last_sweep, 0);
    uint64_t lock = atomic_load(&h->lock);
    if (lock && (lock & ~RR_LOCK_WAITERS) == me)
        atomic_store(&h->lock, FZ_DEAD_IDENT | (lock & RR_LOCK_WAITERS));
    rr_bell *bells = (rr_bell *)(img + ((uint8_t *)c->bells.base - c->map->base));
    for (int i = 0; i < RR_BELLS; i++)
        if (atomic_load(&bells[i].owner) == me)
            atomic_store(&bells[i].owner, FZ_DEAD_IDENT);
    uint64_t pid_bits = (UINT64_C(1) << (RR_WORKER_START_BITS + RR_WORKER_PID_BITS)) - 1;
    uint64_t dead_worker = (FZ_DEAD_IDENT >> 32 & ((1u << RR_WORKER_START_BITS) - 1))
            << RR_WORKER_PID_BITS
        | (FZ_DEAD_IDENT & ((1u << RR_WORKER_PID_BITS) - 1));
    for (uint32_t i = 0; i < c->geom.resp_slots; i++) {
        rr_slot *s = (rr_slot *)(img + (c->slots.base - c->map->base)
                                 + (uint64_t)i * c->slots.stride);
        /* an owner word keeps its generation tag and names the process
         * by its low bits (rr_owner_word) */
        uint64_t o = atomic_load(&s->owner);
        if (o && (o & RR_PROC_MASK) == rr_proc_bits(me))
            atomic_store(&s->owner, (o & ~RR_PROC_MASK) | rr_proc_bits(FZ_DEAD_IDENT));
        uint64_t w = atomic_load(&s->worker);
        if (w)
            atomic_store(&s->worker, (w & ~pid_bits) | dead_worker);
    }
    if (c->geom.variant == RR_VARIANT_INT) {
        uint64_t who_mask = (1u << RR_TURN_WHO_BITS) - 1;
        uint64_t dead_who = (FZ_DEAD_IDENT >> 32 << RR_WORKER_PID_BITS
                             | (FZ_DEAD_IDENT & ((1u << RR_WORKER_PID_BITS) - 1)))
            & who_mask;
        rr_int_cell *cells = (rr_int_cell *)(img + (c->q.ring.cells - c->map->base));
        for (uint32_t i = 0; i < c->geom.req_cap; i++) {
            uint64_t t = atomic_load(&cells[i].turn);
            if (t & who_mask)
                atomic_store(&cells[i].turn, (t & ~who_mask) | dead_who);
        }
    }
}

typedef struct prog {
    uint8_t n;
    uint8_t ops[FZ_MAX_OPS][FZ_OP_SIZE];
} prog;

static void prog_add(prog *p, uint8_t code, uint8_t a, uint16_t b, uint32_t x, uint64_t y)
{
    if (p->n == FZ_MAX_OPS)
        return;
    uint8_t *o = p->ops[p->n++];
    o[0] = code;
    o[1] = a;
    memcpy(o + 2, &b, 2);
    memcpy(o + 4, &x, 4);
    memcpy(o + 8, &y, 8);
}

/* Deadline kinds for `a` (bits 2-4) and id sources (bits 5-7). */
#define A_NOW (4u << 2)
#define A_SHORT (5u << 2)
#define A_TRY (3u << 2)
#define A_SLOT (3u << 5)
#define A_RAW (4u << 5)
#define A_STALE (5u << 5)
#define A_LAST (6u << 5)

/* Programs: a worker's session, a client's, and one of everything with
 * rewrites of the live file between the calls. */
static void prog_worker(prog *p)
{
    prog_add(p, OP_STATS, 0, 0, 0, 0);
    prog_add(p, OP_BATCH, 0, 0, 0, 7);
    prog_add(p, OP_RECV, 0, 0, 0, 0);
    prog_add(p, OP_AGE, 0, 0, 0, 0); /* a claim seen at the head long enough: repaired */
    prog_add(p, OP_RECV, 0, 0, 0, 0);
    prog_add(p, OP_SEND, A_SHORT, 1, 0, 0);   /* Str: while we hold the lock */
    prog_add(p, OP_SETTLE, A_SHORT, 0, 0, 0);
    prog_add(p, OP_PEEK, 0, 0, 0, 0);
    prog_add(p, OP_PEEK, 0, 1, 0, 0);
    prog_add(p, OP_END, 0, 1, 0, 0);
    prog_add(p, OP_REPLY, A_LAST, 1, 40, 3);
    prog_add(p, OP_WAIT_REQ, A_NOW, 1, 0, 0);
    prog_add(p, OP_BATCH, A_SHORT, 8, 0, 1);
    prog_add(p, OP_CLAIM, A_SLOT, 0, 1, 0);
    prog_add(p, OP_MARK_TAKEN, A_SLOT, 1, 2, 0);
    prog_add(p, OP_SETTLE, A_SHORT, 0, 0, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
    /* replies in place (Str): committed after one too long, given back,
     * cancelled while open */
    prog_add(p, OP_SEND, 0, 1, 0, 0);
    prog_add(p, OP_REPLY_BEGIN, A_LAST, 0, 20, 0);
    prog_add(p, OP_REPLY, A_LAST, 0, 0, 0); /* ours to finish: -EBUSY */
    prog_add(p, OP_REPLY_COMMIT, 0, 16, 0, 0);
    prog_add(p, OP_REPLY_COMMIT, 0, 2 | 1, 9, 1);
    prog_add(p, OP_SEND, 0, 1, 0, 0);
    prog_add(p, OP_REPLY_BEGIN, A_LAST, 0, 5, 0);
    prog_add(p, OP_REPLY_ABORT, 0, 0, 0, 0);
    prog_add(p, OP_REPLY_BEGIN, A_LAST, 0, 5, 0);
    prog_add(p, OP_CANCEL, A_LAST, 0, 0, 0);
    prog_add(p, OP_REPLY_COMMIT, 0, 0, 0, 0);
    prog_add(p, OP_REPLY_BEGIN, A_SLOT, 0, 7, 0);
    prog_add(p, OP_CLEAR, 0, 0, 0, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
}

static void prog_client(prog *p)
{
    prog_add(p, OP_BELL_CLAIM, 0, 0, 0, 0);
    prog_add(p, OP_SEND, 0, 1, 0, 42);
    prog_add(p, OP_SEND, 0, 4, 1000, 43);
    prog_add(p, OP_WAIT, A_SHORT | A_LAST, 0, 0, 0);
    prog_add(p, OP_GET, A_SLOT, 1, 0, 0);
    prog_add(p, OP_VIEW, A_SLOT, 1, 2, 0);
    prog_add(p, OP_UNVIEW, A_SLOT, 1, 2, 0);
    prog_add(p, OP_INT_PEEK, A_SLOT, 1, 3, 0);
    prog_add(p, OP_DISCARD, A_SLOT, 1, 3, 0);
    prog_add(p, OP_CANCEL, A_LAST, 0, 0, 0);
    prog_add(p, OP_CANCEL, A_STALE, 1, 0, 0);
    prog_add(p, OP_CHECK, A_SLOT, 1, 0, 0);
    prog_add(p, OP_AGE, 0, 0, 0, 0);
    prog_add(p, OP_WAIT, A_NOW | A_SLOT, 1, 1, 0); /* a wait that checks the worker */
    prog_add(p, OP_ABANDON, A_SLOT, 1, 1, 0);
    prog_add(p, OP_WORKER, A_SLOT, 1, 1, 0);
    prog_add(p, OP_BELL_WAIT, A_NOW, 0, 0, 0);
    prog_add(p, OP_BELL_POKE, 0, 0, 0, 0);
    prog_add(p, OP_BELL_WAIT, A_NOW, 1, 0, 0);
    prog_add(p, OP_RECLAIM, 0, 0, 0, 0);
    prog_add(p, OP_RELEASE, A_RAW, 0, 0, (uint64_t)7 << 32 | 1);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
}

static void prog_everything(prog *p)
{
    prog_add(p, OP_SHARE, 0, 0, 0, 0);
    prog_add(p, OP_REOPEN, 0, 0, 0, 0);
    prog_add(p, OP_SPIN, 1, 0, 5, 0);
    for (uint8_t code = 0; code < OP_COUNT; code++) {
        if (code == OP_CLOSE || code == OP_SHARE || code == OP_REOPEN)
            continue;
        prog_add(p, code, (uint8_t)(code % 3 | (code % 8) << 5), code, code * 7u, code * 3u);
        if (code % 8 == 0) /* rewrite something between calls: head, a slot's ctl, a cell */
            prog_add(p, OP_POKE_FIELD, 0, 5, (code & 0xff) % 3, 1);
    }
    prog_add(p, OP_CLOSE, 1, 0, 0, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
}

/* Pins on a channel created here (their bytes are then checked after every
 * call): entries pinned in the arena while senders fill it, a clear, the
 * pins given back; a reply pinned, looked at, swept, given back, pinned
 * again and freed. */
static void prog_pins(prog *p)
{
    for (int i = 0; i < 3; i++)
        prog_add(p, OP_SEND, 0, 0, 200u + 50u * (uint32_t)i, 0); /* past their cells */
    prog_add(p, OP_RECV, 0, 0, 0, 0);
    prog_add(p, OP_RECV_PIN, 0, 0, 0, 0);
    prog_add(p, OP_RECV_PIN, 0, 1, 0, 0);
    prog_add(p, OP_END, 0, 2, 0, 0);
    for (int i = 0; i < 6; i++) { /* round the arena: the pins hold their room */
        prog_add(p, OP_SEND, A_NOW, 0, 3000, 0);
        prog_add(p, OP_BATCH, 0, 1, 0, 0);
    }
    prog_add(p, OP_CLEAR, 0, 0, 0, 0);
    prog_add(p, OP_SEND, A_NOW, 0, 1500, 0);
    prog_add(p, OP_SEND, 0, 1, 0, 7);
    prog_add(p, OP_HINT, A_LAST, 0, 0, 0);
    prog_add(p, OP_BATCH, 0, 1, 60, 0); /* replies of 60 bytes */
    prog_add(p, OP_HINT, A_LAST, 0, 0, 0);
    prog_add(p, OP_PIN, A_LAST, 1, 0, 0);
    prog_add(p, OP_SWEEP, 0, 1, 0, 0);
    prog_add(p, OP_CLAIM, A_LAST, 1, 0, 0);
    prog_add(p, OP_REPLY, A_LAST, 0, 0, 0);
    prog_add(p, OP_UNPIN, 0, 2, 0, 0);       /* the reply's: back to READY */
    prog_add(p, OP_PIN, A_LAST, 0, 0, 0);
    prog_add(p, OP_UNPIN, 0, 2 | 8, 0, 0);   /* freed */
    prog_add(p, OP_UNPIN, 0, 0, 0, 0);       /* the arena's */
    prog_add(p, OP_SEND, A_NOW, 0, 3000, 0);
    prog_add(p, OP_UNPIN, 0, 1, 0, 0);
    prog_add(p, OP_SEND, A_NOW, 0, 3000, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
}

/* Edge values (poke_field's kind 7, by index) into queue words, cells,
 * slots and bells, each followed by the calls that use it: a one-byte
 * mutation of a field or edge index then reaches the others. */
#define EDGE_MAX_63 9u   /* UINT64_MAX - 63 */
#define EDGE_I64_MIN 4u
#define EDGE_U64_MAX 2u
#define EDGE_U32_MAX 6u
#define EDGE_BIT31 8u
#define FIELD(region, sel, elem) ((uint32_t)(region) | (uint32_t)(sel) << 8 | (uint32_t)(elem) << 16)
static void prog_edges(prog *p)
{
    /* an empty queue just before its counters wrap, then sends across it */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 0, 0), EDGE_MAX_63);  /* head */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 1, 0), EDGE_MAX_63);  /* tail */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 4, 0), EDGE_MAX_63);  /* seen_head */
    for (int i = 0; i < 3; i++)
        prog_add(p, OP_SEND, 0, (uint16_t)(i == 1 ? 4 : 1), 1500, (uint64_t)i);
    prog_add(p, OP_BATCH, 0, 0, 0, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
    /* the senders' view of where the queue's first entry begins */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 5, 0), EDGE_I64_MIN); /* seen_first */
    prog_add(p, OP_SEND, 0, 4, 2000, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
    /* a queued cell's charge and length, then a receive */
    prog_add(p, OP_SEND, 0, 4, 100, 0);
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(1, 1, 0), EDGE_U64_MAX); /* Str beg / Int value */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(1, 2, 1), EDGE_U32_MAX); /* Str len / Int turn half */
    prog_add(p, OP_RECV, 0, 0, 0, 0);
    prog_add(p, OP_PEEK, 0, 0, 0, 0);
    prog_add(p, OP_PEEK, 0, 1, 0, 0);
    prog_add(p, OP_END, 0, 2, 0, 0);
    /* slots: a worker record, a bell, a length, a generation at its wrap */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(2, 9, 1), EDGE_U64_MAX); /* worker */
    prog_add(p, OP_CHECK, A_SLOT, 0, 1, 0);
    prog_add(p, OP_WORKER, A_SLOT, 0, 1, 0);
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(2, 7, 2), EDGE_U32_MAX); /* bell */
    prog_add(p, OP_REPLY, A_SLOT, 1, 2, 0);
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(2, 5, 3), EDGE_BIT31);   /* len */
    prog_add(p, OP_GET, A_SLOT, 0, 3, 0);
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(2, 2, 0), EDGE_U32_MAX); /* ctl's generation */
    prog_add(p, OP_CANCEL, A_SLOT, 0, 0, 0);
    prog_add(p, OP_SEND, 0, 1, 0, 0);
    /* waiter counts that say somebody sleeps, counters at their wrap */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 7, 0), EDGE_U32_MAX); /* not_empty.waiters */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 11, 0), EDGE_U32_MAX); /* slot_free.waiters */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(0, 14, 0), EDGE_U64_MAX); /* recoveries */
    prog_add(p, OP_POKE_FIELD, 0, 7, FIELD(3, 0, 0), EDGE_U32_MAX);  /* a bell's seq */
    prog_add(p, OP_BELL_CLAIM, 0, 0, 0, 0);
    prog_add(p, OP_BELL_WAIT, A_NOW, 0, 0, 0);
    prog_add(p, OP_SEND, 0, 1, 0, 0);
    prog_add(p, OP_BATCH, 0, 0, 0, 0);
    prog_add(p, OP_ABANDON, A_SLOT, 0, 1, 0);
    prog_add(p, OP_RECLAIM, 0, 0, 0, 0);
    prog_add(p, OP_CLEAR, 0, 0, 0, 0);
    prog_add(p, OP_STATS, 0, 0, 0, 0);
}

static int write_seed(const char *dir, const char *name, uint8_t flags, const prog *p,
                      const uint8_t *img, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "wb");
    if (!out) {
        perror(path);
        return -1;
    }
    /* with "fit", the file's trailing zeros need not be stored */
    if (flags & FZ_FIT)
        while (len > 0 && img[len - 1] == 0)
            len--;
    uint8_t pre[2] = {p->n, flags};
    int bad = fwrite(pre, 1, 2, out) != 2
        || fwrite(p->ops, FZ_OP_SIZE, p->n, out) != p->n
        || (len && fwrite(img, 1, len, out) != len);
    bad |= fclose(out) != 0;
    if (bad)
        fprintf(stderr, "cannot write %s\n", path);
    return bad ? -1 : 0;
}

static rr_chan *new_chan(uint32_t variant, uint32_t req_cap, uint32_t slots, uint32_t resp_size)
{
    /* Str seeds carry a codec's name, for mutations to forge */
    rr_geometry g = {variant, req_cap, slots, resp_size, 0, ""};
    if (variant == RR_VARIANT_STR)
        memcpy(g.codec, "pickle", 7);
    rr_error err;
    rr_chan *c = NULL;
    if (rr_geometry_normalise(&g, &err) != 0 || rr_open_anon(&g, &c, &err) != 0) {
        fprintf(stderr, "cannot make a channel: %s\n", err.why);
        exit(1);
    }
    rr_set_spin(c, 0);
    atomic_store(&c->slots.hint, 0); /* seeded from the pid: the seeds would vary */
    return c;
}

static uint64_t send_str(rr_chan *c, size_t len)
{
    uint64_t id = 0;
    static uint8_t buf[4096];
    for (size_t i = 0; i < len && i < sizeof buf; i++)
        buf[i] = (uint8_t)('a' + i % 26);
    if (rr_str_send(c, buf, len, 0, RR_NOWAIT, &id) != 0) {
        fprintf(stderr, "seed: send of %zu failed\n", len);
        exit(1);
    }
    return id;
}

/* Takes n queued Str requests (recording this process as their worker). */
static void take_str(rr_chan *c, uint32_t n, uint64_t *ids)
{
    int got = rr_str_recv_begin(c, RR_NOWAIT);
    if (got < (int)n) {
        fprintf(stderr, "seed: only %d queued\n", got);
        exit(1);
    }
    for (uint32_t i = 0; i < n; i++) {
        rr_entry e;
        rr_str_recv_peek(c, i, &e);
        ids[i] = e.id;
    }
    rr_str_recv_end(c, n);
}

/* A channel with a slot in every state: FREE (of a later generation),
 * ACQUIRED and queued, ACQUIRED and taken, WRITING (a replier mid-way),
 * READY, READING (viewed), plus a bell claimed. */
static rr_chan *every_state(uint32_t variant)
{
    bool str = variant == RR_VARIANT_STR;
    rr_chan *c = new_chan(variant, 8, 8, str ? 100 : 0);
    rr_bell_claim(c);
    uint64_t id[6];
    int64_t v;
    for (int i = 0; i < 6; i++) {
        if (str)
            id[i] = send_str(c, i % 2 ? 60 : 10);
        else if (rr_int_send(c, 100 + i, RR_NOWAIT, &id[i]) != 0)
            exit(1);
    }
    uint64_t taken[5];
    if (str) {
        take_str(c, 5, taken);
    } else {
        for (int i = 0; i < 5; i++)
            rr_int_recv(c, RR_NOWAIT, &v, &taken[i]);
    }
    /* taken[0]: cancelled (FREE, gen 2); taken[1]: left taken; taken[2]:
     * WRITING; taken[3]: READY; taken[4]: READING; id[5] still queued */
    rr_cancel(c, taken[0]);
    rr_slot_claim(&c->slots, taken[2]);
    if (str) {
        rr_str_reply(c, taken[3], "ready", 5, 0);
        rr_str_reply(c, taken[4], "a reply longer than the slot's inline part, to the data", 56,
                     RR_FLAG_UTF8);
    } else {
        rr_int_reply(c, taken[3], -3);
        rr_int_reply_error(c, taken[4], "KeyError", 8);
    }
    rr_resp r;
    rr_resp_view(c, taken[4], &r);
    return c;
}

static int make_corpus(const char *dir)
{
    mkdir(dir, 0755);
    int bad = 0;
    prog pw = {0}, pc = {0}, pe = {0}, pg = {0}, pp = {0}, none = {0};
    prog_edges(&pg);
    prog_pins(&pp);
    prog_worker(&pw);
    prog_client(&pc);
    prog_everything(&pe);
    const prog *progs[3] = {&pw, &pc, &pe};
    /* flags: the header's variant, fit; open modes vary */
    const uint8_t fit = FZ_FIT | 3u << 2;
    char name[128];
    for (uint32_t v = RR_VARIANT_STR; v <= RR_VARIANT_INT; v++) {
        const char *vn = v == RR_VARIANT_STR ? "str" : "int";
        bool str = v == RR_VARIANT_STR;
        rr_chan *c;
        uint64_t ids[8];
        int64_t val;
#define SEED(what, mode, prg)                                                                 \
    do {                                                                                      \
        scrub(c, c->map->base);                                                               \
        snprintf(name, sizeof name, "%s-%s-%s", vn, what,                                     \
                 (prg) == &pw ? "worker" : (prg) == &pc ? "client" : (prg) == &pe ? "all" : (prg) == &pg ? "edges" : "open"); \
        bad |= write_seed(dir, name, (uint8_t)(fit | (mode)), prg, c->map->base,              \
                          rr_map_size(c));                                                    \
    } while (0)

        /* fresh */
        c = new_chan(v, 4, 4, str ? 64 : 0);
        for (int i = 0; i < 3; i++)
            SEED(i == 0 ? "fresh" : i == 1 ? "fresh1" : "fresh2", (uint8_t)i, progs[i]);
        rr_close(c);

        /* requests queued, none taken */
        c = new_chan(v, 8, 4, str ? 64 : 0);
        for (int i = 0; i < 3; i++) {
            if (str)
                send_str(c, i == 1 ? 300 : 12);
            else
                rr_int_send(c, i * 1000 - 1, RR_NOWAIT, &ids[0]);
        }
        SEED("queued", FZ_OPEN_MEMFD, &pw);
        SEED("queued2", FZ_OPEN_CLIENT, &pe);
        rr_close(c);

        /* full: every slot acquired and its request queued */
        c = new_chan(v, 4, 4, str ? 64 : 0);
        for (int i = 0; i < 4; i++) {
            if (str)
                send_str(c, 20);
            else
                rr_int_send(c, i, RR_NOWAIT, &ids[0]);
        }
        SEED("full", FZ_OPEN_FILE_FD, &pc);
        rr_close(c);

        /* a slot in every state */
        c = every_state(v);
        for (int i = 0; i < 3; i++)
            SEED(i == 0 ? "states" : i == 1 ? "states1" : "states2", (uint8_t)(3 - i), progs[i]);
        SEED("states3", FZ_OPEN_MEMFD, &pg);
        rr_close(c);

        /* many laps round the ring (and the arena): counters far from 0 */
        c = new_chan(v, 4, 4, str ? 64 : 0);
        for (int i = 0; i < 37; i++) {
            if (str) {
                ids[0] = send_str(c, i % 3 == 0 ? 1500 : 40);
                take_str(c, 1, ids);
                rr_str_reply(c, ids[0], "ok", 2, 0);
            } else {
                rr_int_send(c, i, RR_NOWAIT, &ids[0]);
                rr_int_recv(c, RR_NOWAIT, &val, &ids[0]);
                rr_int_reply(c, ids[0], val);
            }
            rr_resp_release(c, ids[0]);
        }
        if (str) { /* two entries left, one at the arena's wrap */
            send_str(c, 1100);
            send_str(c, 1200);
        } else {
            rr_int_send(c, 7, RR_NOWAIT, &ids[0]);
        }
        SEED("laps", FZ_OPEN_MEMFD, &pe);
        SEED("laps1", FZ_OPEN_SERVER, &pw);
        SEED("laps2", FZ_OPEN_CLIENT, &pg);
        rr_close(c);

        /* a process died mid-operation: the Str lock held, an Int cell claimed */
        c = new_chan(v, 4, 4, str ? 64 : 0);
        if (str) {
            send_str(c, 5);
            rr_test_hold_lock(c); /* scrubbed to a dead holder */
            SEED("dead-holder", FZ_OPEN_MEMFD | FZ_KEEP_DEAD_LOCK, &pw);
            rr_unlock(c->hdr);
        } else {
            rr_int_send(c, 1, RR_NOWAIT, &ids[0]);
            rr_int_cell *cell = (rr_int_cell *)c->q.ring.cells + 1;
            atomic_store(&cell->turn, (uint64_t)1 << RR_TURN_WHO_BITS | 12345u); /* claimed */
            SEED("dead-claim", FZ_OPEN_MEMFD, &pw);
        }
        rr_close(c);
        /* an image exactly as long as the file (no fit), and the open-only program */
        c = new_chan(v, 4, 4, str ? 64 : 0);
        snprintf(name, sizeof name, "%s-exact", vn);
        scrub(c, c->map->base);
        bad |= write_seed(dir, name, 3u << 2, &none, c->map->base, rr_map_size(c));
        rr_close(c);
#undef SEED
    }
    /* files that are not channels: empty, short, zero (a server initialises it) */
    uint8_t zeros[64] = {0};
    bad |= write_seed(dir, "empty-server", FZ_OPEN_SERVER, &pw, zeros, 0);
    bad |= write_seed(dir, "short", FZ_OPEN_MEMFD, &none, (const uint8_t *)"\xffRREQPE1xx", 10);
    bad |= write_seed(dir, "zero-server", FZ_OPEN_SERVER | 1u << 2, &pe, zeros, sizeof zeros);
    bad |= write_seed(dir, "str-pins-server", FZ_OPEN_SERVER | 1u << 2, &pp, zeros, 0);
    bad |= write_seed(dir, "int-pins-server", FZ_OPEN_SERVER | 2u << 2, &pp, zeros, 0);
    return bad ? 1 : 0;
}

static const char *corpus_arg(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--make-corpus=", 14) == 0)
            return argv[i] + 14;
    return NULL;
}

#ifndef FZ_STANDALONE
/* libFuzzer's own mutations, for parts of an input. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

static uint32_t mut_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

/* Structure-aware: half the time the program (an operation inserted,
 * removed, or one of its fields changed; or the flags), else libFuzzer's
 * mutations of the image. Byte mutations alone rarely touch the program,
 * which is a small part of most inputs. */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    uint64_t r = seed | (uint64_t)seed << 32;
    if (size < FZ_PREFIX || max_size < FZ_PREFIX + FZ_OP_SIZE)
        return LLVMFuzzerMutate(data, size, max_size);
    size_t nops = data[0] % (FZ_MAX_OPS + 1);
    if ((size - FZ_PREFIX) / FZ_OP_SIZE < nops)
        nops = (size - FZ_PREFIX) / FZ_OP_SIZE;
    data[0] = (uint8_t)nops;
    size_t prog_end = FZ_PREFIX + nops * FZ_OP_SIZE;
    uint32_t what = mut_rand(&r) % 16;
    if (what < 8 && max_size > prog_end) { /* the image */
        size_t n = LLVMFuzzerMutate(data + prog_end, size - prog_end, max_size - prog_end);
        return prog_end + n;
    }
    if (what == 8) { /* the flags */
        data[1] ^= (uint8_t)(1u << (mut_rand(&r) % 8));
        return size;
    }
    if ((what == 9 || nops == 0) && nops < FZ_MAX_OPS && size + FZ_OP_SIZE <= max_size) {
        /* insert an operation: a new one, or a copy of another */
        size_t k = mut_rand(&r) % (nops + 1), at = FZ_PREFIX + k * FZ_OP_SIZE;
        memmove(data + at + FZ_OP_SIZE, data + at, size - at);
        uint8_t *op = data + at;
        if (nops && mut_rand(&r) % 2) { /* a copy of record j (k, where it was, is now k + 1) */
            size_t j = mut_rand(&r) % nops;
            memcpy(op, data + FZ_PREFIX + (j < k ? j : j + 1) * FZ_OP_SIZE, FZ_OP_SIZE);
        } else {
            for (int i = 0; i < FZ_OP_SIZE; i++)
                op[i] = (uint8_t)(i < 4 || mut_rand(&r) % 4 == 0 ? mut_rand(&r) : 0);
            op[0] = (uint8_t)(mut_rand(&r) % OP_COUNT);
        }
        data[0] = (uint8_t)(nops + 1);
        return size + FZ_OP_SIZE;
    }
    if (what == 10 && nops > 0) { /* remove one */
        size_t at = FZ_PREFIX + (mut_rand(&r) % nops) * FZ_OP_SIZE;
        memmove(data + at, data + at + FZ_OP_SIZE, size - at - FZ_OP_SIZE);
        data[0] = (uint8_t)(nops - 1);
        return size - FZ_OP_SIZE;
    }
    if (nops == 0)
        return LLVMFuzzerMutate(data, size, max_size);
    uint8_t *op = data + FZ_PREFIX + (mut_rand(&r) % nops) * FZ_OP_SIZE;
    switch (mut_rand(&r) % 6) {
    case 0:
        op[0] = (uint8_t)(mut_rand(&r) % OP_COUNT);
        break;
    case 1: /* the handle, the deadline or the id's source */
        op[1] ^= (uint8_t)(1u << (mut_rand(&r) % 8));
        break;
    case 2: { /* a small argument */
        uint16_t b = (uint16_t)(mut_rand(&r) % 64);
        memcpy(op + 2, &b, 2);
        break;
    }
    case 3: { /* a field to rewrite, or a slot / cell / bell */
        op[4 + mut_rand(&r) % 4] = (uint8_t)mut_rand(&r);
        break;
    }
    default: /* anything in the record, libFuzzer's way */
        LLVMFuzzerMutate(op, FZ_OP_SIZE, FZ_OP_SIZE);
        break;
    }
    return size;
}
#endif

#ifdef FZ_STANDALONE
/* Replays inputs without libFuzzer (any compiler): fuzz_chan FILE... */
int main(int argc, char **argv)
{
    const char *dir = corpus_arg(argc, argv);
    if (dir)
        return make_corpus(dir);
    for (int i = 1; i < argc; i++) {
        FILE *in = fopen(argv[i], "rb");
        if (!in) {
            perror(argv[i]);
            return 1;
        }
        static uint8_t buf[1 << 22];
        size_t n = fread(buf, 1, sizeof buf, in);
        fclose(in);
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        LLVMFuzzerTestOneInput(copy, n);
        free(copy);
        printf("%s: ok\n", argv[i]);
    }
    return 0;
}
#else
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = corpus_arg(*argc, *argv);
    if (dir)
        exit(make_corpus(dir));
    return 0;
}
#endif
