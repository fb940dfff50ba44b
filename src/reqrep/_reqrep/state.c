/* Finding the module state from a type, and the package's Python parts (see
 * state.h). */
#include "state.h"

PyObject *package_attr(const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (!mod)
        return NULL;
    PyObject *attr = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return attr;
}

module_state *state_of_type(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *mod = PyType_GetModuleByDef(type, &reqrep_module);
    return mod ? PyModule_GetState(mod) : NULL;
#else
    PyObject *mro = type->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE))
            continue;
        PyObject *mod = PyType_GetModule(t);
        if (mod && PyModule_GetDef(mod) == &reqrep_module)
            return PyModule_GetState(mod);
        PyErr_Clear();
    }
    PyErr_SetString(PyExc_TypeError, "not a reqrep type");
    return NULL;
#endif
}
