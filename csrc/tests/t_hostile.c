/* Hostile files: truncated, extended, zero, foreign, forged headers, garbage
 * bodies. Opening must refuse bad headers with -RR_EFORMAT (never map them),
 * and no content of a mapped channel may make a call read or write outside
 * the mapping (ASan watches) or block past its deadline (alarm watches). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tu.h"
#include "format_info.h"
#include "rr_chan.h"   /* the handle: where its regions lie */
#include "rr_layout.h" /* rr_hdr_geom, rr_layout_compute */

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STR RR_VARIANT_STR
#define INT RR_VARIANT_INT

typedef struct image {
    uint8_t *b;
    size_t len;
    uint32_t variant;
    rr_geometry g;
} image;

static bool make_image(uint32_t variant, image *im)
{
    char p[512];
    tu_path(p, sizeof p, variant == STR ? "img-str" : "img-int");
    im->variant = variant;
    im->g = variant == STR ? tu_geom(STR, 16, 8, 200, 4096) : tu_geom(INT, 16, 8, 0, 0);
    rr_chan *c = NULL;
    rr_error err;
    int rc = rr_open_path(p, variant, &im->g, &c, &err);
    if (rc) {
        tu_fail(__FILE__, __LINE__, "create %s: %s", p, tu_err(rc));
        return false;
    }
    /* put something in it, so that bodies are not all zero */
    uint64_t id;
    if (variant == STR)
        rr_str_send(c, "some request", 12, 0, RR_NOWAIT, &id);
    else
        rr_int_send(c, 77, RR_NOWAIT, &id);
    im->len = rr_map_size(c);
    rr_close(c);
    im->b = malloc(im->len);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, im->b, im->len) == (ssize_t)im->len;
    if (fd >= 0)
        close(fd);
    unlink(p);
    if (!ok)
        tu_fail(__FILE__, __LINE__, "cannot read back %s", p);
    return ok;
}

static void write_bytes(const char *p, const void *b, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (len && write(fd, b, len) != (ssize_t)len))
        tu_fail(__FILE__, __LINE__, "cannot write %s", p);
    if (fd >= 0)
        close(fd);
}

static bool file_is(const char *p, const void *b, size_t len)
{
    struct stat st;
    if (stat(p, &st) != 0 || (size_t)st.st_size != len)
        return false;
    uint8_t *back = malloc(len ? len : 1);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    bool same = fd >= 0 && (len == 0 || read(fd, back, len) == (ssize_t)len)
        && memcmp(back, b, len) == 0;
    if (fd >= 0)
        close(fd);
    free(back);
    return same;
}

/* Every way of opening `b` must refuse it with -RR_EFORMAT and leave the file
 * untouched. Returns false if any accepted it. */
static bool refused(const char *what, const void *b, size_t len, uint32_t variant,
                    const rr_geometry *g)
{
    char p[512];
    tu_path(p, sizeof p, "hostile");
    write_bytes(p, b, len);
    bool ok = true;
    const uint32_t variants[] = {variant, 0};
    for (int k = 0; k < 2; k++) {
        rr_chan *c = NULL;
        rr_error err;
        err.why[0] = 0;
        int rc = rr_open_path(p, variants[k], NULL, &c, &err);
        if (rc != -RR_EFORMAT) {
            tu_fail(__FILE__, __LINE__, "%s: client open(variant %u) gave %d (%s), not RR_EFORMAT",
                    what, variants[k], rc, rc ? tu_err(rc) : "accepted");
            ok = false;
        } else if (!err.why[0]) {
            tu_fail(__FILE__, __LINE__, "%s: refused without a reason", what);
        }
        if (rc == 0)
            rr_close(c);
        if (variants[k]) {
            rc = rr_open_path(p, variants[k], g, &c, &err);
            if (rc != -RR_EFORMAT) {
                tu_fail(__FILE__, __LINE__, "%s: server open gave %d (%s), not RR_EFORMAT", what,
                        rc, rc ? tu_err(rc) : "accepted");
                ok = false;
            }
            if (rc == 0)
                rr_close(c);
        }
        int fd = open(p, O_RDWR | O_CLOEXEC);
        rc = rr_open_fd(fd, variants[k], &c, &err);
        close(fd);
        if (rc != -RR_EFORMAT) {
            tu_fail(__FILE__, __LINE__, "%s: rr_open_fd(variant %u) gave %d (%s), not RR_EFORMAT",
                    what, variants[k], rc, rc ? tu_err(rc) : "accepted");
            ok = false;
        }
        if (rc == 0)
            rr_close(c);
    }
    if (!file_is(p, b, len)) {
        tu_fail(__FILE__, __LINE__, "%s: a refused file was modified", what);
        ok = false;
    }
    tu_note("%s: refused", what);
    return ok;
}

