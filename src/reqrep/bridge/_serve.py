"""``serve``: local workers answer remote callers. The bridge subscribes to a NATS
subject in a queue group, sends each request into the local channel as a client
(``reqrep.aio.AsyncClient``) and responds with the worker's reply."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from reqrep._reqrep import Client, IntClient
from reqrep.aio import AsyncClient
from reqrep.bridge import _wire
from reqrep.bridge._common import Counters, Path, channel_of, check_common, open_client, wait_stop
from reqrep.bridge._connect import Connection, connect

if TYPE_CHECKING:
    from nats.aio.msg import Msg

logger = logging.getLogger("reqrep.bridge")


async def serve(
    channel: Path | Client[Any] | IntClient,
    subject: str,
    *,
    connection: Connection | None = None,
    wait: float | None = None,
    queue: str = "reqrep",
    inflight: int = 64,
    timeout: float = 60.0,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    counters: Counters | None = None,
) -> None:
    """Answer the NATS requests on ``subject`` with the workers of a local channel.

    Each request is sent into ``channel`` (a path, or an open ``Client``/``IntClient``
    that the bridge then uses alone; for a path, the workers are given ``wait``
    seconds to create it, as ``Client(path, wait=)`` does) and the worker's reply is
    the NATS response; a worker's error travels back as an error response
    (docs/bridge.md). Bridges that serve one subject with one ``queue`` group share
    its requests. At most
    ``inflight`` requests are in the channel at once; one whose reply takes more than
    ``timeout`` seconds is answered with a ``TimeoutError``.

    ``ready``, if given, is set once the bridge is connected and taking requests.
    Runs until ``stop`` is set (then returns) or the task is cancelled (then raises
    the cancellation), stopping cleanly either way: it stops taking requests, answers
    those it took, then closes its NATS connection.

    Raises :class:`~reqrep.bridge.BridgeError` when NATS cannot be reached or refuses
    the credentials, and what opening the channel raises.
    """
    check_common(subject, inflight, timeout)
    counters = counters if counters is not None else Counters("serve")
    client = channel if isinstance(channel, (Client, IntClient)) else open_client(channel, wait)
    try:
        chan = channel_of(client)
        nc = await connect(connection or Connection(), f"bridge serve {subject!r}")
        try:
            async with AsyncClient(client) as ac:
                await _run(nc, ac, chan, subject, queue, inflight, timeout, stop, ready,
                           counters)
        finally:
            await nc.close()
    finally:
        if client is not channel:
            client.close()


async def _run(nc: Any, ac: AsyncClient[Any], chan: _wire.Channel, subject: str, queue: str,
               inflight: int, timeout: float, stop: asyncio.Event | None,
               ready: asyncio.Event | None, counters: Counters) -> None:
    from nats.errors import MaxPayloadError

    slots = asyncio.Semaphore(inflight)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def answer(msg: Msg) -> None:
        ok = False
        try:
            try:
                value = _wire.decode(chan, msg.data, msg.headers)
                reply = await ac.req(value, timeout=timeout)
                if reply is None:
                    raise TimeoutError(f"no reply from the channel's workers in {timeout:g} s "
                                       "(or the channel was cleared)")
                payload, headers = _wire.encode(chan, reply)
                answered = True
            except Exception as e:  # noqa: BLE001 - every failure is the caller's answer
                payload, headers = _wire.encode_error(chan, e)
                answered = False
            if msg.reply:
                try:
                    await nc.publish(msg.reply, payload, headers=headers)
                except MaxPayloadError as e:  # a reply larger than NATS takes: say so
                    answered = False
                    payload, headers = _wire.encode_error(chan, e)
                    await nc.publish(msg.reply, payload, headers=headers)
            ok = answered
        except Exception as e:  # noqa: BLE001 - NATS went away: its caller times out
            logger.warning("bridge serve %r: cannot respond: %s", subject, e)
        finally:
            counters.done(ok)
            counters.inflight -= 1
            slots.release()

    async def take(msg: Msg) -> None:
        # nats-py calls this for one message at a time: waiting here leaves the rest
        # in the subscription, so that at most `inflight` are in the channel.
        await slots.acquire()
        counters.inflight += 1
        task = loop.create_task(answer(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sub = await nc.subscribe(subject, queue=queue, cb=take)
    await nc.flush()  # the server has the subscription: requests reach us from now on
    if ready is not None:
        ready.set()
    cancelled = await wait_stop(stop)
    # Stop taking: NATS sends no more, those delivered already are answered.
    try:
        await sub.drain()
    except Exception as e:  # noqa: BLE001 - the connection is gone: nothing to drain
        logger.warning("bridge serve %r: %s", subject, e)
    while tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await nc.flush()
    except Exception:  # noqa: BLE001, S110 - closing anyway
        pass
    if cancelled:
        raise asyncio.CancelledError
