/* Bells: wake-ups for clients that wait in an event loop rather than in a
 * call. A handle claims one of the channel's RR_BELLS bells; every request it
 * sends then rings that bell on reply, and a helper thread of the event loop
 * sleeps on it. A bell is an event count: ringing bumps seq, so a sleeper
 * that read seq before looking at its requests cannot miss a reply.
 *
 * Errors as in reqrep.h. uses: rr_format.h, rr_wait.h */
#ifndef RR_BELLS_H
#define RR_BELLS_H

#include "rr_format.h"
#include "rr_wait.h"

#include <stdint.h>

/* A handle's bell. `mine` is the handle's alone (rr_bell_claim and
 * rr_bell_release are not to race each other on one handle). */
typedef struct rr_bells {
    rr_bell *base;     /* the channel's bells, in the mapping */
    uint32_t mine;     /* 1 + the bell this handle claimed, 0 = none */
    rr_waiter *wait;   /* the handle's */
} rr_bells;

/* rr_bell_claim, rr_bell_release, rr_bell_seq, rr_bell_wait, rr_bell_poke:
 * their contracts are in reqrep.h. */
int rr_bells_claim(rr_bells *b);
void rr_bells_release(rr_bells *b);
uint32_t rr_bells_seq(rr_bells *b);
int rr_bells_wait(rr_bells *b, uint32_t seen, int64_t deadline);
void rr_bells_poke(rr_bells *b);
/* Rings bell `idx` of the channel (a replier, for the requester). */
void rr_bell_ring(rr_bell *base, uint32_t idx);

#endif