TEST("hostile", hostile_truncated_extended_zero)
{
    for (uint32_t v = STR; v <= INT; v++) {
        image im;
        REQUIRE(make_image(v, &im));
        const size_t cuts[] = {1, 7, 8, 9, 63, 64, 100, 511, 512, 513, 4095, 4096,
                               im.len / 2, im.len - 4096, im.len - 64, im.len - 1};
        char what[128];
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            if (cuts[i] == 0 || cuts[i] >= im.len)
                continue;
            snprintf(what, sizeof what, "variant %u truncated to %zu of %zu", v, cuts[i], im.len);
            refused(what, im.b, cuts[i], v, &im.g);
        }
        /* extended */
        uint8_t *big = calloc(1, im.len + 8192);
        memcpy(big, im.b, im.len);
        const size_t grow[] = {1, 64, 4096, 8192};
        for (size_t i = 0; i < 4; i++) {
            snprintf(what, sizeof what, "variant %u extended by %zu", v, grow[i]);
            refused(what, big, im.len + grow[i], v, &im.g);
        }
        /* all zero: clients refuse it (servers initialise it: see t_unit) */
        memset(big, 0, im.len);
        char p[512];
        tu_path(p, sizeof p, "zero");
        write_bytes(p, big, im.len);
        rr_chan *c = NULL;
        rr_error err;
        CHECK_EQ(rr_open_path(p, v, NULL, &c, &err), -RR_EFORMAT);
        int fd = open(p, O_RDWR | O_CLOEXEC);
        CHECK_EQ(rr_open_fd(fd, v, &c, &err), -RR_EFORMAT);
        close(fd);
        /* zero-length, via the fd */
        write_bytes(p, big, 0);
        fd = open(p, O_RDWR | O_CLOEXEC);
        CHECK_EQ(rr_open_fd(fd, v, &c, &err), -RR_EFORMAT);
        close(fd);
        /* a zero magic with a body: a server must not overwrite it */
        memcpy(big, im.b, im.len);
        memset(big, 0, 8);
        snprintf(what, sizeof what, "variant %u without magic", v);
        refused(what, big, im.len, v, &im.g);
        free(big);
        free(im.b);
    }
}

typedef struct field {
    const char *name;
    size_t off, size;
} field;

#define F(x) {#x, offsetof(rr_hdr_geom, x), sizeof(((rr_hdr_geom *)0)->x)}
static const field fields[] = {
    F(version), F(variant), F(total_size), F(req_cap), F(resp_slots), F(resp_size), F(off_bells),
    F(slot_stride), F(arena_cap), F(off_cells), F(off_slots), F(off_arena),
};
#undef F
#define NFIELDS (sizeof fields / sizeof fields[0])

static uint64_t get_field(const uint8_t *b, const field *f)
{
    uint64_t v = 0;
    memcpy(&v, b + f->off, f->size);
    return v;
}

static void set_field(uint8_t *b, const field *f, uint64_t v)
{
    memcpy(b + f->off, &v, f->size);
}

