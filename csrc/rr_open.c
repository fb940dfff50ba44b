/* Opening: creating a channel's file (or anonymous memory, or a memfd) and
 * publishing its header, opening an existing one after validating it,
 * mapping it, and the handles on a mapping (built, shared, closed). The
 * contracts are in reqrep.h. */
#define _GNU_SOURCE
#include "rr_chan.h"
#include "rr_layout.h"
#include "rr_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(SYS_openat2) && __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define RR_HAVE_OPENAT2 1
#endif

/* A failed open of a channel that is not published yet: its reason for
 * people, and err->unready for rr_open_unready. */
static int fail_unready(rr_error *err, const char *detail)
{
    rr_fail(err, -RR_EFORMAT,
            "channel was never initialised (%s): open it with a Server to initialise it, "
            "or remove the file",
            detail);
    if (err)
        err->unready = 1;
    return -RR_EFORMAT;
}

/* Every open call starts with no reason and no verdict. */
static void err_reset(rr_error *err)
{
    err->why[0] = 0;
    err->unready = 0;
}

/* ---- handles ---- */

/* Builds handle c (zeroed) on mapping m laid out as h: each part pointed at
 * its region of the mapping and at the handle's waiter, and the request
 * queue's ops picked by variant (the one place that looks at it). h is the
 * caller's private copy of the geometry (validated, or computed by the
 * creator), never the shared header, which another process may rewrite at
 * any moment. */
static void chan_init(rr_chan *c, rr_map *m, const rr_hdr_geom *h)
{
    uint8_t *base = m->base;
    c->map = m;
    c->hdr = (rr_header *)base;
    c->geom = (rr_geometry){h->variant, h->req_cap, h->resp_slots, h->resp_size, h->arena_cap, ""};
    memcpy(c->geom.codec, h->codec, sizeof c->geom.codec); /* validated: NUL-terminated */
    rr_waiter_init(&c->wait, RR_DEFAULT_SPIN_US);
    rr_ring ring = {
        .hdr = c->hdr,
        .cells = base + h->off_cells,
        .mask = h->req_cap - 1,
        .cap = h->req_cap,
        .shift = (uint32_t)__builtin_ctz(h->req_cap),
        .wait = &c->wait,
        .slots = &c->slots,
    };
    if (h->variant == RR_VARIANT_STR) {
        c->ops = &rr_strq_ops;
        c->q.strq.ring = ring;
        c->q.strq.arena = base + h->off_arena;
        c->q.strq.arena_cap = h->arena_cap;
    } else {
        c->ops = &rr_intq_ops;
        c->q.intq.ring = ring;
    }
    c->bells.base = (rr_bell *)(base + h->off_bells);
    c->bells.wait = &c->wait;
    rr_slots *pool = &c->slots;
    pool->base = base + h->off_slots;
    pool->stride = h->slot_stride;
    pool->n = h->resp_slots;
    pool->resp_size = h->resp_size;
    pool->hdr = c->hdr;
    pool->bells = c->bells.base;
    pool->wait = &c->wait;
    pool->holds = c->ops->holds;
    pool->queue = &c->q;
    atomic_init(&pool->hint, (uint32_t)(rr_self_ident() * 2654435761u) % h->resp_slots);
}

static int chan_new(rr_map *m, const rr_hdr_geom *h, rr_chan **out)
{
    rr_chan *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    chan_init(c, m, h);
    *out = c;
    return 0;
}

static void map_unref(rr_map *m)
{
    /* acq_rel: the last dropper must see every other holder's use of the map */
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    munmap(m->base, m->size);
    if (m->fd >= 0)
        close(m->fd);
    free(m);
}

/* Maps `size` bytes of fd (or anonymous memory when fd < 0); takes the fd. */
static int map_new(int fd, uint64_t size, int is_memfd, rr_map **out)
{
    rr_map *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    int flags = MAP_SHARED | (fd < 0 ? MAP_ANONYMOUS : 0);
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (base == MAP_FAILED) {
        int e = -errno;
        free(m);
        return e;
    }
    atomic_init(&m->refs, 1);
    m->base = base;
    m->size = size;
    m->fd = fd;
    m->is_memfd = is_memfd;
    *out = m;
    return 0;
}

