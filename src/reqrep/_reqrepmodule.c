/* reqrep._reqrep: the CPython binding of the C core (csrc/).
 *
 * Heap types and module state (PEP 489/630). Methods parse their arguments,
 * call the core and map its negative errno to an exception in raise_core().
 * Every wait runs with the GIL released; a signal during a wait runs the
 * Python handlers and, if none raises, the wait goes on to the same deadline. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "reqrep.h"

/* Copies this large run without the GIL. */
#define GIL_FREE_COPY (256 * 1024)

/* A wait ended because the object was closed (WAIT_SLICED): beyond every
 * errno, and unlike -ECANCELED from a _wake_request, never to be retried. */
#define RC_CLOSED (-RR_EFORMAT - 1)

typedef struct {
    PyTypeObject *server_type;
    PyTypeObject *client_type;
    PyTypeObject *int_server_type;
    PyTypeObject *int_client_type;
    PyObject *format_error;
    PyObject *worker_died;
} module_state;

enum { KIND_SERVER = 1, KIND_CLIENT = 2 };

typedef struct {
    PyObject_HEAD
    rr_chan *ch;          /* NULL once closed */
    module_state *st;     /* borrowed: the type keeps the module alive */
    PyObject *path;       /* str or None */
    uint64_t *pending;    /* clients: id + 1 of each uncollected request, by slot */
    pid_t pid;            /* the process whose requests `pending` lists */
    int req_efd;          /* request eventfd, -1 if none */
    int reply_efd;        /* reply eventfd, -1 if none */
    int owns_req_efd;     /* created (or duplicated) here: closed with the object */
    int owns_reply_efd;
    uint32_t variant;
    int kind;
    int busy;             /* calls in progress (the GIL may be released) */
    int closing;          /* close() was called while busy */
    PyObject *weakreflist;
} Chan;

static struct PyModuleDef reqrep_module;

/* ---- helpers: state, errors, arguments ---- */

static module_state *state_of_type(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *mod = PyType_GetModuleByDef(type, &reqrep_module);
    return mod ? PyModule_GetState(mod) : NULL;
#else
    PyObject *mro = type->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE))
            continue;
        PyObject *mod = PyType_GetModule(t);
        if (mod && PyModule_GetDef(mod) == &reqrep_module)
            return PyModule_GetState(mod);
        PyErr_Clear();
    }
    PyErr_SetString(PyExc_TypeError, "not a reqrep type");
    return NULL;
#endif
}

/* The one place where core error codes become exceptions. */
static PyObject *raise_core(module_state *st, int rc, PyObject *path, const rr_error *err)
{
    if (PyErr_Occurred())
        return NULL;
    const char *why = err && err->why[0] ? err->why : NULL;
    switch (rc) {
    case -RR_EFORMAT:
        if (path && path != Py_None)
            PyErr_Format(st->format_error, "%R: %s", path, why ? why : "not a valid channel");
        else
            PyErr_Format(st->format_error, "%s", why ? why : "not a valid channel");
        return NULL;
    case -ENOMEM:
        return PyErr_NoMemory();
    case -EINVAL:
        PyErr_SetString(PyExc_ValueError, why ? why : "invalid argument");
        return NULL;
    case -ETIMEDOUT:
        if (why) {
            PyObject *args = Py_BuildValue("(isO)", ETIMEDOUT, why, path ? path : Py_None);
            if (args)
                PyErr_SetObject(PyExc_TimeoutError, args);
            Py_XDECREF(args);
            return NULL;
        }
        break;
    case -EMSGSIZE:
        PyErr_SetString(PyExc_ValueError, why ? why : "payload too large for this channel");
        return NULL;
    case RC_CLOSED:
    case -ECANCELED: /* a wait that close() interrupted */
        PyErr_SetString(PyExc_ValueError, "operation on a closed channel");
        return NULL;
    }
    {
        errno = -rc;
        if (path && path != Py_None)
            return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
}

/* Marks a call in progress; fails on a closed object. */
static int enter(Chan *self)
{
    if (!self->ch || self->closing) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed channel");
        return -1;
    }
    self->busy++;
    return 0;
}

static void really_close(Chan *self);

static void leave(Chan *self)
{
    if (--self->busy == 0 && self->closing)
        really_close(self);
}

/* Runs `call` with the GIL released; on EINTR runs the signal handlers and,
 * unless one raised, calls again (the core calls are restartable and take
 * absolute deadlines). */
#define WAIT_NOGIL(rc, call)                                \
    do {                                                    \
        for (;;) {                                          \
            Py_BEGIN_ALLOW_THREADS rc = (call);             \
            Py_END_ALLOW_THREADS                            \
            if (rc != -EINTR || PyErr_CheckSignals() < 0)   \
                break;                                      \
        }                                                   \
    } while (0)

/* A signal that lands outside the kernel's wait (between two polls of a
 * polling wait) interrupts nothing: long waits go in slices, and signal
 * handlers run between them, so Ctrl-C is never late by more than a slice. */
#define WAIT_SLICE_NS 100000000

static int64_t slice_end(int64_t deadline)
{
    int64_t now = rr_now_ns();
    return deadline - now > WAIT_SLICE_NS ? now + WAIT_SLICE_NS : deadline;
}

/* WAIT_NOGIL for a call whose deadline is the variable `dl`, in a method of
 * `Chan *self`: -EAGAIN from a slice that ended before `deadline` means go
 * on; -EINTR with an exception set means a handler raised; RC_CLOSED means
 * close() was called meanwhile (it interrupts the handle's waits: the call
 * returns -ECANCELED at once; between slices the flag is seen here). */
#define WAIT_SLICED(rc, deadline, call)                                 \
    do {                                                                \
        for (;;) {                                                      \
            int64_t dl = slice_end(deadline);                           \
            Py_BEGIN_ALLOW_THREADS rc = (call);                         \
            Py_END_ALLOW_THREADS                                        \
            if (rc == -ECANCELED && self->closing) {                    \
                rc = RC_CLOSED;                                         \
                break;                                                  \
            }                                                           \
            if (rc == -EINTR || (rc == -EAGAIN && dl < (deadline))) {   \
                if (PyErr_CheckSignals() < 0) {                         \
                    rc = -EINTR;                                        \
                    break;                                              \
                }                                                       \
                if (self->closing) {                                    \
                    rc = RC_CLOSED;                                     \
                    break;                                              \
                }                                                       \
                continue;                                               \
            }                                                           \
            break;                                                      \
        }                                                               \
    } while (0)

static PyObject *raise_core(module_state *st, int rc, PyObject *path, const rr_error *err);

/* How long a non-blocking call may wait for a busy queue lock: holders keep
 * it for microseconds, so this only runs out on a stopped (not dead) holder. */
#define LOCK_GRACE_NS 20000000

/* After -EBUSY from an RR_TRY call: waits, without the GIL, until the queue
 * lock is free (a dead holder's taken over), at most to `deadline` (a
 * non-blocking call: LOCK_GRACE_NS). 0 to retry, 1 if time ran out, -1 with
 * an exception set. */
static int settle_lock(Chan *self, int64_t deadline)
{
    int rc;
    int64_t limit = deadline == RR_NOWAIT ? rr_now_ns() + LOCK_GRACE_NS : deadline;
    WAIT_SLICED(rc, limit, rr_lock_settle(self->ch, dl));
    if (rc == -EAGAIN)
        return 1;
    if (rc < 0) {
        raise_core(self->st, rc, NULL, NULL);
        return -1;
    }
    return 0;
}

/* Positional-or-keyword parsing for METH_FASTCALL|METH_KEYWORDS methods;
 * out[i] stays NULL for absent optional arguments. */
static int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *const *names, int nmin, int nmax, PyObject **out,
                      const char *fname)
{
    for (int i = 0; i < nmax; i++)
        out[i] = NULL;
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, nmax,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < nmax && found < 0; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                found = i;
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname,
                         key);
            return -1;
        }
        if (out[found]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < nmin; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    return 0;
}

/* A timeout as a length: RR_FOREVER for None, RR_NOWAIT for 0, else > 0 ns. */
static int parse_timeout(PyObject *obj, int64_t *ns)
{
    if (!obj || obj == Py_None) {
        *ns = RR_FOREVER;
        return 0;
    }
    if (!PyFloat_Check(obj) && !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(t) || t < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -1;
    }
    double v = t * 1e9;
    *ns = t == 0 ? RR_NOWAIT : v >= (double)RR_FOREVER ? RR_FOREVER : v < 1 ? 1 : (int64_t)v;
    return 0;
}

/* The deadline `ns` (from parse_timeout) from now. */
static int64_t deadline_in(int64_t ns)
{
    if (ns == RR_FOREVER || ns == RR_NOWAIT)
        return ns;
    int64_t now = rr_now_ns();
    return ns >= RR_FOREVER - now ? RR_FOREVER : now + ns;
}

/* None = wait forever, 0 = try once, else seconds from now. */
static int parse_deadline(PyObject *obj, int64_t *deadline)
{
    int64_t ns;
    if (parse_timeout(obj, &ns) < 0)
        return -1;
    *deadline = deadline_in(ns);
    return 0;
}

