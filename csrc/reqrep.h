/* reqrep core: a shared-memory request/response channel (Linux, 64-bit).
 *
 * Plain C11, no Python. Every function returns 0 (or a count) on success and
 * a negative errno on failure. Codes with a meaning of their own:
 *   -EAGAIN     nothing to do right now (queue empty/full, reply not ready, timeout)
 *   -ESTALE     the id is not (or no longer) a pending request of this channel
 *   -EMSGSIZE   payload larger than the channel can ever hold
 *   -EINTR      a signal interrupted a wait; the call had no effect, retry it
 *   -RR_EFORMAT the file is not a valid channel (reason in rr_error.why)
 *   -EOWNERDEAD the worker that took the request died before replying
 *   -EBUSY      (RR_TRY) the Str queue lock is held by someone else; (a reply)
 *               this process holds the request's reply claim (an open
 *               rr_str_reply_begin); (rr_resp_pin, rr_int_peek) somebody
 *               views the reply
 *   -ECANCELED  a wait ended by rr_interrupt (the call had no effect), or
 *               rr_wait_request's by rr_wake_receivers
 *   -EREMOTEIO  (rr_int_peek only) the reply is an error: view it to read it
 * This is the one error convention of the core: its internal headers follow it.
 * Predicates that cannot fail (rr_id_live, rr_request_hint, rr_resp_hint,
 * rr_spin_advised) return 1 or 0.
 *
 * Concurrency: unless its comment says otherwise, a call may run in any
 * thread, at the same time as any other call on the same handle, on other
 * handles of the channel, and in other processes. The exceptions: rr_close
 * (only once no call on the handle is under way), a Str receive (begin,
 * peeks, end: the handle holds the queue lock in between, so end it), and
 * rr_bell_claim / rr_bell_release (not while other threads send on the
 * handle). The internals: csrc/README.md.
 */
#ifndef REQREP_H
#define REQREP_H

#include <stddef.h>
#include <stdint.h>

#define RR_EFORMAT 4096 /* beyond every errno value */

enum rr_variant { RR_VARIANT_STR = 1, RR_VARIANT_INT = 2 };

/* Payload flags carried with Str requests and with responses. */
#define RR_FLAG_UTF8  1u /* the bytes are text (UTF-8) */
#define RR_FLAG_ERROR 2u /* the response is an error, not an answer (rr_*_reply_error) */

/* A channel's codec name: up to RR_CODEC_MAX - 1 printable ASCII bytes. */
#define RR_CODEC_MAX 32u

/* Deadlines are absolute CLOCK_MONOTONIC nanoseconds. */
#define RR_NOWAIT  ((int64_t)0)
#define RR_FOREVER INT64_MAX
/* As RR_NOWAIT, and fail with -EBUSY rather than wait for the Str queue lock
 * (for callers holding a lock of their own, such as an interpreter's); an
 * Int receive's look with it is not counted in recv_empty (a spinner's). */
#define RR_TRY     ((int64_t)-1)

/* Limits on geometry (ValueError above them in the binding). */
#define RR_MAX_REQ_CAP    (1u << 24)
#define RR_MAX_RESP_SLOTS (1u << 20)
#define RR_MAX_RESP_SIZE  (1u << 30)
#define RR_MAX_ARENA      ((uint64_t)1 << 40)
#define RR_MIN_ARENA      4096u

/* Spin budget of a new handle, in microseconds (see rr_wait.c). */
#define RR_DEFAULT_SPIN_US 50u

typedef struct rr_geometry {
    uint32_t variant;    /* enum rr_variant */
    uint32_t req_cap;    /* rounded up to a power of two */
    uint32_t resp_slots;
    uint32_t resp_size;  /* Str only; 0 for Int */
    uint64_t arena;      /* Str only; 0 means req_cap * 256 (at least RR_MIN_ARENA) */
    char codec[RR_CODEC_MAX]; /* Str only: the payloads' codec, recorded at creation
                               * for every opener to use; "" for none. NUL-terminated. */
} rr_geometry;

