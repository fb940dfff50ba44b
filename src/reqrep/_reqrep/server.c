/* Server and IntServer (see server.h): take requests, reply, serve. The two
 * differ in how a request is taken and a reply written (server_class). */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "args.h"
#include "chan.h"
#include "codec.h"
#include "errors.h"
#include "view.h"
#include "wait.h"

typedef struct server_class {
    chan_class base;
    int client_slot; /* TYPE_x of server.client() */
    /* The next request, waiting for it to `deadline`: 1 with its data (a new
     * reference; with `as_pair`, the tuple (data, id), built before the
     * request leaves the queue) and id, 0 if there was none, -1 with an
     * exception set. serve() asks for no tuple: it takes the two apart. */
    int (*take)(Chan *self, int64_t deadline, int copy, int as_pair, PyObject **data,
                uint64_t *id);
    /* Replies `data` to request `id`: 1 sent, 0 stale (the request was
     * cancelled or cleared), -1 with an exception set. */
    int (*reply)(Chan *self, uint64_t id, PyObject *data);
    /* Answers request `id` with error `exc` (an exception or a str), as reply. */
    int (*reply_error)(Chan *self, uint64_t id, PyObject *exc);
} server_class;

#define CLASS(self) ((const server_class *)(self)->cls)

/* ---- Str: taking requests ---- */

static int recv_begin(rr_chan *ch, int64_t deadline, void *unused)
{
    return rr_str_recv_begin(ch, deadline);
}

static int wait_request(rr_chan *ch, int64_t deadline, void *unused)
{
    return rr_wait_request(ch, deadline);
}

static int request_hint(rr_chan *ch, void *unused) { return rr_request_hint(ch); }

static int str_reply_error(Chan *self, uint64_t id, PyObject *exc);

/* A request's payload (`copy`, bytes or a View) taken from a codec channel,
 * decoded (a new reference). A request its codec cannot decode is answered
 * with the error (its client gets a RemoteError), and NULL returns with the
 * error set and self->undecodable. */
static PyObject *decode_one(Chan *self, PyObject *copy, uint64_t id)
{
    PyObject *obj = Py_IS_TYPE(copy, self->st->view_type) ? codec_decode_view(self->codec, copy)
                                                          : codec_decode(self->codec, copy);
    if (obj)
        return obj;
    PyObject *exc = take_exception();
    if (str_reply_error(self, id, exc) < 0)
        PyErr_Clear(); /* the request is gone either way: report why it could not be read */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    self->undecodable = 1;
    return NULL;
}

/* A list of pairs (copy, id) taken from a codec channel, decoded in place to
 * (object, id): it keeps the requests that decoded (an error only if none
 * did; see decode_one). Consumes `res`. */
static PyObject *decode_list(Chan *self, PyObject *res)
{
    self->undecodable = 0;
    Py_ssize_t kept = 0, n = PyList_GET_SIZE(res);
    PyObject *first_error = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(res, i), *id_obj = PyTuple_GET_ITEM(pair, 1);
        PyObject *obj = decode_one(self, PyTuple_GET_ITEM(pair, 0),
                                   PyLong_AsUnsignedLongLong(id_obj)); /* ours: cannot fail */
        PyObject *out = obj ? PyTuple_Pack(2, obj, id_obj) : NULL;
        Py_XDECREF(obj);
        if (!out) {
            /* Ctrl-C in a codec's loads: the requests decoded so far are
             * returned, and the interrupt raised as soon as they are */
            if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
                PyErr_SetInterrupt();
            PyObject *exc = take_exception();
            if (!first_error)
                first_error = exc;
            else
                Py_DECREF(exc);
            continue;
        }
        PyList_SetItem(res, kept++, out); /* drops the pair it replaces */
    }
    if (kept == 0 && first_error) {
        Py_DECREF(res);
        PyErr_SetObject((PyObject *)Py_TYPE(first_error), first_error);
        Py_DECREF(first_error);
        return NULL;
    }
    Py_XDECREF(first_error);
    self->undecodable = 0; /* some decoded: what failed was answered */
    if (PyList_SetSlice(res, kept, n, NULL) < 0) {
        Py_DECREF(res);
        return NULL;
    }
    return res;
}

/* view_done_fn of a request View: gives its arena pin back. */
static void unpin_request(Chan *self, uint64_t pin, pid_t pid)
{
    if (pid == rr_self_pid() && self->ch)
        rr_str_unpin(self->ch, (uint32_t)pin); /* -ESTALE: not ours, nothing to do */
    chan_unhold(self);
}

/* The i-th entry of a receive (e, shown by peek) as a View: pinned in the
 * arena where it can be (*pins: none left is known, do not ask again), else
 * over a copy. Under the queue lock: allocates, runs no Python code. */