static int parse_u64_range(PyObject *obj, const char *name, uint64_t lo, uint64_t hi,
                           uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || (uint64_t)v < lo || (uint64_t)v > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be between %llu and %llu", name,
                     (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* A count >= 0; None (where allowed) means no limit. */
static int parse_count(PyObject *obj, const char *name, int none_ok, uint32_t *out)
{
    uint64_t v;
    if (!obj || (none_ok && obj == Py_None)) {
        *out = UINT32_MAX;
        return 0;
    }
    if (parse_u64_range(obj, name, 0, INT64_MAX, &v) < 0)
        return -1;
    *out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return 0;
}

static int parse_id(PyObject *obj, uint64_t *id)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "id must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow); /* the fast path */
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && v >= 0) {
        *id = (uint64_t)v;
        return 0;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(obj); /* raises for < 0 */
    if (u == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *id = u;
    return 0;
}

static int parse_spin(PyObject *obj, uint32_t *spin)
{
    uint64_t v;
    if (!obj || obj == Py_None) {
        *spin = RR_DEFAULT_SPIN_US;
        return 0;
    }
    if (parse_u64_range(obj, "spin", 0, 10000000, &v) < 0)
        return -1;
    *spin = (uint32_t)v;
    return 0;
}

static int parse_int64(PyObject *obj, int64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "data must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_OverflowError, "data does not fit in a signed 64-bit int");
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- Str payloads ---- */

typedef struct {
    const char *ptr;
    Py_ssize_t len;
    uint32_t flags;
    int has_view;
    Py_buffer view;
} payload;

static int payload_get(PyObject *obj, payload *p)
{
    p->has_view = 0;
    p->flags = 0;
    if (PyBytes_Check(obj)) {
        p->ptr = PyBytes_AS_STRING(obj);
        p->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        p->ptr = PyUnicode_AsUTF8AndSize(obj, &p->len);
        p->flags = RR_FLAG_UTF8;
        return p->ptr ? 0 : -1;
    }
    if (PyObject_CheckBuffer(obj)) {
        if (PyObject_GetBuffer(obj, &p->view, PyBUF_SIMPLE) < 0)
            return -1;
        p->has_view = 1;
        p->ptr = p->view.buf;
        p->len = p->view.len;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "data must be bytes, str or a bytes-like object, not %.100s",
                 Py_TYPE(obj)->tp_name);
    return -1;
}

static void payload_release(payload *p)
{
    if (p->has_view)
        PyBuffer_Release(&p->view);
}

/* Builds bytes or str from channel memory; allocates but runs no Python code,
 * so it is safe while the queue lock is held. */
static PyObject *payload_object(const void *data, uint32_t len, uint32_t flags)
{
    if (flags & RR_FLAG_UTF8)
        return PyUnicode_DecodeUTF8(data, len, "surrogateescape");
    if (len < GIL_FREE_COPY)
        return PyBytes_FromStringAndSize(data, len);
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (!b)
        return NULL;
    char *dst = PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS memcpy(dst, data, len);
    Py_END_ALLOW_THREADS
    return b;
}

/* (data, id); steals the reference to data. */
static PyObject *make_pair(PyObject *data, uint64_t id)
{
    PyObject *id_obj = data ? PyLong_FromUnsignedLongLong(id) : NULL;
    PyObject *pair = id_obj ? PyTuple_New(2) : NULL;
    if (!pair) {
        Py_XDECREF(data);
        Py_XDECREF(id_obj);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, data);
    PyTuple_SET_ITEM(pair, 1, id_obj);
    return pair;
}

/* ---- pending requests of a client object ---- */

/* This process's table (a forked copy starts empty: the parent's requests
 * are the parent's to collect); NULL if none and !create or out of memory. */
static uint64_t *pending_table(Chan *self, int create)
{
    uint32_t n = rr_geometry_of(self->ch)->resp_slots;
    if (self->pending && self->pid != rr_self_pid()) {
        memset(self->pending, 0, n * sizeof *self->pending);
        self->pid = rr_self_pid();
    }
    if (!self->pending && create) {
        self->pending = PyMem_Calloc(n, sizeof *self->pending);
        if (!self->pending)
            PyErr_NoMemory();
        self->pid = rr_self_pid(); /* not the opener's: the object may have been forked since */
    }
    return self->pending;
}

static int pending_add(Chan *self, uint64_t id)
{
    uint64_t *table = pending_table(self, 1);
    if (!table)
        return -1;
    table[rr_id_index(id)] = id + 1;
    return 0;
}

static void pending_drop(Chan *self, uint64_t id)
{
    uint32_t idx = rr_id_index(id);
    if (self->pending && idx < rr_geometry_of(self->ch)->resp_slots
        && self->pending[idx] == id + 1)
        self->pending[idx] = 0;
}

/* ---- object lifecycle ---- */

static PyObject *chan_new_object(PyTypeObject *type, module_state *st, rr_chan *ch,
                                 PyObject *path, uint32_t variant, int kind)
{
    Chan *self = (Chan *)type->tp_alloc(type, 0);
    if (!self) {
        rr_close(ch);
        return NULL;
    }
    self->ch = ch;
    self->st = st;
    self->path = Py_NewRef(path ? path : Py_None);
    self->variant = variant;
    self->kind = kind;
    self->pid = rr_self_pid();
    self->req_efd = self->reply_efd = -1;
    return (PyObject *)self;
}

static void release_pending(Chan *self)
{
    if (!pending_table(self, 0))
        return;
    uint32_t n = rr_geometry_of(self->ch)->resp_slots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = self->pending[i];
        if (!id--)
            continue;
        /* cancel a waiting request, or collect a reply nobody will read */
        if (rr_cancel(self->ch, id) == -EBUSY)
            rr_resp_discard(self->ch, id);
    }
    PyMem_Free(self->pending);
    self->pending = NULL;
}

static void set_efd(int *slot, int *owned, int fd, int own)
{
    if (*owned && *slot >= 0)
        close(*slot);
    *slot = fd;
    *owned = own;
}

static void really_close(Chan *self)
{
    if (!self->ch)
        return;
    set_efd(&self->req_efd, &self->owns_req_efd, -1, 0);
    set_efd(&self->reply_efd, &self->owns_reply_efd, -1, 0);
    release_pending(self);
    rr_close(self->ch);
    self->ch = NULL;
    self->closing = 0;
}

/* With calls in progress (other threads waiting, or a handler of serve()),
 * the last one to leave unmaps: interrupting the handle ends every wait on
 * it (each call raises ValueError, serve() returns), and rr_interrupt runs
 * with the GIL held, so no call can leave and unmap under it. (A child
 * forked while other threads were in calls inherits their count but not
 * them: its close() only marks the object closed; the mapping stays.) */
static PyObject *chan_close(Chan *self, PyObject *unused)
{
    if (!self->ch)
        Py_RETURN_NONE;
    if (self->busy == 0) {
        really_close(self);
    } else if (!self->closing) {
        self->closing = 1;
        rr_interrupt(self->ch);
    }
    Py_RETURN_NONE;
}

static int chan_traverse(Chan *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void chan_dealloc(Chan *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    really_close(self);
    Py_CLEAR(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *chan_enter(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    leave(self);
    return Py_NewRef(self);
}

static PyObject *chan_exit(Chan *self, PyObject *args)
{
    return chan_close(self, NULL);
}

/* ---- constructors ---- */

/* The geometry arguments, in this order; a Server that opens an existing
 * channel compares the ones given with the file's. */
enum { GEO_REQ_CAP, GEO_RESP_SLOTS, GEO_RESP_SIZE, GEO_ARENA, GEO_N };
static const char *const geo_names[GEO_N] = {"req_cap", "resp_slots", "resp_size", "arena"};

/* What a constructor asks of open_path. */
typedef struct open_req {
    rr_geometry g;          /* to create with: defaults where not given, normalised */
    uint64_t given[GEO_N];  /* the values given, as given (for messages) */
    unsigned given_mask;    /* bit GEO_x: that argument was given (not absent or None) */
    int mode;               /* permissions of a new file; -1: the default */
    int64_t wait_ns;        /* clients: how long to wait for the channel (parse_timeout);
                             * -1: not at all */
} open_req;

/* Absent and None both mean "not given": the default for a new channel, the
 * file's for an existing one. */
static int parse_geometry(uint32_t variant, PyObject *req_cap, PyObject *resp_slots,
                          PyObject *resp_size, PyObject *arena, open_req *r)
{
    static const uint64_t lo[GEO_N] = {1, 1, 1, RR_MIN_ARENA};
    static const uint64_t hi[GEO_N] = {RR_MAX_REQ_CAP, RR_MAX_RESP_SLOTS, RR_MAX_RESP_SIZE,
                                       RR_MAX_ARENA};
    PyObject *args[GEO_N] = {req_cap, resp_slots, resp_size, arena};
    r->g = (rr_geometry){variant, 1024, 64, variant == RR_VARIANT_STR ? 4096 : 0, 0};
    r->given_mask = 0;
    for (int i = 0; i < GEO_N; i++) {
        if (!args[i] || args[i] == Py_None)
            continue;
        if (parse_u64_range(args[i], geo_names[i], lo[i], hi[i], &r->given[i]) < 0)
            return -1;
        r->given_mask |= 1u << i;
    }
    if (r->given_mask & 1u << GEO_REQ_CAP)
        r->g.req_cap = (uint32_t)r->given[GEO_REQ_CAP];
    if (r->given_mask & 1u << GEO_RESP_SLOTS)
        r->g.resp_slots = (uint32_t)r->given[GEO_RESP_SLOTS];
    if (r->given_mask & 1u << GEO_RESP_SIZE)
        r->g.resp_size = (uint32_t)r->given[GEO_RESP_SIZE];
    if (r->given_mask & 1u << GEO_ARENA)
        r->g.arena = r->given[GEO_ARENA];
    rr_error err = {{0}};
    if (rr_geometry_normalise(&r->g, &err) < 0) {
        PyErr_SetString(PyExc_ValueError, err.why);
        return -1;
    }
    return 0;
}

/* ValueError naming every given argument that the open channel differs in
 * (compared as normalised: req_cap 1000 asks for what a 1024 file has).
 * 0 if none differs. */
static int check_geometry(const open_req *r, const rr_geometry *have, PyObject *path)
{
    const uint64_t want[GEO_N] = {r->g.req_cap, r->g.resp_slots, r->g.resp_size, r->g.arena};
    const uint64_t got[GEO_N] = {have->req_cap, have->resp_slots, have->resp_size, have->arena};
    PyObject *parts = PyList_New(0);
    if (!parts)
        return -1;
    for (int i = 0; i < GEO_N; i++) {
        if (!(r->given_mask & 1u << i) || want[i] == got[i])
            continue;
        PyObject *part = PyUnicode_FromFormat("%s: the channel at %R has %llu, asked for %llu",
                                              geo_names[i], path, (unsigned long long)got[i],
                                              (unsigned long long)r->given[i]);
        if (!part || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            return -1;
        }
        Py_DECREF(part);
    }
    int rc = 0;
    if (PyList_GET_SIZE(parts) > 0) {
        PyObject *sep = PyUnicode_FromString("; ");
        PyObject *msg = sep ? PyUnicode_Join(sep, parts) : NULL;
        if (msg)
            PyErr_SetObject(PyExc_ValueError, msg);
        Py_XDECREF(msg);
        Py_XDECREF(sep);
        rc = -1;
    }
    Py_DECREF(parts);
    return rc;
}

/* mode=: None (absent) is the default; else permission bits 0 to 0o777. */
static int parse_mode(PyObject *obj, int *mode)
{
    *mode = -1;
    if (!obj || obj == Py_None)
        return 0;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "mode must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long m = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (m == -1 && PyErr_Occurred())
        return -1;
    if (overflow || m < 0 || m > 0777) {
        PyErr_SetString(PyExc_ValueError, "mode must be permission bits, from 0 to 0o777");
        return -1;
    }
    *mode = (int)m;
    return 0;
}

static PyTypeObject *client_type_for(module_state *st, uint32_t variant)
{
    return variant == RR_VARIANT_STR ? st->client_type : st->int_client_type;
}

static uint32_t variant_of_type(module_state *st, PyTypeObject *type, int *kind)
{
    if (PyType_IsSubtype(type, st->server_type) || PyType_IsSubtype(type, st->client_type)) {
        *kind = PyType_IsSubtype(type, st->server_type) ? KIND_SERVER : KIND_CLIENT;
        return RR_VARIANT_STR;
    }
    *kind = PyType_IsSubtype(type, st->int_server_type) ? KIND_SERVER : KIND_CLIENT;
    return RR_VARIANT_INT;
}

/* raise_core for the open calls: a file system without room for the channel
 * gets an OSError that says how much room it needed. */
static PyObject *raise_open(module_state *st, int rc, PyObject *path, const rr_error *err)
{
    if ((rc == -ENOSPC || rc == -EDQUOT || rc == -EFBIG) && err->why[0] && !PyErr_Occurred()) {
        PyObject *args = Py_BuildValue("(isO)", -rc, err->why, path ? path : Py_None);
        if (args)
            PyErr_SetObject(PyExc_OSError, args);
        Py_XDECREF(args);
        return NULL;
    }
    return raise_core(st, rc, path, err);
}

/* How often a client that waits for a channel looks again. */
#define OPEN_POLL_NS 10000000

/* rr_open_path_opts, waiting (polling, without the GIL, signal handlers run
 * between polls) up to r->wait_ns for a channel that is not there yet. */
static int open_file(const char *cpath, uint32_t variant, const rr_geometry *create,
                     const open_req *r, rr_open_opts *opts, rr_chan **ch, rr_error *err)
{
    int rc;
    int64_t deadline = r->wait_ns < 0 ? RR_NOWAIT : deadline_in(r->wait_ns);
    for (;;) {
        WAIT_NOGIL(rc, rr_open_path_opts(cpath, variant, create, opts, ch, err));
        if (rc >= 0 || PyErr_Occurred() || !rr_open_unready(rc, err))
            return rc;
        int64_t now = rr_now_ns();
        if (now >= deadline)
            return rc; /* the error it would have raised without waiting */
        int64_t ns = deadline - now < OPEN_POLL_NS ? deadline - now : OPEN_POLL_NS;
        struct timespec ts = {0, (long)ns};
        Py_BEGIN_ALLOW_THREADS nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return -EINTR;
    }
}

/* Opens (create 0: clients) or creates or opens (create 1: servers) the
 * channel at `path`; a None path: anonymous (servers only). */
static PyObject *open_path(PyTypeObject *type, PyObject *path, const open_req *r,
                           int create, uint32_t spin)
{
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    int kind;
    uint32_t variant = variant_of_type(st, type, &kind);
    rr_chan *ch = NULL;
    rr_error err = {{0}};
    rr_open_opts opts = {r->mode, 0};
    int rc;
    PyObject *str_path = NULL;
    if (path == Py_None) {
        Py_BEGIN_ALLOW_THREADS rc = rr_open_anon(&r->g, &ch, &err);
        Py_END_ALLOW_THREADS
        opts.initialised = 1;
    } else {
        PyObject *bytes_path = NULL;
        if (!PyUnicode_FSConverter(path, &bytes_path))
            return NULL;
        str_path = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(bytes_path),
                                                    PyBytes_GET_SIZE(bytes_path));
        if (!str_path) {
            Py_DECREF(bytes_path);
            return NULL;
        }
        rc = open_file(PyBytes_AS_STRING(bytes_path), variant, create ? &r->g : NULL, r,
                       &opts, &ch, &err);
        Py_DECREF(bytes_path);
    }
    if (rc < 0) {
        raise_open(st, rc, str_path, &err);
        Py_XDECREF(str_path);
        return NULL;
    }
    if (create && !opts.initialised) {
        /* An existing channel: what was asked of it must be what it is. */
        if (check_geometry(r, rr_geometry_of(ch), str_path) < 0) {
            rr_close(ch);
            Py_XDECREF(str_path);
            return NULL;
        }
        /* A server coming back to a channel whose processes may all have
         * died: free the slots of dead clients now, not at some later send. */
        Py_BEGIN_ALLOW_THREADS rr_reclaim(ch);
        Py_END_ALLOW_THREADS
    }
    rr_set_spin(ch, spin);
    PyObject *self = chan_new_object(type, st, ch, str_path, variant, kind);
    Py_XDECREF(str_path);
    return self;
}

static PyObject *server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "req_cap", "resp_slots", "resp_size", "arena", "spin",
                             "mode", NULL};
    PyObject *path, *req_cap = NULL, *resp_slots = NULL, *resp_size = NULL, *arena = NULL;
    PyObject *spin_obj = NULL, *mode_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOO$OO:Server", kwlist, &path, &req_cap,
                                     &resp_slots, &resp_size, &arena, &spin_obj, &mode_obj))
        return NULL;
    open_req r = {.wait_ns = -1};
    uint32_t spin;
    if (parse_geometry(RR_VARIANT_STR, req_cap, resp_slots, resp_size, arena, &r) < 0
        || parse_spin(spin_obj, &spin) < 0 || parse_mode(mode_obj, &r.mode) < 0)
        return NULL;
    return open_path(type, path, &r, 1, spin);
}

