/* The channel base shared by Server, IntServer, Client and IntClient: the
 * object's lifecycle (open, close, context manager, pickling), its status
 * (size, stats, _layout, properties) and its two eventfds. What sets the
 * four types apart is a chan_class, which server.c and client.c extend. */
#ifndef REQREP_CHAN_H
#define REQREP_CHAN_H

#include "state.h" /* first: it includes Python.h */
#include <stdint.h>
#include <structmember.h> /* PyMemberDef before 3.12 */

#include "args.h"
#include "docstrings.h"
#include "errors.h"
#include "reqrep.h"
#include "wait.h"

/* A process-local eventfd slot. */
typedef struct efd {
    int fd;    /* -1 if none */
    int owned; /* created (or duplicated) here: closed with the object */
} efd;

typedef struct Chan {
    PyObject_HEAD
    rr_chan *ch;              /* NULL once closed */
    module_state *st;         /* borrowed: the type keeps the module alive */
    const struct chan_class *cls;
    PyObject *path;           /* str or None */
    efd req_efd;              /* signalled when a request is sent */
    efd reply_efd;            /* signalled when a reply is written */
    int busy;                 /* calls in progress (the GIL may be released), and holds */
    int holds;                /* Views and ReplyBuffers that live (view.h): of busy, the
                               * ones that keep only the mapping */
    int closing;              /* close() was called while busy */
    int released;             /* what the object had pending is ended (cls->release) */
    PyObject *codec;          /* the channel's codec (codec.h); NULL: bytes and str */
    int passthrough;          /* _passthrough(): payloads and error replies as they are */
    int undecodable;          /* the last take met a request its codec could not
                               * decode, and answered it with the error (server.c) */
    gil_spin gil_spin;        /* its waits' spins with the GIL held (wait.h) */
    PyObject *weakreflist;
} Chan;

/* What sets a type apart. Static; server.c and client.c embed it first in
 * structs of their own, with the type's own operations. */
typedef struct chan_class {
    int slot;                     /* TYPE_x (state.h) */
    uint32_t variant;             /* RR_VARIANT_STR or RR_VARIANT_INT */
    void (*release)(Chan *self);  /* before the handle closes; NULL: nothing to do */
} chan_class;

/* Creates the type from `spec` (its basicsize at least sizeof(Chan)), adds
 * it to the module and records it with its class in the state. */
int chan_add_type(PyObject *mod, module_state *st, const chan_class *cls, PyType_Spec *spec);
/* The class of `type` (one of the four or a subclass), with the state;
 * NULL with an exception set if none. */
const chan_class *chan_class_of(PyTypeObject *type, module_state **st);

/* A new object of `type` (of class `cls`) owning handle `ch` (closed on
 * failure); `path` NULL or None for none. */
PyObject *chan_wrap(PyTypeObject *type, module_state *st, const chan_class *cls, rr_chan *ch,
                    PyObject *path, uint32_t spin);
/* Opens the channel at `path` (create 0: it must exist), or creates it
 * (create 1; a None path: an anonymous one), as `r` asks. */
PyObject *chan_open(PyTypeObject *type, PyObject *path, const open_req *r, int create,
                    uint32_t spin);

/* Creates a channel in a new memfd named `name`, with the geometry and
 * codec arguments given (NULL where the type has none). */
PyObject *chan_open_memfd(PyTypeObject *type, const char *name, PyObject *req_cap,
                          PyObject *resp_slots, PyObject *resp_size, PyObject *arena,
                          PyObject *codec, PyObject *spin_obj);

/* Every call on an open object runs between chan_enter (-1 with ValueError
 * if closed) and chan_leave; the last to leave a closing object closes it.
 * A hold (chan_hold, inside a call, ended by chan_unhold) is a View or
 * ReplyBuffer: it keeps the mapping, not the object open: once only holds
 * are left, a closing object ends what it had pending at once (its pending
 * requests are cancelled, its eventfds closed) and unmaps with the last
 * hold. Inline: every call makes them. */
void chan_close_now(Chan *self);
void chan_close_idle(Chan *self);

static inline int chan_enter(Chan *self)
{
    if (!self->ch || self->closing) {
        raise_closed();
        return -1;
    }
    self->busy++;
    return 0;
}

