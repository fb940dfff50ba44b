/* The one place where the core's negative errno values become exceptions.
 *
 * Core calls return 0 (or a count) or -errno (csrc/reqrep.h); the binding adds
 * one code of its own, RC_CLOSED. A caller that knows more than the code says
 * (sizes, which resource) passes it as `err->why`: the code still decides the
 * exception. */
#ifndef REQREP_ERRORS_H
#define REQREP_ERRORS_H

#include "state.h" /* first: it includes Python.h */
#include <stdint.h>

#include "reqrep.h"

/* A wait ended because its object was closed (wait.h): beyond every errno,
 * and unlike -ECANCELED from a _wake_request, never to be retried. */
#define RC_CLOSED (-RR_EFORMAT - 1)

/* Sets the exception for core code `rc` < 0 and returns NULL; with one
 * already set (a signal handler raised during a wait: -EINTR), keeps it.
 * `path` (or NULL/None) names the file in messages; `err` (or NULL) may
 * explain `rc`:
 *   -RR_EFORMAT           ChannelFormatError(path: why)
 *   -EINVAL, -EMSGSIZE    ValueError(why)
 *   -ECANCELED, RC_CLOSED ValueError: the object was closed under the call
 *   -EBUSY                RuntimeError(why): all of a kind of resource taken
 *   -ENOMEM               MemoryError
 *   -ETIMEDOUT, -ENOSPC, -EDQUOT, -EFBIG with a why: that OSError with it
 *   anything else         the OSError subclass of its errno, with path */
PyObject *raise_core(module_state *st, int rc, PyObject *path, const rr_error *err);

/* ValueError for a call on a closed object. */
PyObject *raise_closed(void);

/* WorkerDiedError for request `id`, whose worker `pid` died. */
PyObject *raise_worker_died(module_state *st, int pid, uint64_t id);

/* Raises the exception an error reply (RR_FLAG_ERROR) of `len` bytes at
 * `data` stands for, on a channel of codec `codec` ("" for none; NULL for a
 * passthrough handle, whose RemoteError keeps `data`): reqrep._remote.decode
 * builds it (RemoteError, or the original exception on a pickle channel).
 * Returns NULL. */
PyObject *raise_remote(const void *data, size_t len, const char *codec);

/* The payload of an error reply for `exc` (an exception or a str), as bytes:
 * an Int channel's type name (is_int), or a Str channel's frame of at most
 * `limit` bytes (reqrep._remote). A new reference, or NULL with an exception. */
PyObject *remote_reply(PyObject *exc, size_t limit, const char *codec, int is_int);

/* The exception being raised, normalised, with its traceback; cleared
 * (to hand to Python code, as serve() does to on_error). */
PyObject *take_exception(void);
/* Raises `exc` (from take_exception; stolen) again; NULL: nothing. */
void restore_exception(PyObject *exc);

#endif