static PyObject *request_view(Chan *self, uint32_t i, const rr_entry *e, int *pins)
{
    uint32_t pin;
    int rc = *pins ? rr_str_recv_pin(self->ch, i, &pin) : -ENOSPC;
    if (rc == -ENOSPC)
        *pins = 0;
    if (rc == 0) {
        chan_hold(self); /* the mapping stays while the View lives */
        PyObject *view = view_new(self->st, e->id, e->data, e->len, e->flags, self, pin,
                                  unpin_request, NULL);
        if (!view) {
            self->holds--;
            self->busy--; /* inside this call: never the last to leave */
            rr_str_unpin(self->ch, pin);
        }
        return view;
    }
    /* in its cell, or every pin in use: a View of a copy */
    PyObject *copy = PyBytes_FromStringAndSize(e->data, e->len);
    if (!copy)
        return NULL;
    PyObject *view = view_new(self->st, e->id, PyBytes_AS_STRING(copy), e->len, e->flags, NULL,
                              0, NULL, copy);
    Py_DECREF(copy);
    return view;
}

/* Waits to `deadline` for requests in the Str queue: how many there are, with
 * the receive begun (the queue lock held), 0 if none came, -1 with an
 * exception set. */
static inline int str_wait(Chan *self, int64_t deadline)
{
    rr_chan *ch = self->ch;
    int n;
    for (int waited = 0;; waited = 1) {
        n = wait_try_lock(ch, &self->closing, deadline, recv_begin, NULL, 0);
        if (n != -EAGAIN || deadline == RR_NOWAIT)
            break;
        /* Wait without the GIL and without the queue lock (never hold the lock
         * while taking the GIL back), then try again: another worker may win. */
        n = wait_spun(ch, &self->closing, waited ? NULL : &self->gil_spin, deadline,
                      request_hint, wait_request, NULL);
        if (n == -ECANCELED)
            continue; /* a _wake_request meant for a helper thread: look again */
        /* Timed out, or past the deadline while other workers won the
         * requests we were woken for: one last try. */
        if (n == -EAGAIN || (n == 0 && deadline != RR_FOREVER && rr_now_ns() >= deadline))
            deadline = RR_NOWAIT;
        else if (n < 0)
            break;
    }
    if (n == -EAGAIN || n == -ETIMEDOUT) /* empty, or the lock stayed busy to the deadline */
        return 0;
    if (n < 0) {
        raise_core(self->st, n, self->path, NULL);
        return -1;
    }
    return n;
}

/* Builds the requests of a receive of `n` (str_wait), at most `max`, and ends
 * it: into `list` as pairs (data, id) or, without a list, the first as *one
 * (a pair if `as_pair`) and *id. The payloads are built while the queue lock is held (no Python
 * code runs then: a codec's payload is copied, and decoded after) and only
 * what was built is consumed: what fails half-way stays queued (LESSONS.md).
 * !copy: each payload a View. Returns how many were built, -1 with an
 * exception set. */
static inline int str_build(Chan *self, int n, uint32_t max, int copy, PyObject *list,
                            int as_pair, PyObject **one, uint64_t *id)
{
    uint32_t want = (uint32_t)n < max ? (uint32_t)n : max, built = 0, used = 0;
    int bad = 0, pins = 1;
    for (; used < (uint32_t)n && built < want; used++) {
        rr_entry e;
        if (rr_str_recv_peek(self->ch, used, &e) < 0) {
            bad = 1; /* a corrupt cell: drop it rather than block the queue */
            continue;
        }
        PyObject *data = !copy         ? request_view(self, used, &e, &pins)
                         : self->codec ? codec_copy(e.data, e.len)
                                       : payload_object(e.data, e.len, e.flags);
        if (list || as_pair)
            data = make_pair(data, e.id);
        if (!data)
            break; /* this one stays queued */
        if (list) {
            PyList_SET_ITEM(list, built, data);
        } else {
            *one = data;
            *id = e.id;
        }
        built++;
    }
    rr_str_recv_end(self->ch, used);
    if (built > 0 && PyErr_Occurred())
        PyErr_Clear(); /* return what was taken; the rest waits for the next call */
    if (PyErr_Occurred())
        return -1;
    if (bad && built == 0) {
        raise_core(self->st, -RR_EFORMAT, NULL, &(rr_error){"corrupt request entry dropped"});
        return -1;
    }
    return (int)built;
}

/* A list of pairs (data, id) taken from the Str queue, at most `max`;
 * `deadline` bounds the wait for the first. On a codec channel each data is
 * decoded (see decode_list). */
