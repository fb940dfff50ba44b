"""``forward``: local clients use remote workers. The bridge is a worker of the local
channel (``reqrep.aio.serve``) that hands each request to NATS and replies with the
answer; no responders, or no answer in time, is a ``RemoteError``."""

from __future__ import annotations

import asyncio
from typing import Any

from reqrep._remote import RemoteError
from reqrep._reqrep import IntServer, Server
from reqrep.aio import serve as aio_serve
from reqrep.bridge import _wire
from reqrep.bridge._common import Counters, Path, channel_of, check_common, open_server
from reqrep.bridge._connect import Connection, connect


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
    that the bridge then uses alone): each request it takes goes to NATS as a request
    on ``subject`` and the answer is its reply, an error answer included. With no
    responders on ``subject``, or no answer in ``timeout`` seconds, the local client
    gets :class:`~reqrep.RemoteError`. At most ``inflight`` requests are out at once;
    the rest wait in the channel for this or another worker. If the bridge dies, the
    clients of the requests it held get :class:`~reqrep.WorkerDiedError`, as for any
    worker.

    ``ready``, if given, is set once the bridge is connected and taking requests.
    Runs until ``stop`` is set (then returns) or the task is cancelled (then raises
    the cancellation), stopping cleanly either way: it stops taking requests, replies
    to those it took, then closes its NATS connection.

    Raises :class:`~reqrep.bridge.BridgeError` when NATS cannot be reached or refuses
    the credentials, and what opening the channel raises.
    """
    check_common(subject, inflight, timeout)
    counters = counters if counters is not None else Counters("forward")
    server = open_server(channel) if not isinstance(channel, (Server, IntServer)) else channel
    try:
        chan = channel_of(server)
        nc = await connect(connection or Connection(), f"bridge forward {subject!r}")
        try:
            await _run(nc, server, chan, subject, inflight, timeout, stop, ready, counters)
        finally:
            await nc.close()
    finally:
        if server is not channel:
            server.close()


async def _run(nc: Any, server: Server[Any] | IntServer, chan: _wire.Channel, subject: str,
               inflight: int, timeout: float, stop: asyncio.Event | None,
               ready: asyncio.Event | None, counters: Counters) -> None:
    import nats.errors

    async def ask(value: Any) -> Any:
        counters.inflight += 1
        ok = False
        try:
            payload, headers = _wire.encode(chan, value)
            try:
                msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
            except nats.errors.NoRespondersError:
                raise RemoteError("nats.errors.NoRespondersError",
                                  f"no responders on NATS subject {subject!r}") from None
            except nats.errors.TimeoutError:
                raise RemoteError("nats.errors.TimeoutError", f"no answer on NATS subject "
                                  f"{subject!r} in {timeout:g} s") from None
            if msg.headers and _wire.ERROR in msg.headers:
                raise _wire.decode_error(msg.data, msg.headers)
            reply = _wire.decode(chan, msg.data, msg.headers)
            ok = True
            return reply
        finally:
            counters.done(ok)
            counters.inflight -= 1

    own_stop = asyncio.Event()
    worker = asyncio.ensure_future(
        aio_serve(server, ask, concurrency=inflight, stop=own_stop))
    if ready is not None:
        ready.set()
    stopped = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Future())
    cancelled = False
    try:
        await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancelled = True
    stopped.cancel()
    if worker.done():  # it failed: say why
        worker.result()
        if cancelled:
            raise asyncio.CancelledError
        return
    own_stop.set()  # stop taking; those taken are answered
    await worker
    if cancelled:
        raise asyncio.CancelledError