static const field *field_named(const char *name)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static bool header_valid(const uint8_t *b, size_t len, uint32_t variant);

TEST("hostile", hostile_header_fields)
{
    for (uint32_t v = STR; v <= INT; v++) {
        image im;
        REQUIRE(make_image(v, &im));
        uint8_t *b = malloc(im.len);
        char what[160];
        /* the magic, byte by byte */
        for (int i = 0; i < 8; i++) {
            memcpy(b, im.b, im.len);
            b[i] ^= 0x5a;
            snprintf(what, sizeof what, "variant %u, magic byte %d flipped", v, i);
            refused(what, b, im.len, v, &im.g);
        }
        /* every geometry field, to a set of wrong values */
        for (size_t k = 0; k < NFIELDS; k++) {
            const field *f = &fields[k];
            uint64_t cur = get_field(im.b, f);
            uint64_t total = get_field(im.b, field_named("total_size"));
            const uint64_t cand[] = {
                0, 1, cur + 1, cur - 1, cur + 64, cur - 64, cur * 2, cur / 2, cur + 4096,
                total, total - 64, total + 4096, 512, 4096, 0x80000000u, 0xffffffffu,
                (uint64_t)1 << 40, ((uint64_t)1 << 40) + 64, (uint64_t)1 << 63, UINT64_MAX,
                UINT64_MAX - 63, v == STR ? INT : STR, 3,
            };
            for (size_t j = 0; j < sizeof cand / sizeof cand[0]; j++) {
                uint64_t val = cand[j];
                if (f->size == 4)
                    val &= 0xffffffffu;
                if (val == cur)
                    continue;
                memcpy(b, im.b, im.len);
                set_field(b, f, val);
                /* some changes leave a consistent header (resp_size 199 has
                 * the same slot stride as 200): those are not forgeries */
                if (header_valid(b, im.len, v))
                    continue;
                snprintf(what, sizeof what, "variant %u, %s = %llu (was %llu)", v, f->name,
                         (unsigned long long)val, (unsigned long long)cur);
                refused(what, b, im.len, v, &im.g);
            }
        }
        /* regions overlapping, with the other fields consistent */
        const field *fc = field_named("off_cells"), *fs = field_named("off_slots"),
                    *fa = field_named("off_arena");
        memcpy(b, im.b, im.len);
        set_field(b, fs, get_field(im.b, fc));
        refused("off_slots = off_cells", b, im.len, v, &im.g);
        memcpy(b, im.b, im.len);
        set_field(b, fa, get_field(im.b, fs));
        refused("off_arena = off_slots", b, im.len, v, &im.g);
        memcpy(b, im.b, im.len);
        set_field(b, fc, 0);
        refused("cells over the header", b, im.len, v, &im.g);
        free(b);
        free(im.b);
    }
}

/* A header consistent with itself and with a bigger file is a valid channel:
 * the geometry comes from the file, and it must work. */
