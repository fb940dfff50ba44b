/* Client and IntClient (see client.h): send, collect, req, cancel, and the
 * bells of event-loop clients. The two differ in how a request is sent and
 * a response collected (client_class). */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "args.h"
#include "chan.h"
#include "codec.h"
#include "errors.h"
#include "view.h"
#include "wait.h"

typedef struct Client {
    Chan base;
    uint64_t *pending; /* id + 1 of each uncollected request, by slot */
    pid_t pid;         /* the process whose requests `pending` lists */
} Client;

typedef struct client_class {
    chan_class base;
    /* Sends `data`, waiting for room to `deadline`: 1 sent (*id set), 0 full
     * or timed out, -1 with an exception set. */
    int (*send)(Client *self, PyObject *data, int64_t deadline, uint64_t *id);
    /* The response to `id`, collected (its slot freed, or pinned by a View
     * if !copy); NULL with no exception set if it is not there (*stale: it
     * never will be). */
    PyObject *(*collect)(Client *self, uint64_t id, int copy, int *stale);
} client_class;

#define CLASS(self) ((const client_class *)(self)->base.cls)

/* ---- the requests this object has pending ---- */

/* This process's table (a forked copy starts empty: the parent's requests
 * are the parent's to collect); NULL if none and !create or out of memory. */
static uint64_t *pending_table(Client *self, int create)
{
    uint32_t n = rr_geometry_of(self->base.ch)->resp_slots;
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

static int pending_add(Client *self, uint64_t id)
{
    uint64_t *table = pending_table(self, 1);
    if (!table)
        return -1;
    table[rr_id_index(id)] = id + 1;
    return 0;
}

static void pending_drop(Client *self, uint64_t id)
{
    uint32_t idx = rr_id_index(id);
    if (self->pending && idx < rr_geometry_of(self->base.ch)->resp_slots
        && self->pending[idx] == id + 1)
        self->pending[idx] = 0;
}

/* Looks at a reply another reader may move between two of ours (READY,
 * READING and back): this many, then "not now". */
#define RESP_MOVE_TRIES 4

/* chan_class.release: cancels what this object still has pending. */
static void release_pending(Chan *base)
{
    Client *self = (Client *)base;
    if (!pending_table(self, 0))
        return;
    uint32_t n = rr_geometry_of(base->ch)->resp_slots;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = self->pending[i];
        if (!id--)
            continue;
        /* Cancel a waiting request, or free a reply nobody will read: from
         * READY, or from READING (another reader that may have died there;
         * discard, from READY only, left it out of the pool). A few times: the
         * other reader may move it between cancel and release. */
        for (int tries = 0; tries < RESP_MOVE_TRIES; tries++)
            if (rr_cancel(base->ch, id) != -EBUSY || rr_resp_release(base->ch, id) == 0)
                break;
    }
    PyMem_Free(self->pending);
    self->pending = NULL;
}

/* ---- sending ---- */

/* What a send's core result `rc` means (see client_class.send). */
static int sent(Client *self, int rc, const rr_error *err)
{
    if (rc == -EAGAIN)
        return 0;
    if (rc < 0) {
        raise_core(self->base.st, rc, NULL, err);
        return -1;
    }
    return 1;
}

typedef struct str_sending {
    const rr_iovec *iov; /* the payload's pieces (codec), or */
    uint32_t n;
    payload p;           /* the payload (no codec) */
    uint64_t *id;
} str_sending;

static int str_send_call(rr_chan *ch, int64_t deadline, void *arg)
{
    str_sending *s = arg;
    return s->iov ? rr_str_sendv(ch, s->iov, s->n, 0, deadline, s->id)
                  : rr_str_send(ch, s->p.ptr, (size_t)s->p.len, s->p.flags, deadline, s->id);
}