static PyObject *str_take_list(Chan *self, uint32_t max, int64_t deadline, int copy)
{
    if (max == 0)
        return PyList_New(0);
    int n = str_wait(self, deadline);
    if (n <= 0)
        return n < 0 ? NULL : PyList_New(0);
    /* built, the list included, before anything leaves the queue */
    PyObject *res = PyList_New((uint32_t)n < max ? n : (Py_ssize_t)max);
    if (!res) {
        rr_str_recv_end(self->ch, 0);
        return NULL;
    }
    int built = str_build(self, n, max, copy, res, 0, NULL, NULL);
    if (built < 0) {
        Py_DECREF(res);
        return NULL;
    }
    Py_SET_SIZE(res, built); /* fewer than allocated: the list keeps its capacity */
    return self->codec ? decode_list(self, res) : res;
}

/* server_class.take of the Str queue; on a codec channel the data decoded
 * (see decode_one; in a pair, in place: the pair is ours alone). */
static int str_take_one(Chan *self, int64_t deadline, int copy, int as_pair, PyObject **data,
                        uint64_t *id)
{
    self->undecodable = 0;
    int n = str_wait(self, deadline);
    if (n <= 0)
        return n;
    PyObject *one;
    int built = str_build(self, n, 1, copy, NULL, as_pair, &one, id);
    if (built <= 0)
        return built;
    if (self->codec) {
        PyObject *obj = decode_one(self, as_pair ? PyTuple_GET_ITEM(one, 0) : one, *id);
        if (!obj) {
            Py_DECREF(one);
            return -1;
        }
        if (as_pair) {
            PyObject *copied = PyTuple_GET_ITEM(one, 0);
            PyTuple_SET_ITEM(one, 0, obj);
            Py_DECREF(copied);
        } else {
            Py_DECREF(one);
            one = obj;
        }
    }
    *data = one;
    return 1;
}

/* ---- Int: taking requests ---- */

#define INT_SETTLE_NS 50000000 /* > the core's 20 ms stall check, with room for two looks */

typedef struct int_taken {
    int64_t value;
    uint64_t id;
} int_taken;

static int int_recv(rr_chan *ch, int64_t deadline, void *arg)
{
    int_taken *t = arg;
    return rr_int_recv(ch, deadline, &t->value, &t->id);
}

static int int_take_one(Chan *self, int64_t deadline, int copy, int as_pair, PyObject **data,
                        uint64_t *id)
{
    int_taken t;
    int rc = int_recv(self->ch, RR_NOWAIT, &t);
    /* Somebody inside an operation at the head: even a call that does not
     * wait gives it a grace, as for a Str lock holder, in which a dead
     * process's cell is repaired. */
    if (rc == -EINPROGRESS && deadline == RR_NOWAIT)
        deadline = rr_now_ns() + INT_SETTLE_NS;
    if ((rc == -EAGAIN || rc == -EINPROGRESS) && deadline != RR_NOWAIT)
        rc = wait_spun(self->ch, &self->closing, &self->gil_spin, deadline, request_hint, int_recv,
                       &t);
    if (rc == -EAGAIN)
        return 0;
    if (rc < 0) {
        raise_core(self->st, rc, self->path, NULL);
        return -1;
    }
    /* built after the take: a failure here loses the request (an Int
     * receive has no peek to build under) */
    PyObject *value = PyLong_FromLongLong(t.value);
    if (!(*data = as_pair ? make_pair(value, t.id) : value))
        return -1;
    *id = t.id;
    return 1;
}

/* ---- replying ---- */

/* What a reply's core call `rc` means (see server_class.reply). */
static int replied(Chan *self, int rc, const rr_error *err)
{
    /* the requester waits in an event loop: signal the reply eventfd we share */
    if (rc == 1 && efd_signal(self->reply_efd.fd) < 0)
        PyErr_Clear(); /* best effort: its helper thread hears the bell anyway */
    if (rc == -ESTALE)
        return 0;
    if (rc == -EBUSY) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this request's reply is being written in place by this process (an "
                        "open ReplyBuffer): commit or abort that first");
        return -1;
    }
    if (rc < 0) {
        raise_core(self->st, rc, NULL, err);
        return -1;
    }
    return 1;
}

/* A reply through the channel's codec: its pieces gathered into the slot. */
static int str_reply_encoded(Chan *self, uint64_t id, PyObject *data)
{
    encoded e;
    int rc;
    if (codec_encode(self->codec, data, &e) < 0)
        return -1;
    if (e.len >= GIL_FREE_COPY) {
        Py_BEGIN_ALLOW_THREADS rc = rr_str_replyv(self->ch, id, e.iov, e.n, 0);
        Py_END_ALLOW_THREADS
    } else {
        rc = rr_str_replyv(self->ch, id, e.iov, e.n, 0);
    }
    size_t len = e.len;
    encoded_release(&e);
    rr_error err, *why = NULL;
    if (rc == -EMSGSIZE) {
        snprintf(err.why, sizeof err.why, "response of %zu bytes (encoded) exceeds resp_size (%u)",
                 len, rr_geometry_of(self->ch)->resp_size);
        why = &err;
    }
    return replied(self, rc, why);
}