TEST("hostile", hostile_consistent_geometry)
{
    image im;
    REQUIRE(make_image(STR, &im));
    rr_geometry g = im.g;
    g.arena = 4096 * 3;
    rr_hdr_geom want;
    REQUIRE_EQ(rr_layout_compute(&g, &want), 0);
    uint8_t *b = calloc(1, want.total_size);
    memcpy(b, im.b, RR_HEADER_SIZE);
    memcpy(b + 8, (uint8_t *)&want + 8, sizeof want - 8);
    char p[512];
    tu_path(p, sizeof p, "consistent");
    write_bytes(p, b, want.total_size);
    rr_chan *c = NULL;
    rr_error err;
    int rc = rr_open_path(p, STR, NULL, &c, &err);
    CHECK_MSG(rc == 0, "a consistent header was refused: %s (%s)", tu_err(rc), err.why);
    if (rc == 0) {
        CHECK_EQ(rr_geometry_of(c)->arena, 4096 * 3);
        uint64_t id;
        static uint8_t big[10000];
        tu_fill(big, sizeof big, 99);
        rr_stats s;
        rr_get_stats(c, &s);
        /* the queued request of the original image is still there (head/tail
         * were copied): take it first */
        int n = rr_str_recv_begin(c, tu_ms(100));
        if (n > 0)
            rr_str_recv_end(c, (uint32_t)n);
        CHECK_EQ(rr_str_send(c, big, sizeof big, 0, RR_NOWAIT, &id), 0);
        n = rr_str_recv_begin(c, tu_ms(100));
        CHECK_EQ(n, 1);
        if (n == 1) {
            rr_entry e;
            CHECK_EQ(rr_str_recv_peek(c, 0, &e), 0);
            CHECK(e.len == sizeof big && tu_check(e.data, e.len, 99) < 0);
            rr_str_recv_end(c, 1);
        }
        rr_close(c);
    }
    /* the same header in a file one page short, or one page long */
    write_bytes(p, b, want.total_size - 4096);
    refused("consistent header, file a page short", b, want.total_size - 4096, STR, &im.g);
    uint8_t *b2 = calloc(1, want.total_size + 4096);
    memcpy(b2, b, want.total_size);
    refused("consistent header, file a page long", b2, want.total_size + 4096, STR, &im.g);
    free(b2);
    free(b);
    free(im.b);
}

/* An independent statement of validity: the geometry is a fixed point of
 * rr_geometry_normalise, every offset is what that geometry implies, and the
 * file is exactly as large as the header says. */
static bool header_valid(const uint8_t *b, size_t len, uint32_t variant)
{
    if (len < sizeof(rr_hdr_geom))
        return false;
    rr_hdr_geom h;
    memcpy(&h, b, sizeof h);
    if (atomic_load(&h.magic) != RR_MAGIC || h.version != RR_FORMAT_VERSION || h.variant != variant)
        return false;
    rr_geometry g = {h.variant, h.req_cap, h.resp_slots, h.resp_size, h.arena_cap, ""}, g2 = g;
    rr_error err;
    if (rr_geometry_normalise(&g2, &err) != 0 || memcmp(&g, &g2, sizeof g) != 0)
        return false;
    rr_hdr_geom want;
    if (rr_layout_compute(&g, &want) != 0)
        return false;
    /* every offset field of the header, whatever the core adds */
    for (size_t i = 0; i < NFIELDS; i++)
        if (strncmp(fields[i].name, "off_", 4) == 0
            && get_field((const uint8_t *)&want, &fields[i]) != get_field(b, &fields[i]))
            return false;
    return want.off_cells == h.off_cells && want.off_slots == h.off_slots
        && want.off_arena == h.off_arena && want.slot_stride == h.slot_stride
        && want.total_size == h.total_size && h.total_size == len
        && h.off_cells >= RR_HEADER_SIZE && h.off_slots >= h.off_cells + (uint64_t)h.req_cap * RR_LINE
        && h.off_arena >= h.off_slots + (uint64_t)h.resp_slots * h.slot_stride
        && h.off_arena + h.arena_cap <= len;
}