static PyObject *int_server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "req_cap", "resp_slots", "spin", "mode", NULL};
    PyObject *path, *req_cap = NULL, *resp_slots = NULL, *spin_obj = NULL, *mode_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO$OO:IntServer", kwlist, &path, &req_cap,
                                     &resp_slots, &spin_obj, &mode_obj))
        return NULL;
    open_req r = {.wait_ns = -1};
    uint32_t spin;
    if (parse_geometry(RR_VARIANT_INT, req_cap, resp_slots, NULL, NULL, &r) < 0
        || parse_spin(spin_obj, &spin) < 0 || parse_mode(mode_obj, &r.mode) < 0)
        return NULL;
    return open_path(type, path, &r, 1, spin);
}

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "spin", "wait", NULL};
    PyObject *path, *spin_obj = NULL, *wait_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OO:Client", kwlist, &path, &spin_obj,
                                     &wait_obj))
        return NULL;
    uint32_t spin;
    open_req r = {.mode = -1, .wait_ns = -1};
    if (parse_spin(spin_obj, &spin) < 0)
        return NULL;
    /* wait=None: no waiting (not "forever", as a timeout's None would be) */
    if (wait_obj && wait_obj != Py_None && parse_timeout(wait_obj, &r.wait_ns) < 0)
        return NULL;
    if (path == Py_None) {
        PyErr_SetString(PyExc_TypeError,
                        "a client needs a path; for an anonymous channel use server.client()");
        return NULL;
    }
    return open_path(type, path, &r, 0, spin);
}

static PyObject *chan_new_memfd(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "req_cap", "resp_slots", "resp_size", "arena", "spin", NULL};
    static char *int_kwlist[] = {"name", "req_cap", "resp_slots", "spin", NULL};
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    int kind;
    uint32_t variant = variant_of_type(st, type, &kind);
    const char *name;
    PyObject *req_cap = NULL, *resp_slots = NULL, *resp_size = NULL, *arena = NULL;
    PyObject *spin_obj = NULL;
    int ok = variant == RR_VARIANT_STR
        ? PyArg_ParseTupleAndKeywords(args, kwds, "s|OOOO$O:new_memfd", kwlist, &name, &req_cap,
                                      &resp_slots, &resp_size, &arena, &spin_obj)
        : PyArg_ParseTupleAndKeywords(args, kwds, "s|OO$O:new_memfd", int_kwlist, &name,
                                      &req_cap, &resp_slots, &spin_obj);
    if (!ok)
        return NULL;
    open_req r;
    uint32_t spin;
    if (parse_geometry(variant, req_cap, resp_slots, resp_size, arena, &r) < 0
        || parse_spin(spin_obj, &spin) < 0)
        return NULL;
    rr_chan *ch;
    rr_error err = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_open_memfd(name, &r.g, &ch, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_open(st, rc, NULL, &err);
    rr_set_spin(ch, spin);
    return chan_new_object(type, st, ch, NULL, variant, kind);
}

static PyObject *chan_from_fd(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "spin", NULL};
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    int fd;
    PyObject *spin_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$O:from_fd", kwlist, &fd, &spin_obj))
        return NULL;
    uint32_t spin;
    if (parse_spin(spin_obj, &spin) < 0)
        return NULL;
    int kind;
    uint32_t variant = variant_of_type(st, type, &kind);
    rr_chan *ch;
    rr_error err = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_open_fd(fd, variant, &ch, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_core(st, rc, NULL, &err);
    rr_set_spin(ch, spin);
    return chan_new_object(type, st, ch, NULL, variant, kind);
}

/* Opens an existing channel by path whatever the type (never creates one):
 * how a pickled file-backed object comes back in another process. */
static PyObject *chan_open_existing(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "spin", NULL};
    PyObject *path, *spin_obj = NULL;
    uint32_t spin;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$O:_open_existing", kwlist, &path, &spin_obj)
        || parse_spin(spin_obj, &spin) < 0)
        return NULL;
    if (path == Py_None) {
        PyErr_SetString(PyExc_TypeError, "path must not be None");
        return NULL;
    }
    open_req r = {.mode = -1, .wait_ns = -1};
    return open_path(type, path, &r, 0, spin);
}

