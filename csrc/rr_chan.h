/* The process-local handle on a channel (rr_chan in reqrep.h): the mapping,
 * a private copy of the geometry, and the part of the handle each module
 * keeps, composed. Built, shared and closed by rr_open.c; its operations
 * are rr_chan.c's, which reach the request queue through `ops`.
 *
 * uses: rr_format.h, rr_wait.h, rr_bells.h, rr_slots.h, rr_strq.h, rr_intq.h */
#ifndef RR_CHAN_H
#define RR_CHAN_H

#include "rr_bells.h"
#include "rr_format.h"
#include "rr_intq.h"
#include "rr_slots.h"
#include "rr_strq.h"
#include "rr_wait.h"

#include <stdint.h>

/* A mapping of a channel, shared by the handles made from one open
 * (rr_chan_share) and freed with the last of them. */
typedef struct rr_map {
    _Atomic uint32_t refs;
    uint8_t *base;
    uint64_t size;
    int fd;          /* file or memfd, -1 for anonymous */
    int is_memfd;
} rr_map;

struct rr_chan {
    rr_map *map;
    rr_header *hdr;
    rr_geometry geom;          /* private copy, validated at open: never re-read */
    const rr_queue_ops *ops;   /* the request queue's (rr_strq_ops or rr_intq_ops) */
    union {
        rr_ring ring;          /* what both have first */
        rr_strq strq;
        rr_intq intq;
    } q;                       /* the request queue's state, for `ops` */
    rr_slots slots;
    rr_bells bells;
    _Atomic uint32_t stop_wait; /* rr_wake_receivers: end this handle's rr_wait_request */
    rr_waiter wait;             /* this handle's waits; the parts above point at it */
};

#endif
