"""The generic machinery of reqrep.aio: how a thread that sleeps in the channel (without
the GIL) wakes an event loop. A Waker is one eventfd that the loop reads (plus,
optionally, an eventfd shared with the channel object's notify()) and the helper thread
that signals it. The client and the serve loop are thin users of it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable

# Idle helper threads sleep this long at most: they are woken for everything they must
# do (a reply rings the bell, close() rings it too, a stop wakes the receivers), so this
# only bounds how late one notices that its event loop was closed under it.
IDLE = 5.0
_EFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """ValueError unless ``timeout`` is None or a number >= 0 (NaN is not)."""
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        raise ValueError(f"{name} must be None or a number >= 0")


class Waker:
    """An eventfd read by ``loop`` (calling ``on_wake``) and signalled by one helper
    thread. ``shared_fd`` (>= 0), an eventfd of the channel object, is read by the loop
    too. The helper thread closes the eventfd when it ends (it may write to it until
    then); a Waker whose thread never started closes it in :meth:`detach`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_wake: Callable[[], None],
                 shared_fd: int = -1) -> None:
        self.loop = loop
        self.efd = os.eventfd(0, _EFD_FLAGS)
        self.shared_fd = shared_fd
        self.thread: threading.Thread | None = None
        try:
            loop.add_reader(self.efd, on_wake)
            if shared_fd >= 0:
                loop.add_reader(shared_fd, on_wake)
        except BaseException:
            loop.remove_reader(self.efd)
            os.close(self.efd)
            raise

    def start(self, target: Callable[[], None], name: str) -> None:
        """Run ``target`` in the helper thread; the eventfd closes when it returns."""

        def run() -> None:
            try:
                target()
            finally:
                os.close(self.efd)

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def signal(self) -> None:
        """Wake the loop (any thread)."""
        os.eventfd_write(self.efd, 1)

    def clear(self) -> None:
        """Reset the eventfd (the loop, in ``on_wake``)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.efd)

    def detach(self) -> None:
        """Stop reading the eventfds (the loop thread, while the loop is open). The
        helper thread must be told to end by its own means."""
        self.loop.remove_reader(self.efd)
        if self.shared_fd >= 0:
            self.loop.remove_reader(self.shared_fd)
        if self.thread is None:
            os.close(self.efd)

    async def wait_stopped(self, limit: float = 2.0) -> None:
        """Wait, without blocking the loop, for the helper thread to end (at most
        ``limit`` seconds)."""
        thread = self.thread
        deadline = time.monotonic() + limit
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
