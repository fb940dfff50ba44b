/* The module's state: its types and exception classes (PEP 489/630), read by
 * every part of the binding. Kept apart from module.c, which includes the
 * parts to compose them: includes point one way (tests/test_layering.py). */
#ifndef REQREP_STATE_H
#define REQREP_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The four types, as indexes into module_state. */
enum { TYPE_SERVER, TYPE_INT_SERVER, TYPE_CLIENT, TYPE_INT_CLIENT, N_TYPES };

struct chan_class; /* chan.h: what sets each type apart */

typedef struct module_state {
    PyTypeObject *types[N_TYPES];
    const struct chan_class *classes[N_TYPES]; /* static; classes[i] describes types[i] */
    PyObject *format_error;                    /* reqrep.ChannelFormatError */
    PyObject *worker_died;                     /* reqrep.WorkerDiedError */
    PyTypeObject *view_type;                   /* reqrep.View (view.h) */
    PyTypeObject *reply_buffer_type;           /* reqrep.ReplyBuffer */
} module_state;

/* Defined in module.c; here so that a type can find its module. */
extern struct PyModuleDef reqrep_module;

/* The state of the module that defined `type` or a base of it; NULL with an
 * exception set if none did. */
module_state *state_of_type(PyTypeObject *type);

/* reqrep.<module>.<name>, imported when first asked for (the package's Python
 * parts the extension calls: _pickle, _remote, _codecs). New reference, or
 * NULL with an exception. */
PyObject *package_attr(const char *module, const char *name);

#endif
