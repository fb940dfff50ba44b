/* Client (Str) and IntClient: the requesting side of a channel. */
#ifndef REQREP_CLIENT_H
#define REQREP_CLIENT_H

#include "state.h"

/* Adds Client and IntClient to the module. */
int client_setup_types(PyObject *mod, module_state *st);

#endif
