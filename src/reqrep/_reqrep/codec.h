/* A channel's codec (SPEC §7): the Python object, looked up by the name the
 * channel's header records, that turns objects into payload pieces (dumps)
 * and payloads back into objects (loads). The codecs themselves live in
 * reqrep._codecs; this is how the types call them. */
#ifndef REQREP_CODEC_H
#define REQREP_CODEC_H

#include "state.h" /* first: it includes Python.h */
#include <stdint.h>

#include "args.h"
#include "reqrep.h"

/* codec= of a constructor that opens or creates: None (absent) asks for
 * nothing; a name or a codec object (registered on the way) goes to
 * r->g.codec with r->codec_given set. Int channels have none: TypeError. */
int parse_open_codec(uint32_t variant, PyObject *obj, open_req *r);
/* ValueError if codec= named one and the channel `have` has another. */
int check_codec(const open_req *r, const rr_geometry *have, PyObject *path);

/* The codec registered as `name` (one not registered in this process fails
 * when first used, so that tools can open the channel): a new reference, or
 * NULL with an exception. */
PyObject *codec_lookup(const char *name);

#define ENCODED_INLINE 8

/* An object encoded by its codec: the pieces to gather into the channel. */
typedef struct encoded {
    PyObject *parts;  /* what dumps returned: held while its buffers are */
    uint32_t n;
    size_t len;       /* the pieces' total */
    Py_buffer *views;
    rr_iovec *iov;
    Py_buffer views_inline[ENCODED_INLINE];
    rr_iovec iov_inline[ENCODED_INLINE];
} encoded;

/* codec.dumps(obj) as pieces; encoded_release() after a success. */
int codec_encode(PyObject *codec, PyObject *obj, encoded *e);
void encoded_release(encoded *e);

/* A private copy of a payload in channel memory, for codec_decode later:
 * allocates but runs no Python code (safe under the Str queue lock). */
PyObject *codec_copy(const void *data, uint32_t len);
/* codec.loads(memoryview(copy)); a new reference or NULL. */
PyObject *codec_decode(PyObject *codec, PyObject *copy);
/* The same from a View (view.h): a failure's traceback has its frames
 * cleared, or their memoryviews of the View would keep its pin as long as
 * the exception lives. */
PyObject *codec_decode_view(PyObject *codec, PyObject *view);

#endif
