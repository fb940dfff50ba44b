/* Arguments in and results out: timeouts as deadlines, ints in range, ids,
 * geometry, and payloads (bytes, str or any buffer in; bytes or str out).
 * Each parser returns 0, or -1 with an exception set. */
#ifndef REQREP_ARGS_H
#define REQREP_ARGS_H

#include "state.h" /* first: it includes Python.h */
#include <stdint.h>

#include "reqrep.h"

/* Payloads of this size or more are copied without the GIL. */
#define GIL_FREE_COPY (256 * 1024)

/* Positional-or-keyword parsing for METH_FASTCALL|METH_KEYWORDS methods:
 * out[i] is the argument named names[i], NULL where an optional one is absent.
 * Names from the first that begins with '*' on are keyword-only; the first
 * nmin (the required ones) never are. */
int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const *names, int nmin, int nmax, PyObject **out,
               const char *fname);

/* copy= of a receive or a collect: True or False (TypeError else), absent True. */
int parse_copy(PyObject *obj, int *copy);

/* A timeout in seconds as a length: None (or absent) RR_FOREVER, 0 RR_NOWAIT,
 * else at least 1 ns. */
int parse_timeout(PyObject *obj, int64_t *ns);
/* The deadline a length from parse_timeout ends at, from now. */
int64_t deadline_in(int64_t ns);
/* parse_timeout, then deadline_in. */
int parse_deadline(PyObject *obj, int64_t *deadline);

int parse_u64_range(PyObject *obj, const char *name, uint64_t lo, uint64_t hi, uint64_t *out);
/* A count >= 0 (capped at UINT32_MAX); None (where none_ok) or absent: no limit. */
int parse_count(PyObject *obj, const char *name, int none_ok, uint32_t *out);
/* A request id: an int from 0 to 2**64 - 1. */
int parse_id(PyObject *obj, uint64_t *id);
/* spin=: microseconds, None (or absent) the default. */
int parse_spin(PyObject *obj, uint32_t *spin);
/* An Int payload: OverflowError outside int64. */
int parse_int64(PyObject *obj, int64_t *out);

/* ---- geometry: what a constructor asks of the channel it opens ---- */

enum { GEO_REQ_CAP, GEO_RESP_SLOTS, GEO_RESP_SIZE, GEO_ARENA, GEO_N };

typedef struct open_req {
    rr_geometry g;          /* to create with: defaults where not given, normalised */
    uint64_t given[GEO_N];  /* the values given, as given (for messages) */
    unsigned given_mask;    /* bit GEO_x: that argument was given (not absent or None) */
    int mode;               /* permissions of a new file; -1: the default */
    int64_t wait_ns;        /* clients: how long to wait for the channel (parse_timeout);
                             * -1: not at all */
    int codec_given;        /* codec= named one (in g.codec): the channel must have it */
} open_req;

/* The geometry arguments (NULL where the type has none). Absent and None both
 * mean "not given": the default for a new channel, the file's for an existing one. */
int parse_geometry(module_state *st, uint32_t variant, PyObject *req_cap, PyObject *resp_slots,
                   PyObject *resp_size, PyObject *arena, open_req *r);
/* ValueError naming every given argument that the open channel differs in
 * (compared as normalised: req_cap 1000 asks for what a 1024 file has). */
int check_geometry(const open_req *r, const rr_geometry *have, PyObject *path);
/* mode=: None (absent) is the default; else permission bits 0 to 0o777. */
int parse_mode(PyObject *obj, int *mode);

/* ---- Str payloads ---- */

typedef struct payload {
    const char *ptr;
    Py_ssize_t len;
    uint32_t flags; /* RR_FLAG_UTF8 for str */
    int has_view;
    Py_buffer view;
} payload;

/* bytes, str (as UTF-8) or a buffer; payload_release() after a success. */
int payload_get(PyObject *obj, payload *p);
void payload_release(payload *p);
/* bytes or str from channel memory; allocates but runs no Python code, so
 * it is safe while the queue lock is held. */
PyObject *payload_object(const void *data, uint32_t len, uint32_t flags);
/* (data, id); steals the reference to data (NULL: returns NULL). */
PyObject *make_pair(PyObject *data, uint64_t id);

#endif
