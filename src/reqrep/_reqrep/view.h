/* View and ReplyBuffer (SPEC §9): buffers over channel memory, handed out
 * instead of a copy. A View is a read-only reply pinned in its slot, or a
 * request pinned in the arena (or, where it cannot be pinned, a copy); a
 * ReplyBuffer a writable reply being written in place. Each holds a call on
 * its channel object (chan_enter) from creation to its end, so the channel
 * stays mapped while one lives, and ends once, through the function its
 * maker gave: release (View), commit or abort (ReplyBuffer). */
#ifndef REQREP_VIEW_H
#define REQREP_VIEW_H

#include "chan.h" /* first: it includes Python.h */
#include <stdint.h>
#include <sys/types.h>

/* Ends a View: unpins what `token` names (in process `pid`, the View's
 * maker: a forked copy ends nothing of the parent's) and leaves the call it
 * held. Runs no Python code and cannot fail. */
typedef void (*view_done_fn)(Chan *owner, uint64_t token, pid_t pid);

/* Ends a ReplyBuffer: publishes its first `len` bytes (commit 1) or gives
 * the claim back (commit 0), then leaves the call it held (also on
 * failure). 1 delivered, 0 not (the request was cancelled or cleared), -1
 * with an exception set. Not called in a process other than the maker. */
typedef int (*replybuf_done_fn)(Chan *owner, uint64_t id, uint64_t token, Py_ssize_t len,
                                int commit);

/* A View of `len` bytes at `data` of the reply or request `id` (flags: its
 * RR_FLAG_UTF8, sent as str), either pinned in `owner`'s channel, whose
 * call (entered for it) it now holds and which done(owner, token) ends, or,
 * with owner NULL, a copy that `keep` holds. NULL with an exception on
 * failure: then the caller still holds the pin and the call. */
PyObject *view_new(module_state *st, uint64_t id, const void *data, uint32_t len, uint32_t flags,
                   Chan *owner, uint64_t token, view_done_fn done, PyObject *keep);

/* view_new in two steps, for a caller that must not fail once it has
 * pinned: a View that is released until view_set makes it one. */
PyObject *view_alloc(module_state *st);
void view_set(PyObject *view, uint64_t id, const void *data, uint32_t len, uint32_t flags,
              Chan *owner, uint64_t token, view_done_fn done, PyObject *keep);

/* A ReplyBuffer of `len` bytes at `data` for request `id` of `owner` (whose
 * call, entered for it, it now holds; `token` goes back to done()). NULL
 * with an exception on failure: then the caller still holds the claim and
 * the call. */
PyObject *replybuf_new(module_state *st, Chan *owner, uint64_t id, uint64_t token, void *data,
                       Py_ssize_t len, replybuf_done_fn done);

int view_setup_types(PyObject *mod, module_state *st);

#endif