static int str_reply(Chan *self, uint64_t id, PyObject *data)
{
    if (self->codec)
        return str_reply_encoded(self, id, data);
    payload p;
    int rc;
    if (payload_get(data, &p) < 0)
        return -1;
    if (p.len >= GIL_FREE_COPY) {
        Py_BEGIN_ALLOW_THREADS rc = rr_str_reply(self->ch, id, p.ptr, (size_t)p.len, p.flags);
        Py_END_ALLOW_THREADS
    } else {
        rc = rr_str_reply(self->ch, id, p.ptr, (size_t)p.len, p.flags);
    }
    payload_release(&p);
    rr_error err, *why = NULL; /* not zeroed on the fast path */
    if (rc == -EMSGSIZE) {
        snprintf(err.why, sizeof err.why, "response of %zd bytes exceeds resp_size (%u)", p.len,
                 rr_geometry_of(self->ch)->resp_size);
        why = &err;
    }
    return replied(self, rc, why);
}

static int int_reply(Chan *self, uint64_t id, PyObject *data)
{
    int64_t v;
    if (parse_int64(data, &v) < 0)
        return -1;
    return replied(self, rr_int_reply(self->ch, id, v), NULL);
}

static int str_reply_error(Chan *self, uint64_t id, PyObject *exc)
{
    const rr_geometry *g = rr_geometry_of(self->ch);
    PyObject *frame = remote_reply(exc, g->resp_size, g->codec, 0);
    if (!frame)
        return -1;
    int rc = rr_str_reply(self->ch, id, PyBytes_AS_STRING(frame), (size_t)PyBytes_GET_SIZE(frame),
                          RR_FLAG_ERROR);
    Py_DECREF(frame);
    return replied(self, rc, NULL);
}

static int int_reply_error(Chan *self, uint64_t id, PyObject *exc)
{
    PyObject *name = remote_reply(exc, RR_SLOT_ERROR_MAX, "", 1);
    if (!name)
        return -1;
    int rc = rr_int_reply_error(self->ch, id, PyBytes_AS_STRING(name),
                                (size_t)PyBytes_GET_SIZE(name));
    Py_DECREF(name);
    return replied(self, rc, NULL);
}

/* ---- receiving and replying: the methods ---- */

static PyObject *take_one(Chan *self, int64_t deadline, int copy)
{
    if (chan_enter(self) < 0)
        return NULL;
    PyObject *data;
    uint64_t id;
    int rc = CLASS(self)->take(self, deadline, copy, 1, &data, &id);
    chan_leave(self);
    return rc < 0 ? NULL : rc == 0 ? Py_NewRef(Py_None) : data;
}

static PyObject *server_recv(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"*copy"};
    PyObject *a[1];
    int copy;
    if (nargs == 0 && !kwnames) /* the common call, parsed at once */
        return take_one(self, RR_NOWAIT, 1);
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "recv") < 0
        || parse_copy(a[0], &copy) < 0)
        return NULL;
    return take_one(self, RR_NOWAIT, copy);
}

static PyObject *server_recv_wait(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"timeout", "*copy"};
    PyObject *a[2];
    int64_t deadline;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 0, 2, a, "recv_wait") < 0
        || parse_deadline(a[0], &deadline) < 0 || parse_copy(a[1], &copy) < 0)
        return NULL;
    return take_one(self, deadline, copy);
}

static PyObject *take_many(Chan *self, uint32_t max, int64_t deadline, int copy)
{
    if (chan_enter(self) < 0)
        return NULL;
    PyObject *res = str_take_list(self, max, deadline, copy);
    chan_leave(self);
    return res;
}

static PyObject *server_recv_multi(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                   PyObject *kwnames)
{
    static const char *const names[] = {"n", "*copy"};
    PyObject *a[2];
    uint32_t n;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "recv_multi") < 0
        || parse_count(a[0], "n", 0, &n) < 0 || parse_copy(a[1], &copy) < 0)
        return NULL;
    return take_many(self, n, RR_NOWAIT, copy);
}

static PyObject *server_recv_wait_multi(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                        PyObject *kwnames)
{
    static const char *const names[] = {"n", "timeout", "*copy"};
    PyObject *a[3];
    uint32_t n;
    int64_t deadline;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 1, 3, a, "recv_wait_multi") < 0
        || parse_count(a[0], "n", 0, &n) < 0 || parse_deadline(a[1], &deadline) < 0
        || parse_copy(a[2], &copy) < 0)
        return NULL;
    return take_many(self, n, deadline, copy);
}

static PyObject *server_drain(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"max", "*copy"};
    PyObject *a[2];
    uint32_t n;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 0, 2, a, "drain") < 0
        || parse_count(a[0], "max", 1, &n) < 0 || parse_copy(a[1], &copy) < 0)
        return NULL;
    return take_many(self, n, RR_NOWAIT, copy);
}

