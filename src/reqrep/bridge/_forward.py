"""``forward``: local clients use remote workers. The bridge is a worker of the local
channel (``reqrep.aio.serve``) that hands each request to NATS and replies with the
answer; no responders, or no answer in time, is a ``RemoteError``.

No task per request: the handler returns a future that the answer resolves. The
requests go out through one publisher task, every answer comes back on one inbox
subscription, and one timer looks for the requests whose time is up (at most
``inflight`` of them wait)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from reqrep._remote import RemoteError
from reqrep._reqrep import IntServer, Server
from reqrep.aio import serve as aio_serve
from reqrep.bridge import _wire
from reqrep.bridge._common import (
    Counters,
    Deadlines,
    Path,
    channel_of,
    check_common,
    open_server,
)
from reqrep.bridge._connect import Connection, Link, connect

if TYPE_CHECKING:
    from nats.aio.msg import Msg

logger = logging.getLogger("reqrep.bridge")

_NO_RESPONDERS = "503"  # the Status header of the server's answer when nobody listens


async def forward(
    channel: Path | Server[Any] | IntServer,
    subject: str,
    *,
    connection: Connection | None = None,
    inflight: int = 64,
    timeout: float = 10.0,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    counters: Counters | None = None,
) -> None:
    """Serve a local channel's requests with the workers behind NATS ``subject``.

    The bridge is a worker of ``channel`` (a path, where a Str channel with the
    default sizes is created if there is none, or an open ``Server``/``IntServer``
    that the bridge then uses alone, and leaves moving payloads as they are): each
    request it takes goes to NATS as a request on ``subject`` and the answer is its
    reply, an error answer included. With no responders on ``subject``, or no answer
    in ``timeout`` seconds, the local client gets :class:`~reqrep.RemoteError`. At
    most ``inflight`` requests are out at once; the rest wait in the channel for this
    or another worker. If the bridge dies, the clients of the requests it held get
    :class:`~reqrep.WorkerDiedError`, as for any worker.

    ``ready``, if given, is set once the bridge is connected and taking requests.
    Runs until ``stop`` is set (then returns) or the task is cancelled (then raises
    the cancellation), stopping cleanly either way: it stops taking requests, replies
    to those it took, then closes its NATS connection.

    Raises :class:`~reqrep.bridge.BridgeError` when NATS cannot be reached, refuses
    the credentials, or closes the connection for good, and what opening the channel
    raises.
    """
    check_common(subject, inflight, timeout)
    counters = counters if counters is not None else Counters("forward")
    server = channel if isinstance(channel, (Server, IntServer)) else open_server(channel)
    try:
        chan = channel_of(server)
        link = await connect(connection or Connection(), f"bridge forward {subject!r}")
        try:
            asker = _Asker(link, chan, subject, timeout, counters)
            await asker.start()
            try:
                await _run(link, server, asker, inflight, stop, ready)
            finally:
                asker.close()
        finally:
            await link.close()
    finally:
        if server is not channel:
            server.close()


async def _run(link: Link, server: Server[Any] | IntServer, asker: _Asker, inflight: int,
               stop: asyncio.Event | None, ready: asyncio.Event | None) -> None:
    own_stop = asyncio.Event()
    worker = asyncio.ensure_future(
        aio_serve(server, asker.ask, concurrency=inflight, stop=own_stop))
    if ready is not None:
        ready.set()
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, link.lost) if e is not None]
    cancelled = False
    try:
        await asyncio.wait({worker, *waits}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled = True
    for w in waits:
        w.cancel()
    if link.lost.is_set():
        asker.fail_all(link.why())
    if not worker.done():
        own_stop.set()  # stop taking; those taken are answered
        await worker
    worker.result()  # what stopped it, if it failed
    if link.lost.is_set():
        raise link.why()
    if cancelled:
        raise asyncio.CancelledError


class _Asker:
    """NATS requests whose answers are futures (everything runs in the event loop)."""

    def __init__(self, link: Link, chan: _wire.Channel, subject: str, timeout: float,
                 counters: Counters) -> None:
        self.nc, self.chan, self.subject = link.nc, chan, subject
        self.timeout, self.counters = timeout, counters
        self.loop = asyncio.get_running_loop()
        self.prefix = self.nc.new_inbox() + "."
        self.tokens = itertools.count()
        self.waiting: dict[str, asyncio.Future[Any]] = {}  # token -> its answer
        self.deadlines: Deadlines[str] = Deadlines(timeout, self.late)
        self.outbox: deque[tuple[str, bytes, dict[str, str] | None]] = deque()
        self.queued = asyncio.Event()
        self.publisher: asyncio.Future[None] | None = None

    async def start(self) -> None:
        await self.nc.subscribe(self.prefix + "*", cb=self.answered)
        self.publisher = asyncio.ensure_future(self.publish())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
        self.deadlines.close()
        self.fail_all(RuntimeError("the bridge stopped"))

    def ask(self, value: Any) -> asyncio.Future[Any]:
        """aio.serve's handler: the future of the answer to one request."""
        fut = self.loop.create_future()
        try:
            payload, headers = _wire.encode(self.chan, value)
        except Exception as e:  # noqa: BLE001 - that request's answer
            fut.set_exception(e)
            return fut
        token = f"{next(self.tokens):x}"
        self.waiting[token] = fut
        self.deadlines.add(token)
        self.counters.inflight += 1
        fut.add_done_callback(self.finished)
        self.outbox.append((token, payload, headers))
        self.queued.set()
        return fut

    def finished(self, fut: asyncio.Future[Any]) -> None:
        self.counters.inflight -= 1
        self.counters.done(not fut.cancelled() and fut.exception() is None)

    def settle(self, token: str, exc: BaseException | None = None, value: Any = None) -> None:
        fut = self.waiting.pop(token, None)
        self.deadlines.discard(token)
        if fut is None or fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def fail_all(self, exc: BaseException) -> None:
        for token in list(self.waiting):
            self.settle(token, exc)

    async def publish(self) -> None:
        """Publish the queued requests (the one task that writes them)."""
        nc, outbox, subject, prefix = self.nc, self.outbox, self.subject, self.prefix
        while True:
            await self.queued.wait()
            self.queued.clear()
            while outbox:
                token, payload, headers = outbox.popleft()
                if token not in self.waiting:  # timed out, or the bridge stopped
                    continue
                try:
                    await nc.publish(subject, payload, reply=prefix + token, headers=headers)
                except Exception as e:  # noqa: BLE001 - e.g. too large: that request's answer
                    self.settle(token, e)

    async def answered(self, msg: Msg) -> None:
        """nats-py's callback for every answer (on the inbox subscription)."""
        token = msg.subject[len(self.prefix):]
        headers = msg.headers or {}
        if headers.get("Status") == _NO_RESPONDERS:
            self.settle(token, RemoteError("nats.errors.NoRespondersError",
                                           f"no responders on NATS subject {self.subject!r}"))
        elif _wire.ERROR in headers:
            self.settle(token, _wire.decode_error(msg.data, headers))
        else:
            try:
                self.settle(token, value=_wire.decode(self.chan, msg.data, headers))
            except _wire.WireError as e:
                self.settle(token, e)

    def late(self, token: str) -> None:
        """A request whose time is up (Deadlines calls it)."""
        self.settle(token, RemoteError(
            "nats.errors.TimeoutError",
            f"no answer on NATS subject {self.subject!r} in {self.timeout:g} s"))