static int str_send(Client *self, PyObject *data, int64_t deadline, uint64_t *id)
{
    Chan *c = &self->base;
    str_sending s; /* not zeroed: payload_get fills what is read */
    s.id = id;
    encoded e;
    size_t len;
    if (c->codec) {
        if (codec_encode(c->codec, data, &e) < 0)
            return -1;
        s.iov = e.iov;
        s.n = e.n;
        len = e.len;
    } else {
        s.iov = NULL;
        if (payload_get(data, &s.p) < 0)
            return -1;
        len = (size_t)s.p.len;
    }
    int rc = wait_try_lock(c->ch, &c->closing, deadline, str_send_call, &s, len >= GIL_FREE_COPY);
    if (rc == -EAGAIN && deadline != RR_NOWAIT)
        rc = wait_sliced(c->ch, &c->closing, deadline, str_send_call, &s);
    if (rc == -ETIMEDOUT)
        rc = -EAGAIN; /* the lock stayed busy to the deadline */
    rr_error err, *why = NULL; /* not zeroed on the fast path */
    if (rc == -EMSGSIZE) {
        snprintf(err.why, sizeof err.why, "request of %zu bytes%s exceeds the arena (%llu bytes)",
                 len, s.iov ? " (encoded)" : "", (unsigned long long)rr_geometry_of(c->ch)->arena);
        why = &err;
    }
    if (s.iov)
        encoded_release(&e);
    else
        payload_release(&s.p);
    return sent(self, rc, why);
}

typedef struct int_sending {
    int64_t value;
    uint64_t *id;
} int_sending;

static int int_send_call(rr_chan *ch, int64_t deadline, void *arg)
{
    int_sending *s = arg;
    return rr_int_send(ch, s->value, deadline, s->id);
}

static int int_send(Client *self, PyObject *data, int64_t deadline, uint64_t *id)
{
    Chan *c = &self->base;
    int_sending s = {.id = id};
    if (parse_int64(data, &s.value) < 0)
        return -1;
    int rc = int_send_call(c->ch, RR_NOWAIT, &s);
    if (rc == -EAGAIN && deadline != RR_NOWAIT)
        rc = wait_sliced(c->ch, &c->closing, deadline, int_send_call, &s);
    return sent(self, rc, NULL);
}

/* Sends one request and lists it as pending (see client_class.send). */
static int send_one(Client *self, PyObject *data, int64_t deadline, uint64_t *id)
{
    int rc = CLASS(self)->send(self, data, deadline, id);
    if (rc == 1 && pending_add(self, *id) < 0) {
        rr_cancel(self->base.ch, *id);
        return -1;
    }
    return rc;
}

/* ---- collecting ---- */

/* Frees the slot of a reply copied out (1), or finds it taken from us (0: a
 * sweep that took us for dead reclaimed it, so the copy is void). */
static int collected(Client *self, uint64_t id)
{
    if (rr_resp_release(self->base.ch, id) < 0)
        return 0;
    pending_drop(self, id);
    return 1;
}

/* Raises the error reply whose frame was copied out into `copy` (bytes). */
static PyObject *raise_error_frame(Client *self, PyObject *copy)
{
    return raise_remote(PyBytes_AS_STRING(copy), (size_t)PyBytes_GET_SIZE(copy),
                        self->base.passthrough ? NULL : rr_geometry_of(self->base.ch)->codec);
}

/* str_collect of an error reply, or of a payload for the channel's codec:
 * copied out, the slot freed, then decoded (Python code runs on no slot). */
static PyObject *str_collect_decoded(Client *self, uint64_t id, const rr_resp *r, int *stale)
{
    int error = (r->flags & RR_FLAG_ERROR) != 0;
    PyObject *copy = error ? PyBytes_FromStringAndSize(r->data, r->len)
                           : codec_copy(r->data, r->len);
    if (!copy) {
        rr_resp_unview(self->base.ch, id); /* leave the reply for another try */
        return NULL;
    }
    if (!collected(self, id)) {
        Py_DECREF(copy);
        *stale = 1;
        return NULL;
    }
    PyObject *obj = error ? raise_error_frame(self, copy) : codec_decode(self->base.codec, copy);
    Py_DECREF(copy);
    return obj;
}

