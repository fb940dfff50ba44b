/* Ordering helpers: every fence the core issues, the relaxed access to a
 * plain field that another process may read or write at the same time, and
 * the pause in a spin loop. They only say how; each use says which access it
 * pairs with.
 *
 * uses: nothing of the core (<stdatomic.h>) */
#ifndef RR_BARRIER_H
#define RR_BARRIER_H

#include <stdatomic.h>

/* A full barrier: orders earlier loads and stores against later ones
 * (store-load included). For the Dekker-style pairs of the sleep protocols. */
static inline void rr_fence_full(void) { atomic_thread_fence(memory_order_seq_cst); }

/* Later loads and stores stay after earlier loads (a load + this = acquire). */
static inline void rr_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }

/* Earlier loads and stores stay before later stores (this + a store = release). */
static inline void rr_fence_release(void) { atomic_thread_fence(memory_order_release); }

/* A full barrier after an atomic read-modify-write: on x86 every locked
 * instruction is one already, so only the compiler must be kept from moving
 * later loads above the RMW; elsewhere a real fence. What a waker uses when
 * its change ended with an RMW (rr_wait.h's *_after_rmw wakes). */
static inline void rr_fence_after_rmw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    atomic_signal_fence(memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* A relaxed atomic load or store of a plain (not _Atomic) field of shared
 * memory: no ordering, but no torn or invented access either, and no data
 * race for the sanitizers. */
#define RR_READ_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define RR_WRITE_ONCE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* The pause of a spin loop: lets the sibling hyper-thread run, saves power. */
static inline void rr_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