/* Writes the geometry into a zero-filled mapping and publishes the magic last,
 * so an opener that sees the magic sees a complete header. Every other region
 * is valid when all zero. */
static void init_header(rr_map *m, const rr_hdr_geom *want)
{
    rr_hdr_geom *h = (rr_hdr_geom *)m->base;
    memset(m->base, 0, RR_HEADER_SIZE);
    memcpy((uint8_t *)h + sizeof h->magic, (const uint8_t *)want + sizeof want->magic,
           sizeof *h - sizeof h->magic);
    /* release ↔ the acquire load of magic in open_existing */
    atomic_store_explicit(&h->magic, RR_MAGIC, memory_order_release);
}

/* Allocates the file's blocks now: a sparse file on a full file system (a
 * small tmpfs) would fail later, on a write to a hole, with SIGBUS. */
static int reserve(int fd, uint64_t size)
{
    int e;
    do
        e = posix_fallocate(fd, 0, (off_t)size);
    while (e == EINTR);
    /* a file system that cannot allocate ahead: as good as it gets there */
    return e == EOPNOTSUPP ? 0 : -e;
}

/* Sizes fd for geometry g (normalised), reserves its space and publishes a header. On
 * failure the file is left empty (its space released), and fd is the caller's. */
static int create_in_fd(int fd, const rr_geometry *g, int is_memfd, rr_chan **out, rr_error *err)
{
    rr_hdr_geom want;
    rr_layout_compute(g, &want);
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)want.total_size) != 0) {
        int e = errno;
        (void)ftruncate(fd, 0);
        return rr_fail(err, -e, "cannot size the file: %s", strerror(e));
    }
    int rc = reserve(fd, want.total_size);
    if (rc) {
        (void)ftruncate(fd, 0);
        return rr_fail(err, rc, "cannot reserve the channel's %llu bytes: %s",
                    (unsigned long long)want.total_size, strerror(-rc));
    }
    rr_map *m;
    rc = map_new(fd, want.total_size, is_memfd, &m);
    if (rc) {
        (void)ftruncate(fd, 0);
        return rr_fail(err, rc, "cannot map %llu bytes: %s", (unsigned long long)want.total_size,
                    strerror(-rc));
    }
    init_header(m, &want);
    rc = chan_new(m, &want, out);
    if (rc) {
        m->fd = -1; /* the caller still owns fd on failure */
        map_unref(m);
        (void)ftruncate(fd, 0);
    }
    return rc;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        done += (size_t)n;
    }
    return 0;
}

static int all_zero_from(int fd, uint64_t from, uint64_t size)
{
    uint8_t buf[65536];
    for (uint64_t off = from; off < size;) {
        size_t n = size - off < sizeof buf ? (size_t)(size - off) : sizeof buf;
        int rc = read_full(fd, buf, n, (off_t)off);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++)
            if (buf[i])
                return 0;
        off += n;
    }
    return 1;
}

/* 1 if the file holds a header of ours that a dead creator never published:
 * our geometry, no magic, and nothing but zeros after the header (a channel
 * that was ever used has more; one whose magic got lost is not ours to wipe). */
static int ours_unpublished(int fd, uint64_t size)
{
    rr_hdr_geom h;
    if (size < RR_HEADER_SIZE)
        return 0;
    int rc = read_full(fd, &h, sizeof h, 0);
    if (rc)
        return rc;
    if (h.version != RR_FORMAT_VERSION
        || (h.variant != RR_VARIANT_STR && h.variant != RR_VARIANT_INT)
        || h.off_cells != RR_HEADER_SIZE + RR_BELLS * sizeof(rr_bell))
        return 0;
    return all_zero_from(fd, RR_HEADER_SIZE, size);
}

static int all_zero(int fd, uint64_t size) { return all_zero_from(fd, 0, size); }