/* view_done_fn of a reply View: frees the slot, in the process that pinned it. */
static void unpin(Chan *base, uint64_t id, pid_t pid)
{
    if (pid == rr_self_pid() && base->ch)
        rr_resp_unpin(base->ch, id, 1); /* -ESTALE: a sweep took it (we were thought dead) */
    chan_unhold(base);
}

/* A pinned reply that is an error: copied, its slot freed, raised. */
static PyObject *pinned_error(Client *self, uint64_t id, const rr_resp *r, int *stale)
{
    rr_chan *ch = self->base.ch;
    PyObject *copy = PyBytes_FromStringAndSize(r->data, r->len);
    if (!copy) {
        rr_resp_unpin(ch, id, 0); /* leave the reply for another try */
        return NULL;
    }
    if (rr_resp_unpin(ch, id, 1) < 0) {
        Py_DECREF(copy);
        *stale = 1;
        return NULL;
    }
    pending_drop(self, id);
    PyObject *res = raise_error_frame(self, copy);
    Py_DECREF(copy);
    return res;
}

static PyObject *str_collect(Client *self, uint64_t id, int copy, int *stale);

/* The reply collected with a copy, as a View of that copy (or, on a codec
 * channel, the object decoded): where it cannot be pinned. */
static PyObject *copied_view(Client *self, uint64_t id, int *stale)
{
    PyObject *obj = str_collect(self, id, 1, stale);
    if (!obj || self->base.codec)
        return obj;
    Py_ssize_t len;
    const char *data;
    uint32_t flags = 0;
    if (PyUnicode_Check(obj)) {
        data = PyUnicode_AsUTF8AndSize(obj, &len); /* kept with obj */
        flags = RR_FLAG_UTF8;
    } else {
        data = PyBytes_AS_STRING(obj);
        len = PyBytes_GET_SIZE(obj);
    }
    PyObject *view = data ? view_new(self->base.st, id, data, (uint32_t)len, flags, NULL, 0,
                                     NULL, obj)
                          : NULL;
    Py_DECREF(obj);
    return view;
}

/* str_collect with copy=False: the reply pinned in its slot, as a View (or,
 * on a codec channel, the object its codec reads from that View). */
static PyObject *str_collect_view(Client *self, uint64_t id, int *stale)
{
    Chan *c = &self->base;
    rr_resp r;
    /* Made first: nothing may fail once the reply is pinned (PINNED: every
     * other look at it, get(id) again included, finds it collected) */
    PyObject *view = view_alloc(c->st);
    if (!view)
        return NULL;
    int rc = rr_resp_pin(c->ch, id, &r);
    if (rc < 0) {
        Py_DECREF(view);
        if (rc == -EBUSY || rc == -EPERM) /* being copied, or not our request */
            return copied_view(self, id, stale);
        *stale = rc == -ESTALE;
        return NULL;
    }
    if (r.flags & RR_FLAG_ERROR) {
        Py_DECREF(view);
        return pinned_error(self, id, &r, stale);
    }
    chan_hold(c); /* the mapping stays while the View lives */
    view_set(view, id, r.data, r.len, r.flags, c, id, unpin, NULL);
    pending_drop(self, id);
    if (!c->codec)
        return view;
    /* The codec reads in place: what it makes from the View (a pickle's
     * out-of-band buffers) keeps it, and the slot, alive. */
    PyObject *obj = codec_decode_view(c->codec, view);
    Py_DECREF(view);
    return obj;
}

static PyObject *str_collect(Client *self, uint64_t id, int copy, int *stale)
{
    rr_chan *ch = self->base.ch;
    rr_resp r;
    *stale = 0;
    if (!copy)
        return str_collect_view(self, id, stale);
    int rc = rr_resp_view(ch, id, &r);
    if (rc < 0) {
        *stale = rc == -ESTALE;
        return NULL;
    }
    if ((r.flags & RR_FLAG_ERROR) || self->base.codec)
        return str_collect_decoded(self, id, &r, stale);
    PyObject *obj = payload_object(r.data, r.len, r.flags);
    if (!obj) {
        rr_resp_unview(ch, id); /* leave the reply for another try */
        return NULL;
    }
    if (!collected(self, id)) {
        Py_DECREF(obj);
        *stale = 1;
        return NULL;
    }
    return obj;
}

