/* Test-only hooks. Test builds (-DRR_TEST_HOOKS, csrc/tests/run.sh only)
 * call these where a race is too narrow to hit otherwise; other builds
 * compile RR_TEST_HOOK to nothing.
 *
 *   rr_test_before_sleep  between a sleeper's last look at its handle's
 *                         interrupt flag and its futex call (rr_wait.c)
 *   rr_test_mid_unclaim   between an abort's two CASes: ctl back to
 *                         ACQUIRED, the writing record not yet replaced
 *                         (rr_slots.c)
 *   rr_test_before_verdict  between a freer's read of the worker record and
 *                         its verdict on that record's process
 *                         (rr_slots.c: abandon_dead, the sweep)
 *
 * uses: nothing */
#ifndef RR_TEST_HOOKS_H
#define RR_TEST_HOOKS_H

/* Defined (by rr_wait.c, rr_slots.c) only in test builds. */
extern void (*rr_test_before_sleep)(void);
extern void (*rr_test_mid_unclaim)(void);
extern void (*rr_test_before_verdict)(void);

#ifdef RR_TEST_HOOKS
#define RR_TEST_HOOK(fn) \
    do {                 \
        if (fn)          \
            fn();        \
    } while (0)
#else
#define RR_TEST_HOOK(fn) ((void)0)
#endif

#endif