/* Opens the channel in fd after validating its header; takes fd on success. */
static int open_existing(int fd, uint32_t variant, int is_memfd, rr_chan **out, rr_error *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return rr_fail(err, -errno, "%s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return rr_fail(err, -RR_EFORMAT, "not a regular file");
    rr_hdr_geom h;
    uint64_t first = 0;
    int rc = st.st_size >= 8 ? read_full(fd, &first, sizeof first, 0) : 0;
    if (rc == 0)
        rc = st.st_size == 0 ? 1 : first != 0 ? 0 : all_zero(fd, (uint64_t)st.st_size);
    if (rc < 0)
        return rr_fail(err, rc, "cannot read the file: %s", strerror(-rc));
    if (rc)
        return fail_unready(err, st.st_size ? "all zero; its creator may have died"
                                            : "empty; its creator may have died");
    if ((uint64_t)st.st_size < RR_HEADER_SIZE)
        return rr_fail(err, -RR_EFORMAT, "file too small for a channel (%lld bytes)",
                    (long long)st.st_size);
    rc = read_full(fd, &h, sizeof h, 0);
    if (rc)
        return rr_fail(err, rc, "cannot read the header: %s", strerror(-rc));
    if (atomic_load_explicit(&h.magic, memory_order_relaxed) == 0)
        return ours_unpublished(fd, (uint64_t)st.st_size) == 1
            ? fail_unready(err, "header without magic: its creator died")
            : rr_fail(err, -RR_EFORMAT, "not a reqrep channel (no magic, not all zero)");
    rc = rr_layout_validate(&h, (uint64_t)st.st_size, variant, err);
    if (rc)
        return rc;
    rr_map *m;
    rc = map_new(fd, h.total_size, is_memfd, &m);
    if (rc)
        return rr_fail(err, rc, "cannot map the channel: %s", strerror(-rc));
    /* The file may have changed since pread: refuse a mapping whose header no
     * longer says what was validated. Even if it changes after this check,
     * the handle is built from (and only ever uses) the validated copy `h`. */
    rr_hdr_geom *mh = (rr_hdr_geom *)m->base;
    /* acquire ↔ the release store of magic in init_header */
    (void)atomic_load_explicit(&mh->magic, memory_order_acquire);
    if (memcmp((uint8_t *)mh + 8, (uint8_t *)&h + 8, sizeof h - 8) != 0) {
        m->fd = -1;
        map_unref(m);
        return rr_fail(err, -RR_EFORMAT, "header changed while opening");
    }
    /* Nor a file shrunk since fstat: its missing pages would SIGBUS. */
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < h.total_size) {
        m->fd = -1;
        map_unref(m);
        return rr_fail(err, -RR_EFORMAT, "file shrank while opening");
    }
    rc = chan_new(m, &h, out);
    if (rc) {
        m->fd = -1;
        map_unref(m);
    }
    return rc;
}

#define RR_FLOCK_WAIT_NS 5000000000LL /* a creator takes microseconds; a stuck one, forever */

/* flock, bounded: a creator stopped (not dead) while initialising must not
 * hang every opener. EINTR goes to the caller, who checks signals and retries. */