/* int_collect through a view (READING): an error reply (its name is read
 * there), or one somebody else views (a second look, as a Str collect's: a
 * reader that died or stopped half-way would otherwise keep it from us). */
static PyObject *int_collect_viewed(Client *self, uint64_t id, int *stale)
{
    rr_chan *ch = self->base.ch;
    rr_resp r;
    int rc = rr_resp_view(ch, id, &r);
    if (rc < 0) {
        *stale = rc == -ESTALE;
        return NULL;
    }
    int error = (r.flags & RR_FLAG_ERROR) != 0;
    char name[RR_SLOT_ERROR_MAX];
    size_t len = r.len < sizeof name ? r.len : sizeof name;
    PyObject *obj = NULL;
    if (error) {
        memcpy(name, r.data, len);
    } else if (!(obj = PyLong_FromLongLong(r.value))) {
        rr_resp_unview(ch, id); /* leave the reply for another try */
        return NULL;
    }
    if (rr_resp_release(ch, id) < 0) {
        Py_XDECREF(obj);
        *stale = 1; /* cleared under us, or the other reader's release won */
        return NULL;
    }
    pending_drop(self, id);
    return error ? raise_remote(name, len, self->base.passthrough ? NULL : "") : obj;
}

static PyObject *int_collect(Client *self, uint64_t id, int copy, int *stale)
{
    rr_chan *ch = self->base.ch;
    *stale = 0;
    for (int tries = 0; tries < RESP_MOVE_TRIES; tries++) {
        int64_t value;
        /* one CAS (READY -> FREE) instead of view and release */
        int rc = rr_int_peek(ch, id, &value);
        if (rc == -EREMOTEIO || rc == -EBUSY)
            return int_collect_viewed(self, id, stale);
        if (rc < 0) {
            *stale = rc == -ESTALE;
            return NULL;
        }
        PyObject *obj = PyLong_FromLongLong(value);
        if (!obj)
            return NULL;
        if (rr_resp_discard(ch, id) == 0) {
            pending_drop(self, id);
            return obj;
        }
        /* Moved since the peek: what was read is void. Cleared (stale), or
         * another reader views it now (a second look) or gave it back: look
         * again (F5 in rr_slots.pml; stale here lost the reply for good). */
        Py_DECREF(obj);
    }
    return NULL; /* another reader keeps moving it: not now */
}

/* After -EOWNERDEAD: frees the slot of `id` and raises WorkerDiedError (-1),
 * or finds the request moved on since the check: 0 = look again (a reply
 * landed, or a live worker writes it now), 1 = stale. */
static int worker_died(Client *self, uint64_t id)
{
    int pid = rr_resp_worker(self->base.ch, id);
    int rc = rr_resp_abandon_dead(self->base.ch, id);
    if (rc == -EBUSY || rc == -EAGAIN)
        return 0;
    pending_drop(self, id);
    if (rc < 0)
        return 1;
    raise_worker_died(self->base.st, pid, id);
    return -1;
}

static int resp_wait(rr_chan *ch, int64_t deadline, void *id)
{
    return rr_resp_wait(ch, *(const uint64_t *)id, deadline);
}

static int resp_hint(rr_chan *ch, void *id) { return rr_resp_hint(ch, *(const uint64_t *)id); }

