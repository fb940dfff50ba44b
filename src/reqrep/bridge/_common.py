"""What both bridges share: their counters, opening the local channel, stopping."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from reqrep import _format
from reqrep._reqrep import Client, IntClient, IntServer, Server
from reqrep.bridge._wire import Channel

Path = str | os.PathLike[str]
K = TypeVar("K", bound=Hashable)


@dataclass
class Counters:
    """What a bridge has done so far; ``line()`` is the CLI's ``--stats`` report."""

    role: str
    answered: int = 0  # requests answered with a value
    failed: int = 0  # requests answered with an error
    inflight: int = 0
    _last: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0),
                                     init=False, repr=False)

    def done(self, ok: bool) -> None:
        if ok:
            self.answered += 1
        else:
            self.failed += 1

    def line(self) -> str:
        """One line: the rate since the previous line, then the totals."""
        now, total = time.monotonic(), self.answered + self.failed
        then, before = self._last
        self._last = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        return (f"{self.role}: {rate:,.0f} req/s, {self.inflight} in flight, "
                f"{self.answered:,} answered, {self.failed:,} failed")


class Deadlines(Generic[K]):
    """When each request in flight is due, looked at by one loop timer every tenth of
    the timeout (at most 0.1 s): cheaper than a timer per request, and at most
    `inflight` wait. ``late(key)`` is called for each one whose time is up (its
    deadline is gone by then). Made in the running loop; ``close()`` stops it."""

    def __init__(self, timeout: float, late: Callable[[K], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout, self.late = timeout, late
        self.due: dict[K, float] = {}
        self.tick = min(0.1, timeout / 10)
        self.timer = self.loop.call_later(self.tick, self.sweep)

    def add(self, key: K) -> None:
        self.due[key] = self.loop.time() + self.timeout

    def discard(self, key: K) -> None:
        self.due.pop(key, None)

    def close(self) -> None:
        self.timer.cancel()

    def sweep(self) -> None:
        now = self.loop.time()
        for key in [k for k, when in self.due.items() if when <= now]:
            del self.due[key]
            self.late(key)
        self.timer = self.loop.call_later(self.tick, self.sweep)


def channel_of(handle: Client[Any] | IntClient | Server[Any] | IntServer) -> Channel:
    """The channel's kind, after making `handle` pass payloads through as they are."""
    handle._passthrough()
    is_int = isinstance(handle, (IntClient, IntServer))
    return Channel(is_int, None if is_int else handle.codec)


def _is_int(path: Path) -> bool:
    """Whether the file at `path` says it is an Int channel (the handle that opens it
    checks the rest)."""
    try:
        with open(path, "rb") as f:
            return _format.variant_in(f.read(_format.VARIANT_HEAD)) == "int"
    except OSError:  # the handle says it better
        return False


async def open_client(path: Path, wait: float | None = None) -> Client[Any] | IntClient:
    """A client of the channel at `path`, Str or Int as the file says. Until the file
    exists, it is looked for every 50 ms for up to `wait` seconds, in the event loop
    (a signal can stop the wait); then the handle waits for its initialisation."""
    deadline = time.monotonic() + (wait or 0.0)
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    left = max(0.0, deadline - time.monotonic()) if wait is not None else None
    return IntClient(path, wait=left) if _is_int(path) else Client(path, wait=left)


def open_server(path: Path) -> Server[Any] | IntServer:
    """A server of the channel at `path` (a Str channel with the default sizes is
    created if there is none), Str or Int as the file says."""
    return IntServer(path) if _is_int(path) else Server(path)


async def until_stopped(stop: asyncio.Event | None, lost: asyncio.Event) -> bool:
    """Until `stop` or `lost` is set: False then, True if cancelled instead."""
    events = [asyncio.ensure_future(e.wait()) for e in (stop, lost) if e is not None]
    try:
        await asyncio.wait(events, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        return True
    finally:
        for e in events:
            e.cancel()
    return False


def check_subject(subject: object) -> str:
    """`subject` if it is a NATS subject one can publish to, else ValueError."""
    if (not isinstance(subject, str) or not subject or any(c in subject for c in " \t\r\n")
            or "" in subject.split(".")):
        raise ValueError(f"not a NATS subject: {subject!r}")
    return subject


def check_queue(queue: object) -> str:
    """`queue` if it is a NATS queue group name, else ValueError (an empty one would
    make a plain subscription: every bridge would take every request)."""
    if not isinstance(queue, str) or not queue or any(c.isspace() for c in queue):
        raise ValueError(f"not a NATS queue group: {queue!r}")
    return queue


def check_common(subject: object, inflight: object, timeout: object) -> None:
    check_subject(subject)
    if isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 1:
        raise ValueError(f"inflight must be an int >= 1, not {inflight!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")
