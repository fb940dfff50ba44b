/* Layout: a geometry's checks and normal form, where it puts each region of
 * the file, and the validation of a header read from a file (contracts in
 * rr_layout.h and reqrep.h). Pure functions of their arguments. */
#include "rr_layout.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int rr_fail(rr_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->why, sizeof err->why, fmt, ap);
        va_end(ap);
        err->unready = 0;
    }
    return code;
}

static const char *variant_name(uint32_t v)
{
    return v == RR_VARIANT_STR ? "Str" : v == RR_VARIANT_INT ? "Int" : "unknown";
}

/* A codec name: NUL-terminated within its field, printable ASCII before. */
static bool codec_ok(const char *name)
{
    for (uint32_t i = 0; i < RR_CODEC_MAX; i++) {
        if (name[i] == 0)
            return true;
        if (name[i] < '!' || name[i] > '~')
            return false;
    }
    return false;
}

static uint32_t pow2_ceil(uint32_t x)
{
    uint32_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

int rr_geometry_normalise(rr_geometry *g, rr_error *err)
{
    if (g->variant != RR_VARIANT_STR && g->variant != RR_VARIANT_INT)
        return rr_fail(err, -EINVAL, "unknown variant %u", g->variant);
    if (g->req_cap < 1 || g->req_cap > RR_MAX_REQ_CAP)
        return rr_fail(err, -EINVAL, "req_cap must be between 1 and %u", RR_MAX_REQ_CAP);
    if (g->resp_slots < 1 || g->resp_slots > RR_MAX_RESP_SLOTS)
        return rr_fail(err, -EINVAL, "resp_slots must be between 1 and %u", RR_MAX_RESP_SLOTS);
    if (!codec_ok(g->codec))
        return rr_fail(err, -EINVAL, "a codec's name is at most %u printable ASCII characters",
                       RR_CODEC_MAX - 1);
    if (g->variant == RR_VARIANT_INT && g->codec[0])
        return rr_fail(err, -EINVAL, "Int channels have no codec");
    g->req_cap = pow2_ceil(g->req_cap);
    if (g->variant == RR_VARIANT_INT) {
        g->resp_size = 0;
        g->arena = 0;
    } else {
        if (g->resp_size < 1 || g->resp_size > RR_MAX_RESP_SIZE)
            return rr_fail(err, -EINVAL, "resp_size must be between 1 and %u", RR_MAX_RESP_SIZE);
        if (g->arena == 0) {
            g->arena = (uint64_t)g->req_cap * 256;
            if (g->arena < RR_MIN_ARENA)
                g->arena = RR_MIN_ARENA;
        }
        if (g->arena < RR_MIN_ARENA || g->arena > RR_MAX_ARENA)
            return rr_fail(err, -EINVAL, "arena must be between %u and %llu bytes", RR_MIN_ARENA,
                        (unsigned long long)RR_MAX_ARENA);
        g->arena = RR_ROUND_UP(g->arena, (uint64_t)RR_LINE);
    }
    rr_hdr_geom h;
    return rr_layout_compute(g, &h) == 0 ? 0
        : rr_fail(err, -EINVAL, "channel too large (over %llu bytes)",
                  (unsigned long long)RR_MAX_TOTAL);
}

int rr_layout_compute(const rr_geometry *g, rr_hdr_geom *h)
{
    memset(h, 0, sizeof *h);
    h->version = RR_FORMAT_VERSION;
    h->variant = g->variant;
    h->req_cap = g->req_cap;
    h->resp_slots = g->resp_slots;
    h->resp_size = g->resp_size;
    h->slot_stride = RR_SLOT_HEADER + RR_ROUND_UP(g->resp_size, RR_LINE);
    h->arena_cap = g->arena;
    h->off_bells = RR_HEADER_SIZE;
    h->off_cells = h->off_bells + RR_BELLS * sizeof(rr_bell);
    h->off_slots = h->off_cells + (uint64_t)g->req_cap * RR_LINE;
    h->off_arena = h->off_slots + (uint64_t)g->resp_slots * h->slot_stride;
    h->total_size = RR_ROUND_UP(h->off_arena + h->arena_cap, (uint64_t)RR_PAGE);
    memcpy(h->codec, g->codec, sizeof h->codec);
    return h->total_size <= RR_MAX_TOTAL ? 0 : -EFBIG;
}

/* Accept a header only if it is exactly what its own geometry implies: that
 * rules out forged offsets, overlapping regions and sizes beyond the file. */
int rr_layout_validate(const rr_hdr_geom *h, uint64_t file_size, uint32_t variant, rr_error *err)
{
    uint64_t magic = atomic_load_explicit(&h->magic, memory_order_relaxed);
    if (magic != RR_MAGIC)
        return rr_fail(err, -RR_EFORMAT, "not a reqrep channel (bad magic)");
    if (h->version != RR_FORMAT_VERSION)
        return rr_fail(err, -RR_EFORMAT, "format version %u, this reqrep reads version %u",
                    h->version, RR_FORMAT_VERSION);
    if (h->variant != RR_VARIANT_STR && h->variant != RR_VARIANT_INT)
        return rr_fail(err, -RR_EFORMAT, "unknown channel variant %u", h->variant);
    if (variant && h->variant != variant)
        return rr_fail(err, -RR_EFORMAT, "is a %s channel, opened as %s", variant_name(h->variant),
                    variant_name(variant));
    if (!codec_ok(h->codec) || (h->variant == RR_VARIANT_INT && h->codec[0]))
        return rr_fail(err, -RR_EFORMAT, "impossible codec name in header");
    rr_geometry g = {h->variant, h->req_cap, h->resp_slots, h->resp_size, h->arena_cap, ""};
    bool geom_ok = h->req_cap >= 1 && h->req_cap <= RR_MAX_REQ_CAP
        && (h->req_cap & (h->req_cap - 1)) == 0 && h->resp_slots >= 1
        && h->resp_slots <= RR_MAX_RESP_SLOTS;
    if (h->variant == RR_VARIANT_STR)
        geom_ok = geom_ok && h->resp_size >= 1 && h->resp_size <= RR_MAX_RESP_SIZE
            && h->arena_cap >= RR_MIN_ARENA && h->arena_cap <= RR_MAX_ARENA
            && h->arena_cap % RR_LINE == 0;
    else
        geom_ok = geom_ok && h->resp_size == 0 && h->arena_cap == 0;
    rr_hdr_geom want;
    if (!geom_ok || rr_layout_compute(&g, &want) != 0)
        return rr_fail(err, -RR_EFORMAT, "impossible geometry in header");
    if (h->slot_stride != want.slot_stride || h->off_bells != want.off_bells
        || h->off_cells != want.off_cells
        || h->off_slots != want.off_slots || h->off_arena != want.off_arena
        || h->total_size != want.total_size)
        return rr_fail(err, -RR_EFORMAT, "region offsets do not match the geometry");
    if (h->total_size != file_size)
        return rr_fail(err, -RR_EFORMAT, "file is %llu bytes, header says %llu",
                    (unsigned long long)file_size, (unsigned long long)h->total_size);
    return 0;
}
