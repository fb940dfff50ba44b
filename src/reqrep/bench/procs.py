"""Forked child processes for the benchmarks, every one of them bounded.

A run of a row forks its worker and client processes from the (idle) parent with
``os.fork``. Each child:

* dies with its parent (``PR_SET_PDEATHSIG``), and is killed by ``SIGALRM`` (default
  action: terminate) when its own time limit passes, whatever it is blocked in;
* ignores ``SIGINT`` (the parent handles Ctrl-C and kills its children);
* reports through its own pipe, as length-prefixed pickled frames: ``("ready",)``
  once warmed up, then ``("ok", value)`` or ``("error", text)``.

The parent waits for the frames with one deadline, opens the start gate once every
client is ready, and kills whatever is left (``SIGKILL``) when the run ends, fails
or times out.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_PR_SET_PDEATHSIG = 1
_LEN = struct.Struct("<I")


class BenchError(RuntimeError):
    """A run failed: a child raised, died or timed out."""


@dataclass
class Child:
    """One forked process and the read end of its report pipe."""

    pid: int
    role: str
    fd: int
    buf: bytearray = field(default_factory=bytearray)
    ready: bool = False
    result: Any = None
    done: bool = False
    reaped: bool = False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the alarm still bounds the child
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(3)


class Gate:
    """The start line: clients block in ``wait()`` until the parent opens it."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        self._report: Callable[[tuple[Any, ...]], None] | None = None

    def wait(self) -> None:
        """Called by a client after its warm-up: report ready, then block until opened."""
        if self._report is not None:
            self._report(("ready",))
        if os.read(self.rfd, 1) != b"g":
            raise BenchError("the start gate closed before it opened")

    def open(self, count: int) -> None:
        _write_all(self.wfd, b"g" * count)

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Group:
    """The processes of one run: spawn, wait for reports with one deadline, kill."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.children: list[Child] = []
        self.gate = Gate()

    # ---- spawning ----------------------------------------------------------
    def spawn(self, role: str, fn: Callable[[], Any]) -> Child:
        """Fork a child that runs ``fn()`` and reports its return value."""
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            self._child(parent, rfd, wfd, fn)
        os.close(wfd)
        child = Child(pid, role, rfd)
        self.children.append(child)
        return child

    def _child(self, parent: int, rfd: int, wfd: int, fn: Callable[[], Any]) -> None:
        code = 0
        try:
            os.close(rfd)
            for other in self.children:
                with contextlib.suppress(OSError):
                    os.close(other.fd)
            os.close(self.gate.wfd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _die_with_parent(parent)
            signal.alarm(max(1, math.ceil(self.deadline - time.monotonic()) + 2))

            def report(frame: tuple[Any, ...]) -> None:
                data = pickle.dumps(frame)
                _write_all(wfd, _LEN.pack(len(data)) + data)

            self.gate._report = report
            value = fn()
            report(("ok", value))
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
            code = 1
            last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" at {last[0].name}:{last[0].lineno}" if last else ""
            with contextlib.suppress(BaseException):
                data = pickle.dumps(("error", f"{type(exc).__name__}: {exc}{where}"))
                _write_all(wfd, _LEN.pack(len(data)) + data)
        finally:
            os._exit(code)

    # ---- waiting -----------------------------------------------------------
    def _read(self, child: Child) -> None:
        chunk = os.read(child.fd, 65536)
        if not chunk:
            child.done = True
            if child.role != "client" or child.result is None:
                status = self._reap(child, 1.0)
                what = "without a result"
                if child.role != "client":
                    what = "before the clients were done"
                raise BenchError(f"the {child.role} process exited {what} ({status})")
            return
        child.buf += chunk
        while len(child.buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(child.buf)
            if len(child.buf) < _LEN.size + size:
                break
            frame = pickle.loads(bytes(child.buf[_LEN.size : _LEN.size + size]))
            del child.buf[: _LEN.size + size]
            if frame[0] == "ready":
                child.ready = True
            elif frame[0] == "ok":
                child.result = frame
            else:
                raise BenchError(f"{child.role}: {frame[1]}")

    def collect(self, clients: list[Child]) -> list[Any]:
        """Wait for every client's result (opening the gate once all are ready).

        Any report from another child (a worker that failed or exited) fails the run.
        """
        opened = False
        while any(c.result is None for c in clients):
            if not opened and all(c.ready or c.result is not None for c in clients):
                self.gate.open(len(clients))
                opened = True
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out after {self.timeout:.0f} s")
            fds = [c.fd for c in self.children if not c.done]
            readable, _, _ = select.select(fds, [], [], left)
            # clients first: a worker whose client is done may hang up at the same time
            for child in sorted(self.children, key=lambda c: c.role != "client"):
                if all(c.result is not None for c in clients):
                    break  # done: what the others say now (hanging up) does not matter
                if child.fd in readable:
                    self._read(child)
        return [c.result[1] for c in clients]

    # ---- ending ------------------------------------------------------------
    def _reap(self, child: Child, grace: float) -> str:
        if child.reaped:
            return "reaped"
        end = time.monotonic() + grace
        while True:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid:
                child.reaped = True
                return _describe(status)
            if time.monotonic() >= end:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                _, status = os.waitpid(child.pid, 0)
                child.reaped = True
                return _describe(status)
            time.sleep(0.002)

    def close(self, failed: bool = False, grace: float = 2.0) -> None:
        """Kill the children that are meant to run forever (every child if the run
        ``failed``), reap every child."""
        for child in self.children:
            if (failed or child.role != "client") and not child.reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        for child in self.children:
            self._reap(child, grace)
            with contextlib.suppress(OSError):
                os.close(child.fd)
        self.gate.close()
        self.children.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def busy_loop() -> None:  # pragma: no cover - runs in a child until killed
    """The extra CPU-bound process of the "loaded" rows."""
    x = 0
    while True:
        x += 1
