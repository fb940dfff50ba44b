/* Calling a channel's codec (see codec.h). */
#include "codec.h"
#include "errors.h"

#include <string.h>

/* reqrep._codecs.<fn>(arg) */
static PyObject *call_codecs(const char *fn, PyObject *arg)
{
    PyObject *func = package_attr("reqrep._codecs", fn);
    if (!func)
        return NULL;
    PyObject *res = PyObject_CallOneArg(func, arg);
    Py_DECREF(func);
    return res;
}

int parse_open_codec(uint32_t variant, PyObject *obj, open_req *r)
{
    r->codec_given = 0;
    if (!obj || obj == Py_None)
        return 0;
    if (variant != RR_VARIANT_STR) {
        PyErr_SetString(PyExc_TypeError, "Int channels have no codec");
        return -1;
    }
    char *name = r->g.codec;
    PyObject *res = call_codecs("name_of", obj);
    if (!res)
        return -1;
    Py_ssize_t len;
    const char *s = PyUnicode_Check(res) ? PyUnicode_AsUTF8AndSize(res, &len) : NULL;
    if (!s || len <= 0 || len >= (Py_ssize_t)RR_CODEC_MAX) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a codec's name is 1 to 31 characters");
        Py_DECREF(res);
        return -1;
    }
    memcpy(name, s, (size_t)len + 1);
    Py_DECREF(res);
    r->codec_given = 1;
    return 0;
}

int check_codec(const open_req *r, const rr_geometry *have, PyObject *path)
{
    if (!r->codec_given || strcmp(r->g.codec, have->codec) == 0)
        return 0;
    if (have->codec[0])
        PyErr_Format(PyExc_ValueError, "the channel at %R has codec '%s', asked for '%s'",
                     path ? path : Py_None, have->codec, r->g.codec);
    else
        PyErr_Format(PyExc_ValueError, "the channel at %R has no codec, asked for '%s'",
                     path ? path : Py_None, r->g.codec);
    return -1;
}

PyObject *codec_lookup(const char *name)
{
    PyObject *s = PyUnicode_DecodeASCII(name, (Py_ssize_t)strlen(name), "replace");
    if (!s)
        return NULL;
    PyObject *res = call_codecs("lookup", s);
    Py_DECREF(s);
    return res;
}

int codec_encode(PyObject *codec, PyObject *obj, encoded *e)
{
    e->n = 0;
    e->len = 0;
    e->views = e->views_inline;
    e->iov = e->iov_inline;
    PyObject *name = PyUnicode_InternFromString("dumps");
    e->parts = name ? PyObject_CallMethodOneArg(codec, name, obj) : NULL;
    Py_XDECREF(name);
    if (!e->parts)
        return -1;
    PyObject *seq = NULL;
    Py_ssize_t n = 1;
    if (!PyObject_CheckBuffer(e->parts)) {
        if (!PyList_Check(e->parts) && !PyTuple_Check(e->parts)) {
            PyErr_Format(PyExc_TypeError,
                         "a codec's dumps() returns a buffer or a list or tuple of buffers, "
                         "not %.100s", Py_TYPE(e->parts)->tp_name);
            goto fail;
        }
        /* A tuple of its own: getting a buffer may run Python code (__buffer__),
         * which must not be able to change what is being walked. */
        if (PyList_Check(e->parts)) {
            PyObject *tuple = PyList_AsTuple(e->parts);
            if (!tuple)
                goto fail;
            Py_SETREF(e->parts, tuple);
        }
        seq = e->parts;
        n = PyTuple_GET_SIZE(seq);
        if (n > 65536) {
            PyErr_SetString(PyExc_ValueError, "a codec's dumps() returned over 65536 pieces");
            goto fail;
        }
    }
    if (n > ENCODED_INLINE) {
        e->views = PyMem_New(Py_buffer, (size_t)n);
        e->iov = PyMem_New(rr_iovec, (size_t)n);
        if (!e->views || !e->iov) {
            PyErr_NoMemory();
            goto fail;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = seq ? PyTuple_GET_ITEM(seq, i) : e->parts;
        if (PyObject_GetBuffer(part, &e->views[i], PyBUF_SIMPLE) < 0)
            goto fail;
        e->n++;
        e->iov[i] = (rr_iovec){e->views[i].buf, (size_t)e->views[i].len};
        e->len += (size_t)e->views[i].len;
    }
    return 0;
fail:
    encoded_release(e);
    return -1;
}

void encoded_release(encoded *e)
{
    for (uint32_t i = 0; i < e->n; i++)
        PyBuffer_Release(&e->views[i]);
    if (e->views != e->views_inline)
        PyMem_Free(e->views);
    if (e->iov != e->iov_inline)
        PyMem_Free(e->iov);
    e->views = e->views_inline;
    e->iov = e->iov_inline;
    e->n = 0;
    Py_CLEAR(e->parts);
}

PyObject *codec_copy(const void *data, uint32_t len)
{
    PyObject *copy = PyByteArray_FromStringAndSize(NULL, len);
    if (!copy || len == 0)
        return copy;
    char *dst = PyByteArray_AS_STRING(copy);
    if (len < GIL_FREE_COPY) {
        memcpy(dst, data, len);
    } else {
        Py_BEGIN_ALLOW_THREADS memcpy(dst, data, len);
        Py_END_ALLOW_THREADS
    }
    return copy;
}

PyObject *codec_decode_view(PyObject *codec, PyObject *view)
{
    PyObject *obj = codec_decode(codec, view);
    if (obj)
        return obj;
    PyObject *exc = take_exception();
    PyObject *tb = exc ? PyException_GetTraceback(exc) : NULL;
    PyObject *clear = tb ? package_attr("traceback", "clear_frames") : NULL;
    PyObject *res = clear ? PyObject_CallOneArg(clear, tb) : NULL;
    if (!res && tb)
        PyErr_Clear(); /* the pin then lasts as long as the exception: no worse */
    Py_XDECREF(res);
    Py_XDECREF(clear);
    Py_XDECREF(tb);
    restore_exception(exc);
    return NULL;
}

PyObject *codec_decode(PyObject *codec, PyObject *copy)
{
    PyObject *view = PyMemoryView_FromObject(copy);
    if (!view)
        return NULL;
    PyObject *name = PyUnicode_InternFromString("loads");
    PyObject *res = name ? PyObject_CallMethodOneArg(codec, name, view) : NULL;
    Py_XDECREF(name);
    Py_DECREF(view);
    return res;
}