/* Pickling is decided in Python (reqrep._pickle): by path, by fd, or not. */
static PyObject *chan_reduce(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    leave(self);
    PyObject *mod = PyImport_ImportModule("reqrep._pickle");
    if (!mod)
        return NULL;
    PyObject *res = PyObject_CallMethod(mod, "reduce_channel", "O", (PyObject *)self);
    Py_DECREF(mod);
    return res;
}

static PyObject *server_client(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    rr_chan *ch;
    int rc = rr_chan_share(self->ch, &ch);
    Chan *res = rc < 0 ? (Chan *)raise_core(self->st, rc, NULL, NULL)
        : (Chan *)chan_new_object(client_type_for(self->st, self->variant), self->st, ch,
                                  self->path, self->variant, KIND_CLIENT);
    /* the client shares the server's eventfds, through fds of its own */
    if (res && self->req_efd >= 0)
        set_efd(&res->req_efd, &res->owns_req_efd, fcntl(self->req_efd, F_DUPFD_CLOEXEC, 0), 1);
    if (res && self->reply_efd >= 0)
        set_efd(&res->reply_efd, &res->owns_reply_efd,
                fcntl(self->reply_efd, F_DUPFD_CLOEXEC, 0), 1);
    leave(self);
    return (PyObject *)res;
}

/* ---- shared status calls ---- */

static PyObject *chan_size(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    uint64_t n = rr_size(self->ch);
    leave(self);
    return PyLong_FromUnsignedLongLong(n);
}

static Py_ssize_t chan_len(Chan *self)
{
    if (enter(self) < 0)
        return -1;
    uint64_t n = rr_size(self->ch);
    leave(self);
    return (Py_ssize_t)n;
}

static PyObject *chan_is_empty(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    uint64_t n = rr_size(self->ch);
    leave(self);
    return PyBool_FromLong(n == 0);
}

static int dict_put_u64(PyObject *d, const char *key, uint64_t v)
{
    PyObject *o = PyLong_FromUnsignedLongLong(v);
    int rc = o ? PyDict_SetItemString(d, key, o) : -1;
    Py_XDECREF(o);
    return rc;
}

static PyObject *chan_layout(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    rr_regions r;
    rr_regions_of(self->ch, &r);
    leave(self);
    return Py_BuildValue("{sKsKsKsKsKsK}", "off_bells", (unsigned long long)r.off_bells,
                         "off_cells", (unsigned long long)r.off_cells, "off_slots",
                         (unsigned long long)r.off_slots, "off_arena",
                         (unsigned long long)r.off_arena, "slot_stride",
                         (unsigned long long)r.slot_stride, "total_size",
                         (unsigned long long)r.total_size);
}

static PyObject *chan_stats(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    rr_stats s;
    rr_get_stats(self->ch, &s);
    leave(self);
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    struct { const char *k; uint64_t v; } rows[] = {
        {"requests", s.requests}, {"replies", s.replies}, {"send_full", s.send_full},
        {"recv_empty", s.recv_empty}, {"recoveries", s.recoveries}, {"size", s.size},
        {"capacity", s.capacity}, {"resp_slots", s.resp_slots}, {"resp_size", s.resp_size},
        {"slots_free", s.slots_free}, {"slots_acquired", s.slots_acquired},
        {"slots_ready", s.slots_ready}, {"arena_cap", s.arena_cap},
        {"arena_used", s.arena_used},
    };
    size_t nrows = sizeof rows / sizeof rows[0] - (self->variant == RR_VARIANT_INT ? 2 : 0);
    for (size_t i = 0; i < nrows; i++)
        if (dict_put_u64(d, rows[i].k, rows[i].v) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    return d;
}

static PyObject *server_clear(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    int rc;
    WAIT_NOGIL(rc, rr_clear(self->ch));
    leave(self);
    return rc < 0 ? raise_core(self->st, rc, NULL, NULL) : Py_NewRef(Py_None);
}

static PyObject *server_sync(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_sync(self->ch);
    Py_END_ALLOW_THREADS
    leave(self);
    return rc < 0 ? raise_core(self->st, rc, self->path, NULL) : Py_NewRef(Py_None);
}

static PyObject *server_unlink(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    leave(self);
    if (self->path == Py_None)
        Py_RETURN_NONE;
    PyObject *bytes_path = NULL;
    if (!PyUnicode_FSConverter(self->path, &bytes_path))
        return NULL;
    int rc = unlink(PyBytes_AS_STRING(bytes_path));
    Py_DECREF(bytes_path);
    if (rc != 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, self->path);
    Py_RETURN_NONE;
}

/* ---- eventfds: process-local notification for event loops ---- */

typedef enum { EFD_REQ = 0, EFD_REPLY = 1 } efd_which;

static int *efd_slot(Chan *self, efd_which w, int **owned)
{
    *owned = w == EFD_REQ ? &self->owns_req_efd : &self->owns_reply_efd;
    return w == EFD_REQ ? &self->req_efd : &self->reply_efd;
}

/* create-or-get */
static PyObject *efd_get(Chan *self, efd_which w)
{
    if (enter(self) < 0)
        return NULL;
    int *owned, *slot = efd_slot(self, w, &owned);
    if (*slot < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            leave(self);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        set_efd(slot, owned, fd, 1);
    }
    int fd = *slot;
    leave(self);
    return PyLong_FromLong(fd);
}

static PyObject *efd_set(Chan *self, PyObject *arg, efd_which w)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "fd must be an int, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < -1 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd must be a file descriptor, or -1 to unset");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    int *owned, *slot = efd_slot(self, w, &owned);
    set_efd(slot, owned, (int)fd, 0); /* the caller keeps ownership of fd */
    leave(self);
    Py_RETURN_NONE;
}

static PyObject *efd_fileno(Chan *self, efd_which w)
{
    int *owned;
    if (enter(self) < 0)
        return NULL;
    int fd = *efd_slot(self, w, &owned);
    leave(self);
    return PyLong_FromLong(fd);
}

/* Reads and resets the counter: the number of signals since the last call. */
static PyObject *efd_consume(Chan *self, efd_which w)
{
    int *owned;
    if (enter(self) < 0)
        return NULL;
    int fd = *efd_slot(self, w, &owned);
    leave(self);
    uint64_t n = 0;
    if (fd >= 0 && read(fd, &n, sizeof n) != sizeof n) {
        if (errno != EAGAIN)
            return PyErr_SetFromErrno(PyExc_OSError);
        n = 0;
    }
    return PyLong_FromUnsignedLongLong(n);
}

/* Signals the eventfd; False if there is none. */
static int efd_signal(int fd)
{
    uint64_t one = 1;
    if (fd < 0)
        return 0;
    /* EAGAIN: the counter is at its maximum, a reader is already due */
    if (write(fd, &one, sizeof one) != sizeof one && errno != EAGAIN)
        return -1;
    return 1;
}

static PyObject *efd_notify(Chan *self, efd_which w)
{
    int *owned;
    if (enter(self) < 0)
        return NULL;
    int rc = efd_signal(*efd_slot(self, w, &owned));
    leave(self);
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(rc);
}

#define EFD_METHODS(prefix, which)                                                           \
    static PyObject *prefix##_get(Chan *s, PyObject *u) { return efd_get(s, which); }         \
    static PyObject *prefix##_set(Chan *s, PyObject *fd) { return efd_set(s, fd, which); }    \
    static PyObject *prefix##_fileno(Chan *s, PyObject *u) { return efd_fileno(s, which); }   \
    static PyObject *prefix##_consume(Chan *s, PyObject *u) { return efd_consume(s, which); } \
    static PyObject *prefix##_notify(Chan *s, PyObject *u) { return efd_notify(s, which); }
EFD_METHODS(req_efd, EFD_REQ)
EFD_METHODS(reply_efd, EFD_REPLY)

static PyObject *server_wait_request(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "_wait_request") < 0
        || parse_deadline(a[0], &deadline) < 0 || enter(self) < 0)
        return NULL;
    int rc;
    WAIT_SLICED(rc, deadline, rr_wait_request(self->ch, dl));
    leave(self);
    if (rc == -EINTR)
        return NULL;
    if (rc == RC_CLOSED)
        return raise_core(self->st, rc, NULL, NULL);
    return PyBool_FromLong(rc == 0);
}

/* ---- bells: replies for clients waiting in an event loop ---- */

static PyObject *client_bell_claim(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    int rc = rr_bell_claim(self->ch);
    leave(self);
    if (rc == -EBUSY) {
        PyErr_SetString(PyExc_RuntimeError, "all event-loop client bells of this channel are "
                                            "taken (64 at most)");
        return NULL;
    }
    return PyLong_FromUnsignedLong(rr_bell_seq(self->ch));
}

/* Rings this client's bell: its helper thread's _bell_wait returns now. */
static PyObject *client_bell_ring(Chan *self, PyObject *unused)
{
    if (self->ch && !self->closing)
        rr_bell_poke(self->ch);
    Py_RETURN_NONE;
}

/* Wakes every receiver asleep in _wait_request or recv_wait (they look again). */
static PyObject *server_wake_request(Chan *self, PyObject *unused)
{
    if (self->ch && !self->closing)
        rr_wake_receivers(self->ch);
    Py_RETURN_NONE;
}

static PyObject *client_bell_release(Chan *self, PyObject *unused)
{
    if (self->ch && !self->closing)
        rr_bell_release(self->ch);
    Py_RETURN_NONE;
}

/* Waits (GIL released) until the bell's count differs from `seen`; returns
 * the count now (equal to seen on timeout). */
static PyObject *client_bell_wait(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"seen", "timeout"};
    PyObject *a[2];
    uint64_t seen;
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "_bell_wait") < 0
        || parse_u64_range(a[0], "seen", 0, UINT32_MAX, &seen) < 0
        || parse_deadline(a[1], &deadline) < 0 || enter(self) < 0)
        return NULL;
    int rc;
    WAIT_SLICED(rc, deadline, rr_bell_wait(self->ch, (uint32_t)seen, dl));
    uint32_t now = rr_bell_seq(self->ch);
    leave(self);
    if (rc == -EINTR)
        return NULL;
    if (rc < 0 && rc != -EAGAIN)
        return raise_core(self->st, rc, NULL, NULL);
    return PyLong_FromUnsignedLong(now);
}

