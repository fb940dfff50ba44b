"""A worker process of reqrep.futures: takes tasks from the pool's channel, runs them and
answers each with its result or its exception, until the pool tells it to stop (an empty
request), it has run ``max_tasks`` tasks, or the pool's process is gone."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from reqrep._reqrep import Server, _process_alive
from reqrep.futures import _payload

# How often an idle worker checks that the pool's process is still there.
PARENT_CHECK = 1.0
# Microseconds a waiting worker or pool spins before it sleeps. Longer than the
# channel's default: in a submit-and-wait loop each side's spin must outlast the other
# side's wake-up from sleep, or both settle into sleeping at every task (the spin
# self-tuning then sees only failed spins on either side), at a tenth of the speed.
SPIN = 1000
# The exit code of a worker whose initializer raised (the pool then breaks, as the
# standard one does).
EXIT_INIT_FAILED = 3
_FUNCTIONS = 256  # functions a worker keeps unpickled


def up_marker(spill_dir: str, pid: int) -> str:
    """The file a worker creates once it is ready: a worker that dies without it failed
    to start (the pool breaks rather than start it again and again)."""
    return os.path.join(spill_dir, f"up-{pid}")


def main(
    path: str,
    spill_dir: str,
    pool_pid: int,
    result_limit: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks: int | None,
) -> None:
    """The worker's life (the target of its process)."""
    # A SIGTERM to the whole process group (a service manager stopping it, `kill -TERM
    # -PGID`) would take the pool's process and every worker at once, and leave the
    # pool's directory behind: the workers outlive it instead, see it gone within
    # PARENT_CHECK, remove the directory and exit. (SIGKILL still ends a worker.)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = Server._open_existing(path, spin=SPIN)
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:  # noqa: BLE001 - reported, then the pool breaks
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_INIT_FAILED)
    with open(up_marker(spill_dir, os.getpid()), "wb"):
        pass
    recv_wait, reply, live = server.recv_wait, server.reply, server._live
    loads = pickle.loads
    functions: dict[bytes, Any] = {}
    done = 0
    while max_tasks is None or done < max_tasks:
        msg = recv_wait(PARENT_CHECK)
        if msg is None:
            if not _process_alive(pool_pid):  # nobody will stop us, or clean up
                shutil.rmtree(spill_dir, ignore_errors=True)
                return
            continue
        data, rid = msg
        if not data:  # the pool's stop
            reply(rid, b"")
            return
        if not live(rid):  # cancelled while it was queued
            _payload.discard(data)
            continue
        done += 1
        out: bytes | str
        try:
            fn, args, kwargs = loads(data) if isinstance(data, bytes) else _payload.load(data)
            if type(fn) is bytes:  # a function by name: kept unpickled
                fn = functions.get(fn) or _function(functions, fn)
            out = _payload.dump((True, fn(*args, **kwargs)), spill_dir, result_limit)
        except BaseException as exc:  # noqa: BLE001 - the future gets it, as in the standard pool
            try:
                out = _failed(exc, spill_dir, result_limit)
            except Exception as exc2:  # noqa: BLE001 - e.g. no room for a spill file
                server.reply_error(rid, exc2)
                continue
        if not reply(rid, out):  # cancelled while it ran: nobody reads the result
            _payload.discard(out)
    server.close()


def _function(functions: dict[bytes, Any], ref: bytes) -> Any:
    """A function the pool sent as its pickle, kept for the next tasks."""
    if len(functions) >= _FUNCTIONS:
        functions.clear()
    fn = functions[ref] = pickle.loads(ref)
    return fn


def _failed(exc: BaseException, spill_dir: str, limit: int) -> bytes | str:
    """A task's exception (or its result's pickling error), encoded."""
    return _payload.dump(_payload.encode_error(exc, traceback.format_exc()), spill_dir, limit)
