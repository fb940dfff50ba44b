/* Server (Str) and IntServer: the worker side of a channel. */
#ifndef REQREP_SERVER_H
#define REQREP_SERVER_H

#include "state.h"

/* Adds Server and IntServer to the module. */
int server_setup_types(PyObject *mod, module_state *st);

#endif