static PyObject *server_test_hold_lock(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_test_hold_lock(self->ch);
    Py_END_ALLOW_THREADS
    leave(self);
    return rc < 0 ? raise_core(self->st, rc, NULL, NULL) : Py_NewRef(Py_None);
}

/* ---- Server: receiving ---- */

/* Pairs (data, id) taken from the Str queue, at most `max`; `deadline` bounds
 * the wait for the first. The payloads are built while the queue lock is
 * held (no Python code runs then) and only what was built is consumed. */
static PyObject *str_take(Chan *self, uint32_t max, int64_t deadline, int as_list)
{
    rr_chan *ch = self->ch;
    int n = 0;
    if (max == 0)
        return PyList_New(0);
    for (;;) {
        n = rr_str_recv_begin(ch, RR_TRY);
        if (n == -EBUSY) {
            int late = settle_lock(self, deadline);
            if (late < 0)
                return NULL;
            if (late) {
                n = -EAGAIN; /* the lock stayed busy to the deadline */
                break;
            }
            continue;
        }
        if (n != -EAGAIN || deadline == RR_NOWAIT)
            break;
        /* Wait without the GIL and without the queue lock (never hold the lock
         * while taking the GIL back), then try again: another worker may win. */
        WAIT_SLICED(n, deadline, rr_wait_request(ch, dl));
        if (n == -ECANCELED)
            continue; /* a _wake_request meant for a helper thread: look again */
        /* Timed out, or past the deadline while other workers won the
         * requests we were woken for: one last try. */
        if (n == -EAGAIN || (n == 0 && deadline != RR_FOREVER && rr_now_ns() >= deadline))
            deadline = RR_NOWAIT;
        else if (n < 0)
            break;
    }
    if (n == -EAGAIN)
        return as_list ? PyList_New(0) : Py_NewRef(Py_None);
    if (n < 0)
        return raise_core(self->st, n, self->path, NULL);
    /* Everything returned is built, the list included, before anything
     * leaves the queue: what fails half-way stays queued (LESSONS.md). */
    uint32_t want = (uint32_t)n < max ? (uint32_t)n : max, built = 0, used = 0;
    PyObject *res = as_list ? PyList_New(want) : NULL;
    if (as_list && !res) {
        rr_str_recv_end(ch, 0);
        return NULL;
    }
    int bad = 0;
    for (; used < (uint32_t)n && built < want; used++) {
        rr_entry e;
        if (rr_str_recv_peek(ch, used, &e) < 0) {
            bad = 1; /* a corrupt cell: drop it rather than block the queue */
            continue;
        }
        PyObject *pair = make_pair(payload_object(e.data, e.len, e.flags), e.id);
        if (!pair)
            break; /* this one stays queued */
        if (as_list)
            PyList_SET_ITEM(res, built, pair);
        else
            res = pair;
        built++;
    }
    rr_str_recv_end(ch, used);
    if (built > 0 && PyErr_Occurred())
        PyErr_Clear(); /* return what was taken; the rest waits for the next call */
    if (PyErr_Occurred()) {
        Py_XDECREF(res);
        return NULL;
    }
    if (bad && built == 0) {
        Py_XDECREF(res);
        PyErr_SetString(self->st->format_error, "corrupt request entry dropped");
        return NULL;
    }
    if (as_list)
        Py_SET_SIZE(res, built); /* fewer than allocated: the list keeps its capacity */
    return res;
}

#define INT_SETTLE_NS 50000000 /* > the core's 20 ms stall check, with room for two looks */

static PyObject *int_take(Chan *self, int64_t deadline)
{
    int64_t value;
    uint64_t id;
    int rc = rr_int_recv(self->ch, RR_NOWAIT, &value, &id);
    /* Somebody inside an operation at the head: even a call that does not
     * wait gives it a grace, as for a Str lock holder, in which a dead
     * process's cell is repaired. */
    if (rc == -EINPROGRESS && deadline == RR_NOWAIT)
        deadline = rr_now_ns() + INT_SETTLE_NS;
    if ((rc == -EAGAIN || rc == -EINPROGRESS) && deadline != RR_NOWAIT)
        WAIT_SLICED(rc, deadline, rr_int_recv(self->ch, dl, &value, &id));
    if (rc == -EAGAIN)
        Py_RETURN_NONE;
    if (rc < 0)
        return raise_core(self->st, rc, self->path, NULL);
    return make_pair(PyLong_FromLongLong(value), id);
}

static PyObject *take_one(Chan *self, int64_t deadline)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *res = self->variant == RR_VARIANT_STR ? str_take(self, 1, deadline, 0)
                                                    : int_take(self, deadline);
    leave(self);
    return res;
}

static PyObject *server_recv(Chan *self, PyObject *unused)
{
    return take_one(self, RR_NOWAIT);
}

static PyObject *server_recv_wait(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "recv_wait") < 0
        || parse_deadline(a[0], &deadline) < 0)
        return NULL;
    return take_one(self, deadline);
}

static PyObject *take_many(Chan *self, uint32_t max, int64_t deadline)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *res = str_take(self, max, deadline, 1);
    leave(self);
    return res;
}

static PyObject *server_recv_multi(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    static const char *const names[] = {"n"};
    PyObject *a[1];
    uint32_t n;
    if (parse_args(args, nargs, kwnames, names, 1, 1, a, "recv_multi") < 0
        || parse_count(a[0], "n", 0, &n) < 0)
        return NULL;
    return take_many(self, n, RR_NOWAIT);
}

static PyObject *server_recv_wait_multi(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    static const char *const names[] = {"n", "timeout"};
    PyObject *a[2];
    uint32_t n;
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "recv_wait_multi") < 0
        || parse_count(a[0], "n", 0, &n) < 0 || parse_deadline(a[1], &deadline) < 0)
        return NULL;
    return take_many(self, n, deadline);
}

static PyObject *server_drain(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"max"};
    PyObject *a[1];
    uint32_t n;
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "drain") < 0
        || parse_count(a[0], "max", 1, &n) < 0)
        return NULL;
    return take_many(self, n, RR_NOWAIT);
}

/* Replies `obj` to request `id` on an entered handle: 1 sent, 0 stale (the
 * request was cancelled or cleared), -1 error set. */
static int reply_one(Chan *self, uint64_t id, PyObject *obj)
{
    int rc;
    if (self->variant == RR_VARIANT_INT) {
        int64_t v;
        if (parse_int64(obj, &v) < 0)
            return -1;
        rc = rr_int_reply(self->ch, id, v);
    } else {
        payload p;
        if (payload_get(obj, &p) < 0)
            return -1;
        if ((uint64_t)p.len > rr_geometry_of(self->ch)->resp_size) {
            PyErr_Format(PyExc_ValueError, "response of %zd bytes exceeds resp_size (%u)", p.len,
                         rr_geometry_of(self->ch)->resp_size);
            payload_release(&p);
            return -1;
        }
        if (p.len >= GIL_FREE_COPY) {
            Py_BEGIN_ALLOW_THREADS rc = rr_str_reply(self->ch, id, p.ptr, (size_t)p.len, p.flags);
            Py_END_ALLOW_THREADS
        } else {
            rc = rr_str_reply(self->ch, id, p.ptr, (size_t)p.len, p.flags);
        }
        payload_release(&p);
    }
    /* the requester waits in an event loop: signal the reply eventfd we share */
    if (rc == 1 && efd_signal(self->reply_efd) < 0)
        PyErr_Clear(); /* best effort: its helper thread hears the bell anyway */
    if (rc == -ESTALE)
        return 0;
    if (rc < 0) {
        raise_core(self->st, rc, NULL, NULL);
        return -1;
    }
    return 1;
}

static PyObject *server_reply(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"id", "data"};
    PyObject *a[2];
    uint64_t id;
    if (parse_args(args, nargs, kwnames, names, 2, 2, a, "reply") < 0 || parse_id(a[0], &id) < 0
        || enter(self) < 0)
        return NULL;
    int rc = reply_one(self, id, a[1]);
    leave(self);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* The exception being raised, normalised, with its traceback; cleared. */
static PyObject *take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Answers one request taken by serve(): handler(data) is the reply; when the
 * handler raises or its reply is refused, on_error(exc, data, id) (if given)
 * may answer instead (None: no reply). 0 answered or skipped, -1 error set. */
static int serve_one(Chan *self, PyObject *handler, PyObject *on_error, PyObject *pair)
{
    PyObject *data = PyTuple_GET_ITEM(pair, 0), *id_obj = PyTuple_GET_ITEM(pair, 1);
    uint64_t id;
    if (parse_id(id_obj, &id) < 0)
        return -1;
    PyObject *out = PyObject_CallOneArg(handler, data);
    int rc = out ? reply_one(self, id, out) : -1;
    Py_XDECREF(out);
    if (rc >= 0)
        return 0;
    if (!on_error || on_error == Py_None
        || !PyErr_ExceptionMatches(PyExc_Exception)) /* KeyboardInterrupt, SystemExit: stop */
        return -1;
    PyObject *exc = take_exception();
    PyObject *args[] = {exc, data, id_obj};
    out = PyObject_Vectorcall(on_error, args, 3, NULL);
    Py_DECREF(exc);
    rc = !out ? -1 : out == Py_None ? 0 : reply_one(self, id, out);
    Py_XDECREF(out);
    return rc < 0 ? -1 : 0;
}

/* Whether the exception set comes from a wait that close() ended (then
 * cleared): serve() returns on close, the calls it makes raise. */
static int closed_under(Chan *self)
{
    if (!self->closing || !PyErr_ExceptionMatches(PyExc_ValueError)
        || PyErr_ExceptionMatches(self->st->format_error))
        return 0;
    PyErr_Clear();
    return 1;
}

/* serve(handler, *, on_error=None, timeout=None, max_requests=None): the
 * worker loop in C. Returns how many requests it took. */
