/* Arguments in and results out (see args.h). */
#include "args.h"

#include <math.h>
#include <string.h>

#include "errors.h"

int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const *names, int nmin, int nmax, PyObject **out,
               const char *fname)
{
    if (!kwnames && nargs == nmin) { /* the hot calls: just the required ones, by position */
        for (int i = 0; i < nmax; i++)
            out[i] = i < nargs ? args[i] : NULL;
        return 0;
    }
    int npos = 0; /* names from the first marked "*" on are keyword-only */
    while (npos < nmax && names[npos][0] != '*')
        npos++;
    for (int i = 0; i < nmax; i++)
        out[i] = NULL;
    if (nargs > npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)",
                     fname, npos, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < nmax && found < 0; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i] + (i >= npos)) == 0)
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

int parse_copy(PyObject *obj, int *copy)
{
    if (obj && !PyBool_Check(obj)) {
        /* not truth: copy=None or 0 asking for a View would be a surprise */
        PyErr_Format(PyExc_TypeError, "copy must be True or False, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *copy = !obj || obj == Py_True;
    return 0;
}

/* ---- timeouts ---- */

int parse_timeout(PyObject *obj, int64_t *ns)
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

int64_t deadline_in(int64_t ns)
{
    if (ns == RR_FOREVER || ns == RR_NOWAIT)
        return ns;
    int64_t now = rr_now_ns();
    return ns >= RR_FOREVER - now ? RR_FOREVER : now + ns;
}

int parse_deadline(PyObject *obj, int64_t *deadline)
{
    int64_t ns;
    if (parse_timeout(obj, &ns) < 0)
        return -1;
    *deadline = deadline_in(ns);
    return 0;
}

/* ---- ints ---- */

int parse_u64_range(PyObject *obj, const char *name, uint64_t lo, uint64_t hi, uint64_t *out)
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

int parse_count(PyObject *obj, const char *name, int none_ok, uint32_t *out)
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

int parse_id(PyObject *obj, uint64_t *id)
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
    unsigned long long u = PyLong_AsUnsignedLongLong(obj); /* raises for < 0 and >= 2**64 */
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            /* not the value itself: a huge int has no repr (int_max_str_digits) */
            PyErr_Format(PyExc_OverflowError,
                         "id must be a request id from send() (0 <= id < 2**64), not %s",
                         overflow < 0 || (!overflow && v < 0) ? "a negative int"
                                                               : "an int of 2**64 or more");
        }
        return -1;
    }
    *id = u;
    return 0;
}

int parse_spin(PyObject *obj, uint32_t *spin)
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

int parse_int64(PyObject *obj, int64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "data must be an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* AndOverflow: a loop over the digits, where PyLong_AsLongLong (3.10,
     * 3.11) goes through _PyLong_AsByteArray for any value over 30 bits */
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "data does not fit in a signed 64-bit int");
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- geometry ---- */

static const char *const geo_names[GEO_N] = {"req_cap", "resp_slots", "resp_size", "arena"};

int parse_geometry(module_state *st, uint32_t variant, PyObject *req_cap, PyObject *resp_slots,
                   PyObject *resp_size, PyObject *arena, open_req *r)
{
    static const uint64_t lo[GEO_N] = {1, 1, 1, RR_MIN_ARENA};
    static const uint64_t hi[GEO_N] = {RR_MAX_REQ_CAP, RR_MAX_RESP_SLOTS, RR_MAX_RESP_SIZE,
                                       RR_MAX_ARENA};
    PyObject *args[GEO_N] = {req_cap, resp_slots, resp_size, arena};
    uint64_t value[GEO_N] = {1024, 64, variant == RR_VARIANT_STR ? 4096 : 0, 0}; /* defaults */
    r->given_mask = 0;
    r->codec_given = 0;
    for (int i = 0; i < GEO_N; i++) {
        if (!args[i] || args[i] == Py_None)
            continue;
        if (parse_u64_range(args[i], geo_names[i], lo[i], hi[i], &r->given[i]) < 0)
            return -1;
        r->given_mask |= 1u << i;
        value[i] = r->given[i];
    }
    r->g = (rr_geometry){variant, (uint32_t)value[GEO_REQ_CAP], (uint32_t)value[GEO_RESP_SLOTS],
                         (uint32_t)value[GEO_RESP_SIZE], value[GEO_ARENA]};
    rr_error err = {{0}};
    int rc = rr_geometry_normalise(&r->g, &err);
    if (rc < 0) {
        raise_core(st, rc, NULL, &err);
        return -1;
    }
    return 0;
}

int check_geometry(const open_req *r, const rr_geometry *have, PyObject *path)
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

int parse_mode(PyObject *obj, int *mode)
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

/* ---- Str payloads ---- */

int payload_get(PyObject *obj, payload *p)
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

void payload_release(payload *p)
{
    if (p->has_view)
        PyBuffer_Release(&p->view);
}

PyObject *payload_object(const void *data, uint32_t len, uint32_t flags)
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

PyObject *make_pair(PyObject *data, uint64_t id)
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