static PyObject *server_reply(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"id", "data"};
    PyObject *a[2];
    uint64_t id;
    if (parse_args(args, nargs, kwnames, names, 2, 2, a, "reply") < 0 || parse_id(a[0], &id) < 0
        || chan_enter(self) < 0)
        return NULL;
    int rc = CLASS(self)->reply(self, id, a[1]);
    chan_leave(self);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static PyObject *server_reply_error(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames)
{
    static const char *const names[] = {"id", "exc"};
    PyObject *a[2];
    uint64_t id;
    if (parse_args(args, nargs, kwnames, names, 2, 2, a, "reply_error") < 0
        || parse_id(a[0], &id) < 0)
        return NULL;
    if (!PyExceptionInstance_Check(a[1]) && !PyUnicode_Check(a[1])) {
        PyErr_Format(PyExc_TypeError, "reply_error() needs an exception or a str, not %.100s",
                     Py_TYPE(a[1])->tp_name);
        return NULL;
    }
    if (chan_enter(self) < 0)
        return NULL;
    int rc = CLASS(self)->reply_error(self, id, a[1]);
    chan_leave(self);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* replybuf_done_fn: publishes or gives back a reply written in place. */
static int finish_reply_buffer(Chan *self, uint64_t id, uint64_t token, Py_ssize_t len,
                               int commit)
{
    int rc, res;
    if (commit) {
        rc = rr_str_reply_commit(self->ch, id, (size_t)len, 0);
        res = replied(self, rc, NULL);
    } else {
        rc = rr_str_reply_abort(self->ch, id, token);
        res = rc == -ESTALE ? 0 : rc < 0 ? (raise_core(self->st, rc, NULL, NULL), -1) : 1;
    }
    chan_unhold(self);
    return res;
}

static PyObject *server_reply_buffer(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"id", "nbytes"};
    PyObject *a[2];
    uint64_t id, n;
    if (parse_args(args, nargs, kwnames, names, 2, 2, a, "reply_buffer") < 0
        || parse_id(a[0], &id) < 0 || parse_u64_range(a[1], "nbytes", 0, UINT32_MAX, &n) < 0
        || chan_enter(self) < 0)
        return NULL;
    const rr_geometry *g = rr_geometry_of(self->ch);
    if (self->codec && !self->passthrough) {
        PyErr_Format(PyExc_TypeError, "reply_buffer() writes bytes as they are; this channel "
                     "encodes its replies with codec '%s': use reply()", g->codec);
        goto fail;
    }
    if (n > g->resp_size) {
        PyErr_Format(PyExc_ValueError, "reply_buffer() of %llu bytes exceeds resp_size (%u)",
                     (unsigned long long)n, g->resp_size);
        goto fail;
    }
    void *data;
    size_t cap;
    uint64_t token;
    int rc = rr_str_reply_begin(self->ch, id, &data, &cap, &token);
    if (rc == -ESTALE) {
        chan_leave(self);
        Py_RETURN_NONE;
    }
    if (rc < 0) {
        replied(self, rc, NULL);
        goto fail;
    }
    /* this call becomes the buffer's hold on the mapping, until it ends */
    self->holds++;
    PyObject *buf = replybuf_new(self->st, self, id, token, data, (Py_ssize_t)n,
                                 finish_reply_buffer);
    if (!buf) {
        self->holds--;
        PyObject *exc = take_exception();
        rr_str_reply_abort(self->ch, id, token);
        restore_exception(exc);
        goto fail;
    }
    return buf;
fail:
    chan_leave(self);
    return NULL;
}

/* ---- serve ---- */

/* Answers one request taken by serve(): handler(data) is the reply; when the
 * handler raises an Exception or its reply is refused, on_error(exc, data,
 * id) answers instead (None: no reply), or without on_error the error itself
 * does (reply_error). Other exceptions (KeyboardInterrupt, SystemExit) stop
 * serve. 0 answered or skipped, -1 error set. */