static PyObject *server_serve(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"handler", "on_error", "timeout", "max_requests"};
    PyObject *a[4];
    uint64_t max = UINT64_MAX; /* None: no limit */
    if (parse_args(args, nargs, kwnames, names, 1, 4, a, "serve") < 0)
        return NULL;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "serve() takes on_error, timeout and max_requests "
                                         "as keyword arguments");
        return NULL;
    }
    if (!PyCallable_Check(a[0]) || (a[1] && a[1] != Py_None && !PyCallable_Check(a[1]))) {
        PyErr_SetString(PyExc_TypeError, "serve() needs a callable handler (and on_error)");
        return NULL;
    }
    int64_t idle_ns;
    if (parse_timeout(a[2], &idle_ns) < 0
        || (a[3] && a[3] != Py_None
            && parse_u64_range(a[3], "max_requests", 0, INT64_MAX, &max) < 0))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    uint64_t served = 0;
    int failed = 0;
    while (served < max && !self->closing) {
        int64_t deadline = deadline_in(idle_ns); /* the idle timeout runs per request */
        /* Waits in slices, so that close() from another thread (or a
         * handler) stops the loop within one. */
        PyObject *pair = NULL;
        for (;;) {
            int64_t until = deadline == RR_NOWAIT ? RR_NOWAIT : slice_end(deadline);
            pair = self->variant == RR_VARIANT_STR ? str_take(self, 1, until, 0)
                                                   : int_take(self, until);
            if (pair != Py_None || until == deadline || self->closing)
                break;
            Py_DECREF(pair);
            if (PyErr_CheckSignals() < 0) {
                pair = NULL;
                break;
            }
        }
        if (!pair && closed_under(self))
            pair = Py_NewRef(Py_None); /* the wait was interrupted by close() */
        if (!pair) {
            failed = 1;
            break;
        }
        if (pair == Py_None) { /* idle for `timeout`, or closed */
            Py_DECREF(pair);
            break;
        }
        served++;
        int rc = serve_one(self, a[0], a[1], pair);
        Py_DECREF(pair);
        if (rc < 0) {
            failed = 1;
            break;
        }
    }
    leave(self);
    return failed ? NULL : PyLong_FromUnsignedLongLong(served);
}

/* ---- Client ---- */

/* Sends one request; 1 = sent (*id set), 0 = full / timed out, -1 = error set. */
static int send_one(Chan *self, PyObject *data, int64_t deadline, uint64_t *id)
{
    rr_chan *ch = self->ch;
    int rc;
    if (self->variant == RR_VARIANT_INT) {
        int64_t v;
        if (parse_int64(data, &v) < 0)
            return -1;
        rc = rr_int_send(ch, v, RR_NOWAIT, id);
        if (rc == -EAGAIN && deadline != RR_NOWAIT)
            WAIT_SLICED(rc, deadline, rr_int_send(ch, v, dl, id));
    } else {
        payload p;
        if (payload_get(data, &p) < 0)
            return -1;
        uint64_t arena = rr_geometry_of(ch)->arena;
        if ((uint64_t)p.len > arena - (arena % 8)) {
            PyErr_Format(PyExc_ValueError, "request of %zd bytes exceeds the arena (%llu bytes)",
                         p.len, (unsigned long long)arena);
            payload_release(&p);
            return -1;
        }
        int late = 0;
        for (;;) { /* with the GIL: never wait for the queue lock while holding it */
            if (p.len >= GIL_FREE_COPY) {
                Py_BEGIN_ALLOW_THREADS rc = rr_str_send(ch, p.ptr, (size_t)p.len, p.flags,
                                                        RR_TRY, id);
                Py_END_ALLOW_THREADS
            } else {
                rc = rr_str_send(ch, p.ptr, (size_t)p.len, p.flags, RR_TRY, id);
            }
            if (rc != -EBUSY || (late = settle_lock(self, deadline)) != 0)
                break;
        }
        if (late < 0) {
            payload_release(&p);
            return -1;
        }
        if (late)
            rc = -EAGAIN; /* the lock stayed busy to the deadline */
        else if (rc == -EAGAIN && deadline != RR_NOWAIT)
            WAIT_SLICED(rc, deadline, rr_str_send(ch, p.ptr, (size_t)p.len, p.flags, dl, id));
        payload_release(&p);
    }
    if (rc == -EAGAIN)
        return 0;
    if (rc < 0) {
        raise_core(self->st, rc, NULL, NULL);
        return -1;
    }
    if (pending_add(self, *id) < 0) {
        rr_cancel(ch, *id);
        return -1;
    }
    return 1;
}

/* The response to `id` as an object; NULL with no error set if it is not
 * there (*stale says whether it never will be). */
static PyObject *collect(Chan *self, uint64_t id, int *stale)
{
    rr_resp r;
    *stale = 0;
    if (self->variant == RR_VARIANT_INT) {
        /* one CAS (READY -> FREE) instead of view and release */
        int64_t value;
        int rc = rr_int_peek(self->ch, id, &value);
        if (rc < 0) {
            *stale = rc == -ESTALE;
            return NULL;
        }
        PyObject *obj = PyLong_FromLongLong(value);
        if (obj && rr_resp_discard(self->ch, id) < 0) {
            Py_CLEAR(obj); /* cleared under us */
            *stale = 1;
        }
        if (obj)
            pending_drop(self, id);
        return obj;
    }
    int rc = rr_resp_view(self->ch, id, &r);
    if (rc < 0) {
        *stale = rc == -ESTALE;
        return NULL;
    }
    PyObject *obj = payload_object(r.data, r.len, r.flags);
    if (!obj) {
        rr_resp_unview(self->ch, id); /* leave the reply for another try */
        return NULL;
    }
    if (rr_resp_release(self->ch, id) < 0) {
        /* reclaimed under us (only a sweep that took us for dead does that) */
        Py_DECREF(obj);
        *stale = 1;
        return NULL;
    }
    pending_drop(self, id);
    return obj;
}

/* After -EOWNERDEAD: frees the slot of `id` and raises WorkerDiedError (-1),
 * or finds the request moved on since the check: 0 = look again (a reply
 * landed, or a live worker writes it now), 1 = stale. */
static int worker_died(Chan *self, uint64_t id)
{
    int pid = rr_resp_worker(self->ch, id);
    int rc = rr_resp_abandon_dead(self->ch, id);
    if (rc == -EBUSY || rc == -EAGAIN)
        return 0;
    pending_drop(self, id);
    if (rc < 0)
        return 1;
    PyObject *msg = PyUnicode_FromFormat(
        "worker process %d died before replying to request %llu", pid, (unsigned long long)id);
    if (!msg)
        return -1;
    PyObject *exc = PyObject_CallOneArg(self->st->worker_died, msg);
    Py_DECREF(msg);
    if (!exc)
        return -1;
    PyObject *pid_obj = PyLong_FromLong(pid), *id_obj = PyLong_FromUnsignedLongLong(id);
    if (pid_obj && id_obj && PyObject_SetAttrString(exc, "pid", pid_obj) == 0
        && PyObject_SetAttrString(exc, "id", id_obj) == 0)
        PyErr_SetObject(self->st->worker_died, exc);
    Py_XDECREF(pid_obj);
    Py_XDECREF(id_obj);
    Py_DECREF(exc);
    return -1;
}

/* Waits for and collects the response to `id`; None on timeout or stale. */
static PyObject *wait_collect(Chan *self, uint64_t id, int64_t deadline)
{
    int stale, rc = 0;
    for (;;) {
        PyObject *obj = collect(self, id, &stale);
        if (obj || PyErr_Occurred())
            return obj;
        if (stale) {
            pending_drop(self, id);
            Py_RETURN_NONE;
        }
        if (rc == -EAGAIN || deadline == RR_NOWAIT)
            Py_RETURN_NONE;
        WAIT_SLICED(rc, deadline, rr_resp_wait(self->ch, id, dl));
        if (rc == -EINTR)
            return NULL;
        if (rc == -EOWNERDEAD) {
            int died = worker_died(self, id);
            if (died < 0)
                return NULL;
            if (died > 0)
                Py_RETURN_NONE;
            rc = 0; /* moved on since the check: collect, or wait on */
        } else if (rc < 0 && rc != -EAGAIN && rc != -ESTALE) {
            return raise_core(self->st, rc, NULL, NULL);
        }
    }
}

static PyObject *client_send_impl(Chan *self, PyObject *data, int64_t deadline)
{
    if (enter(self) < 0)
        return NULL;
    uint64_t id;
    int rc = send_one(self, data, deadline, &id);
    leave(self);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(id);
}

static PyObject *client_send(Chan *self, PyObject *data)
{
    return client_send_impl(self, data, RR_NOWAIT);
}

/* A sent request also signals the request eventfd. */
static PyObject *notified(Chan *self, PyObject *id)
{
    if (id && id != Py_None && self->ch && efd_signal(self->req_efd) < 0) {
        Py_DECREF(id);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return id;
}

static PyObject *client_send_notify(Chan *self, PyObject *data)
{
    return notified(self, client_send_impl(self, data, RR_NOWAIT));
}

static PyObject *client_send_wait(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "send_wait") < 0
        || parse_deadline(a[1], &deadline) < 0)
        return NULL;
    return client_send_impl(self, a[0], deadline);
}

static PyObject *client_send_wait_notify(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    return notified(self, client_send_wait(self, args, nargs, kwnames));
}

static PyObject *client_get_impl(Chan *self, PyObject *id_obj, int64_t deadline)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || enter(self) < 0)
        return NULL;
    PyObject *res = wait_collect(self, id, deadline);
    leave(self);
    return res;
}

static PyObject *client_get(Chan *self, PyObject *id_obj)
{
    return client_get_impl(self, id_obj, RR_NOWAIT);
}

static PyObject *client_get_wait(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"id", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "get_wait") < 0
        || parse_deadline(a[1], &deadline) < 0)
        return NULL;
    return client_get_impl(self, a[0], deadline);
}

static PyObject *client_cancel(Chan *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || enter(self) < 0)
        return NULL;
    int rc = rr_cancel(self->ch, id);
    if (rc != -EBUSY)
        pending_drop(self, id);
    leave(self);
    return PyBool_FromLong(rc == 0);
}