typedef struct rr_error {
    char why[256];       /* filled on -RR_EFORMAT and on failures of open calls */
    int unready;         /* set by a failed open call: see rr_open_unready */
} rr_error;

typedef struct rr_chan rr_chan; /* one process-local handle on a mapping */

/* Checks and normalises a requested geometry (rounds req_cap, fills arena). */
int rr_geometry_normalise(rr_geometry *g, rr_error *err);

/* Opening. `create` NULL means open-only (a client); otherwise the geometry
 * used when the file is new or all zero (a creator died before publishing).
 * Every call that creates normalises a copy of the geometry it is given
 * (-EINVAL as rr_geometry_normalise); an existing file keeps its own. */
int rr_open_path(const char *path, uint32_t variant, const rr_geometry *create,
                 rr_chan **out, rr_error *err);
/* rr_open_path with options (NULL: the defaults). */
typedef struct rr_open_opts {
    int mode;        /* in: permissions set (exactly, not less the umask) on a file
                      * this call creates or initialises; -1: 0600 less the umask */
    int initialised; /* out: 1 if this call initialised the channel (a new file, or
                      * one a dead creator left unpublished), 0 if it was there */
    int nofollow;    /* in: refuse a symbolic link as the path's last component even
                      * when only opening (a worker's handle; creators always do) */
} rr_open_opts;
int rr_open_path_opts(const char *path, uint32_t variant, const rr_geometry *create,
                      rr_open_opts *opts, rr_chan **out, rr_error *err);
/* 1 if open failure `rc` only says the channel is not there yet: no such file,
 * or a file its creator has not published (being created, or the creator
 * died). For callers that wait for a channel to appear. */
int rr_open_unready(int rc, const rr_error *err);
int rr_open_anon(const rr_geometry *g, rr_chan **out, rr_error *err);
int rr_open_memfd(const char *name, const rr_geometry *g, rr_chan **out, rr_error *err);
int rr_open_fd(int fd, uint32_t variant, rr_chan **out, rr_error *err);
/* A second handle on the same mapping (the mapping is reference-counted). */
int rr_chan_share(rr_chan *c, rr_chan **out);
void rr_close(rr_chan *c);

/* Ends the waits on this handle, for good: the way to close a handle that
 * other threads are waiting on. Every call on c that is waiting now returns
 * -ECANCELED promptly (microseconds once its thread runs; up to 20 ms for
 * sleepers beyond the first 16 on one handle, which poll), and every later
 * call that would wait returns -ECANCELED at once; calls that need not wait
 * still run (so a waiting call that finds its condition met as it wakes may
 * still succeed). A call that returns
 * -ECANCELED had no effect: a send gives back its slot, a receive takes
 * nothing. Waits on other handles of the same channel go on (sleepers on the
 * same shared words, here or in other processes, wake and sleep again).
 * Returns once the sleepers it woke have left their sleep (they need
 * nothing from the caller, so this is short; but it must not run in a signal
 * handler that may have interrupted a wait on c). It does not wait for the
 * calls to return: rr_close(c) only after they all have. Thread-safe;
 * idempotent. */
void rr_interrupt(rr_chan *c);

/* Per-handle spin budget before sleeping, in microseconds (0 = never spin). */
void rr_set_spin(rr_chan *c, uint32_t spin_us);
uint32_t rr_get_spin(const rr_chan *c);
/* 1 if a wait on this handle would spin now: a budget, more than one CPU,
 * and its self-tuning not in a stretch of sleeping at once (spins that kept
 * ending in sleep). For a caller that spins on its own first (the hints
 * below). Changes nothing. */
int rr_spin_advised(const rr_chan *c);

const rr_geometry *rr_geometry_of(const rr_chan *c);
uint64_t rr_map_size(const rr_chan *c);
int rr_memfd(const rr_chan *c);  /* the memfd's fd, or -1 */
int rr_fd(const rr_chan *c);     /* the backing fd (file or memfd), or -1 */