static int serve_one(Chan *self, PyObject *handler, PyObject *on_error, PyObject *data,
                     uint64_t id)
{
    int (*reply)(Chan *, uint64_t, PyObject *) = CLASS(self)->reply;
    PyObject *out = PyObject_CallOneArg(handler, data);
    int rc = out ? reply(self, id, out) : -1;
    Py_XDECREF(out);
    if (rc >= 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) /* KeyboardInterrupt, SystemExit: stop */
        return -1;
    PyObject *exc = take_exception();
    if (!on_error || on_error == Py_None) {
        rc = CLASS(self)->reply_error(self, id, exc);
    } else {
        PyObject *id_obj = PyLong_FromUnsignedLongLong(id);
        PyObject *args[] = {exc, data, id_obj};
        out = id_obj ? PyObject_Vectorcall(on_error, args, 3, NULL) : NULL;
        Py_XDECREF(id_obj);
        rc = !out ? -1 : out == Py_None ? 0 : reply(self, id, out);
        Py_XDECREF(out);
    }
    Py_DECREF(exc);
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
    if (chan_enter(self) < 0)
        return NULL;
    uint64_t served = 0;
    int failed = 0;
    while (served < max && !self->closing) {
        /* the idle timeout runs per request; close() ends the wait at once */
        PyObject *data;
        uint64_t id;
        int rc = CLASS(self)->take(self, deadline_in(idle_ns), 1, 0, &data, &id);
        if (rc < 0 && closed_under(self))
            rc = 0;
        if (rc < 0 && self->undecodable && PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_Clear(); /* answered with the error it could not be decoded for */
            served++;
            continue;
        }
        if (rc < 0) {
            failed = 1;
            break;
        }
        if (rc == 0) /* idle for `timeout`, or closed */
            break;
        served++;
        rc = serve_one(self, a[0], a[1], data, id);
        Py_DECREF(data);
        if (rc < 0) {
            failed = 1;
            break;
        }
    }
    chan_leave(self);
    return failed ? NULL : PyLong_FromUnsignedLongLong(served);
}

/* ---- management ---- */

static PyObject *server_new_client(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    rr_chan *ch;
    int rc = rr_chan_share(self->ch, &ch);
    int slot = CLASS(self)->client_slot;
    Chan *res = NULL;
    if (rc < 0)
        raise_core(self->st, rc, NULL, NULL);
    else
        res = (Chan *)chan_wrap(self->st->types[slot], self->st, self->st->classes[slot], ch,
                                self->path, rr_get_spin(ch));
    /* the client shares the server's eventfds, through fds of its own */
    if (res && self->req_efd.fd >= 0)
        efd_replace(&res->req_efd, fcntl(self->req_efd.fd, F_DUPFD_CLOEXEC, 0), 1);
    if (res && self->reply_efd.fd >= 0)
        efd_replace(&res->reply_efd, fcntl(self->reply_efd.fd, F_DUPFD_CLOEXEC, 0), 1);
    chan_leave(self);
    return (PyObject *)res;
}

static int clear_call(rr_chan *ch, int64_t unused, void *unused_arg)
{
    return rr_clear(ch);
}

static PyObject *server_clear(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    int rc = wait_sliced(self->ch, &self->closing, RR_NOWAIT, clear_call, NULL);
    chan_leave(self);
    return rc < 0 ? raise_core(self->st, rc, NULL, NULL) : Py_NewRef(Py_None);
}

static PyObject *server_sync(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_sync(self->ch);
    Py_END_ALLOW_THREADS
    chan_leave(self);
    return rc < 0 ? raise_core(self->st, rc, self->path, NULL) : Py_NewRef(Py_None);
}

static PyObject *server_unlink(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    chan_leave(self);
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

static PyObject *server_wait_request(Chan *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 0, 1, a, "_wait_request") < 0
        || parse_deadline(a[0], &deadline) < 0 || chan_enter(self) < 0)
        return NULL;
    int rc = wait_sliced(self->ch, &self->closing, deadline, wait_request, NULL);
    chan_leave(self);
    if (rc == -EINTR || rc == RC_CLOSED)
        return raise_core(self->st, rc, NULL, NULL);
    return PyBool_FromLong(rc == 0);
}

/* Whether request `id` still awaits its reply (not cancelled, cleared or recycled):
 * a worker of reqrep.futures skips tasks cancelled before it ran them. */
static PyObject *server_live(Chan *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || chan_enter(self) < 0)
        return NULL;
    int live = rr_id_live(self->ch, id);
    chan_leave(self);
    return PyBool_FromLong(live);
}

/* Wakes every receiver asleep in _wait_request or recv_wait (they look again). */
static PyObject *server_wake_request(Chan *self, PyObject *unused)
{
    if (self->ch && !self->closing)
        rr_wake_receivers(self->ch);
    Py_RETURN_NONE;
}

static PyObject *server_test_hold_lock(Chan *self, PyObject *unused)
{
    if (chan_enter(self) < 0)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = rr_test_hold_lock(self->ch);
    Py_END_ALLOW_THREADS
    chan_leave(self);
    return rc < 0 ? raise_core(self->st, rc, NULL, NULL) : Py_NewRef(Py_None);
}

/* ---- eventfds: a server's own eventfd is the request one ---- */