/* Random damage to the header: whatever opens must be exactly valid. */
TEST_T("hostile", hostile_header_fuzz, 120)
{
    uint64_t seed = 0xfeedface;
    long iters = tu_n(1500);
    long accepted = 0;
    for (uint32_t v = STR; v <= INT; v++) {
        image im;
        REQUIRE(make_image(v, &im));
        uint8_t *b = malloc(im.len);
        char p[512];
        tu_path(p, sizeof p, "fuzz");
        for (long it = 0; it < iters; it++) {
            memcpy(b, im.b, im.len);
            size_t len = im.len;
            int kind = (int)(tu_rand(&seed) % 4);
            if (kind == 0) {
                /* a few random bytes anywhere in the geometry (magic kept) */
                int n = 1 + (int)(tu_rand(&seed) % 6);
                for (int i = 0; i < n; i++)
                    b[8 + tu_rand(&seed) % (sizeof(rr_hdr_geom) - 8)] = (uint8_t)tu_rand(&seed);
            } else if (kind == 1) {
                /* one field to a random or edge value */
                const field *f = &fields[tu_rand(&seed) % NFIELDS];
                uint64_t r = tu_rand(&seed);
                uint64_t cur = get_field(im.b, f);
                uint64_t val = r % 3 == 0 ? r : r % 3 == 1 ? cur + (r % 17) - 8 : cur ^ (1ull << (r % 64));
                set_field(b, f, val);
            } else if (kind == 2) {
                /* truncate and damage */
                len = 1 + tu_rand(&seed) % im.len;
                b[tu_rand(&seed) % len] ^= (uint8_t)(1 + tu_rand(&seed) % 255);
            } else {
                /* two fields at once */
                for (int i = 0; i < 2; i++) {
                    const field *f = &fields[tu_rand(&seed) % NFIELDS];
                    set_field(b, f, get_field(im.b, f) + (tu_rand(&seed) % 129) - 64);
                }
            }
            bool same = header_valid(b, len, v);
            write_bytes(p, b, len);
            rr_chan *c = NULL;
            rr_error err;
            int rc = rr_open_path(p, v, NULL, &c, &err);
            if (rc == 0) {
                accepted++;
                CHECK_MSG(same, "an invalid header was accepted (kind %d, len %zu)", kind, len);
                rr_stats s;
                rr_get_stats(c, &s);
                rr_close(c);
            } else {
                CHECK_MSG(rc == -RR_EFORMAT, "damaged header gave %d (%s)", rc, tu_err(rc));
                CHECK_MSG(!same, "a valid header was refused: %s", err.why);
            }
            /* a server must refuse it too, without writing */
            rc = rr_open_path(p, v, &im.g, &c, &err);
            if (rc == 0)
                rr_close(c);
            else if (!file_is(p, b, len))
                tu_fail(__FILE__, __LINE__, "server modified a file it refused (kind %d)", kind);
            if (tu_failures() > 20)
                break;
        }
        free(b);
        free(im.b);
    }
    tu_note("%ld of %ld damaged headers were still valid (harmless changes)", accepted, 2 * iters);
}

/* ---- garbage bodies under a valid header ---- */

static volatile uint64_t sink;

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    sink += s;
}