int64_t rr_now_ns(void);
/* This process's pid, cached (and refreshed in a forked child). */
int rr_self_pid(void);

/* ---- response ids ---- */
static inline uint32_t rr_id_index(uint64_t id) { return (uint32_t)id; }
static inline uint32_t rr_id_gen(uint64_t id) { return (uint32_t)(id >> 32); }

/* ---- Str requests ---- */
int rr_str_send(rr_chan *c, const void *data, size_t len, uint32_t flags,
                int64_t deadline, uint64_t *id);
/* A payload in pieces, gathered into the channel by one copy of each. */
typedef struct rr_iovec {
    const void *base;
    size_t len;
} rr_iovec;
/* rr_str_send of the n pieces of iov, one after the other (-EMSGSIZE if
 * their sum does not fit; n may be 0). */
int rr_str_sendv(rr_chan *c, const rr_iovec *iov, uint32_t n, uint32_t flags,
                 int64_t deadline, uint64_t *id);

typedef struct rr_entry {
    const void *data;
    uint32_t len;
    uint32_t flags;
    uint64_t id;
} rr_entry;

/* Receive in two phases so nothing leaves the queue before the caller has
 * copied it: begin waits for requests and returns how many are queued with
 * the queue lock held; peek reads the i-th; end consumes n and unlocks. */
int rr_str_recv_begin(rr_chan *c, int64_t deadline);
int rr_str_recv_peek(rr_chan *c, uint32_t i, rr_entry *e);
void rr_str_recv_end(rr_chan *c, uint32_t n);
/* Between begin and end: pins the i-th entry's bytes (where peek shows them)
 * in the arena past end, until rr_str_unpin (SPEC §9). 0 with the pin's
 * number; -EINVAL for an entry kept in its cell (copy those), -ENOSPC when
 * all RR_ARENA_PINS pins are in use (copy it). The pinned bytes hold back
 * every later entry's room: the arena is a ring. A pin whose process dies
 * is taken back by a sender short of room. unpin: only the pinning process
 * (-ESTALE elsewhere: a forked child's copy), once, with no lock held;
 * any thread. */
int rr_str_recv_pin(rr_chan *c, uint32_t i, uint32_t *pin);
int rr_str_unpin(rr_chan *c, uint32_t pin);

/* Replies return 0, or 1 when the requester waits in an event loop (so the
 * caller may also signal a reply eventfd it shares with it). */
int rr_str_reply(rr_chan *c, uint64_t id, const void *data, size_t len, uint32_t flags);
int rr_str_replyv(rr_chan *c, uint64_t id, const rr_iovec *iov, uint32_t n, uint32_t flags);
/* A reply written in place (SPEC §9). begin claims request `id`'s slot as
 * rr_str_reply does and gives where its up to resp_size bytes go (*data,
 * *cap); then exactly one of: commit publishes the first len of them
 * (-EMSGSIZE beyond cap: nothing changes, the claim stays; else returns as
 * rr_str_reply), or abort gives the claim back unpublished: the request is
 * pending again, and any process holding the id may reply to it (0, or
 * -ESTALE if it was cancelled or cleared meanwhile: the slot is freed),
 * the request's record as it was before begin (*token keeps it). Only the
 * process that began may commit or abort, once; nothing else writes the
 * slot in between, and a writer that dies in between is a dead worker to
 * its client (its slot comes back). Every reply call of this process for an
 * id whose claim it holds (a begin not yet committed or aborted) returns
 * -EBUSY; another process's reply then finds the id stale (-ESTALE) until
 * the claim ends. */
int rr_str_reply_begin(rr_chan *c, uint64_t id, void **data, size_t *cap, uint64_t *token);
int rr_str_reply_commit(rr_chan *c, uint64_t id, size_t len, uint32_t flags);
int rr_str_reply_abort(rr_chan *c, uint64_t id, uint64_t token);

