#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "echo.h"

#include <stdlib.h>

#define INT_SALT UINT64_C(0x5bd1e9955bd1e995)
#define MAX_WINDOW 64

size_t echo_shared_size(const echo_cfg *cfg)
{
    return sizeof(echo_shared) + (size_t)cfg->producers * (size_t)cfg->per_producer;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

typedef struct pending {
    uint64_t id, tag;
    uint32_t len;
} pending;

static bool check_response(rr_chan *c, const echo_cfg *cfg, const pending *p, uint8_t *scratch)
{
    rr_resp r;
    int rc = rr_resp_view(c, p->id, &r);
    if (rc != 0) {
        tu_fail(__FILE__, __LINE__, "resp_view of a ready reply: %s", tu_err(rc));
        return false;
    }
    bool ok;
    if (cfg->variant == RR_VARIANT_STR) {
        ok = r.len == p->len;
        if (ok) {
            tu_fill_tagged(scratch, p->len, p->tag);
            const uint8_t *d = r.data;
            for (uint32_t i = 0; i < p->len && ok; i++)
                ok = d[i] == (uint8_t)(scratch[i] ^ 0xa5);
        }
        if (!ok)
            tu_fail(__FILE__, __LINE__, "response to %#llx (%u bytes) is wrong (%u bytes)",
                    (unsigned long long)p->tag, p->len, r.len);
    } else {
        int64_t want = ~(int64_t)(p->tag ^ INT_SALT);
        ok = r.value == want;
        if (!ok)
            tu_fail(__FILE__, __LINE__, "response to %#llx is %lld, expected %lld",
                    (unsigned long long)p->tag, (long long)r.value, (long long)want);
    }
    rc = rr_resp_release(c, p->id);
    if (rc != 0) {
        tu_fail(__FILE__, __LINE__, "resp_release: %s", tu_err(rc));
        return false;
    }
    atomic_fetch_add_explicit(&cfg->sh->collected, 1, memory_order_relaxed);
    return ok;
}

void echo_producer(rr_chan *c, const echo_cfg *cfg, int idx)
{
    pending out[MAX_WINDOW];
    int nout = 0;
    int window = cfg->window < MAX_WINDOW ? cfg->window : MAX_WINDOW;
    uint64_t seed = (uint64_t)idx * 7919 + 17;
    uint8_t *buf = malloc(cfg->max_len + 8), *scratch = malloc(cfg->max_len + 8);
    for (long seq = 0; seq < cfg->per_producer && tu_failures() == 0; seq++) {
        /* collect whatever is ready, in any order */
        for (int i = 0; i < nout;) {
            rr_resp r;
            int rc = rr_resp_view(c, out[i].id, &r);
            if (rc == 0) {
                check_response(c, cfg, &out[i], scratch);
                out[i] = out[--nout];
            } else {
                if (rc != -EAGAIN) {
                    tu_fail(__FILE__, __LINE__, "resp_view: %s", tu_err(rc));
                    goto done;
                }
                i++;
            }
        }
        uint64_t tag = (uint64_t)idx << 32 | (uint64_t)seq;
        uint32_t len = 8;
        if (cfg->variant == RR_VARIANT_STR) {
            uint64_t r = tu_rand(&seed);
            len = 8 + (uint32_t)(r % 4 == 0 ? tu_rand(&seed) % (cfg->max_len - 7)
                                            : tu_rand(&seed) % 32);
            tu_fill_tagged(buf, len, tag);
        }
        for (;;) {
            if (nout == window) {
                /* the oldest: wait for it */
                int rc = rr_resp_wait(c, out[0].id, cfg->deadline);
                if (rc != 0) {
                    tu_fail(__FILE__, __LINE__, "resp_wait for %#llx: %s",
                            (unsigned long long)out[0].tag, tu_err(rc));
                    goto done;
                }
                check_response(c, cfg, &out[0], scratch);
                out[0] = out[--nout];
            }
            /* While holding slots, never block long on a send: the slots we
             * hold may be what the others wait for. */
            int64_t dl = nout ? min64(tu_ms(2), cfg->deadline) : cfg->deadline;
            uint64_t id;
            int rc = cfg->variant == RR_VARIANT_STR
                ? rr_str_send(c, buf, len, (uint32_t)(seq & 1), dl, &id)
                : rr_int_send(c, (int64_t)(tag ^ INT_SALT), dl, &id);
            if (rc == 0) {
                out[nout++] = (pending){id, tag, len};
                break;
            }
            if (rc != -EAGAIN || rr_now_ns() >= cfg->deadline) {
                tu_fail(__FILE__, __LINE__, "send %#llx: %s", (unsigned long long)tag,
                        tu_err(rc));
                goto done;
            }
            atomic_fetch_add_explicit(&cfg->sh->send_retries, 1, memory_order_relaxed);
            if (nout) {
                /* make room: collect the oldest */
                int wrc = rr_resp_wait(c, out[0].id, cfg->deadline);
                if (wrc != 0) {
                    tu_fail(__FILE__, __LINE__, "resp_wait: %s", tu_err(wrc));
                    goto done;
                }
                check_response(c, cfg, &out[0], scratch);
                out[0] = out[--nout];
            }
        }
    }
    while (nout && tu_failures() == 0) {
        int rc = rr_resp_wait(c, out[0].id, cfg->deadline);
        if (rc != 0) {
            tu_fail(__FILE__, __LINE__, "final resp_wait for %#llx: %s",
                    (unsigned long long)out[0].tag, tu_err(rc));
            break;
        }
        check_response(c, cfg, &out[0], scratch);
        out[0] = out[--nout];
    }
done:
    atomic_fetch_add(&cfg->sh->producers_done, 1);
    free(buf);
    free(scratch);
}

static bool count_request(const echo_cfg *cfg, uint64_t tag)
{
    uint64_t p = tag >> 32, seq = tag & 0xffffffffu;
    if (p >= (uint64_t)cfg->producers || seq >= (uint64_t)cfg->per_producer) {
        tu_fail(__FILE__, __LINE__, "request with an impossible tag %#llx",
                (unsigned long long)tag);
        return false;
    }
    uint8_t before = atomic_fetch_add(&cfg->sh->seen[p * cfg->per_producer + seq], 1);
    if (before != 0) {
        tu_fail(__FILE__, __LINE__, "request %#llx delivered %u times",
                (unsigned long long)tag, before + 1);
        return false;
    }
    atomic_fetch_add_explicit(&cfg->sh->received, 1, memory_order_relaxed);
    return true;
}

#define BATCH 16

void echo_consumer(rr_chan *c, const echo_cfg *cfg, int idx)
{
    uint64_t seed = (uint64_t)idx * 104729 + 3;
    uint8_t *bufs = malloc((size_t)BATCH * (cfg->max_len + 8));
    uint32_t lens[BATCH];
    uint64_t ids[BATCH];
    while (tu_failures() == 0) {
        if (atomic_load(&cfg->sh->producers_done) == cfg->producers)
            break; /* every response was collected: nothing can be left */
        int64_t now = rr_now_ns();
        if (now >= cfg->deadline) {
            tu_fail(__FILE__, __LINE__, "consumer %d: run deadline passed", idx);
            break;
        }
        int64_t dl = min64(now + 20000000, cfg->deadline);
        if (cfg->variant == RR_VARIANT_INT) {
            int64_t v;
            uint64_t id;
            int rc = rr_int_recv(c, dl, &v, &id);
            if (rc == -EAGAIN)
                continue;
            if (rc != 0) {
                tu_fail(__FILE__, __LINE__, "int_recv: %s", tu_err(rc));
                break;
            }
            uint64_t tag = (uint64_t)v ^ INT_SALT;
            count_request(cfg, tag);
            rc = rr_int_reply(c, id, ~v);
            if (rc != 0)
                tu_fail(__FILE__, __LINE__, "int_reply: %s", tu_err(rc));
            continue;
        }
        int n = rr_str_recv_begin(c, dl);
        if (n == -EAGAIN)
            continue;
        if (n <= 0) {
            tu_fail(__FILE__, __LINE__, "recv_begin: %d (%s)", n, tu_err(n));
            break;
        }
        uint32_t k = 1 + (uint32_t)(tu_rand(&seed) % (uint64_t)(n < BATCH ? n : BATCH));
        for (uint32_t i = 0; i < k; i++) {
            rr_entry e;
            int rc = rr_str_recv_peek(c, i, &e);
            if (rc != 0 || e.len > cfg->max_len) {
                tu_fail(__FILE__, __LINE__, "peek: %s, len %u", tu_err(rc), e.len);
                k = i;
                break;
            }
            memcpy(bufs + (size_t)i * (cfg->max_len + 8), e.data, e.len);
            lens[i] = e.len;
            ids[i] = e.id;
        }
        rr_str_recv_end(c, k);
        for (uint32_t i = 0; i < k; i++) {
            uint8_t *d = bufs + (size_t)i * (cfg->max_len + 8);
            uint64_t tag;
            if (!tu_check_tagged(d, lens[i], &tag)) {
                tu_fail(__FILE__, __LINE__, "request of %u bytes is corrupt", lens[i]);
                continue;
            }
            count_request(cfg, tag);
            for (uint32_t j = 0; j < lens[i]; j++)
                d[j] ^= 0xa5;
            int rc = rr_str_reply(c, ids[i], d, lens[i], 0);
            if (rc != 0)
                tu_fail(__FILE__, __LINE__, "str_reply: %s", tu_err(rc));
        }
    }
    free(bufs);
}

void echo_verify(rr_chan *c, const echo_cfg *cfg)
{
    long missing = 0, dup = 0;
    for (long i = 0; i < (long)cfg->producers * cfg->per_producer; i++) {
        uint8_t s = atomic_load(&cfg->sh->seen[i]);
        if (s == 0 && missing++ < 5)
            tu_fail(__FILE__, __LINE__, "request %#llx never delivered",
                    (unsigned long long)((uint64_t)(i / cfg->per_producer) << 32
                                         | (uint64_t)(i % cfg->per_producer)));
        if (s > 1)
            dup++;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);
    uint64_t total = (uint64_t)cfg->producers * (uint64_t)cfg->per_producer;
    CHECK_EQ(atomic_load(&cfg->sh->received), total);
    CHECK_EQ(atomic_load(&cfg->sh->collected), total);
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK_EQ(s.size, 0);
    CHECK_EQ(s.slots_free, s.resp_slots);
    CHECK_EQ(s.slots_ready, 0);
    CHECK_EQ(s.slots_acquired, 0);
    if (cfg->variant == RR_VARIANT_STR)
        CHECK_EQ(s.arena_used, 0);
    tu_note("%llu requests, %llu send retries, stats: requests %llu replies %llu "
            "send_full %llu recv_empty %llu",
            (unsigned long long)total, (unsigned long long)atomic_load(&cfg->sh->send_retries),
            (unsigned long long)s.requests, (unsigned long long)s.replies,
            (unsigned long long)s.send_full, (unsigned long long)s.recv_empty);
}