/* Waits for and collects the response to `id`; None on timeout or stale. */
static PyObject *wait_collect(Client *self, uint64_t id, int64_t deadline, int copy)
{
    Chan *c = &self->base;
    int stale, rc = 0, waited = 0;
    for (;;) {
        PyObject *obj = CLASS(self)->collect(self, id, copy, &stale);
        if (obj || PyErr_Occurred())
            return obj;
        if (stale) {
            pending_drop(self, id);
            Py_RETURN_NONE;
        }
        if (rc == -EAGAIN || deadline == RR_NOWAIT)
            Py_RETURN_NONE;
        /* A look after a wait that said "there" found nothing to collect
         * (it moved on meanwhile, or another reader copies it out): never
         * loop past the deadline, a signal or a close() from another thread. */
        if (waited && c->closing)
            return raise_core(c->st, RC_CLOSED, NULL, NULL);
        if (waited && ((deadline != RR_FOREVER && rr_now_ns() >= deadline)
                       || PyErr_CheckSignals() < 0))
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        rc = wait_spun(c->ch, &c->closing, waited ? NULL : &c->gil_spin, deadline, resp_hint,
                       resp_wait, &id);
        waited = 1;
        if (rc == -EOWNERDEAD) {
            int died = worker_died(self, id);
            if (died < 0)
                return NULL;
            if (died > 0)
                Py_RETURN_NONE;
            rc = 0; /* moved on since the check: collect, or wait on */
        } else if (rc < 0 && rc != -EAGAIN && rc != -ESTALE) {
            return raise_core(c->st, rc, NULL, NULL);
        }
    }
}

/* ---- the methods ---- */

static PyObject *send_method(Client *self, PyObject *data, int64_t deadline)
{
    if (chan_enter(&self->base) < 0)
        return NULL;
    uint64_t id;
    int rc = send_one(self, data, deadline, &id);
    chan_leave(&self->base);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(id);
}

static PyObject *client_send(Client *self, PyObject *data)
{
    return send_method(self, data, RR_NOWAIT);
}

static PyObject *client_send_wait(Client *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "send_wait") < 0
        || parse_deadline(a[1], &deadline) < 0)
        return NULL;
    return send_method(self, a[0], deadline);
}

/* A sent request (`id` not None) also signals the request eventfd. */
static PyObject *notified(Client *self, PyObject *id)
{
    if (id && id != Py_None && self->base.ch && efd_signal(self->base.req_efd.fd) < 0) {
        Py_DECREF(id);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return id;
}

static PyObject *client_send_notify(Client *self, PyObject *data)
{
    return notified(self, client_send(self, data));
}

static PyObject *client_send_wait_notify(Client *self, PyObject *const *args, Py_ssize_t nargs,
                                         PyObject *kwnames)
{
    return notified(self, client_send_wait(self, args, nargs, kwnames));
}

static PyObject *get_method(Client *self, PyObject *id_obj, int64_t deadline, int copy)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || chan_enter(&self->base) < 0)
        return NULL;
    PyObject *res = wait_collect(self, id, deadline, copy);
    chan_leave(&self->base);
    return res;
}

static PyObject *client_get(Client *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"id", "*copy"};
    PyObject *a[2];
    int copy;
    if (nargs == 1 && !kwnames) /* the common call, parsed at once */
        return get_method(self, args[0], RR_NOWAIT, 1);
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "get") < 0
        || parse_copy(a[1], &copy) < 0)
        return NULL;
    return get_method(self, a[0], RR_NOWAIT, copy);
}

static PyObject *client_get_wait(Client *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"id", "timeout", "*copy"};
    PyObject *a[3];
    int64_t deadline;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 1, 3, a, "get_wait") < 0
        || parse_deadline(a[1], &deadline) < 0 || parse_copy(a[2], &copy) < 0)
        return NULL;
    return get_method(self, a[0], deadline, copy);
}

static PyObject *client_cancel(Client *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || chan_enter(&self->base) < 0)
        return NULL;
    int rc = rr_cancel(self->base.ch, id);
    if (rc != -EBUSY)
        pending_drop(self, id);
    chan_leave(&self->base);
    return PyBool_FromLong(rc == 0);
}

