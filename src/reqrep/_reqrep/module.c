/* reqrep._reqrep: the CPython binding of the C core (csrc/).
 *
 * Heap types and module state (PEP 489/630), one file per concept: the
 * channel base (chan.c) and the types built on it (server.c, client.c);
 * argument parsing (args.c); the one sliced wait that every blocking call
 * makes without the GIL (wait.c); and the one place where the core's
 * -errno becomes an exception (errors.c). This file only composes them,
 * with the module's exceptions and its two private functions. */
#include "client.h"
#include "server.h"
#include "state.h"
#include "view.h"

#include <stdint.h>

#include "reqrep.h"

/* The file format as the core describes it, for tools and tests that look
 * inside a channel (reqrep._format builds on it): reqrep._reqrep._format, a
 * tuple of (group, name, value, size). */
static PyObject *format_entries(void)
{
    size_t n;
    const rr_format_entry *e = rr_format_describe(&n);
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    for (size_t i = 0; t && i < n; i++) {
        PyObject *item = Py_BuildValue("(ssKI)", e[i].group, e[i].name,
                                       (unsigned long long)e[i].value, (unsigned)e[i].size);
        if (!item) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, item);
    }
    return t;
}

PyDoc_STRVAR(process_alive_doc,
"_process_alive(pid, start_bits=0, bits=32, /)\n--\n\n"
"Whether process pid, whose start time ends in start_bits (its low `bits`\n"
"bits; 0 = unknown), is alive: the verdict the core acts on.");

static PyObject *module_process_alive(PyObject *mod, PyObject *args)
{
    unsigned long pid, start_bits = 0;
    int bits = 32;
    if (!PyArg_ParseTuple(args, "k|ki:_process_alive", &pid, &start_bits, &bits))
        return NULL;
    if (pid > UINT32_MAX || start_bits > UINT32_MAX || bits < 1 || bits > 32) {
        PyErr_SetString(PyExc_ValueError, "pid and start_bits are 32-bit, bits 1 to 32");
        return NULL;
    }
    int alive;
    Py_BEGIN_ALLOW_THREADS
    alive = rr_process_alive((uint32_t)pid, (uint32_t)start_bits, bits);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(alive);
}

static PyMethodDef module_methods[] = {
    {"_process_alive", module_process_alive, METH_VARARGS, process_alive_doc},
    {NULL},
};

/* Creates exception `name` (reqrep.X) as attribute X of the module. */
static PyObject *add_exception(PyObject *mod, const char *name, const char *doc, PyObject *base)
{
    PyObject *exc = PyErr_NewExceptionWithDoc(name, doc, base, NULL);
    if (exc && PyModule_AddObjectRef(mod, name + sizeof "reqrep." - 1, exc) < 0)
        Py_CLEAR(exc);
    return exc;
}

static int module_exec(PyObject *mod)
{
    module_state *st = PyModule_GetState(mod);
    st->format_error = add_exception(
        mod, "reqrep.ChannelFormatError",
        "The file is not a valid reqrep channel (or not of the expected variant).",
        PyExc_ValueError);
    if (!st->format_error)
        return -1;
    st->worker_died = add_exception(
        mod, "reqrep.WorkerDiedError",
        "The worker process that took a request died before replying to it.\n\n"
        "Attributes: pid (the dead worker's pid) and id (the request id).",
        PyExc_RuntimeError);
    if (!st->worker_died)
        return -1;
    PyObject *fmt = format_entries();
    int rc = fmt ? PyModule_AddObjectRef(mod, "_format", fmt) : -1;
    Py_XDECREF(fmt);
    if (rc < 0 || server_setup_types(mod, st) < 0 || client_setup_types(mod, st) < 0
        || view_setup_types(mod, st) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    module_state *st = PyModule_GetState(mod);
    for (int i = 0; i < N_TYPES; i++)
        Py_VISIT(st->types[i]);
    Py_VISIT(st->format_error);
    Py_VISIT(st->worker_died);
    Py_VISIT(st->view_type);
    Py_VISIT(st->reply_buffer_type);
    return 0;
}

static int module_clear(PyObject *mod)
{
    module_state *st = PyModule_GetState(mod);
    for (int i = 0; i < N_TYPES; i++)
        Py_CLEAR(st->types[i]);
    Py_CLEAR(st->format_error);
    Py_CLEAR(st->worker_died);
    Py_CLEAR(st->view_type);
    Py_CLEAR(st->reply_buffer_type);
    return 0;
}

static void module_free(void *mod) { module_clear((PyObject *)mod); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

struct PyModuleDef reqrep_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "reqrep._reqrep",
    .m_doc = "Shared-memory request/response channels (the C core's binding).",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__reqrep(void) { return PyModuleDef_Init(&reqrep_module); }
