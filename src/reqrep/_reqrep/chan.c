/* The channel base (see chan.h). */
#include "chan.h"

#include <errno.h>
#include <limits.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "errors.h"
#include "wait.h"

/* ---- types and classes ---- */

int chan_add_type(PyObject *mod, module_state *st, const chan_class *cls, PyType_Spec *spec)
{
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, spec, NULL);
    if (!type)
        return -1;
    st->types[cls->slot] = type;
    st->classes[cls->slot] = cls;
    return PyModule_AddType(mod, type);
}

const chan_class *chan_class_of(PyTypeObject *type, module_state **st)
{
    *st = state_of_type(type);
    if (!*st)
        return NULL;
    for (int i = 0; i < N_TYPES; i++)
        if ((*st)->types[i] && PyType_IsSubtype(type, (*st)->types[i]))
            return (*st)->classes[i];
    PyErr_SetString(PyExc_TypeError, "not a reqrep channel type");
    return NULL;
}

/* ---- lifecycle ---- */

PyObject *chan_wrap(PyTypeObject *type, module_state *st, const chan_class *cls, rr_chan *ch,
                    PyObject *path, uint32_t spin)
{
    Chan *self = (Chan *)type->tp_alloc(type, 0);
    if (!self) {
        rr_close(ch);
        return NULL;
    }
    rr_set_spin(ch, spin);
    self->ch = ch;
    self->st = st;
    self->cls = cls;
    self->path = Py_NewRef(path ? path : Py_None);
    self->req_efd = self->reply_efd = (efd){-1, 0};
    const char *codec = rr_geometry_of(ch)->codec;
    if (codec[0] && !(self->codec = codec_lookup(codec))) {
        Py_DECREF(self); /* closes ch */
        return NULL;
    }
    return (PyObject *)self;
}

/* Ends what the object has pending and its eventfds: no call is in
 * progress (holds may be). */
static void chan_release(Chan *self)
{
    if (self->released)
        return;
    self->released = 1;
    efd_replace(&self->req_efd, -1, 0);
    efd_replace(&self->reply_efd, -1, 0);
    if (self->cls->release)
        self->cls->release(self);
}

/* Unmaps now: no call is in progress, and no hold. */
void chan_close_now(Chan *self)
{
    if (!self->ch)
        return;
    chan_release(self);
    rr_close(self->ch);
    self->ch = NULL;
    self->closing = 0;
    self->released = 0;
}

void chan_close_idle(Chan *self)
{
    chan_release(self);
    if (self->busy == 0)
        chan_close_now(self);
}

/* With calls in progress (other threads waiting, or a handler of serve()),
 * the last one to leave unmaps: interrupting the handle ends every wait on
 * it (each call raises ValueError, serve() returns), and rr_interrupt runs
 * with the GIL held, so no call can leave and unmap under it. (A child
 * forked while other threads were in calls inherits their count but not
 * them: its close() only marks the object closed; the mapping stays.) */
PyObject *chan_close(Chan *self, PyObject *unused)
{
    if (!self->ch)
        Py_RETURN_NONE;
    if (self->busy == self->holds) {
        self->closing = 1;
        chan_close_idle(self);
    } else if (!self->closing) {
        self->closing = 1;
        rr_interrupt(self->ch);
    }
    Py_RETURN_NONE;
}

int chan_traverse(Chan *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->codec);
    return 0;
}