static PyObject *client_req(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "req") < 0
        || parse_deadline(a[1], &deadline) < 0 || enter(self) < 0)
        return NULL;
    uint64_t id;
    PyObject *res = NULL;
    int rc = send_one(self, a[0], deadline, &id);
    if (rc == 0)
        res = Py_NewRef(Py_None);
    if (rc <= 0)
        goto out;
    res = wait_collect(self, id, deadline);
    if (res == Py_None || !res) {
        /* Timed out, dropped by clear(), or interrupted: give the slot back
         * (a reply being written loses). A complete reply that won the race
         * is collected, at once, instead of lost. */
        int crc = rr_cancel(self->ch, id);
        if (crc == -EBUSY && res == Py_None) {
            Py_DECREF(res);
            res = wait_collect(self, id, RR_NOWAIT);
        } else if (crc != -EBUSY) {
            pending_drop(self, id);
        }
    }
out:
    leave(self);
    return res;
}

/* Non-blocking: 0 pending, 1 replied, 2 stale; WorkerDiedError (slot freed)
 * if the worker that took it is dead. For event loops, which never wait. */
static PyObject *client_check(Chan *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || enter(self) < 0)
        return NULL;
    int rc = rr_resp_check(self->ch, id);
    if (rc == -EOWNERDEAD) {
        int died = worker_died(self, id);
        if (died < 0) {
            leave(self);
            return NULL;
        }
        /* stale; or moved on since the check: replied (1) or a live worker's (0) */
        rc = died > 0 ? -ESTALE : rr_resp_check(self->ch, id) == 1;
    }
    PyObject *res = PyLong_FromLong(rc == -ESTALE ? 2 : rc);
    leave(self);
    return res;
}

static PyObject *client_pending(Chan *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    uint64_t n = 0;
    uint32_t slots = rr_geometry_of(self->ch)->resp_slots;
    for (uint32_t i = 0; pending_table(self, 0) && i < slots; i++) {
        uint64_t id = self->pending[i];
        if (id && rr_id_live(self->ch, id - 1))
            n++;
        else
            self->pending[i] = 0; /* cleared or recycled behind our back */
    }
    leave(self);
    return PyLong_FromUnsignedLongLong(n);
}

/* ---- properties ---- */

static PyObject *get_capacity(Chan *self, void *c)
{
    if (enter(self) < 0)
        return NULL;
    uint32_t v = rr_geometry_of(self->ch)->req_cap;
    leave(self);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *get_resp_slots(Chan *self, void *c)
{
    if (enter(self) < 0)
        return NULL;
    uint32_t v = rr_geometry_of(self->ch)->resp_slots;
    leave(self);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *get_resp_size(Chan *self, void *c)
{
    if (enter(self) < 0)
        return NULL;
    uint32_t v = rr_geometry_of(self->ch)->resp_size;
    leave(self);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *get_path(Chan *self, void *c) { return Py_NewRef(self->path); }

static PyObject *get_memfd(Chan *self, void *c)
{
    if (enter(self) < 0)
        return NULL;
    int fd = rr_memfd(self->ch);
    leave(self);
    return PyLong_FromLong(fd);
}

static PyObject *get_closed(Chan *self, void *c)
{
    return PyBool_FromLong(!self->ch || self->closing);
}

static PyObject *get_spin(Chan *self, void *c)
{
    if (enter(self) < 0)
        return NULL;
    uint32_t v = rr_get_spin(self->ch);
    leave(self);
    return PyLong_FromUnsignedLong(v);
}

static int set_spin(Chan *self, PyObject *value, void *c)
{
    uint32_t spin;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete spin");
        return -1;
    }
    if (parse_spin(value, &spin) < 0 || enter(self) < 0)
        return -1;
    rr_set_spin(self->ch, spin);
    leave(self);
    return 0;
}

static PyObject *chan_repr(Chan *self)
{
    const char *name = Py_TYPE(self)->tp_name;
    if (!self->ch)
        return PyUnicode_FromFormat("<%s closed>", name);
    const rr_geometry *g = rr_geometry_of(self->ch);
    return PyUnicode_FromFormat("<%s path=%R capacity=%u resp_slots=%u>", name, self->path,
                                g->req_cap, g->resp_slots);
}

/* ---- type specs ---- */

#define COMMON_METHODS                                                                     \
    {"close", (PyCFunction)chan_close, METH_NOARGS, "Close the channel handle."},          \
    {"__enter__", (PyCFunction)chan_enter, METH_NOARGS, NULL},                             \
    {"__exit__", (PyCFunction)chan_exit, METH_VARARGS, NULL},                              \
    {"size", (PyCFunction)chan_size, METH_NOARGS, "Requests queued now."},                 \
    {"is_empty", (PyCFunction)chan_is_empty, METH_NOARGS, "True if no request is queued."}, \
    {"stats", (PyCFunction)chan_stats, METH_NOARGS, "Counters, geometry and slot states."}, \
    {"_layout", (PyCFunction)chan_layout, METH_NOARGS,                                     \
     "Offsets of the regions in the file (for tools and tests)."},                        \
    {"from_fd", (PyCFunction)(void (*)(void))chan_from_fd,                                 \
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,                                            \
     "Open a channel from a file descriptor (duplicated; the caller keeps fd)."},          \
    {"_open_existing", (PyCFunction)(void (*)(void))chan_open_existing,                    \
     METH_VARARGS | METH_KEYWORDS | METH_CLASS,                                            \
     "Open an existing channel file (never creates one)."},                                \
    {"__reduce__", (PyCFunction)chan_reduce, METH_NOARGS, NULL}

#define FASTKW METH_FASTCALL | METH_KEYWORDS
#define FASTFN(f) (PyCFunction)(void (*)(void))(f)

#define SERVER_METHODS                                                                     \
    COMMON_METHODS,                                                                        \
    {"new_memfd", (PyCFunction)(void (*)(void))chan_new_memfd,                             \
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, "Create a channel in a new memfd."},        \
    {"client", (PyCFunction)server_client, METH_NOARGS,                                    \
     "A client on the same mapping."},                                                     \
    {"recv", (PyCFunction)server_recv, METH_NOARGS,                                        \
     "(data, id) of the next request, or None if the queue is empty."},                    \
    {"recv_wait", FASTFN(server_recv_wait), FASTKW,                                        \
     "recv_wait(timeout=None): (data, id), or None on timeout."},                          \
    {"reply", FASTFN(server_reply), FASTKW,                                                \
     "reply(id, data): True, or False if the request was cancelled or cleared."},          \
    {"serve", FASTFN(server_serve), FASTKW,                                                \
     "serve(handler, *, on_error=None, timeout=None, max_requests=None): answer requests " \
     "with handler(data) until timeout seconds pass without one, max_requests are "        \
     "taken or the server is closed; returns how many were taken."},                      \
    {"clear", (PyCFunction)server_clear, METH_NOARGS,                                      \
     "Drop queued requests, free every slot, wake all waiters."},                          \
    {"sync", (PyCFunction)server_sync, METH_NOARGS, "msync the channel file."},            \
    {"unlink", (PyCFunction)server_unlink, METH_NOARGS, "Remove the channel file."},       \
    {"eventfd", (PyCFunction)req_efd_get, METH_NOARGS,                                     \
     "The request eventfd (created on first call)."},                                      \
    {"eventfd_set", (PyCFunction)req_efd_set, METH_O,                                      \
     "Use fd (e.g. inherited) as the request eventfd; -1 unsets."},                        \
    {"eventfd_consume", (PyCFunction)req_efd_consume, METH_NOARGS,                         \
     "Reset the request eventfd; returns how many signals it had."},                       \
    {"notify", (PyCFunction)req_efd_notify, METH_NOARGS,                                   \
     "Signal the request eventfd; False if there is none."},                               \
    {"fileno", (PyCFunction)req_efd_fileno, METH_NOARGS, "The request eventfd, or -1."},   \
    {"reply_eventfd", (PyCFunction)reply_efd_get, METH_NOARGS,                             \
     "The reply eventfd (created on first call)."},                                        \
    {"reply_eventfd_set", (PyCFunction)reply_efd_set, METH_O,                              \
     "Use fd (e.g. inherited) as the reply eventfd; -1 unsets."},                          \
    {"reply_eventfd_consume", (PyCFunction)reply_efd_consume, METH_NOARGS,                 \
     "Reset the reply eventfd; returns how many signals it had."},                         \
    {"reply_notify", (PyCFunction)reply_efd_notify, METH_NOARGS,                           \
     "Signal the reply eventfd; False if there is none."},                                 \
    {"reply_fileno", (PyCFunction)reply_efd_fileno, METH_NOARGS,                           \
     "The reply eventfd, or -1."},                                                         \
    {"_wait_request", FASTFN(server_wait_request), FASTKW,                                 \
     "Wait until a request is queued without taking it; True if one is."},                 \
    {"_wake_request", (PyCFunction)server_wake_request, METH_NOARGS,                       \
     "Wake every receiver asleep in _wait_request or recv_wait."}

static PyMethodDef server_methods[] = {
    SERVER_METHODS,
    {"recv_multi", FASTFN(server_recv_multi), FASTKW,
     "recv_multi(n): up to n (data, id) pairs taken under one lock."},
    {"recv_wait_multi", FASTFN(server_recv_wait_multi), FASTKW,
     "recv_wait_multi(n, timeout=None): wait for at least one, then as recv_multi."},
    {"drain", FASTFN(server_drain), FASTKW, "drain(max=None): every queued (data, id)."},
    {"_test_hold_lock", (PyCFunction)server_test_hold_lock, METH_NOARGS,
     "Testing only: take the queue lock and never release it (then kill the process)."},
    {NULL},
};

static PyMethodDef int_server_methods[] = {SERVER_METHODS, {NULL}};

static PyMethodDef client_methods[] = {
    COMMON_METHODS,
    {"req", FASTFN(client_req), FASTKW,
     "req(data, timeout=None): send and wait for the response; None on timeout."},
    {"send", (PyCFunction)client_send, METH_O, "send(data): an id, or None if full."},
    {"send_wait", FASTFN(client_send_wait), FASTKW,
     "send_wait(data, timeout=None): an id, or None on timeout."},
    {"get", (PyCFunction)client_get, METH_O, "get(id): the response, or None if not ready."},
    {"get_wait", FASTFN(client_get_wait), FASTKW,
     "get_wait(id, timeout=None): the response, or None on timeout."},
    {"cancel", (PyCFunction)client_cancel, METH_O,
     "cancel(id): True if the pending request was abandoned."},
    {"pending", (PyCFunction)client_pending, METH_NOARGS,
     "Requests sent through this object and not yet collected."},
    {"send_notify", (PyCFunction)client_send_notify, METH_O,
     "send_notify(data): send, then signal the request eventfd."},
    {"send_wait_notify", FASTFN(client_send_wait_notify), FASTKW,
     "send_wait_notify(data, timeout=None): send_wait, then signal the request eventfd."},
    {"eventfd", (PyCFunction)reply_efd_get, METH_NOARGS,
     "The reply eventfd (created on first call)."},
    {"eventfd_set", (PyCFunction)reply_efd_set, METH_O,
     "Use fd (e.g. inherited) as the reply eventfd; -1 unsets."},
    {"eventfd_consume", (PyCFunction)reply_efd_consume, METH_NOARGS,
     "Reset the reply eventfd; returns how many signals it had."},
    {"fileno", (PyCFunction)reply_efd_fileno, METH_NOARGS, "The reply eventfd, or -1."},
    {"notify", (PyCFunction)req_efd_notify, METH_NOARGS,
     "Signal the request eventfd; False if there is none."},
    {"req_eventfd_set", (PyCFunction)req_efd_set, METH_O,
     "Use fd (e.g. inherited) as the request eventfd; -1 unsets."},
    {"req_fileno", (PyCFunction)req_efd_fileno, METH_NOARGS, "The request eventfd, or -1."},
    {"_check", (PyCFunction)client_check, METH_O,
     "_check(id): 0 pending, 1 replied, 2 stale; WorkerDiedError if its worker died."},
    {"_bell_claim", (PyCFunction)client_bell_claim, METH_NOARGS,
     "Make this client's requests ring a bell on reply; returns its count."},
    {"_bell_release", (PyCFunction)client_bell_release, METH_NOARGS, "Give the bell back."},
    {"_bell_ring", (PyCFunction)client_bell_ring, METH_NOARGS,
     "Ring this client's bell: a _bell_wait on it returns now."},
    {"_bell_wait", FASTFN(client_bell_wait), FASTKW,
     "_bell_wait(seen, timeout=None): wait until the bell's count moves; the count."},
    {NULL},
};

static PyGetSetDef chan_getset[] = {
    {"capacity", (getter)get_capacity, NULL, "Request queue capacity.", NULL},
    {"resp_slots", (getter)get_resp_slots, NULL, "Number of response slots.", NULL},
    {"resp_size", (getter)get_resp_size, NULL, "Largest response in bytes (0 for Int).", NULL},
    {"path", (getter)get_path, NULL, "The channel file, or None.", NULL},
    {"memfd", (getter)get_memfd, NULL, "The memfd's file descriptor, or -1.", NULL},
    {"closed", (getter)get_closed, NULL, "True once close() was called.", NULL},
    {"spin", (getter)get_spin, (setter)set_spin, "Spin budget before sleeping, in us.", NULL},
    {NULL},
};

static PyMemberDef chan_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Chan, weakreflist), READONLY},
    {NULL},
};

