"""Processes for the tests: forked children with watchdogs, shared words across fork,
SIGKILL/SIGSTOP tools, live strangers, and /proc/PID/stat (read here and nowhere else).

Every helper that waits is bounded, so a regression in the library turns into a test
failure instead of a hung test run.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from helpers import LONG

from reqrep import _format

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
            sigkill(self.pid)
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


def bounded(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run fn() in a forked child and return its result; a hang or a crash fails the test
    (a call that hangs in C with the GIL held would also freeze the watchdog thread)."""
    kid = fork_call(fn, watchdog=int(timeout) + 30)
    try:
        return kid.result(timeout=timeout)
    finally:
        kid.kill()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to put children in; every one still alive is killed on the way out."""
    kids: list[Child] = []
    try:
        yield kids
    finally:
        for kid in kids:
            kid.kill()


# --------------------------------------------------------------------------- shared words

# Generous bound for a peer to set a shared word (two busy cores, CI noise).
PROBE_TIMEOUT = 30.0


class Shared:
    """An anonymous shared mapping of u64 words (made before fork, seen by every child).
    Each word is written in one native store, so a reader never sees half of one."""

    def __init__(self, words: int) -> None:
        self.mm = mmap.mmap(-1, max(8, words * 8))

    def __getitem__(self, i: int) -> int:
        return _format.get_uint(self.mm, i * 8, 8)

    def __setitem__(self, i: int, value: int) -> None:
        _format.put_uint(self.mm, i * 8, 8, value)

    def get_float(self, i: int) -> float:
        return float(struct.unpack_from("<d", self.mm, i * 8)[0])

    def set_float(self, i: int, value: float) -> None:
        struct.pack_into("<d", self.mm, i * 8, value)

    def wait_for(self, i: int, value: int = 1, timeout: float = PROBE_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self[i] == value:
                return True
            time.sleep(0.001)
        return self[i] == value


# --------------------------------------------------------------------------- signals, strangers


def sigkill(pid: int) -> None:
    """SIGKILL `pid` if it still exists (the caller reaps it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """`pid` stopped with SIGSTOP for the duration of the block, then continued."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def live_stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process unrelated to the channel (a `sleep`), killed on the way out."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- /proc


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, so the kernel's
    field N is item N - 3), or None if the process has gone. The name is skipped up to
    its last ")": it may hold spaces and parentheses itself."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def proc_state(pid: int) -> str:
    """The one-letter scheduler state of a process (R, S, D, Z...), '?' if gone."""
    fields = proc_stat(pid)
    return "?" if fields is None else fields[0]


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the start time in clock ticks since boot, which the
    library keeps (in part) beside the pid to tell a reused pid from its old owner."""
    fields = proc_stat(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return int(fields[22 - 3])


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
