"""Shared helpers for the reqrep test suite: channel factories, forked children, threads.

Every helper that waits is bounded, so a regression in the library turns into a test
failure instead of a hung test run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import reqrep

KINDS: tuple[str, ...] = ("file", "anon", "memfd")

Server = reqrep.Server
Client = reqrep.Client
IntServer = reqrep.IntServer
IntClient = reqrep.IntClient

AnyServer = Any  # reqrep.Server | reqrep.IntServer (kept loose: the stubs may lag behind)
AnyClient = Any  # reqrep.Client | reqrep.IntClient

# Generous bounds for anything that waits (2 busy cores, debug builds, CI noise).
LONG = 30.0
JOIN = 20.0


def client_class(server_cls: type) -> type:
    """The client class that goes with a server class."""
    return IntClient if server_cls is IntServer else Client


def make_server(server_cls: type, kind: str, tmp_path: Path, **geometry: Any) -> AnyServer:
    """Create a channel of the given backing kind ("file", "anon" or "memfd")."""
    if kind == "file":
        return server_cls(tmp_path / "chan.rr", **geometry)
    if kind == "anon":
        return server_cls(None, **geometry)
    if kind == "memfd":
        return server_cls.new_memfd("reqrep-test", **geometry)
    raise AssertionError(f"unknown kind {kind!r}")


def open_client(server: AnyServer, kind: str) -> AnyClient:
    """Open a new client on `server`'s channel the way a real user of that kind would."""
    ccls = client_class(type(server))
    if kind == "file":
        return ccls(server.path)
    if kind == "anon":
        return server.client()
    if kind == "memfd":
        return ccls.from_fd(server.memfd)
    raise AssertionError(f"unknown kind {kind!r}")


def open_server(server: AnyServer, kind: str) -> AnyServer:
    """Open a second server object on `server`'s channel (for a worker in a child)."""
    scls = type(server)
    if kind == "file":
        return scls(server.path)
    if kind == "anon":
        return server  # inherited mapping
    if kind == "memfd":
        return scls.from_fd(server.memfd)
    raise AssertionError(f"unknown kind {kind!r}")


def id_index(ident: int) -> int:
    return ident & 0xFFFFFFFF


def id_gen(ident: int) -> int:
    return ident >> 32


# --------------------------------------------------------------------------- forked children


class ChildError(AssertionError):
    """A forked child raised, crashed, or did not finish in time."""


class Child:
    """A forked child running one function; its return value comes back pickled over a pipe."""

    def __init__(self, pid: int, rfd: int) -> None:
        self.pid = pid
        self._rfd = rfd
        self._buf = bytearray()
        self._status: int | None = None

    def _read_until_eof(self, deadline: float) -> bool:
        while self._rfd >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._rfd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._rfd, 65536)
                if not chunk:
                    os.close(self._rfd)
                    self._rfd = -1
                    break
                self._buf += chunk
        return True

    def wait_status(self, timeout: float = LONG) -> int:
        """Wait for the child to exit; return its wait status. Kills it after `timeout`."""
        if self._status is not None:
            return self._status
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self._status = status
                return status
            if time.monotonic() > deadline:
                self.kill()
                raise ChildError(f"child {self.pid} did not exit within {timeout}s (killed)")
            time.sleep(0.01)

    def result(self, timeout: float = LONG) -> Any:
        """The child's return value; raises ChildError if it failed, crashed or hung."""
        deadline = time.monotonic() + timeout
        if not self._read_until_eof(deadline):
            self.kill()
            raise ChildError(f"child {self.pid} did not finish within {timeout}s (killed)")
        status = self.wait_status(max(1.0, deadline - time.monotonic()))
        if os.WIFSIGNALED(status):
            sig = signal.Signals(os.WTERMSIG(status)).name
            raise ChildError(f"child {self.pid} died from {sig}")
        if not self._buf:
            raise ChildError(f"child {self.pid} exited ({os.waitstatus_to_exitcode(status)}) "
                             "without a result")
        tag, value = pickle.loads(bytes(self._buf))
        if tag != "ok":
            raise ChildError(f"child {self.pid} raised:\n{value}")
        return value

    def kill(self) -> None:
        """SIGKILL and reap the child if it is still running (safe to call repeatedly)."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _, self._status = os.waitpid(self.pid, 0)
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd = -1


def fork_call(fn: Callable[[], Any], watchdog: int = 60) -> Child:
    """Run `fn()` in a forked child. The child always leaves with os._exit and dies by
    SIGALRM after `watchdog` seconds whatever happens."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rfd)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(watchdog)
            try:
                payload = pickle.dumps(("ok", fn()))
            except BaseException:  # noqa: BLE001 - report everything to the parent
                payload = pickle.dumps(("err", traceback.format_exc()))
            view = memoryview(payload)
            while view:
                view = view[os.write(wfd, view):]
        finally:
            os._exit(0)
    os.close(wfd)
    return Child(pid, rfd)


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to put children in; every one still alive is killed on the way out."""
    kids: list[Child] = []
    try:
        yield kids
    finally:
        for kid in kids:
            kid.kill()


def proc_state(pid: int) -> str:
    """The one-letter scheduler state of a process (R, S, D, Z...), '?' if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def wait_sleeping(pid: int, timeout: float = 10.0, settle: int = 3) -> bool:
    """Wait until `pid` is seen sleeping (S) `settle` times in a row."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        if proc_state(pid) == "S":
            seen += 1
            if seen >= settle:
                return True
        else:
            seen = 0
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- threads


class ThreadCall:
    """Run `fn(*args)` in a daemon thread and capture its return value or exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self.started_at = time.monotonic()

        def run() -> None:
            try:
                self.value = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed back to the test
                self.error = e
            finally:
                self.finished_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = JOIN) -> Any:
        """Join within `timeout`; fail if the thread is still blocked; re-raise its error."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"thread still blocked after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value

    def is_alive(self) -> bool:
        return self.thread.is_alive()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Poll `pred` until it is true or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def echo_worker(server: AnyServer, stop: threading.Event,
                fn: Callable[[Any], Any] | None = None) -> int:
    """Worker loop for a thread: answer every request with fn(request) until `stop` is set
    and the queue is empty. Returns the number of successful replies."""
    fn = fn if fn is not None else (lambda x: x)
    done = 0
    while True:
        got = server.recv_wait(timeout=0.05)
        if got is None:
            if stop.is_set():
                return done
            continue
        data, ident = got
        if server.reply(ident, fn(data)):
            done += 1


def reverse(data: Any) -> Any:
    """Response function used by cross-process tests: type preserved."""
    if isinstance(data, int):
        return ~data
    return data[::-1]