void chan_dealloc(Chan *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    chan_close_now(self);
    Py_CLEAR(self->path);
    Py_CLEAR(self->codec);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyObject *chan_enter_method(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    chan_leave(self);
    return Py_NewRef(self);
}

PyObject *chan_exit(Chan *self, PyObject *args)
{
    return chan_close(self, NULL);
}

/* ---- opening ---- */

/* How often a client that waits for a channel looks again. */
#define OPEN_POLL_NS 10000000

typedef struct open_call {
    const char *path;
    uint32_t variant;
    const rr_geometry *create;
    rr_open_opts *opts;
    rr_chan **out;
    rr_error *err;
    int64_t deadline; /* of the whole wait */
    int rc;           /* the open's result */
} open_call;

/* rr_open_path_opts, again every OPEN_POLL_NS to `slice_end` while the
 * channel is not there yet: 0 once o->rc is the answer (at the last slice,
 * the error it would have raised without waiting), -EAGAIN to go on. */
static int open_polling(rr_chan *unused, int64_t slice_end, void *arg)
{
    open_call *o = arg;
    for (;;) {
        o->rc = rr_open_path_opts(o->path, o->variant, o->create, o->opts, o->out, o->err);
        if (o->rc == -EINTR)
            return -EINTR;
        if (o->rc >= 0 || !rr_open_unready(o->rc, o->err))
            return 0;
        int64_t now = rr_now_ns();
        if (now >= slice_end)
            return slice_end < o->deadline ? -EAGAIN : 0;
        int64_t ns = slice_end - now < OPEN_POLL_NS ? slice_end - now : OPEN_POLL_NS;
        struct timespec ts = {0, (long)ns};
        if (nanosleep(&ts, NULL) != 0)
            return -EINTR;
    }
}

PyObject *chan_open(PyTypeObject *type, PyObject *path, const open_req *r, int create,
                    uint32_t spin)
{
    module_state *st;
    const chan_class *cls = chan_class_of(type, &st);
    if (!cls)
        return NULL;
    rr_chan *ch = NULL;
    rr_error err = {{0}};
    /* a Server never goes through a symbolic link, created or re-opened */
    rr_open_opts opts = {r->mode, 0, cls->slot == TYPE_SERVER || cls->slot == TYPE_INT_SERVER};
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
        /* a client may wait (polling) for a channel that is not there yet */
        int64_t deadline = r->wait_ns < 0 ? RR_NOWAIT : deadline_in(r->wait_ns);
        open_call o = {PyBytes_AS_STRING(bytes_path), cls->variant, create ? &r->g : NULL,
                       &opts, &ch, &err, deadline, 0};
        rc = wait_sliced(NULL, NULL, deadline, open_polling, &o);
        if (rc == 0)
            rc = o.rc;
        Py_DECREF(bytes_path);
    }
    if (rc < 0) {
        raise_core(st, rc, str_path, &err);
        Py_XDECREF(str_path);
        return NULL;
    }
    if (!opts.initialised && check_codec(r, rr_geometry_of(ch), str_path) < 0) {
        rr_close(ch);
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
    PyObject *self = chan_wrap(type, st, cls, ch, str_path, spin);
    Py_XDECREF(str_path);
    return self;
}

PyObject *chan_from_fd(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "spin", NULL};
    int fd;
    PyObject *spin_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$O:from_fd", kwlist, &fd, &spin_obj))
        return NULL;
    module_state *st;
    const chan_class *cls = chan_class_of(type, &st);
    uint32_t spin;
    if (!cls || parse_spin(spin_obj, &spin) < 0)
        return NULL;
    rr_chan *ch;
    rr_error err = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_open_fd(fd, cls->variant, &ch, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_core(st, rc, NULL, &err);
    return chan_wrap(type, st, cls, ch, NULL, spin);
}

PyObject *chan_open_memfd(PyTypeObject *type, const char *name, PyObject *req_cap,
                          PyObject *resp_slots, PyObject *resp_size, PyObject *arena,
                          PyObject *codec, PyObject *spin_obj)
{
    module_state *st;
    const chan_class *cls = chan_class_of(type, &st);
    open_req r;
    uint32_t spin;
    if (!cls || parse_geometry(st, cls->variant, req_cap, resp_slots, resp_size, arena, &r) < 0
        || parse_spin(spin_obj, &spin) < 0 || parse_open_codec(cls->variant, codec, &r) < 0)
        return NULL;
    rr_chan *ch;
    rr_error err = {{0}};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_open_memfd(name, &r.g, &ch, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return raise_core(st, rc, NULL, &err);
    return chan_wrap(type, st, cls, ch, NULL, spin);
}

/* Opens an existing channel by path whatever the type (never creates one):
 * how a pickled file-backed object comes back in another process. */
PyObject *chan_open_existing(PyTypeObject *type, PyObject *args, PyObject *kwds)
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
    return chan_open(type, path, &r, 0, spin);
}

/* Pickling is decided in Python (reqrep._pickle): by path, by fd, or not. */
PyObject *chan_reduce(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    chan_leave(self);
    PyObject *reduce = package_attr("reqrep._pickle", "reduce_channel");
    if (!reduce)
        return NULL;
    PyObject *res = PyObject_CallOneArg(reduce, (PyObject *)self);
    Py_DECREF(reduce);
    return res;
}

/* ---- status ---- */

PyObject *chan_size(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    uint64_t n = rr_size(self->ch);
    chan_leave(self);
    return PyLong_FromUnsignedLongLong(n);
}

Py_ssize_t chan_len(Chan *self)
{
    if (chan_enter(self) < 0)
        return -1;
    uint64_t n = rr_size(self->ch);
    chan_leave(self);
    return (Py_ssize_t)n;
}

/* The Passthrough codec standing for `codec` (reqrep._codecs). */
static PyObject *passthrough_of(PyObject *codec)
{
    PyObject *make = package_attr("reqrep._codecs", "Passthrough");
    PyObject *name = make ? PyObject_GetAttrString(codec, "name") : NULL;
    PyObject *res = name ? PyObject_CallOneArg(make, name) : NULL;
    Py_XDECREF(make);
    Py_XDECREF(name);
    return res;
}

/* Only while no other call is in progress: a call in another thread may be
 * using the codec it replaces. The new codec is made first: making it runs
 * Python code, during which another thread could start a call. */
PyObject *chan_passthrough(Chan *self, PyObject *unused)
{
    PyObject *codec = NULL;
    if (self->codec && !self->passthrough && !(codec = passthrough_of(self->codec)))
        return NULL;
    if (chan_enter(self) < 0) {
        Py_XDECREF(codec);
        return NULL;
    }
    PyObject *res = NULL;
    if (self->busy - self->holds > 1) {
        PyErr_SetString(PyExc_RuntimeError, "_passthrough() while another call is in progress");
        Py_XDECREF(codec);
    } else {
        if (codec)
            Py_SETREF(self->codec, codec);
        self->passthrough = 1;
        res = Py_NewRef(Py_None);
    }
    chan_leave(self);
    return res;
}

PyObject *chan_is_empty(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    uint64_t n = rr_size(self->ch);
    chan_leave(self);
    return PyBool_FromLong(n == 0);
}

PyObject *chan_layout(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    rr_regions r;
    rr_regions_of(self->ch, &r);
    chan_leave(self);
    return Py_BuildValue("{sKsKsKsKsKsK}", "off_bells", (unsigned long long)r.off_bells,
                         "off_cells", (unsigned long long)r.off_cells, "off_slots",
                         (unsigned long long)r.off_slots, "off_arena",
                         (unsigned long long)r.off_arena, "slot_stride",
                         (unsigned long long)r.slot_stride, "total_size",
                         (unsigned long long)r.total_size);
}

PyObject *chan_stats(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    rr_stats s;
    rr_get_stats(self->ch, &s);
    chan_leave(self);
    struct { const char *k; uint64_t v; } rows[] = {
        {"requests", s.requests}, {"replies", s.replies}, {"send_full", s.send_full},
        {"recv_empty", s.recv_empty}, {"recoveries", s.recoveries}, {"size", s.size},
        {"capacity", s.capacity}, {"resp_slots", s.resp_slots}, {"resp_size", s.resp_size},
        {"slots_free", s.slots_free}, {"slots_acquired", s.slots_acquired},
        {"slots_ready", s.slots_ready},
        {"arena_cap", s.arena_cap}, {"arena_used", s.arena_used}, /* Str only: the last two */
    };
    size_t n = sizeof rows / sizeof rows[0];
    if (self->cls->variant != RR_VARIANT_STR)
        n -= 2;
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(rows[i].v);
        if (!v || PyDict_SetItemString(d, rows[i].k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

/* ---- eventfds ---- */

void efd_replace(efd *e, int fd, int own)
{
    if (e->owned && e->fd >= 0)
        close(e->fd);
    *e = (efd){fd, own};
}

int efd_signal(int fd)
{
    uint64_t one = 1;
    if (fd < 0)
        return 0;
    /* EAGAIN: the counter is at its maximum, a reader is already due */
    if (write(fd, &one, sizeof one) != sizeof one && errno != EAGAIN)
        return -1;
    return 1;
}

PyObject *efd_get(Chan *self, efd *e)
{
    if (chan_enter(self) < 0)
        return NULL;
    if (e->fd < 0) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            chan_leave(self);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        efd_replace(e, fd, 1);
    }
    int fd = e->fd;
    chan_leave(self);
    return PyLong_FromLong(fd);
}

PyObject *efd_set(Chan *self, efd *e, PyObject *arg)
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
    if (chan_enter(self) < 0)
        return NULL;
    efd_replace(e, (int)fd, 0); /* the caller keeps ownership of fd */
    chan_leave(self);
    Py_RETURN_NONE;
}

PyObject *efd_fileno(Chan *self, efd *e)
{
    if (chan_enter(self) < 0)
        return NULL;
    int fd = e->fd;
    chan_leave(self);
    return PyLong_FromLong(fd);
}

/* Reads and resets the counter: the number of signals since the last call. */
PyObject *efd_consume(Chan *self, efd *e)
{
    if (chan_enter(self) < 0)
        return NULL;
    int fd = e->fd;
    chan_leave(self);
    uint64_t n = 0;
    if (fd >= 0 && read(fd, &n, sizeof n) != sizeof n) {
        if (errno != EAGAIN)
            return PyErr_SetFromErrno(PyExc_OSError);
        n = 0;
    }
    return PyLong_FromUnsignedLongLong(n);
}

PyObject *efd_notify(Chan *self, efd *e)
{
    if (chan_enter(self) < 0)
        return NULL;
    int rc = efd_signal(e->fd);
    chan_leave(self);
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(rc);
}

/* ---- properties ---- */

static PyObject *get_geometry(Chan *self, void *field)
{
    if (chan_enter(self) < 0)
        return NULL;
    uint32_t v = *(const uint32_t *)((const char *)rr_geometry_of(self->ch) + (size_t)field);
    chan_leave(self);
    return PyLong_FromUnsignedLong(v);
}

static PyObject *get_path(Chan *self, void *unused) { return Py_NewRef(self->path); }

static PyObject *get_memfd(Chan *self, void *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    int fd = rr_memfd(self->ch);
    chan_leave(self);
    return PyLong_FromLong(fd);
}

static PyObject *get_closed(Chan *self, void *unused)
{
    return PyBool_FromLong(!self->ch || self->closing);
}

static PyObject *get_codec(Chan *self, void *unused)
{
    return self->codec ? PyObject_GetAttrString(self->codec, "name") : Py_NewRef(Py_None);
}

static PyObject *get_spin(Chan *self, void *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    uint32_t v = rr_get_spin(self->ch);
    chan_leave(self);
    return PyLong_FromUnsignedLong(v);
}

static int set_spin(Chan *self, PyObject *value, void *unused)
{
    uint32_t spin;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete spin");
        return -1;
    }
    if (parse_spin(value, &spin) < 0 || chan_enter(self) < 0)
        return -1;
    rr_set_spin(self->ch, spin);
    chan_leave(self);
    return 0;
}

#define GEOMETRY_FIELD(f) (void *)offsetof(rr_geometry, f)

PyGetSetDef chan_getset[] = {
    {"capacity", (getter)get_geometry, NULL, "Request queue capacity.", GEOMETRY_FIELD(req_cap)},
    {"resp_slots", (getter)get_geometry, NULL, "Number of response slots.",
     GEOMETRY_FIELD(resp_slots)},
    {"resp_size", (getter)get_geometry, NULL, "Largest response in bytes (0 for Int).",
     GEOMETRY_FIELD(resp_size)},
    {"path", (getter)get_path, NULL, "The channel file, or None.", NULL},
    {"memfd", (getter)get_memfd, NULL, "The memfd's file descriptor, or -1.", NULL},
    {"closed", (getter)get_closed, NULL, "True once close() was called.", NULL},
    {"spin", (getter)get_spin, (setter)set_spin, "Spin budget before sleeping, in us.", NULL},
    {"codec", (getter)get_codec, NULL, "The channel's codec's name, or None.", NULL},
    {NULL},
};

PyMemberDef chan_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(Chan, weakreflist), READONLY},
    {NULL},
};

PyObject *chan_repr(Chan *self)
{
    const char *name = Py_TYPE(self)->tp_name;
    if (!self->ch)
        return PyUnicode_FromFormat("<%s closed>", name);
    const rr_geometry *g = rr_geometry_of(self->ch);
    return PyUnicode_FromFormat("<%s path=%R capacity=%u resp_slots=%u>", name, self->path,
                                g->req_cap, g->resp_slots);
}
