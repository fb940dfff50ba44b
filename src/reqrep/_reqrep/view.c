/* View and ReplyBuffer (see view.h): the buffer protocol over channel
 * memory, and the one end each has (release; commit or abort). */
#include "view.h"

#include <string.h>

#include "args.h"
#include "errors.h"
#include "reqrep.h"

/* ---- View ---- */

typedef struct View {
    PyObject_HEAD
    int live;          /* not yet released */
    Chan *owner;       /* the channel it pins in; NULL: a copy, or released */
    view_done_fn done;
    uint64_t token;    /* what done() unpins */
    PyObject *keep;    /* a copy's bytes */
    uint64_t id;
    const char *data;
    Py_ssize_t len;
    uint32_t flags;
    pid_t pid;         /* the maker: only it unpins */
    Py_ssize_t exports; /* buffers exported and not yet released */
} View;

/* Whether it may be read here: not released, and in the process that made
 * it (a forked child's copy shows memory its parent may release at any time:
 * it reads as released). */
static int view_open(View *self)
{
    return self->live && self->pid == rr_self_pid();
}

/* view_open, or -1 with ValueError. */
static int view_check(View *self)
{
    if (view_open(self))
        return 0;
    PyErr_SetString(PyExc_ValueError, "operation on a released View");
    return -1;
}

static void view_end(View *self)
{
    if (!self->live)
        return;
    self->live = 0;
    Chan *owner = self->owner;
    self->owner = NULL;
    if (owner) {
        self->done(owner, self->token, self->pid);
        Py_DECREF(owner);
    }
    Py_CLEAR(self->keep);
}

PyObject *view_alloc(module_state *st)
{
    View *self = PyObject_GC_New(View, st->view_type);
    if (self) {
        self->live = 0; /* released until set: its dealloc ends nothing */
        self->owner = NULL;
        self->keep = NULL;
        PyObject_GC_Track(self);
    }
    return (PyObject *)self;
}

void view_set(PyObject *view, uint64_t id, const void *data, uint32_t len, uint32_t flags,
              Chan *owner, uint64_t token, view_done_fn done, PyObject *keep)
{
    View *self = (View *)view;
    self->live = 1;
    self->owner = (Chan *)Py_XNewRef(owner);
    self->done = done;
    self->token = token;
    self->keep = Py_XNewRef(keep);
    self->id = id;
    self->data = data;
    self->len = (Py_ssize_t)len;
    self->flags = flags;
    self->pid = rr_self_pid();
    self->exports = 0;
}

PyObject *view_new(module_state *st, uint64_t id, const void *data, uint32_t len, uint32_t flags,
                   Chan *owner, uint64_t token, view_done_fn done, PyObject *keep)
{
    PyObject *view = view_alloc(st);
    if (view)
        view_set(view, id, data, len, flags, owner, token, done, keep);
    return view;
}

