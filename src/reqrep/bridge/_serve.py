"""``serve``: local workers answer remote callers. The bridge subscribes to a NATS
subject in a queue group, sends each request into the local channel as a client
(``reqrep.aio.AsyncClient``) and responds with the worker's reply.

No task per request: a request's reply is a future whose done callback queues the
response, one publisher task writes the queued responses, and one timer looks for the
requests whose time is up (at most ``inflight`` of them wait)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from reqrep._reqrep import Client, IntClient
from reqrep.aio import AsyncClient
from reqrep.bridge import _wire
from reqrep.bridge._common import (
    Counters,
    Deadlines,
    Path,
    channel_of,
    check_common,
    check_queue,
    open_client,
    until_stopped,
)
from reqrep.bridge._connect import Connection, Link, connect

if TYPE_CHECKING:
    from nats.aio.msg import Msg

logger = logging.getLogger("reqrep.bridge")


async def serve(
    channel: Path | Client[Any] | IntClient,
    subject: str,
    *,
    connection: Connection | None = None,
    queue: str = "reqrep",
    inflight: int = 64,
    timeout: float = 60.0,
    wait: float | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    counters: Counters | None = None,
) -> None:
    """Answer the NATS requests on ``subject`` with the workers of a local channel.

    Each request is sent into ``channel`` (a path, or an open ``Client``/``IntClient``
    that the bridge then uses alone, and leaves moving payloads as they are; for a
    path, the workers are given ``wait`` seconds to create it) and the worker's reply
    is the NATS response; a worker's error travels back as an error response
    (docs/bridge.md). Bridges that serve one subject with one ``queue`` group share
    its requests. At most ``inflight`` requests are in the channel at once; one whose
    reply takes more than ``timeout`` seconds is answered with a ``TimeoutError``.

    ``ready``, if given, is set once the bridge is connected and taking requests.
    Runs until ``stop`` is set (then returns) or the task is cancelled (then raises
    the cancellation), stopping cleanly either way: it stops taking requests, answers
    those it took, then closes its NATS connection.

    Raises :class:`~reqrep.bridge.BridgeError` when NATS cannot be reached, refuses
    the credentials, or closes the connection for good, and what opening the channel
    raises.
    """
    check_common(subject, inflight, timeout)
    check_queue(queue)
    counters = counters if counters is not None else Counters("serve")
    client = channel if isinstance(channel, (Client, IntClient)) else await open_client(
        channel, wait)
    try:
        chan = channel_of(client)
        link = await connect(connection or Connection(), f"bridge serve {subject!r}")
        try:
            async with AsyncClient(client) as ac:
                serving = _Serving(link, ac, chan, subject, inflight, timeout, counters)
                await serving.run(queue, stop, ready)
        finally:
            await link.close()
    finally:
        if client is not channel:
            client.close()


class _Serving:
    """One serve bridge at work (everything runs in the event loop)."""

    def __init__(self, link: Link, ac: AsyncClient[Any], chan: _wire.Channel, subject: str,
                 inflight: int, timeout: float, counters: Counters) -> None:
        self.link, self.ac, self.chan, self.subject = link, ac, chan, subject
        self.timeout, self.counters = timeout, counters
        self.slots = asyncio.Semaphore(inflight)
        # responses to publish: (reply subject, payload, headers, answered with a value)
        self.outbox: deque[tuple[str, bytes, dict[str, str] | None, bool]] = deque()
        self.queued = asyncio.Event()  # the outbox has something
        self.idle = asyncio.Event()  # nothing in flight (looked at when stopping)
        # the replies awaited; one late is cancelled (its request too): a TimeoutError
        self.deadlines: Deadlines[asyncio.Future[Any]] = Deadlines(timeout, _cancel)

    async def run(self, queue: str, stop: asyncio.Event | None,
                  ready: asyncio.Event | None) -> None:
        nc = self.link.nc
        publisher = asyncio.ensure_future(self.publish())
        try:
            sub = await nc.subscribe(self.subject, queue=queue, cb=self.take)
            await nc.flush()  # the server has the subscription: requests come from now on
            if ready is not None:
                ready.set()
            cancelled = await until_stopped(stop, self.link.lost)
            if self.link.lost.is_set():
                raise self.link.why()
            # Stop taking: NATS sends no more, those delivered already are answered.
            try:
                await sub.drain()  # type: ignore[no-untyped-call]
            except Exception as e:  # noqa: BLE001 - the connection is gone: nothing to drain
                logger.warning("bridge serve %r: %s", self.subject, e)
            self.idle.clear()
            if self.counters.inflight:
                await self.idle.wait()
            try:
                await nc.flush()
            except Exception:  # noqa: BLE001, S110 - closing anyway
                pass
            if cancelled:
                raise asyncio.CancelledError
        finally:
            publisher.cancel()
            self.deadlines.close()

    async def take(self, msg: Msg) -> None:
        """nats-py's callback, for one message at a time: waiting here for a slot leaves
        the rest in the subscription, so that at most `inflight` are in the channel."""
        await self.slots.acquire()
        self.counters.inflight += 1
        try:
            value = _wire.decode(self.chan, msg.data, msg.headers)
            fut = self.ac.submit(value)
        except Exception as e:  # noqa: BLE001 - the caller's answer
            self.respond(msg.reply, *_wire.encode_error(self.chan, e), False)
            return
        self.deadlines.add(fut)
        fut.add_done_callback(partial(self.replied, msg.reply))

    def replied(self, reply_to: str, fut: asyncio.Future[Any]) -> None:
        self.deadlines.discard(fut)
        try:
            if fut.cancelled():  # late
                raise TimeoutError(f"no reply from the channel's workers in {self.timeout:g} s")
            reply = fut.result()
            if reply is None:
                raise RuntimeError("the request was dropped by clear() on the channel")
            self.respond(reply_to, *_wire.encode(self.chan, reply), True)
        except Exception as e:  # noqa: BLE001 - every failure is the caller's answer
            self.respond(reply_to, *_wire.encode_error(self.chan, e), False)

    def respond(self, reply_to: str, payload: bytes, headers: dict[str, str] | None,
                answered: bool) -> None:
        self.outbox.append((reply_to, payload, headers, answered))
        self.queued.set()

    async def publish(self) -> None:
        """Publish the queued responses (the one task that writes them)."""
        from nats.errors import MaxPayloadError

        nc, outbox, counters = self.link.nc, self.outbox, self.counters
        while True:
            await self.queued.wait()
            self.queued.clear()
            while outbox:
                reply_to, payload, headers, answered = outbox.popleft()
                try:
                    if reply_to:  # a message without a reply subject gets none
                        try:
                            await nc.publish(reply_to, payload, headers=headers)
                        except MaxPayloadError as e:  # a reply larger than NATS takes
                            answered = False
                            payload, headers = _wire.encode_error(self.chan, e)
                            await nc.publish(reply_to, payload, headers=headers)
                except Exception as e:  # noqa: BLE001 - NATS went away: its caller times out
                    answered = False
                    logger.warning("bridge serve %r: cannot respond: %s", self.subject, e)
                counters.done(answered)
                counters.inflight -= 1
                self.slots.release()
            if not counters.inflight:
                self.idle.set()


def _cancel(fut: asyncio.Future[Any]) -> None:
    fut.cancel()  # the AsyncClient cancels the request and frees its slot