static void body_ops(rr_chan *c, uint32_t v, const uint8_t *img, uint64_t *seed)
{
    const rr_hdr_geom *h = (const rr_hdr_geom *)img;
    rr_format_info fi;
    rr_format(&fi);
    rr_stats s;
    rr_get_stats(c, &s);
    CHECK(s.size <= s.capacity);
    sink += rr_size(c);
    uint64_t id = 0;
    int64_t val;
    /* ids that match what the forged slots claim, and random ones */
    uint64_t ids[12];
    for (int i = 0; i < 12; i++) {
        uint32_t idx = (uint32_t)(tu_rand(seed) % (h->resp_slots + 2));
        uint64_t ctl = 0;
        if (idx < h->resp_slots)
            memcpy(&ctl, img + h->off_slots + (uint64_t)idx * h->slot_stride + fi.slot_off_ctl, 8);
        ids[i] = i % 3 == 2 ? tu_rand(seed) : (ctl & 0xffffffff00000000u) | idx;
    }
    if (v == STR) {
        for (int round = 0; round < 3; round++) {
            int n = rr_str_recv_begin(c, tu_ms(5));
            if (n > 0) {
                for (int i = 0; i < n && i < 64; i++) {
                    rr_entry e;
                    int rc = rr_str_recv_peek(c, (uint32_t)i, &e);
                    CHECK(rc == 0 || rc == -RR_EFORMAT);
                    if (rc == 0) {
                        CHECK(e.len <= rr_geometry_of(c)->arena);
                        touch(e.data, e.len);
                    }
                }
                rr_str_recv_end(c, (uint32_t)(tu_rand(seed) % ((uint64_t)n + 1)));
            } else {
                CHECK(n == -EAGAIN);
            }
            uint8_t buf[300];
            size_t len = tu_rand(seed) % sizeof buf;
            tu_fill(buf, len, 5);
            int rc = rr_str_send(c, buf, len, 0, tu_ms(5), &id);
            CHECK(rc == 0 || rc == -EAGAIN);
        }
        for (int i = 0; i < 12; i++) {
            rr_resp r;
            if (rr_resp_view(c, ids[i], &r) == 0) {
                CHECK(r.len <= rr_geometry_of(c)->resp_size);
                touch(r.data, r.len);
            }
            int rc = rr_resp_wait(c, ids[i], tu_ms(2));
            (void)rc;
            uint8_t buf[64];
            rr_str_reply(c, ids[i], buf, tu_rand(seed) % sizeof buf, 0);
            if (rr_resp_view(c, ids[i], &r) == 0)
                touch(r.data, r.len);
            rr_cancel(c, ids[i]);
            rr_resp_release(c, ids[i]);
            rr_id_live(c, ids[i]);
        }
    } else {
        for (int round = 0; round < 3; round++) {
            int rc = rr_int_recv(c, tu_ms(5), &val, &id);
            CHECK(rc == 0 || rc == -EAGAIN);
            if (rc == 0)
                rr_int_reply(c, id, val);
            rc = rr_int_send(c, round, tu_ms(5), &id);
            CHECK(rc == 0 || rc == -EAGAIN);
        }
        for (int i = 0; i < 12; i++) {
            rr_resp r;
            if (rr_resp_view(c, ids[i], &r) == 0)
                sink += (uint64_t)r.value;
            rr_resp_wait(c, ids[i], tu_ms(2));
            rr_int_reply(c, ids[i], 1);
            rr_cancel(c, ids[i]);
            rr_resp_release(c, ids[i]);
        }
    }
    rr_reclaim(c);
    rr_get_stats(c, &s);
    CHECK_EQ(rr_clear(c), 0);
    rr_get_stats(c, &s);
    /* Str: clear resets head to tail. Int: clear pops what it can; cells
     * whose turn is garbage stay (see fork_int_producer_died_mid_push). */
    if (v == STR)
        CHECK_EQ(s.size, 0);
}

TEST_T("hostile", hostile_body_fuzz, 120)
{
    rr_format_info fi;
    rr_format(&fi);
    uint64_t seed = 0xb0d1e5;
    long iters = tu_n(60);
    for (uint32_t v = STR; v <= INT; v++) {
        image im;
        REQUIRE(make_image(v, &im));
        uint8_t *b = malloc(im.len);
        char p[512];
        tu_path(p, sizeof p, "body");
        for (long it = 0; it < iters; it++) {
            memcpy(b, im.b, im.len);
            /* everything after the geometry: header counters, queue words,
             * waiter counts, cells, slots, arena */
            size_t from = fi.off_head;
            int mode = (int)(it % 3);
            for (size_t i = from; i < im.len; i++) {
                if (mode == 0)
                    b[i] = (uint8_t)tu_rand(&seed);
                else if (mode == 1 && tu_rand(&seed) % 16 == 0)
                    b[i] = (uint8_t)tu_rand(&seed);
                else if (mode == 2 && tu_rand(&seed) % 64 == 0)
                    b[i] = 0xff;
            }
            /* A lock naming a live process legitimately blocks; name nobody
             * (a dead or impossible pid must be taken over). */
            uint64_t lock = tu_rand(&seed);
            lock = (lock & ~(uint64_t)0x7fffffff) | (0x400000u + (uint32_t)(lock % 0x3fffffff));
            if (it % 4 == 0)
                lock = 0;
            memcpy(b + fi.off_lock, &lock, 8);
            write_bytes(p, b, im.len);
            rr_chan *c = NULL;
            rr_error err;
            int rc = rr_open_path(p, v, NULL, &c, &err);
            REQUIRE_EQ(rc, 0); /* the header is intact */
            body_ops(c, v, b, &seed);
            rr_close(c);
            if (tu_failures() > 20)
                break;
        }
        free(b);
        free(im.b);
    }
}