static void view_dealloc(View *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    view_end(self); /* exports hold a reference: there are none left */
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

/* A GC type: a View kept by its own channel object (a subclass's attribute)
 * is a cycle, collected like any other. */
static int view_traverse(View *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    Py_VISIT(self->keep);
    return 0;
}

static int view_getbuffer(View *self, Py_buffer *buf, int flags)
{
    if (view_check(self) < 0)
        return -1;
    if (PyBuffer_FillInfo(buf, (PyObject *)self, (void *)self->data, self->len, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void view_releasebuffer(View *self, Py_buffer *buf) { self->exports--; }

static PyObject *view_release(View *self, PyObject *unused)
{
    if (self->exports) {
        PyErr_Format(PyExc_BufferError,
                     "cannot release a View while %zd buffer(s) made from it (memoryview, "
                     "NumPy array, ...) are alive: release or drop them first", self->exports);
        return NULL;
    }
    view_end(self);
    Py_RETURN_NONE;
}

static PyObject *view_enter(View *self, PyObject *unused)
{
    if (view_check(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

/* The end of a with block: release. If the block raised and a buffer made
 * from the View still lives, its exception goes on, not a BufferError: the
 * View is released when it is dropped. */
static PyObject *view_exit(View *self, PyObject *args)
{
    PyObject *type = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : Py_None;
    if (type != Py_None && self->exports)
        Py_RETURN_FALSE;
    PyObject *res = view_release(self, NULL);
    if (!res)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_FALSE;
}

static PyObject *view_tobytes(View *self, PyObject *unused)
{
    if (view_check(self) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(self->data, self->len);
}

static Py_ssize_t view_length(View *self)
{
    if (view_check(self) < 0)
        return -1;
    return self->len;
}

static PyObject *view_get_released(View *self, void *unused)
{
    return PyBool_FromLong(!view_open(self));
}

static PyObject *view_get_is_text(View *self, void *unused)
{
    return PyBool_FromLong((self->flags & RR_FLAG_UTF8) != 0);
}

static PyObject *view_get_id(View *self, void *unused)
{
    return PyLong_FromUnsignedLongLong(self->id);
}

static PyObject *view_repr(View *self)
{
    if (!view_open(self))
        return PyUnicode_FromFormat("<reqrep.View id=%llu released>",
                                    (unsigned long long)self->id);
    return PyUnicode_FromFormat("<reqrep.View id=%llu, %zd bytes%s>",
                                (unsigned long long)self->id, self->len,
                                (self->flags & RR_FLAG_UTF8) ? ", text" : "");
}

static PyMethodDef view_methods[] = {
    {"release", (PyCFunction)view_release, METH_NOARGS, DOC(View, release)},
    {"tobytes", (PyCFunction)view_tobytes, METH_NOARGS, DOC(View, tobytes)},
    {"__enter__", (PyCFunction)view_enter, METH_NOARGS, DOC(View, __enter__)},
    {"__exit__", (PyCFunction)view_exit, METH_VARARGS, DOC(View, __exit__)},
    {NULL},
};

static PyGetSetDef view_getset[] = {
    {"released", (getter)view_get_released, NULL, "Whether the View was released.", NULL},
    {"is_text", (getter)view_get_is_text, NULL,
     "Whether the reply was sent as ``str`` (its bytes are UTF-8).", NULL},
    {"id", (getter)view_get_id, NULL, "The id of the request whose reply this is.", NULL},
    {NULL},
};

static PyType_Slot view_slots[] = {
    {Py_tp_doc, (void *)DOC_View},
    {Py_tp_dealloc, view_dealloc},
    {Py_tp_traverse, view_traverse},
    {Py_tp_repr, view_repr},
    {Py_tp_methods, view_methods},
    {Py_tp_getset, view_getset},
    {Py_bf_getbuffer, view_getbuffer},
    {Py_bf_releasebuffer, view_releasebuffer},
    {Py_mp_length, view_length},
    {Py_sq_length, view_length},
    {0, NULL},
};

static PyType_Spec view_spec = {
    .name = "reqrep.View",
    .basicsize = sizeof(View),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_GC,
    .slots = view_slots,
};

/* ---- ReplyBuffer ---- */

typedef struct ReplyBuffer {
    PyObject_HEAD
    Chan *owner;       /* NULL once committed or aborted */
    replybuf_done_fn done;
    uint64_t id;
    uint64_t token;    /* the core's, for an abort */
    char *data;
    Py_ssize_t len;
    pid_t pid;
    Py_ssize_t exports;
} ReplyBuffer;

/* Whether the buffer may end now: 0, or -1 with an exception. */
static int replybuf_check(ReplyBuffer *self, const char *what)
{
    if (!self->owner) {
        PyErr_Format(PyExc_ValueError, "%s on a ReplyBuffer already committed or aborted", what);
        return -1;
    }
    if (self->pid != rr_self_pid()) {
        PyErr_Format(PyExc_ValueError, "%s on a ReplyBuffer of another process (inherited "
                     "through fork): only the process that made it may", what);
        return -1;
    }
    if (self->exports) {
        PyErr_Format(PyExc_BufferError,
                     "cannot %s a ReplyBuffer while %zd buffer(s) made from it (memoryview, "
                     "NumPy array, ...) are alive: release or drop them first", what,
                     self->exports);
        return -1;
    }
    return 0;
}

/* Ends the buffer: 1 delivered, 0 not, -1 with an exception. */
static int replybuf_end(ReplyBuffer *self, Py_ssize_t len, int commit)
{
    Chan *owner = self->owner;
    self->owner = NULL;
    int rc = self->done(owner, self->id, self->token, len, commit);
    Py_DECREF(owner);
    return rc;
}

PyObject *replybuf_new(module_state *st, Chan *owner, uint64_t id, uint64_t token, void *data,
                       Py_ssize_t len, replybuf_done_fn done)
{
    ReplyBuffer *self = PyObject_GC_New(ReplyBuffer, st->reply_buffer_type);
    if (!self)
        return NULL;
    self->owner = (Chan *)Py_NewRef(owner);
    self->done = done;
    self->id = id;
    self->token = token;
    self->data = data;
    self->len = len;
    self->pid = rr_self_pid();
    self->exports = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int replybuf_traverse(ReplyBuffer *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    return 0;
}

static void replybuf_dealloc(ReplyBuffer *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->owner) {
        if (self->pid == rr_self_pid()) {
            /* dropped unpublished: as abort() */
            PyObject *exc = take_exception();
            if (replybuf_end(self, 0, 0) < 0)
                PyErr_WriteUnraisable((PyObject *)self);
            restore_exception(exc);
        } else {
            chan_unhold(self->owner); /* a forked copy: the claim is the parent's */
            Py_CLEAR(self->owner);
        }
    }
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static int replybuf_getbuffer(ReplyBuffer *self, Py_buffer *buf, int flags)
{
    if (!self->owner || self->pid != rr_self_pid()) {
        PyErr_SetString(PyExc_ValueError, self->owner
                            ? "a ReplyBuffer of another process (inherited through fork)"
                            : "operation on a ReplyBuffer already committed or aborted");
        return -1;
    }
    if (PyBuffer_FillInfo(buf, (PyObject *)self, self->data, self->len, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void replybuf_releasebuffer(ReplyBuffer *self, Py_buffer *buf) { self->exports--; }

static PyObject *replybuf_commit(ReplyBuffer *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"nbytes"};
    PyObject *a[1];
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "commit") < 0)
        return NULL;
    uint64_t n = (uint64_t)self->len;
    if (a[0] && a[0] != Py_None
        && parse_u64_range(a[0], "nbytes", 0, (uint64_t)self->len, &n) < 0)
        return NULL;
    if (replybuf_check(self, "commit") < 0)
        return NULL;
    int rc = replybuf_end(self, (Py_ssize_t)n, 1);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static PyObject *replybuf_abort(ReplyBuffer *self, PyObject *unused)
{
    if (!self->owner)
        Py_RETURN_NONE; /* committed or aborted already: nothing to give back */
    if (replybuf_check(self, "abort") < 0 || replybuf_end(self, 0, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *replybuf_enter(ReplyBuffer *self, PyObject *unused)
{
    if (!self->owner) {
        PyErr_SetString(PyExc_ValueError,
                        "operation on a ReplyBuffer already committed or aborted");
        return NULL;
    }
    return Py_NewRef(self);
}

/* The end of a with block: commit, or abort if it raised (then the
 * exception goes on, not a BufferError: with a buffer made from it still
 * alive, the abort comes when it is dropped). After an explicit commit or
 * abort: nothing. */
static PyObject *replybuf_exit(ReplyBuffer *self, PyObject *args)
{
    PyObject *type = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : Py_None;
    if (!self->owner || (type != Py_None && (self->exports || self->pid != rr_self_pid())))
        Py_RETURN_FALSE;
    if (replybuf_check(self, type == Py_None ? "commit" : "abort") < 0)
        return NULL;
    if (replybuf_end(self, self->len, type == Py_None) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static Py_ssize_t replybuf_length(ReplyBuffer *self) { return self->len; }

static PyObject *replybuf_get_done(ReplyBuffer *self, void *unused)
{
    return PyBool_FromLong(self->owner == NULL);
}

static PyObject *replybuf_get_id(ReplyBuffer *self, void *unused)
{
    return PyLong_FromUnsignedLongLong(self->id);
}

static PyObject *replybuf_repr(ReplyBuffer *self)
{
    return PyUnicode_FromFormat("<reqrep.ReplyBuffer id=%llu, %zd bytes%s>",
                                (unsigned long long)self->id, self->len,
                                self->owner ? "" : ", done");
}

static PyMethodDef replybuf_methods[] = {
    {"commit", FASTFN(replybuf_commit), FASTKW, DOC(ReplyBuffer, commit)},
    {"abort", (PyCFunction)replybuf_abort, METH_NOARGS, DOC(ReplyBuffer, abort)},
    {"__enter__", (PyCFunction)replybuf_enter, METH_NOARGS, DOC(ReplyBuffer, __enter__)},
    {"__exit__", (PyCFunction)replybuf_exit, METH_VARARGS, DOC(ReplyBuffer, __exit__)},
    {NULL},
};

static PyGetSetDef replybuf_getset[] = {
    {"done", (getter)replybuf_get_done, NULL, "Whether it was committed or aborted.", NULL},
    {"id", (getter)replybuf_get_id, NULL, "The id of the request it answers.", NULL},
    {NULL},
};

static PyType_Slot replybuf_slots[] = {
    {Py_tp_doc, (void *)DOC_ReplyBuffer},
    {Py_tp_dealloc, replybuf_dealloc},
    {Py_tp_traverse, replybuf_traverse},
    {Py_tp_repr, replybuf_repr},
    {Py_tp_methods, replybuf_methods},
    {Py_tp_getset, replybuf_getset},
    {Py_bf_getbuffer, replybuf_getbuffer},
    {Py_bf_releasebuffer, replybuf_releasebuffer},
    {Py_mp_length, replybuf_length},
    {Py_sq_length, replybuf_length},
    {0, NULL},
};

static PyType_Spec replybuf_spec = {
    .name = "reqrep.ReplyBuffer",
    .basicsize = sizeof(ReplyBuffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_HAVE_GC,
    .slots = replybuf_slots,
};

/* ---- the module's part ---- */

static PyTypeObject *add_type(PyObject *mod, PyType_Spec *spec)
{
    PyTypeObject *type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, spec, NULL);
    if (type && PyModule_AddType(mod, type) < 0)
        Py_CLEAR(type);
    return type;
}

int view_setup_types(PyObject *mod, module_state *st)
{
    st->view_type = add_type(mod, &view_spec);
    if (!st->view_type)
        return -1;
    st->reply_buffer_type = add_type(mod, &replybuf_spec);
    return st->reply_buffer_type ? 0 : -1;
}