static inline void chan_leave(Chan *self)
{
    if (--self->busy == self->holds && self->closing)
        chan_close_idle(self);
}

static inline void chan_hold(Chan *self)
{
    self->busy++;
    self->holds++;
}

static inline void chan_unhold(Chan *self)
{
    self->holds--;
    chan_leave(self);
}

/* ---- eventfds: process-local notification for event loops ---- */

void efd_replace(efd *e, int fd, int own);
/* Signals fd: 1, or 0 if it is -1; -1 with errno on failure. */
int efd_signal(int fd);
/* The methods, for the slot that the method means. */
PyObject *efd_get(Chan *self, efd *e);        /* create-or-get */
PyObject *efd_set(Chan *self, efd *e, PyObject *arg);
PyObject *efd_fileno(Chan *self, efd *e);
PyObject *efd_consume(Chan *self, efd *e);
PyObject *efd_notify(Chan *self, efd *e);

/* ---- what every type has ---- */

PyObject *chan_close(Chan *self, PyObject *unused);
PyObject *chan_enter_method(Chan *self, PyObject *unused);
PyObject *chan_exit(Chan *self, PyObject *args);
PyObject *chan_size(Chan *self, PyObject *unused);
PyObject *chan_is_empty(Chan *self, PyObject *unused);
PyObject *chan_stats(Chan *self, PyObject *unused);
PyObject *chan_layout(Chan *self, PyObject *unused);
PyObject *chan_passthrough(Chan *self, PyObject *unused);
PyObject *chan_from_fd(PyTypeObject *type, PyObject *args, PyObject *kwds);
PyObject *chan_open_existing(PyTypeObject *type, PyObject *args, PyObject *kwds);
PyObject *chan_reduce(Chan *self, PyObject *unused);

/* The methods every type has; their documentation is the stub's (docstrings.h). */
#define CHAN_METHODS(cls)                                                                  \
    {"close", (PyCFunction)chan_close, METH_NOARGS, DOC(cls, close)},                      \
    {"__enter__", (PyCFunction)chan_enter_method, METH_NOARGS, DOC(cls, __enter__)},       \
    {"__exit__", (PyCFunction)chan_exit, METH_VARARGS, DOC(cls, __exit__)},                \
    {"size", (PyCFunction)chan_size, METH_NOARGS, DOC(cls, size)},                         \
    {"is_empty", (PyCFunction)chan_is_empty, METH_NOARGS, DOC(cls, is_empty)},             \
    {"stats", (PyCFunction)chan_stats, METH_NOARGS, DOC(cls, stats)},                      \
    {"_layout", (PyCFunction)chan_layout, METH_NOARGS, DOC(cls, _layout)},                 \
    {"_passthrough", (PyCFunction)chan_passthrough, METH_NOARGS, DOC(cls, _passthrough)},  \
    {"from_fd", (PyCFunction)(void (*)(void))chan_from_fd,                                 \
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, DOC(cls, from_fd)},                        \
    {"_open_existing", (PyCFunction)(void (*)(void))chan_open_existing,                    \
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, DOC(cls, _open_existing)},                 \
    {"__reduce__", (PyCFunction)chan_reduce, METH_NOARGS, NULL}

/* The slots every type has, then (after a comma) its own. */
void chan_dealloc(Chan *self);
int chan_traverse(Chan *self, visitproc visit, void *arg);
PyObject *chan_repr(Chan *self);
Py_ssize_t chan_len(Chan *self);
extern PyGetSetDef chan_getset[];
extern PyMemberDef chan_members[];

#define CHAN_SLOTS                                                           \
    {Py_tp_dealloc, chan_dealloc}, {Py_tp_traverse, chan_traverse},          \
    {Py_tp_getset, chan_getset}, {Py_tp_members, chan_members},              \
    {Py_tp_repr, chan_repr}, {Py_mp_length, chan_len}, {Py_sq_length, chan_len}

#define CHAN_TPFLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC)

/* Method tables cast functions with other signatures. */
#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
#define FASTFN(f) (PyCFunction)(void (*)(void))(f)

#endif