static int lock_file(int fd, int op, rr_error *err)
{
    int64_t give_up = rr_now_ns() + RR_FLOCK_WAIT_NS;
    for (;;) {
        if (flock(fd, op | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK)
            return -errno;
        if (rr_now_ns() >= give_up)
            return rr_fail(err, -ETIMEDOUT,
                        "timed out waiting for the file lock: another process is "
                        "initialising the channel, or is stuck doing so");
        struct timespec ts = {0, 1000000};
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
            return -EINTR;
    }
}

static int open_path_once(const char *path, uint32_t variant, const rr_geometry *create,
                          rr_open_opts *o, rr_chan **out, rr_error *err);
static int seal_shmem(int fd, rr_error *err);
#define RR_REOPEN 1 /* open_path_once: the path no longer names the file we locked */

#define RR_UNPUBLISHED_GRACE_NS 250000000LL

int rr_open_unready(int rc, const rr_error *err)
{
    return rc == -ENOENT || (rc == -RR_EFORMAT && err->unready);
}

int rr_open_path(const char *path, uint32_t variant, const rr_geometry *create, rr_chan **out,
                 rr_error *err)
{
    return rr_open_path_opts(path, variant, create, NULL, out, err);
}

int rr_open_path_opts(const char *path, uint32_t variant, const rr_geometry *create,
                      rr_open_opts *opts, rr_chan **out, rr_error *err)
{
    rr_open_opts dflt = {-1, 0, 0};
    rr_open_opts *o = opts ? opts : &dflt;
    o->initialised = 0;
    rr_geometry g;
    if (create) {
        err_reset(err);
        g = *create;
        g.variant = variant;
        int rc = rr_geometry_normalise(&g, err);
        if (rc)
            return rc;
        create = &g;
    }
    /* A client may open the file between its creator's open(O_CREAT) and
     * flock(): it then finds it empty. Give the creator a moment. */
    int64_t give_up = rr_now_ns() + RR_UNPUBLISHED_GRACE_NS;
    for (int again = 0;; again++) {
        int rc = open_path_once(path, variant, create, o, out, err);
        if (rc == RR_REOPEN && again < 1000)
            continue; /* the path names another file now: open that one */
        if (rc == RR_REOPEN)
            return rr_fail(err, -EAGAIN, "the file keeps being replaced");
        if (rc != -RR_EFORMAT || create || !err->unready || rr_now_ns() >= give_up)
            return rc;
        struct timespec ts = {0, 2000000};
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
            return -EINTR;
    }
}

/* 1 if `path` still names the file whose fstat is `st` (through a symbolic
 * link at `path`, if `follow`). */
static int same_file(const char *path, const struct stat *st, int follow)
{
    struct stat now;
    int rc = follow ? stat(path, &now) : lstat(path, &now);
    return rc == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

/* 1 if resolving `path` goes through a magic link (/proc/PID/fd/N, /dev/fd/N):
 * how a memfd, which has no name, is reached by path. */
static int through_magic_link(const char *path)
{
#ifdef RR_HAVE_OPENAT2
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno != ENOSYS)
        return errno == ELOOP; /* else gone or replaced meanwhile: not a magic link */
#endif
    struct stat st; /* before Linux 5.6: a link of any kind */
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

static void unlink_if_same(const char *path, int fd)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && same_file(path, &st, 0))
        (void)unlink(path);
}

/* open(2) of `path` failed with `e` (`nofollow`: with O_NOFOLLOW, as a
 * creator or a worker opens): -e, with the reason for people when symbolic
 * links are why. Only reads the file system. */
static int open_failed(const char *path, int nofollow, int e, rr_error *err)
{
    struct stat st;
    int link = lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
    if (e == ELOOP && nofollow && link)
        return rr_fail(err, -ELOOP,
                       "the path is a symbolic link: a Server does not create or open a channel "
                       "through one (a link planted at its path must not make it write another "
                       "file); give it the link's target, or open the channel with a Client, "
                       "which follows links");
    if (e == ELOOP)
        return rr_fail(err, -ELOOP, "too many levels of symbolic links (a loop of links?)");
    if (e == ENOENT && link) {
        char to[128];
        ssize_t n = readlink(path, to, sizeof to - 1);
        to[n > 0 ? n : 0] = 0;
        return rr_fail(err, -ENOENT, "a symbolic link to '%s', which does not exist", to);
    }
    return -e;
}