/* Forged queue words that used to reach past the arena or spin: a neighbour's
 * charge near 2^64, where offsets wrap (the arena's size need not divide
 * 2^64), and a head at 2^64 - 1, where a cell's mark is 1 + head = 0. */
TEST_T("hostile", hostile_queue_words_at_wrap, 60)
{
    rr_chan *c = tu_anon(STR, 4, 4, 64, 4352);
    REQUIRE(c);
    rr_header *h = c->hdr;
    uint64_t cap = c->geom.arena, wrap = UINT64_MAX / cap * cap, id;
    rr_str_cell *cell = (rr_str_cell *)c->q.ring.cells;
    cell[0].beg = 4096;
    cell[0].len = 1;
    cell[1].beg = wrap + 8;
    cell[1].len = 1;
    atomic_store(&h->head, 0);
    atomic_store(&h->tail, 2);
    h->seen_head = 0;
    h->seen_first = wrap + 8;
    static uint8_t big[4352];
    /* placed past the arena's end: refused as full, nothing written */
    CHECK_EQ(rr_str_send(c, big, sizeof big, 0, RR_NOWAIT, &id), -EAGAIN);
    CHECK_EQ(rr_str_send(c, big, 1000, 0, RR_NOWAIT, &id), -EAGAIN);
    int n = rr_str_recv_begin(c, RR_NOWAIT);
    CHECK_EQ(n, 2);
    if (n > 0)
        rr_str_recv_end(c, (uint32_t)n);
    /* drained: it starts again at the arena's beginning */
    CHECK_EQ(rr_str_send(c, big, sizeof big, 0, RR_NOWAIT, &id), 0);
    rr_close(c);

    c = tu_anon(STR, 4, 4, 64, 4096);
    REQUIRE(c);
    atomic_store(&c->hdr->head, UINT64_MAX);
    atomic_store(&c->hdr->tail, UINT64_MAX);
    int64_t t0 = rr_now_ns();
    CHECK_EQ(rr_str_recv_begin(c, tu_ms(200)), -EAGAIN);
    CHECK_EQ(rr_wait_request(c, tu_ms(200)), -EAGAIN); /* the mark no longer says "queued" */
    CHECK(rr_now_ns() - t0 < 5 * 1000000000LL);
    CHECK_EQ(rr_str_send(c, "x", 1, 0, RR_NOWAIT, &id), 0);
    CHECK_EQ(rr_str_recv_begin(c, tu_ms(1000)), 1);
    rr_str_recv_end(c, 1);
    rr_close(c);
}

/* ---- a header rewritten while it is being opened (SPEC §5) ---- */

/* The sanitizers' malloc hook (ASan, TSan; absent from the plain build):
 * it lets a test act at an exact point inside an open, the allocation of the
 * handle, which comes after the mapped header was checked. */
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *))
    __attribute__((weak));

static _Atomic(uint32_t *) rewrite_at_alloc; /* armed: the word to rewrite */
static _Atomic uint32_t rewrite_value;

static void rewrite_hook(const volatile void *p, size_t size)
{
    (void)p;
    uint32_t *w = size == sizeof(rr_chan) ? atomic_exchange(&rewrite_at_alloc, NULL) : NULL;
    if (w)
        *w = atomic_load(&rewrite_value);
}