static PyObject *client_req(Client *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout", "*copy"};
    PyObject *a[3];
    int64_t deadline;
    int copy;
    if (parse_args(args, nargs, kwnames, names, 1, 3, a, "req") < 0
        || parse_deadline(a[1], &deadline) < 0 || parse_copy(a[2], &copy) < 0
        || chan_enter(&self->base) < 0)
        return NULL;
    uint64_t id;
    PyObject *res = NULL;
    int rc = send_one(self, a[0], deadline, &id);
    if (rc == 0)
        res = Py_NewRef(Py_None);
    if (rc <= 0)
        goto out;
    res = wait_collect(self, id, deadline, copy);
    if (res == Py_None || !res) {
        /* Timed out, dropped by clear(), or interrupted: give the slot back
         * (a reply being written loses). A complete reply that won the race
         * is collected, at once, instead of lost. */
        int crc = rr_cancel(self->base.ch, id);
        if (crc == -EBUSY && res == Py_None) {
            Py_DECREF(res);
            res = wait_collect(self, id, RR_NOWAIT, copy);
        } else if (crc != -EBUSY) {
            pending_drop(self, id);
        }
    }
out:
    chan_leave(&self->base);
    return res;
}

/* Non-blocking: 0 pending, 1 replied, 2 stale; WorkerDiedError (slot freed)
 * if the worker that took it is dead. For event loops, which never wait. */
static PyObject *client_check(Client *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || chan_enter(&self->base) < 0)
        return NULL;
    int rc = rr_resp_check(self->base.ch, id);
    if (rc == -EOWNERDEAD) {
        int died = worker_died(self, id);
        if (died < 0) {
            chan_leave(&self->base);
            return NULL;
        }
        /* stale; or moved on since the check: replied (1) or a live worker's (0) */
        rc = died > 0 ? -ESTALE : rr_resp_check(self->base.ch, id) == 1;
    }
    PyObject *res = PyLong_FromLong(rc == -ESTALE ? 2 : rc);
    chan_leave(&self->base);
    return res;
}

/* The pid of the worker that took request `id`, 0 while it is queued (or over). */
static PyObject *client_worker(Client *self, PyObject *id_obj)
{
    uint64_t id;
    if (parse_id(id_obj, &id) < 0 || chan_enter(&self->base) < 0)
        return NULL;
    int pid = rr_resp_worker(self->base.ch, id);
    chan_leave(&self->base);
    return PyLong_FromLong(pid);
}

static PyObject *client_pending(Client *self, PyObject *unused)
{
    if (chan_enter(&self->base) < 0)
        return NULL;
    uint64_t n = 0;
    uint32_t slots = rr_geometry_of(self->base.ch)->resp_slots;
    for (uint32_t i = 0; pending_table(self, 0) && i < slots; i++) {
        uint64_t id = self->pending[i];
        if (id && rr_id_live(self->base.ch, id - 1))
            n++;
        else
            self->pending[i] = 0; /* cleared or recycled behind our back */
    }
    chan_leave(&self->base);
    return PyLong_FromUnsignedLongLong(n);
}

/* ---- bells: replies for clients waiting in an event loop ---- */

static PyObject *client_bell_claim(Client *self, PyObject *unused)
{
    if (chan_enter(&self->base) < 0)
        return NULL;
    int rc = rr_bell_claim(self->base.ch);
    chan_leave(&self->base);
    if (rc < 0)
        return raise_core(self->base.st, rc, NULL, &(rr_error){
            "all event-loop client bells of this channel are taken (64 at most)"});
    return PyLong_FromUnsignedLong(rr_bell_seq(self->base.ch));
}

static PyObject *client_bell_release(Client *self, PyObject *unused)
{
    if (self->base.ch && !self->base.closing)
        rr_bell_release(self->base.ch);
    Py_RETURN_NONE;
}

/* Rings this client's bell: its helper thread's _bell_wait returns now. */
static PyObject *client_bell_ring(Client *self, PyObject *unused)
{
    if (self->base.ch && !self->base.closing)
        rr_bell_poke(self->base.ch);
    Py_RETURN_NONE;
}

static int bell_wait(rr_chan *ch, int64_t deadline, void *seen)
{
    return rr_bell_wait(ch, *(const uint32_t *)seen, deadline);
}