static int open_path_once(const char *path, uint32_t variant, const rr_geometry *create,
                          rr_open_opts *o, rr_chan **out, rr_error *err)
{
    err_reset(err);
    /* An opener follows symbolic links (a link to a channel, /proc/PID/fd/N):
     * it only maps what it validated. A creator does not: through a link
     * planted at its path it could initialise (write) a file it never meant
     * to, and same_file() below compares the path itself; nor, when asked
     * (a Server re-opened from a pickle), does an opener. Only the last
     * component: the directories are the caller's to trust. */
    int nofollow = create || o->nofollow;
    int oflags = O_RDWR | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0);
    /* created: this call made the file; if it then fails to make a channel
     * of it, it removes it again (before the magic nobody else uses it). */
    int created = 0, initialising = 0, fd = -1;
    if (create) {
        fd = open(path, oflags | O_CREAT | O_EXCL, 0600);
        created = fd >= 0;
        if (fd < 0 && errno == EEXIST) {
            fd = open(path, oflags);
            if (fd < 0 && errno == ENOENT)
                return RR_REOPEN; /* removed in between */
        }
    } else {
        fd = open(path, oflags);
    }
    if (fd < 0)
        return open_failed(path, nofollow, errno, err);
    /* Creators initialise under an exclusive lock, openers read under a shared
     * one: an opener never sees a half-built header, and a creator that dies
     * mid-way releases the lock with its file descriptors. */
    int rc = lock_file(fd, create ? LOCK_EX : LOCK_SH, err);
    if (rc) {
        close(fd);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    /* A creator that failed removes its file under the lock we waited for:
     * initialising what we hold then would make a channel nobody can find. */
    if (create && !same_file(path, &st, 0)) {
        rc = RR_REOPEN;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = rr_fail(err, -RR_EFORMAT, "not a regular file");
        goto out;
    }
    /* A file without a name: either one removed since we opened it (a
     * server restarting: open what the path names now), or one the path
     * still reaches through a magic link (a memfd as /proc/PID/fd/N), which
     * is sealed against shrinking, or refused, as by rr_open_fd, before its
     * size is validated: a peer must never shrink it under our mapping.
     * unlink drops the count before the name goes, so a lookup may still find
     * a file being removed: one that cannot be sealed and is not reached
     * through a magic link is such a file, and opened again. */
    if (st.st_nlink == 0) {
        if (!same_file(path, &st, 1)) {
            rc = RR_REOPEN;
            goto out;
        }
        int sealed = seal_shmem(fd, err);
        if (sealed == -RR_EFORMAT && !through_magic_link(path)) {
            rc = RR_REOPEN;
            goto out;
        }
        if (sealed < 0) {
            rc = sealed;
            goto out;
        }
    }
    uint64_t magic = 0;
    if (st.st_size >= 8 && (rc = read_full(fd, &magic, sizeof magic, 0)) != 0)
        goto out;
    if (create && magic == 0) {
        /* Never published, so nobody uses it: all zero (a creator died after
         * sizing it) or our header without its magic (died after writing
         * it). Anything else may be somebody's data: refuse. */
        rc = st.st_size == 0 ? 1 : all_zero(fd, (uint64_t)st.st_size);
        if (rc == 0)
            rc = ours_unpublished(fd, (uint64_t)st.st_size);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            rc = rr_fail(err, -RR_EFORMAT, "not a reqrep channel (no magic, not empty)");
            goto out;
        }
        initialising = 1;
        /* exactly the mode asked for: open's is less the umask */
        if (o->mode >= 0 && fchmod(fd, (mode_t)o->mode) != 0) {
            rc = rr_fail(err, -errno, "cannot set the file's mode: %s", strerror(errno));
            goto out;
        }
        rc = create_in_fd(fd, create, 0, out, err);
        o->initialised = rc == 0;
    } else {
        rc = open_existing(fd, variant, 0, out, err);
    }
out:
    if (rc && created && initialising)
        unlink_if_same(path, fd); /* before unlocking: see same_file above */
    flock(fd, LOCK_UN);
    if (rc)
        close(fd);
    return rc;
}

int rr_open_anon(const rr_geometry *asked, rr_chan **out, rr_error *err)
{
    err_reset(err);
    rr_geometry g = *asked;
    int rc = rr_geometry_normalise(&g, err);
    if (rc)
        return rc;
    rr_hdr_geom want;
    rr_layout_compute(&g, &want);
    rr_map *m;
    rc = map_new(-1, want.total_size, 0, &m);
    if (rc)
        return rr_fail(err, rc, "cannot map %llu bytes: %s", (unsigned long long)want.total_size,
                    strerror(-rc));
    init_header(m, &want);
    rc = chan_new(m, &want, out);
    if (rc)
        map_unref(m);
    return rc;
}

int rr_open_memfd(const char *name, const rr_geometry *asked, rr_chan **out, rr_error *err)
{
    err_reset(err);
    rr_geometry g = *asked;
    int rc = rr_geometry_normalise(&g, err);
    if (rc)
        return rc;
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return rr_fail(err, -errno, "memfd_create: %s", strerror(errno));
    /* Nobody may resize it under a mapping (a shrink would SIGBUS every
     * user): sealed before anyone else can hold it. */
    rc = create_in_fd(fd, &g, 1, out, err);
    if (rc == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        rc = rr_fail(err, -errno, "cannot seal the memfd: %s", strerror(errno));
        rr_close(*out); /* closes fd with the mapping */
        return rc;
    }
    if (rc)
        close(fd);
    return rc;
}