static PyObject *server_eventfd(Chan *s, PyObject *u) { return efd_get(s, &s->req_efd); }
static PyObject *server_eventfd_set(Chan *s, PyObject *fd) { return efd_set(s, &s->req_efd, fd); }
static PyObject *server_eventfd_consume(Chan *s, PyObject *u)
{
    return efd_consume(s, &s->req_efd);
}
static PyObject *server_notify(Chan *s, PyObject *u) { return efd_notify(s, &s->req_efd); }
static PyObject *server_fileno(Chan *s, PyObject *u) { return efd_fileno(s, &s->req_efd); }
static PyObject *server_reply_eventfd(Chan *s, PyObject *u) { return efd_get(s, &s->reply_efd); }
static PyObject *server_reply_eventfd_set(Chan *s, PyObject *fd)
{
    return efd_set(s, &s->reply_efd, fd);
}
static PyObject *server_reply_eventfd_consume(Chan *s, PyObject *u)
{
    return efd_consume(s, &s->reply_efd);
}
static PyObject *server_reply_notify(Chan *s, PyObject *u) { return efd_notify(s, &s->reply_efd); }
static PyObject *server_reply_fileno(Chan *s, PyObject *u) { return efd_fileno(s, &s->reply_efd); }

/* ---- constructors ---- */

static PyObject *server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "req_cap", "resp_slots", "resp_size", "arena", "spin",
                             "mode", "codec", NULL};
    PyObject *path, *req_cap = NULL, *resp_slots = NULL, *resp_size = NULL, *arena = NULL;
    PyObject *spin_obj = NULL, *mode_obj = NULL, *codec = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OOOO$OOO:Server", kwlist, &path, &req_cap,
                                     &resp_slots, &resp_size, &arena, &spin_obj, &mode_obj,
                                     &codec))
        return NULL;
    module_state *st = state_of_type(type);
    open_req r = {.wait_ns = -1};
    uint32_t spin;
    if (!st || parse_geometry(st, RR_VARIANT_STR, req_cap, resp_slots, resp_size, arena, &r) < 0
        || parse_spin(spin_obj, &spin) < 0 || parse_mode(mode_obj, &r.mode) < 0
        || parse_open_codec(RR_VARIANT_STR, codec, &r) < 0)
        return NULL;
    return chan_open(type, path, &r, 1, spin);
}

static PyObject *int_server_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "req_cap", "resp_slots", "spin", "mode", NULL};
    PyObject *path, *req_cap = NULL, *resp_slots = NULL, *spin_obj = NULL, *mode_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO$OO:IntServer", kwlist, &path, &req_cap,
                                     &resp_slots, &spin_obj, &mode_obj))
        return NULL;
    module_state *st = state_of_type(type);
    open_req r = {.wait_ns = -1};
    uint32_t spin;
    if (!st || parse_geometry(st, RR_VARIANT_INT, req_cap, resp_slots, NULL, NULL, &r) < 0
        || parse_spin(spin_obj, &spin) < 0 || parse_mode(mode_obj, &r.mode) < 0)
        return NULL;
    return chan_open(type, path, &r, 1, spin);
}

static PyObject *server_new_memfd(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "req_cap", "resp_slots", "resp_size", "arena", "spin",
                             "codec", NULL};
    const char *name;
    PyObject *req_cap = NULL, *resp_slots = NULL, *resp_size = NULL, *arena = NULL;
    PyObject *spin_obj = NULL, *codec = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|OOOO$OO:new_memfd", kwlist, &name, &req_cap,
                                     &resp_slots, &resp_size, &arena, &spin_obj, &codec))
        return NULL;
    return chan_open_memfd(type, name, req_cap, resp_slots, resp_size, arena, codec, spin_obj);
}

static PyObject *int_server_new_memfd(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "req_cap", "resp_slots", "spin", NULL};
    const char *name;
    PyObject *req_cap = NULL, *resp_slots = NULL, *spin_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|OO$O:new_memfd", kwlist, &name, &req_cap,
                                     &resp_slots, &spin_obj))
        return NULL;
    return chan_open_memfd(type, name, req_cap, resp_slots, NULL, NULL, NULL, spin_obj);
}

/* ---- the types ---- */

