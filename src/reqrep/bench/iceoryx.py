"""iceoryx2 request-response rows (SPEC §6): the same echo over iceoryx2's Python binding
(``pip install iceoryx2``), zero-copy shared memory with lock-free queues, in two modes:

* ``poll``: both sides busy-poll. The client sends a request and calls
  ``PendingResponse.receive()`` in a loop until the response is there; the server calls
  ``Server.receive()`` in a loop. This is iceoryx2's fastest mode while each side has a
  CPU of its own: nothing sleeps, and a round trip makes no system call at all (strace:
  none in 1,000 round trips).
* ``event``: both sides sleep until told. Two event services go with the
  request-response one (the pattern of iceoryx2's request-response-with-events
  example): after sending its request the client notifies the server's ``Listener`` and
  waits on its own with ``Listener.blocking_wait()`` until the response is there; the
  server waits on its listener while it has no request, and notifies the client's
  listener after each response. In iceoryx2 0.10 on Linux a listener is a Unix datagram
  socket: a notify is a ``sendto``, a wait a blocking ``recvfrom`` (with a few ``fcntl``
  and ``setsockopt`` calls around it). ``blocking_wait`` on one listener is the direct
  form; a ``WaitSet`` waits on the same listener with more Python calls per wake-up.

Payloads are ``Slice[c_uint8]`` of the row's size (``initial_max_slice_len``), written
in place: the client loans a request slice and copies its ``bytes`` into it, the server
loans a response slice and copies the request into it (an echo has to), the client
copies the response out into ``bytes`` (as every row's op returns). Messages have a fixed
size, so the server copies the row's size without reading the request's length (as the
stream peers read exactly that many bytes). Every sample is released (``delete()``) as
soon as it is done with.

iceoryx2 keeps its state in files: shared memory in ``/dev/shm`` and node and service
records under its root path. Each run gets a root directory of its own
(``reqrep-bench-iox2-*`` under the temporary directory) and uses that directory's name
as iceoryx2's file-name prefix, so that ``close()`` in the parent removes every file of
the run, also those of the processes the runner killed (which never clean up), and no
run meets another's services. The parent never imports iceoryx2: only the forked
children do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
from typing import Any

from reqrep.bench.transports import ECHO_SIZE, Op, Transport

MODES = ("poll", "event")
SERVICE = "reqrep-bench/echo"
START_TIMEOUT = 10.0  # for the server to appear, seen from the client
SHM_DIR = "/dev/shm"
RUN_PREFIX = "reqrep-bench-iox2-"  # a run's directory, and its files in SHM_DIR

_KEEP: list[object] = []  # a process's iceoryx2 node and ports live until it exits


class _Ports:
    """What one process of a run opens: its node, the echo service and, in ``event``
    mode, the two event services (requests: client -> server; replies: the other way)."""

    def __init__(self, root: str, prefix: str, mode: str) -> None:
        import ctypes

        import iceoryx2 as iox

        iox.set_log_level(iox.LogLevel.Error)  # no "using the default config" on stderr
        cfg = iox.config.default()  # not the global config: no config file is looked for
        cfg.global_cfg.root_path = iox.Path.new(root + "/")
        cfg.global_cfg.prefix = iox.FileName.new(prefix)
        self.node: Any = (
            iox.NodeBuilder.new()
            .config(cfg)
            # the runner's children ignore SIGINT and are killed by the parent: iceoryx2
            # must not install handlers of its own
            .signal_handling_mode(iox.SignalHandlingMode.Disabled)
            .create(iox.ServiceType.Ipc)
        )
        self.echo: Any = (
            self.node.service_builder(iox.ServiceName.new(SERVICE))
            .request_response(iox.Slice[ctypes.c_uint8], iox.Slice[ctypes.c_uint8])
            .open_or_create()
        )
        self.requests: Any = None
        self.replies: Any = None
        if mode == "event":
            self.requests = self._event(iox, SERVICE + "/requests")
            self.replies = self._event(iox, SERVICE + "/replies")

    def _event(self, iox: Any, name: str) -> Any:
        return self.node.service_builder(iox.ServiceName.new(name)).event().open_or_create()


class Iceoryx2Echo(Transport):
    """iceoryx2 request-response in ``mode`` (``MODES``), ``size``-byte payloads."""

    requires = "iceoryx2"

    def __init__(self, mode: str, size: int = ECHO_SIZE) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.size = size
        self.root = ""

    @property
    def prefix(self) -> str:
        """iceoryx2's file-name prefix for this run: the run directory's own name."""
        return os.path.basename(self.root) + "_"

    def _ports(self) -> _Ports:
        assert self.root, "open() first"
        return _Ports(self.root, self.prefix, self.mode)

    # ---- parent --------------------------------------------------------------
    def open(self) -> None:
        self.root = tempfile.mkdtemp(prefix=RUN_PREFIX)

    def _files(self) -> list[str]:
        return glob.glob(os.path.join(SHM_DIR, glob.escape(self.prefix) + "*"))

    def leftovers(self) -> list[str]:
        """The files of this run that are still there (after ``close()``: none)."""
        if not self.root:
            return []
        return self._files() + ([self.root] if os.path.exists(self.root) else [])

    def close(self) -> None:
        """Remove every file of the run (``root`` stays set: ``leftovers()`` checks it)."""
        if not self.root:
            return
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- worker ----------------------------------------------------------------
    def serve(self, worker: int) -> None:
        import ctypes

        ports = self._ports()
        # in event mode the listener exists before the server port, so that a client that
        # has seen the server (see connect) finds the listener too
        wait = ports.requests.listener_builder().create().blocking_wait if ports.requests else None
        notify = ports.replies.notifier_builder().create().notify if ports.replies else None
        server = ports.echo.server_builder().initial_max_slice_len(self.size).create()
        receive, memmove, n = server.receive, ctypes.memmove, self.size
        while True:
            active = receive()
            if active is None:
                if wait is not None:
                    wait()  # an event sent after the receive above is kept: no lost wake-up
                continue
            response = active.loan_slice_uninit(n)
            memmove(response.payload_ptr, active.payload_ptr, n)
            response.assume_init().send()
            active.delete()  # the request's sample goes back to the client now
            if notify is not None:
                notify()

    # ---- client ----------------------------------------------------------------
    def connect(self, client: int) -> Op:
        import ctypes

        ports = self._ports()
        wait = ports.replies.listener_builder().create().blocking_wait if ports.replies else None
        notify = ports.requests.notifier_builder().create().notify if ports.requests else None
        port = ports.echo.client_builder().initial_max_slice_len(self.size).create()
        _KEEP.append(ports)
        _await_server(ports.echo)
        loan, n = port.loan_slice_uninit, self.size
        memmove, string_at = ctypes.memmove, ctypes.string_at

        def op(msg: bytes) -> bytes:
            request = loan(n)
            memmove(request.payload_ptr, msg, n)
            pending = request.assume_init().send()
            if notify is not None:
                notify()
            receive = pending.receive
            while (response := receive()) is None:
                if wait is not None:
                    wait()
            out = string_at(response.payload_ptr, n)
            response.delete()
            pending.delete()
            return out

        return op


def _await_server(echo: Any) -> None:
    """Wait until the worker's server port exists: a request sent before reaches no one
    and its response never comes."""
    end = time.monotonic() + START_TIMEOUT
    while echo.dynamic_config.number_of_servers == 0:
        if time.monotonic() > end:
            raise RuntimeError(f"no iceoryx2 server after {START_TIMEOUT:g} s")
        time.sleep(0.001)
