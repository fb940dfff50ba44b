"""Shared helpers for the reqrep test suite: the one channel factory, payloads, threads.

Every helper that waits is bounded, so a regression in the library turns into a test
failure instead of a hung test run. Forked children and /proc live in procs.py, the file
layout in layout.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reqrep

VARIANTS: tuple[str, ...] = ("str", "int")
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

# --------------------------------------------------------------------------- channels


def server_class(variant: str) -> type:
    """The server class of a variant ("str" or "int")."""
    return {"str": Server, "int": IntServer}[variant]


def client_class(variant: str) -> type:
    """The client class of a variant ("str" or "int")."""
    return {"str": Client, "int": IntClient}[variant]


def variant_of(obj: Any) -> str:
    """The variant of a channel object."""
    return "int" if isinstance(obj, (IntServer, IntClient)) else "str"


def make_server(variant: str, kind: str = "file", path: Path | None = None,
                **geometry: Any) -> AnyServer:
    """A server on a channel of `variant` backed the `kind` way: "file" at `path` (created,
    or opened if it exists), "anon" (inherited by forked children) or "memfd". A Str
    channel gets resp_size 64 unless the geometry says otherwise. The one channel factory
    of the tests: every fixture and helper that wants a channel comes here."""
    cls = server_class(variant)
    if variant == "str":
        geometry.setdefault("resp_size", 64)
    if kind == "file":
        if path is None:
            raise AssertionError("a file channel needs a path")
        return cls(path, **geometry)
    if kind == "anon":
        return cls(None, **geometry)
    if kind == "memfd":
        return cls.new_memfd("reqrep-test", **geometry)
    raise AssertionError(f"unknown kind {kind!r}")


def open_client(server: AnyServer, kind: str = "file") -> AnyClient:
    """Open a new client on `server`'s channel the way a user of that `kind` would."""
    ccls = client_class(variant_of(server))
    if kind == "file":
        return ccls(server.path)
    if kind == "anon":
        return server.client()
    if kind == "memfd":
        return ccls.from_fd(server.memfd)
    raise AssertionError(f"unknown kind {kind!r}")


def open_server(server: AnyServer, kind: str = "file") -> AnyServer:
    """Open a second server object on `server`'s channel (for a worker in a child)."""
    scls = type(server)
    if kind == "file":
        return scls(server.path)
    if kind == "anon":
        return server  # inherited mapping
    if kind == "memfd":
        return scls.from_fd(server.memfd)
    raise AssertionError(f"unknown kind {kind!r}")


class Closer:
    """Collects channel objects and closes them after the test (the `closer` fixture)."""

    def __init__(self) -> None:
        self.objs: list[Any] = []

    def __call__(self, obj: Any) -> Any:
        self.objs.append(obj)
        return obj

    def close_all(self) -> None:
        """Close everything collected, newest first, whatever fails."""
        for obj in reversed(self.objs):
            try:
                obj.close()
            except Exception:  # noqa: BLE001, S110 - cleanup must not mask the test result
                pass


def variant_value(variant: str, n: int) -> Any:
    """Request number n as the variant's payload."""
    return n if variant == "int" else b"v%d" % n


def id_index(ident: int) -> int:
    """The slot index of a request id (SPEC: generation << 32 | index)."""
    return ident & 0xFFFFFFFF


def id_gen(ident: int) -> int:
    """The slot generation of a request id."""
    return ident >> 32


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