/* Waits (GIL released) until the bell's count differs from `seen`; returns
 * the count now (equal to seen on timeout). */
static PyObject *client_bell_wait(Client *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"seen", "timeout"};
    PyObject *a[2];
    uint64_t seen64;
    int64_t deadline;
    Chan *c = &self->base;
    if (parse_args(args, nargs, kwnames, names, 1, 2, a, "_bell_wait") < 0
        || parse_u64_range(a[0], "seen", 0, UINT32_MAX, &seen64) < 0
        || parse_deadline(a[1], &deadline) < 0 || chan_enter(c) < 0)
        return NULL;
    uint32_t seen = (uint32_t)seen64;
    int rc = wait_sliced(c->ch, &c->closing, deadline, bell_wait, &seen);
    uint32_t now = rr_bell_seq(c->ch);
    chan_leave(c);
    if (rc < 0 && rc != -EAGAIN)
        return raise_core(c->st, rc, NULL, NULL);
    return PyLong_FromUnsignedLong(now);
}

/* ---- eventfds: a client's own eventfd is the reply one ---- */

static PyObject *client_eventfd(Chan *s, PyObject *u) { return efd_get(s, &s->reply_efd); }
static PyObject *client_eventfd_set(Chan *s, PyObject *fd)
{
    return efd_set(s, &s->reply_efd, fd);
}
static PyObject *client_eventfd_consume(Chan *s, PyObject *u)
{
    return efd_consume(s, &s->reply_efd);
}
static PyObject *client_fileno(Chan *s, PyObject *u) { return efd_fileno(s, &s->reply_efd); }
static PyObject *client_notify(Chan *s, PyObject *u) { return efd_notify(s, &s->req_efd); }
static PyObject *client_req_eventfd_set(Chan *s, PyObject *fd)
{
    return efd_set(s, &s->req_efd, fd);
}
static PyObject *client_req_fileno(Chan *s, PyObject *u) { return efd_fileno(s, &s->req_efd); }

/* ---- the types ---- */

static PyObject *client_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "spin", "wait", "codec", NULL};
    static char *int_kwlist[] = {"path", "spin", "wait", NULL};
    PyObject *path, *spin_obj = NULL, *wait_obj = NULL, *codec = NULL;
    module_state *st;
    const chan_class *cls = chan_class_of(type, &st);
    if (!cls)
        return NULL;
    /* an IntClient has no codec= (TypeError, as for any unknown keyword) */
    int str = cls->variant == RR_VARIANT_STR;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, str ? "O|$OOO:Client" : "O|$OO:IntClient",
                                     str ? kwlist : int_kwlist, &path, &spin_obj, &wait_obj,
                                     &codec))
        return NULL;
    uint32_t spin;
    open_req r = {.mode = -1, .wait_ns = -1};
    if (parse_spin(spin_obj, &spin) < 0 || parse_open_codec(cls->variant, codec, &r) < 0)
        return NULL;
    /* wait=None: no waiting (not "forever", as a timeout's None would be) */
    if (wait_obj && wait_obj != Py_None && parse_timeout(wait_obj, &r.wait_ns) < 0)
        return NULL;
    if (path == Py_None) {
        PyErr_SetString(PyExc_TypeError,
                        "a client needs a path; for an anonymous channel use server.client()");
        return NULL;
    }
    return chan_open(type, path, &r, 0, spin);
}