/* A memfd (any shmem file) received from elsewhere: whoever else holds it
 * could shrink it under our mapping, and every user would die of SIGBUS.
 * Seal it against resizing, as rr_open_memfd does (F_SEAL_SEAL too: the
 * seals a channel needs are then all there for whoever we pass it on to,
 * and nobody can add F_SEAL_FUTURE_WRITE, which would lock out new
 * openers). If it cannot be sealed and has no name, refuse it; a named
 * tmpfs file can be truncated by path anyway, like any channel file.
 * 1 if fd is shmem, 0 if not (a regular file), or an error. */
static int seal_shmem(int fd, rr_error *err)
{
    const int need = F_SEAL_SHRINK | F_SEAL_GROW;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return 0; /* not shmem: a file as good as one opened by path */
    if ((seals & need) == need)
        return 1;
    if (!(seals & F_SEAL_SEAL)) {
        if (fcntl(fd, F_ADD_SEALS, need | F_SEAL_SEAL) == 0)
            return 1;
        if (errno != EPERM)
            return rr_fail(err, -errno, "cannot seal the memfd: %s", strerror(errno));
        seals = fcntl(fd, F_GET_SEALS); /* sealed by someone else meanwhile */
        if (seals >= 0 && (seals & F_SEAL_SHRINK))
            return 1;
    }
    if (seals & F_SEAL_SHRINK)
        return 1; /* growing does not fault a mapping */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return rr_fail(err, -errno, "%s", strerror(errno));
    if (st.st_nlink > 0)
        return 1; /* a named tmpfs file */
    return rr_fail(err, -RR_EFORMAT,
                "the memfd is not sealed against shrinking and does not allow sealing "
                "(create it with MFD_ALLOW_SEALING, or seal it with F_SEAL_SHRINK)");
}

int rr_open_fd(int fd, uint32_t variant, rr_chan **out, rr_error *err)
{
    err_reset(err);
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return -errno;
    /* sealed first, so that the size validated below cannot change */
    int is_memfd = seal_shmem(own, err);
    if (is_memfd < 0) {
        close(own);
        return is_memfd;
    }
    int rc = open_existing(own, variant, is_memfd, out, err);
    if (rc)
        close(own);
    return rc;
}

int rr_chan_share(rr_chan *c, rr_chan **out)
{
    rr_hdr_geom h;
    rr_layout_compute(&c->geom, &h); /* what c was built from */
    rr_chan *n;
    int rc = chan_new(c->map, &h, &n);
    if (rc)
        return rc;
    /* A new handle on the same mapping, with c's spin budget and its place
     * in the slot scan; a bell, a receive under way, the waits and their
     * interruption belong to the handle that has them. */
    n->wait.spin_us = c->wait.spin_us;
    /* relaxed: a hint */
    uint32_t hint = atomic_load_explicit(&c->slots.hint, memory_order_relaxed);
    atomic_store_explicit(&n->slots.hint, hint, memory_order_relaxed);
    /* relaxed: the caller already holds a reference, so the map cannot go away */
    atomic_fetch_add_explicit(&c->map->refs, 1, memory_order_relaxed);
    *out = n;
    return 0;
}

void rr_close(rr_chan *c)
{
    if (!c)
        return;
    rr_bells_release(&c->bells);
    map_unref(c->map);
    free(c);
}

const rr_geometry *rr_geometry_of(const rr_chan *c) { return &c->geom; }
uint64_t rr_map_size(const rr_chan *c) { return c->map->size; }
int rr_memfd(const rr_chan *c) { return c->map->is_memfd ? c->map->fd : -1; }
int rr_fd(const rr_chan *c) { return c->map->fd; }

int rr_sync(rr_chan *c)
{
    if (c->map->fd < 0)
        return 0;
    return msync(c->map->base, c->map->size, MS_SYNC) == 0 ? 0 : -errno;
}

void rr_regions_of(const rr_chan *c, rr_regions *r)
{
    rr_hdr_geom h;
    rr_layout_compute(&c->geom, &h);
    *r = (rr_regions){h.off_bells, h.off_cells, h.off_slots, h.off_arena, h.slot_stride,
                      h.total_size};
}
