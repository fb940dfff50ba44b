/* Core error codes to exceptions (see errors.h). */
#include "errors.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

PyObject *raise_closed(void)
{
    PyErr_SetString(PyExc_ValueError, "operation on a closed channel");
    return NULL;
}

/* OSError(errno, why, path): the constructor picks the subclass. */
static PyObject *raise_os_why(PyObject *type, int errnum, const char *why, PyObject *path)
{
    /* Made here, not left to PyErr_SetObject: 3.10 matches `except TimeoutError`
     * against the unnormalised type, OSError. The reason may quote bytes that are
     * not UTF-8 (a link's target, or one cut short). */
    PyObject *text = PyUnicode_DecodeUTF8(why, (Py_ssize_t)strlen(why), "replace");
    PyObject *exc = text ? PyObject_CallFunction(type, "iNO", errnum, text, path ? path : Py_None)
                         : NULL;
    if (exc)
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(exc);
    return NULL;
}

PyObject *raise_core(module_state *st, int rc, PyObject *path, const rr_error *err)
{
    if (PyErr_Occurred())
        return NULL;
    const char *why = err && err->why[0] ? err->why : NULL;
    int named = path && path != Py_None;
    switch (rc) {
    case -RR_EFORMAT:
        if (named)
            PyErr_Format(st->format_error, "%R: %s", path, why ? why : "not a valid channel");
        else
            PyErr_Format(st->format_error, "%s", why ? why : "not a valid channel");
        return NULL;
    case -ENOMEM:
        return PyErr_NoMemory();
    case -EINVAL:
        PyErr_SetString(PyExc_ValueError, why ? why : "invalid argument");
        return NULL;
    case -EMSGSIZE:
        PyErr_SetString(PyExc_ValueError, why ? why : "payload too large for this channel");
        return NULL;
    case -ECANCELED: /* a wait that close() interrupted */
    case RC_CLOSED:
        return raise_closed();
    case -EBUSY:
        PyErr_SetString(PyExc_RuntimeError, why ? why : "resource busy");
        return NULL;
    }
    /* The core said why (how much room a channel needed, a symbolic link, a
     * timeout...): OSError(errno, why, path), whose constructor picks the
     * subclass (TimeoutError for ETIMEDOUT). */
    if (why && rc < 0)
        return raise_os_why(PyExc_OSError, -rc, why, path);
    errno = -rc;
    if (named)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    return PyErr_SetFromErrno(PyExc_OSError);
}

PyObject *raise_worker_died(module_state *st, int pid, uint64_t id)
{
    PyObject *msg = PyUnicode_FromFormat(
        "worker process %d died before replying to request %llu", pid, (unsigned long long)id);
    if (!msg)
        return NULL;
    PyObject *exc = PyObject_CallOneArg(st->worker_died, msg);
    Py_DECREF(msg);
    if (!exc)
        return NULL;
    PyObject *pid_obj = PyLong_FromLong(pid), *id_obj = PyLong_FromUnsignedLongLong(id);
    if (pid_obj && id_obj && PyObject_SetAttrString(exc, "pid", pid_obj) == 0
        && PyObject_SetAttrString(exc, "id", id_obj) == 0)
        PyErr_SetObject(st->worker_died, exc);
    Py_XDECREF(pid_obj);
    Py_XDECREF(id_obj);
    Py_DECREF(exc);
    return NULL;
}

/* The exception being raised, normalised, with its traceback; cleared. */
PyObject *take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void restore_exception(PyObject *exc)
{
    if (!exc)
        return;
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* reqrep._remote.<fn>(*args): errors that travel back are written and read in
 * Python, where they are rare enough not to matter. */
static PyObject *call_remote(const char *fn, const char *fmt, ...)
{
    PyObject *func = package_attr("reqrep._remote", fn);
    if (!func)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    PyObject *args = Py_VaBuildValue(fmt, ap);
    va_end(ap);
    PyObject *res = args ? PyObject_Call(func, args, NULL) : NULL;
    Py_XDECREF(args);
    Py_DECREF(func);
    return res;
}

PyObject *raise_remote(const void *data, size_t len, const char *codec)
{
    PyObject *exc = call_remote("decode", "(y#s)", (const char *)data, (Py_ssize_t)len, codec);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *remote_reply(PyObject *exc, size_t limit, const char *codec, int is_int)
{
    PyObject *res = is_int ? call_remote("int_name", "(O)", exc)
                           : call_remote("encode", "(Ons)", exc, (Py_ssize_t)limit, codec);
    if (res && !PyBytes_Check(res)) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "reqrep._remote did not return bytes");
        return NULL;
    }
    return res;
}
