/* An echo workload shared by the thread and process tests: producers send
 * tagged requests and check every response against its request; consumers
 * check every request and count it (exactly once), then reply. The state
 * lives in MAP_SHARED memory so threads and forked processes can share it. */
#ifndef RR_ECHO_H
#define RR_ECHO_H

#include "tu.h"

typedef struct echo_shared {
    _Atomic int producers_done;
    _Atomic int stop_pollers;
    _Atomic uint64_t received, collected, send_retries;
    _Atomic uint8_t seen[]; /* producers * per_producer */
} echo_shared;

typedef struct echo_cfg {
    uint32_t variant;
    int producers, consumers;
    long per_producer;
    int window;         /* requests in flight per producer */
    uint32_t max_len;   /* Str payload: 8 .. max_len bytes */
    int64_t deadline;   /* for the whole run */
    echo_shared *sh;
} echo_cfg;

size_t echo_shared_size(const echo_cfg *cfg);
void echo_producer(rr_chan *c, const echo_cfg *cfg, int idx);
void echo_consumer(rr_chan *c, const echo_cfg *cfg, int idx);
/* Every request seen exactly once, every slot back, the queue empty. */
void echo_verify(rr_chan *c, const echo_cfg *cfg);

#endif