/* ---- Int requests ---- */
int rr_int_send(rr_chan *c, int64_t value, int64_t deadline, uint64_t *id);
/* Without waiting (RR_NOWAIT), -EINPROGRESS instead of -EAGAIN when the head
 * of the queue is a cell that a send or receive is inside of: a short wait
 * settles it (a dead process's cell is repaired after RR_CLAIM_STALL_NS). */
int rr_int_recv(rr_chan *c, int64_t deadline, int64_t *value, uint64_t *id);
int rr_int_reply(rr_chan *c, uint64_t id, int64_t value);
/* Answers with an error named by up to RR_SLOT_ERROR_MAX bytes of `name`
 * (-EMSGSIZE beyond): the client's rr_int_peek says -EREMOTEIO, and
 * rr_resp_view shows the name with RR_FLAG_ERROR. Returns as rr_int_reply. */
#define RR_SLOT_ERROR_MAX 32u
int rr_int_reply_error(rr_chan *c, uint64_t id, const void *name, size_t len);

/* ---- responses (both variants) ----
 * resp_wait returns 0 once the reply is there; resp_view pins it (cancel and
 * clear lose against a pinned slot, so nothing writes it while it is read)
 * and shows it; then resp_release frees the slot (pinned or not), or
 * resp_unview unpins it (if the caller could not copy it). resp_discard
 * frees a reply nobody will read. */
int rr_resp_wait(rr_chan *c, uint64_t id, int64_t deadline);
typedef struct rr_resp {
    const void *data;  /* Str: the bytes; Int: an error's name (RR_FLAG_ERROR) */
    uint32_t len;
    uint32_t flags;    /* RR_FLAG_* */
    int64_t value;     /* Int, unless RR_FLAG_ERROR */
} rr_resp;
int rr_resp_view(rr_chan *c, uint64_t id, rr_resp *r);
/* As rr_resp_view, for a reply kept pinned (SPEC §9): nobody else may look
 * at it then (a view or a pin of it is -ESTALE: collected) until
 * rr_resp_unpin frees it (free) or gives it back unread (!free). -EAGAIN
 * while the reply is not there; -EBUSY while somebody views it
 * (rr_resp_view), -EPERM if the request is not this process's (only its
 * owner pins, so that the sweep of a dead owner is the sweep of the pin's
 * holder): view and copy it instead. */
int rr_resp_pin(rr_chan *c, uint64_t id, rr_resp *r);
int rr_resp_unpin(rr_chan *c, uint64_t id, int free);
int rr_resp_release(rr_chan *c, uint64_t id);
int rr_resp_unview(rr_chan *c, uint64_t id);
int rr_resp_discard(rr_chan *c, uint64_t id);
/* Int, without the READING pin: 0 with *value once replied (then
 * rr_resp_discard frees the slot, and if it fails, what was read is void),
 * -EAGAIN while the reply is not there, -ESTALE if it never will be,
 * -EREMOTEIO if the reply is an error, -EBUSY if somebody views it (a
 * reader that may have died or stopped doing so): then rr_resp_view shows
 * it, a second look, and rr_resp_release frees it. */
int rr_int_peek(rr_chan *c, uint64_t id, int64_t *value);
/* 0 = cancelled: no reply will ever be delivered (a reply being written
 * loses: its writer frees the slot); -EBUSY = the complete reply is there
 * (collect it); -ESTALE = not a pending request. */
int rr_cancel(rr_chan *c, uint64_t id);
/* Where request `id` stands now: 1 replied, 0 pending, -ESTALE, or
 * -EOWNERDEAD if the worker that took it (or writes its reply) is dead
 * (checked now: a syscall). */
int rr_resp_check(rr_chan *c, uint64_t id);
/* After -EOWNERDEAD: frees the slot of a request whose worker died (0), or
 * finds it moved on: -EBUSY the reply is there after all (collect it),
 * -EAGAIN a live worker has it now (wait on), -ESTALE not pending. */