#define NEW_MEMFD(cls, fn)                                                                     \
    {"new_memfd", (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS | METH_CLASS, \
     DOC(cls, new_memfd)}

/* Both types' methods; their documentation is the stub's (docstrings.h). */
#define SERVER_METHODS(cls)                                                                        \
    CHAN_METHODS(cls),                                                                             \
    {"client", (PyCFunction)server_new_client, METH_NOARGS, DOC(cls, client)},                     \
    {"recv", FASTFN(server_recv), FASTKW, DOC(cls, recv)},                                         \
    {"recv_wait", FASTFN(server_recv_wait), FASTKW, DOC(cls, recv_wait)},                          \
    {"reply", FASTFN(server_reply), FASTKW, DOC(cls, reply)},                                      \
    {"reply_error", FASTFN(server_reply_error), FASTKW, DOC(cls, reply_error)},                    \
    {"serve", FASTFN(server_serve), FASTKW, DOC(cls, serve)},                                      \
    {"clear", (PyCFunction)server_clear, METH_NOARGS, DOC(cls, clear)},                            \
    {"sync", (PyCFunction)server_sync, METH_NOARGS, DOC(cls, sync)},                               \
    {"unlink", (PyCFunction)server_unlink, METH_NOARGS, DOC(cls, unlink)},                         \
    {"eventfd", (PyCFunction)server_eventfd, METH_NOARGS, DOC(cls, eventfd)},                      \
    {"eventfd_set", (PyCFunction)server_eventfd_set, METH_O, DOC(cls, eventfd_set)},               \
    {"eventfd_consume", (PyCFunction)server_eventfd_consume, METH_NOARGS,                          \
     DOC(cls, eventfd_consume)},                                                                   \
    {"notify", (PyCFunction)server_notify, METH_NOARGS, DOC(cls, notify)},                         \
    {"fileno", (PyCFunction)server_fileno, METH_NOARGS, DOC(cls, fileno)},                         \
    {"reply_eventfd", (PyCFunction)server_reply_eventfd, METH_NOARGS, DOC(cls, reply_eventfd)},    \
    {"reply_eventfd_set", (PyCFunction)server_reply_eventfd_set, METH_O,                           \
     DOC(cls, reply_eventfd_set)},                                                                 \
    {"reply_eventfd_consume", (PyCFunction)server_reply_eventfd_consume, METH_NOARGS,              \
     DOC(cls, reply_eventfd_consume)},                                                             \
    {"reply_notify", (PyCFunction)server_reply_notify, METH_NOARGS, DOC(cls, reply_notify)},       \
    {"reply_fileno", (PyCFunction)server_reply_fileno, METH_NOARGS, DOC(cls, reply_fileno)},       \
    {"_wait_request", FASTFN(server_wait_request), FASTKW, DOC(cls, _wait_request)},               \
    {"_wake_request", (PyCFunction)server_wake_request, METH_NOARGS, DOC(cls, _wake_request)},  \
    {"_live", (PyCFunction)server_live, METH_O, DOC(cls, _live)}

static PyMethodDef str_methods[] = {
    SERVER_METHODS(Server),
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     PyDoc_STR("Server[T]: the type a type checker sees; the same class at run time.")},
    NEW_MEMFD(Server, server_new_memfd),
    {"recv_multi", FASTFN(server_recv_multi), FASTKW, DOC(Server, recv_multi)},
    {"recv_wait_multi", FASTFN(server_recv_wait_multi), FASTKW, DOC(Server, recv_wait_multi)},
    {"drain", FASTFN(server_drain), FASTKW, DOC(Server, drain)},
    {"reply_buffer", FASTFN(server_reply_buffer), FASTKW, DOC(Server, reply_buffer)},
    {"_test_hold_lock", (PyCFunction)server_test_hold_lock, METH_NOARGS,
     DOC(Server, _test_hold_lock)},
    {NULL},
};

static PyMethodDef int_methods[] = {
    SERVER_METHODS(IntServer), NEW_MEMFD(IntServer, int_server_new_memfd), {NULL}};

static PyType_Slot str_slots[] = {
    CHAN_SLOTS, {Py_tp_new, server_new}, {Py_tp_methods, str_methods},
    {Py_tp_doc,
     "Server(path, req_cap=None, resp_slots=None, resp_size=None, arena=None, *, spin=None, "
     "mode=None, codec=None)\n--\n\n"
     "The worker side of a bytes/str channel; creates the file or opens it.\n"
     "Geometry not given (None): 1024, 64, 4096 and max(req_cap * 256, 4096) for a new\n"
     "channel, the file's for an existing one (given and different: ValueError)."},
    {0, NULL},
};

static PyType_Slot int_slots[] = {
    CHAN_SLOTS, {Py_tp_new, int_server_new}, {Py_tp_methods, int_methods},
    {Py_tp_doc,
     "IntServer(path, req_cap=None, resp_slots=None, *, spin=None, mode=None)\n"
     "--\n\nThe worker side of an int64 channel; creates the file or opens it.\n"
     "Geometry not given (None): 1024 and 64 for a new channel, the file's for an\n"
     "existing one (given and different: ValueError)."},
    {0, NULL},
};

static PyType_Spec str_spec = {"reqrep.Server", sizeof(Chan), 0, CHAN_TPFLAGS, str_slots};
static PyType_Spec int_spec = {"reqrep.IntServer", sizeof(Chan), 0, CHAN_TPFLAGS, int_slots};

static const server_class str_class = {
    {TYPE_SERVER, RR_VARIANT_STR, NULL}, TYPE_CLIENT, str_take_one, str_reply, str_reply_error};
static const server_class int_class = {
    {TYPE_INT_SERVER, RR_VARIANT_INT, NULL}, TYPE_INT_CLIENT, int_take_one, int_reply,
    int_reply_error};

int server_setup_types(PyObject *mod, module_state *st)
{
    if (chan_add_type(mod, st, &str_class.base, &str_spec) < 0
        || chan_add_type(mod, st, &int_class.base, &int_spec) < 0)
        return -1;
    return 0;
}