static void rewrite_hook_free(const volatile void *p) { (void)p; }

typedef struct flipper {
    _Atomic uint32_t *req_cap, *resp_slots;
    uint32_t cap, slots;
    _Atomic int stop;
} flipper;

static void *flip_geometry(void *p)
{
    flipper *fl = p;
    while (!atomic_load_explicit(&fl->stop, memory_order_relaxed)) {
        atomic_store(fl->req_cap, fl->cap * 4);
        atomic_store(fl->resp_slots, fl->slots * 4);
        atomic_store(fl->req_cap, fl->cap);
        atomic_store(fl->resp_slots, fl->slots);
    }
    return NULL;
}

/* Another process rewrites the geometry while this one opens the file: what
 * opens must carry the geometry that was validated (the file's true one),
 * never a value read again from the file afterwards. Where the sanitizers'
 * hook exists, the rewrite lands exactly after the check; everywhere, a
 * thread also flips the header while the file is opened again and again. */
TEST_T("hostile", hostile_header_rewritten_while_opening, 60)
{
    rr_geometry g = tu_geom(STR, 16, 8, 200, 4096);
    rr_chan *c = NULL;
    rr_error err;
    REQUIRE_EQ(rr_open_memfd("rr-flip", &g, &c, &err), 0);
    rr_hdr_geom *h = (rr_hdr_geom *)c->map->base;
    static bool hooked;
    if (!hooked && __sanitizer_install_malloc_and_free_hooks)
        hooked = __sanitizer_install_malloc_and_free_hooks(rewrite_hook, rewrite_hook_free) != 0;
    if (hooked) {
        uint32_t *words[2] = {&h->req_cap, &h->resp_slots};
        for (int k = 0; k < 2; k++) {
            uint32_t keep = *words[k];
            atomic_store(&rewrite_value, keep * 4);
            atomic_store(&rewrite_at_alloc, words[k]);
            rr_chan *o = NULL;
            int rc = rr_open_fd(rr_memfd(c), STR, &o, &err);
            CHECK_MSG(atomic_load(&rewrite_at_alloc) == NULL, "the hook did not fire");
            atomic_store(&rewrite_at_alloc, NULL);
            *words[k] = keep;
            CHECK_MSG(rc == 0, "open: %s (%s)", tu_err(rc), err.why);
            if (rc == 0) {
                CHECK_EQ(rr_geometry_of(o)->req_cap, g.req_cap);
                CHECK_EQ(rr_geometry_of(o)->resp_slots, g.resp_slots);
                rr_close(o);
            }
        }
    } else {
        tu_note("no sanitizer malloc hook in this build: the thread race only");
    }
    flipper fl = {(_Atomic uint32_t *)&h->req_cap, (_Atomic uint32_t *)&h->resp_slots,
                  g.req_cap, g.resp_slots, 0};
    pthread_t t;
    REQUIRE_EQ(pthread_create(&t, NULL, flip_geometry, &fl), 0);
    long opened = 0, refused = 0, wrong = 0;
    int64_t until = tu_ms(1000);
    for (long i = 0; i < tu_n(100000) && rr_now_ns() < until; i++) {
        rr_chan *o = NULL;
        int rc = rr_open_fd(rr_memfd(c), STR, &o, &err);
        if (rc == 0) {
            opened++;
            const rr_geometry *og = rr_geometry_of(o);
            if (og->req_cap != g.req_cap || og->resp_slots != g.resp_slots)
                wrong++;
            rr_close(o);
        } else {
            CHECK_EQ(rc, -RR_EFORMAT);
            refused++;
        }
    }
    atomic_store(&fl.stop, 1);
    pthread_join(t, NULL);
    CHECK_MSG(wrong == 0, "%ld of %ld opens took a geometry other than the validated one", wrong,
              opened);
    tu_note("%ld opened, %ld refused (changed while opening)", opened, refused);
    rr_close(c);
}
