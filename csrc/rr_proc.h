/* Process identity and liveness: this process as the words it writes into
 * shared memory name it (rr_format.h encodes them), and whether the process
 * such a word names is alive. The verdict every recovery acts on: a word is
 * taken back only from a process this says is dead.
 *
 * uses: rr_format.h (and reqrep.h: rr_self_pid, rr_process_alive) */
#ifndef RR_PROC_H
#define RR_PROC_H

#include "rr_format.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* This process's identity word (rr_ident: start time << 32 | pid). Cached,
 * and recomputed in a forked child. Thread-safe, async-signal-unsafe on the
 * first call (reads /proc). Inline: every lock, acquire and claim asks. */
extern _Atomic uint64_t rr_self_ident_cache; /* 0 until computed (again after a fork) */
/* The slow path: reads /proc/self's start time, fills the cache. */
uint64_t rr_self_ident_compute(void);
static inline uint64_t rr_self_ident(void)
{
    /* relaxed: each thread computes the same value, any copy is right */
    uint64_t v = atomic_load_explicit(&rr_self_ident_cache, memory_order_relaxed);
    return v ? v : rr_self_ident_compute();
}

/* Whether the process of an identity word (a lock holder, a bell owner) is
 * alive. A syscall or two; never "dead" for a process that lives (when in
 * doubt: alive). Thread-safe. */
bool rr_ident_alive(uint64_t ident);

/* The same for the process bits of a slot's owner word or worker record. */
static inline bool rr_proc_alive(uint64_t w)
{
    return rr_process_alive(rr_proc_pid(w), rr_proc_start(w), RR_WORKER_START_BITS);
}

/* The same for the `who` of an Int cell's turn. */
static inline bool rr_who_alive(uint32_t who)
{
    return rr_process_alive(rr_who_pid(who), rr_who_start(who), RR_WHO_START_BITS);
}

#endif