int rr_resp_abandon_dead(rr_chan *c, uint64_t id);
/* The pid of the worker that took request `id` (or writes its reply), or 0. */
int rr_resp_worker(rr_chan *c, uint64_t id);
/* Frees the response slots of dead clients (also done now and then by sends). */
void rr_reclaim(rr_chan *c);
/* 1 if id is a request that is pending (not free, not recycled, not cancelled). */
int rr_id_live(rr_chan *c, uint64_t id);

/* ---- event-loop clients: bells ----
 * A handle that claims a bell makes every request it sends ring that bell on
 * reply; a helper thread of the event loop sleeps on it with rr_bell_wait. */
int rr_bell_claim(rr_chan *c);           /* 0, or -EBUSY when all are taken */
void rr_bell_release(rr_chan *c);
uint32_t rr_bell_seq(rr_chan *c);        /* the count to pass to rr_bell_wait */
int rr_bell_wait(rr_chan *c, uint32_t seen, int64_t deadline); /* 0 once it moved */
void rr_bell_poke(rr_chan *c);           /* rings this handle's own bell (to stop a waiter) */
/* Waits until a request is queued without taking it or the lock (0, or
 * -EAGAIN at the deadline): for callers that must not hold the lock while
 * they block on something else, such as taking back an interpreter lock. */
int rr_wait_request(rr_chan *c, int64_t deadline);
/* Ends a wait in rr_wait_request on this handle (-ECANCELED; if none is under
 * way, the next one returns that at once). Receivers elsewhere wake, look
 * again and, finding nothing, sleep again. For stopping a helper thread. */
void rr_wake_receivers(rr_chan *c);

/* Hints for a caller that spins on its own before a wait (one that holds
 * something it would give up to sleep, such as an interpreter lock): a
 * request may be queued; the reply to `id` may be there, or `id` has moved
 * on. Lock-free loads only, no write to shared memory: spin on the hint, and
 * make the real call (RR_TRY: one look) once it says yes (1). Any thread. */
int rr_request_hint(rr_chan *c);
int rr_resp_hint(rr_chan *c, uint64_t id);

/* ---- management ---- */
int rr_clear(rr_chan *c);
uint64_t rr_size(rr_chan *c);
int rr_sync(rr_chan *c);

typedef struct rr_stats {
    uint64_t requests, replies, send_full, recv_empty, recoveries;
    uint64_t size, capacity;
    uint32_t resp_slots, resp_size;
    uint32_t slots_free, slots_acquired, slots_ready;
    uint64_t arena_cap, arena_used;
} rr_stats;
/* A snapshot without the lock (arena_used is an estimate while sends run). */
void rr_get_stats(rr_chan *c, rr_stats *s);

/* ---- the file format, for tools and tests that look inside a channel ----
 * Every field of the shared structs ("header", "str_cell", "int_cell", "slot",
 * "bell": offset in its struct and size in bytes) and every constant of the
 * format and its words (size 0), taken from the core's own definitions. */
typedef struct rr_format_entry {
    const char *group;
    const char *name;
    uint64_t value;  /* a field's offset; a constant's value */
    uint32_t size;   /* a field's size; 0 for a constant */
} rr_format_entry;
const rr_format_entry *rr_format_describe(size_t *n);
/* 1 if process `pid`, whose start time (in clock ticks since boot) ends in
 * the low `bits` bits `start_bits` (0: unknown), is alive: the verdict the
 * core acts on when it takes back what a dead process held. */
int rr_process_alive(uint32_t pid, uint32_t start_bits, int bits);
/* Where this channel's regions lie in its file. */
typedef struct rr_regions {
    uint64_t off_bells, off_cells, off_slots, off_arena, slot_stride, total_size;
} rr_regions;
void rr_regions_of(const rr_chan *c, rr_regions *out);
/* Waits until the Str queue lock is free (taking it over from a dead holder
 * if need be) without keeping it: what to do after -EBUSY, before retrying. */
int rr_lock_settle(rr_chan *c, int64_t deadline);
/* Testing only: takes the Str queue lock and keeps it (kill the process to
 * see the lock taken over). */
int rr_test_hold_lock(rr_chan *c);

#endif