#define TYPE_SLOTS(methods, newfn, doc)                                      \
    {Py_tp_new, newfn}, {Py_tp_dealloc, chan_dealloc},                       \
    {Py_tp_traverse, chan_traverse}, {Py_tp_methods, methods},               \
    {Py_tp_getset, chan_getset}, {Py_tp_members, chan_members},              \
    {Py_tp_repr, chan_repr}, {Py_mp_length, chan_len},                       \
    {Py_sq_length, chan_len}, {Py_tp_doc, doc}, {0, NULL}

static PyType_Slot server_slots[] = {TYPE_SLOTS(server_methods, server_new,
    "Server(path, req_cap=None, resp_slots=None, resp_size=None, arena=None, *, spin=None, "
    "mode=None)\n--\n\nThe worker side of a bytes/str channel; creates the file or opens it.\n"
    "Geometry not given (None): 1024, 64, 4096 and max(req_cap * 256, 4096) for a new\n"
    "channel, the file's for an existing one (given and different: ValueError).")};
static PyType_Slot client_slots[] = {TYPE_SLOTS(client_methods, client_new,
    "Client(path, *, spin=None, wait=None)\n--\n\nThe requesting side of a bytes/str "
    "channel.\nwait: seconds to wait for a channel that does not exist yet.")};
static PyType_Slot int_server_slots[] = {TYPE_SLOTS(int_server_methods, int_server_new,
    "IntServer(path, req_cap=None, resp_slots=None, *, spin=None, mode=None)\n"
    "--\n\nThe worker side of an int64 channel; creates the file or opens it.\n"
    "Geometry not given (None): 1024 and 64 for a new channel, the file's for an\n"
    "existing one (given and different: ValueError).")};
static PyType_Slot int_client_slots[] = {TYPE_SLOTS(client_methods, client_new,
    "IntClient(path, *, spin=None, wait=None)\n--\n\nThe requesting side of an int64 "
    "channel.\nwait: seconds to wait for a channel that does not exist yet.")};

#define SPEC(name, slots)                                                             \
    {"reqrep." name, sizeof(Chan), 0,                                                 \
     Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, slots}

static PyType_Spec server_spec = SPEC("Server", server_slots);
static PyType_Spec client_spec = SPEC("Client", client_slots);
static PyType_Spec int_server_spec = SPEC("IntServer", int_server_slots);
static PyType_Spec int_client_spec = SPEC("IntClient", int_client_slots);

/* ---- module ---- */

static int add_type(PyObject *mod, PyType_Spec *spec, PyTypeObject **out)
{
    *out = (PyTypeObject *)PyType_FromModuleAndSpec(mod, spec, NULL);
    if (!*out)
        return -1;
    return PyModule_AddType(mod, *out);
}

/* The file format as the core describes it, for tools and tests that look
 * inside a channel (reqrep._format builds on it): reqrep._reqrep._format, a
 * tuple of (group, name, value, size). */
static PyObject *format_entries(void)
{
    size_t n;
    const rr_format_entry *e = rr_format_describe(&n);
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    for (size_t i = 0; t && i < n; i++) {
        PyObject *item = Py_BuildValue("(ssKI)", e[i].group, e[i].name,
                                       (unsigned long long)e[i].value, (unsigned)e[i].size);
        if (!item) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
    }
    return t;
}

PyDoc_STRVAR(process_alive_doc,
"_process_alive(pid, start_bits=0, bits=32, /)\n--\n\n"
"Whether process pid, whose start time ends in start_bits (its low `bits`\n"
"bits; 0 = unknown), is alive: the verdict the core acts on.");

static PyObject *module_process_alive(PyObject *mod, PyObject *args)
{
    unsigned long pid, start_bits = 0;
    int bits = 32;
    if (!PyArg_ParseTuple(args, "k|ki:_process_alive", &pid, &start_bits, &bits))
        return NULL;
    if (pid > UINT32_MAX || start_bits > UINT32_MAX || bits < 1 || bits > 32) {
        PyErr_SetString(PyExc_ValueError, "pid and start_bits are 32-bit, bits 1 to 32");
        return NULL;
    }
    int alive;
    Py_BEGIN_ALLOW_THREADS
    alive = rr_process_alive((uint32_t)pid, (uint32_t)start_bits, bits);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(alive);
}

static PyMethodDef module_methods[] = {
    {"_process_alive", module_process_alive, METH_VARARGS, process_alive_doc},
    {NULL},
};

static int module_exec(PyObject *mod)
{
    module_state *st = PyModule_GetState(mod);
    st->format_error = PyErr_NewExceptionWithDoc(
        "reqrep.ChannelFormatError",
        "The file is not a valid reqrep channel (or not of the expected variant).",
        PyExc_ValueError, NULL);
    if (!st->format_error || PyModule_AddObjectRef(mod, "ChannelFormatError", st->format_error))
        return -1;
    st->worker_died = PyErr_NewExceptionWithDoc(
        "reqrep.WorkerDiedError",
        "The worker process that took a request died before replying to it.\n\n"
        "Attributes: pid (the dead worker's pid) and id (the request id).",
        PyExc_RuntimeError, NULL);
    if (!st->worker_died || PyModule_AddObjectRef(mod, "WorkerDiedError", st->worker_died))
        return -1;
    PyObject *fmt = format_entries();
    int rc = fmt ? PyModule_AddObjectRef(mod, "_format", fmt) : -1;
    Py_XDECREF(fmt);
    if (rc < 0)
        return -1;
    if (add_type(mod, &server_spec, &st->server_type) < 0
        || add_type(mod, &client_spec, &st->client_type) < 0
        || add_type(mod, &int_server_spec, &st->int_server_type) < 0
        || add_type(mod, &int_client_spec, &st->int_client_type) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    module_state *st = PyModule_GetState(mod);
    Py_VISIT(st->server_type);
    Py_VISIT(st->client_type);
    Py_VISIT(st->int_server_type);
    Py_VISIT(st->int_client_type);
    Py_VISIT(st->format_error);
    Py_VISIT(st->worker_died);
    return 0;
}

static int module_clear(PyObject *mod)
{
    module_state *st = PyModule_GetState(mod);
    Py_CLEAR(st->server_type);
    Py_CLEAR(st->client_type);
    Py_CLEAR(st->int_server_type);
    Py_CLEAR(st->int_client_type);
    Py_CLEAR(st->format_error);
    Py_CLEAR(st->worker_died);
    return 0;
}

static void module_free(void *mod) { module_clear((PyObject *)mod); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef reqrep_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "reqrep._reqrep",
    .m_doc = "Shared-memory request/response channels (the C core's binding).",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__reqrep(void) { return PyModuleDef_Init(&reqrep_module); }