/* Both types' methods; their documentation is the stub's (docstrings.h). */
#define CLIENT_METHODS(cls)                                                                \
    CHAN_METHODS(cls),                                                                     \
    {"req", FASTFN(client_req), FASTKW, DOC(cls, req)},                                    \
    {"send", (PyCFunction)client_send, METH_O, DOC(cls, send)},                            \
    {"send_wait", FASTFN(client_send_wait), FASTKW, DOC(cls, send_wait)},                  \
    {"get", FASTFN(client_get), FASTKW, DOC(cls, get)},                               \
    {"get_wait", FASTFN(client_get_wait), FASTKW, DOC(cls, get_wait)},                     \
    {"cancel", (PyCFunction)client_cancel, METH_O, DOC(cls, cancel)},                      \
    {"pending", (PyCFunction)client_pending, METH_NOARGS, DOC(cls, pending)},              \
    {"send_notify", (PyCFunction)client_send_notify, METH_O, DOC(cls, send_notify)},       \
    {"send_wait_notify", FASTFN(client_send_wait_notify), FASTKW, DOC(cls, send_wait_notify)}, \
    {"eventfd", (PyCFunction)client_eventfd, METH_NOARGS, DOC(cls, eventfd)},              \
    {"eventfd_set", (PyCFunction)client_eventfd_set, METH_O, DOC(cls, eventfd_set)},       \
    {"eventfd_consume", (PyCFunction)client_eventfd_consume, METH_NOARGS,                        \
     DOC(cls, eventfd_consume)},                                                                 \
    {"fileno", (PyCFunction)client_fileno, METH_NOARGS, DOC(cls, fileno)},                 \
    {"notify", (PyCFunction)client_notify, METH_NOARGS, DOC(cls, notify)},                 \
    {"req_eventfd_set", (PyCFunction)client_req_eventfd_set, METH_O, DOC(cls, req_eventfd_set)}, \
    {"req_fileno", (PyCFunction)client_req_fileno, METH_NOARGS, DOC(cls, req_fileno)},     \
    {"_check", (PyCFunction)client_check, METH_O, DOC(cls, _check)},                       \
    {"_worker", (PyCFunction)client_worker, METH_O, DOC(cls, _worker)},                    \
    {"_bell_claim", (PyCFunction)client_bell_claim, METH_NOARGS, DOC(cls, _bell_claim)},   \
    {"_bell_release", (PyCFunction)client_bell_release, METH_NOARGS, DOC(cls, _bell_release)}, \
    {"_bell_ring", (PyCFunction)client_bell_ring, METH_NOARGS, DOC(cls, _bell_ring)},      \
    {"_bell_wait", FASTFN(client_bell_wait), FASTKW, DOC(cls, _bell_wait)}

static PyMethodDef str_methods[] = {
    CLIENT_METHODS(Client),
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     PyDoc_STR("Client[T]: the type a type checker sees; the same class at run time.")},
    {NULL},
};
static PyMethodDef int_methods[] = {CLIENT_METHODS(IntClient), {NULL}};

static PyType_Slot str_slots[] = {
    CHAN_SLOTS, {Py_tp_new, client_new}, {Py_tp_methods, str_methods},
    {Py_tp_doc, "Client(path, *, spin=None, wait=None, codec=None)\n--\n\nThe requesting side of a "
                "bytes/str channel.\nwait: seconds to wait for a channel that does not exist "
                "yet."},
    {0, NULL},
};

static PyType_Slot int_slots[] = {
    CHAN_SLOTS, {Py_tp_new, client_new}, {Py_tp_methods, int_methods},
    {Py_tp_doc, "IntClient(path, *, spin=None, wait=None)\n--\n\nThe requesting side of an "
                "int64 channel.\nwait: seconds to wait for a channel that does not exist yet."},
    {0, NULL},
};

static PyType_Spec str_spec = {"reqrep.Client", sizeof(Client), 0, CHAN_TPFLAGS, str_slots};
static PyType_Spec int_spec = {"reqrep.IntClient", sizeof(Client), 0, CHAN_TPFLAGS, int_slots};

static const client_class str_class = {
    {TYPE_CLIENT, RR_VARIANT_STR, release_pending}, str_send, str_collect};
static const client_class int_class = {
    {TYPE_INT_CLIENT, RR_VARIANT_INT, release_pending}, int_send, int_collect};

int client_setup_types(PyObject *mod, module_state *st)
{
    if (chan_add_type(mod, st, &str_class.base, &str_spec) < 0
        || chan_add_type(mod, st, &int_class.base, &int_spec) < 0)
        return -1;
    return 0;
}
