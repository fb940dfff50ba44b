"""reqrep.aio's worker: serve(), answering a channel's requests in the event loop, woken
through a Waker (``_waker.py``) whose helper thread sleeps until a request is queued."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, overload

from reqrep._reqrep import IntServer, Server
from reqrep.aio._waker import IDLE, Waker, check_timeout

if TYPE_CHECKING:
    from reqrep._reqrep import _StrIn

__all__ = ["serve"]

logger = logging.getLogger("reqrep.aio")

# serve() takes at most this many requests before it lets other tasks run.
_BATCH = 64

_Handler = Callable[[Any], Any]
_OnError = Callable[[BaseException, Any, int], Any]


class _Service:
    """The state of one :func:`serve` call (all methods but ``_helper`` run in the loop)."""

    def __init__(
        self,
        server: Server | IntServer,
        handler: _Handler,
        concurrency: int,
        on_error: _OnError | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.server = server
        self.handler = handler
        self.concurrency = concurrency
        self.on_error = on_error
        self.loop = loop
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self.inflight = 0
        # handler tasks, and the futures handlers returned (no task of their own)
        self.tasks: set[asyncio.Future[Any]] = set()
        self.taking = False
        self.failed: BaseException | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.waker: Waker | None = None
        self.stopping = False  # the helper thread's signal to end
        # Arming handshake with the helper thread: the loop arms it (releases the
        # lock) when it found the queue empty; the helper disarms itself when it
        # signals. So it sleeps while the loop drains instead of spinning on a
        # non-empty queue.
        self.arm_lock = threading.Lock()
        self.arm_lock.acquire()
        self.armed = False

    # ---- start / stop

    def start(self) -> None:
        # server.fileno(): the request eventfd that clients' notify() signal, if any
        self.waker = Waker(self.loop, self.on_wake, self.server.fileno())
        self.taking = True
        self.waker.start(self.helper, "reqrep-aio-serve")
        self.loop.call_soon(self.drain)

    async def stop(self, drain_timeout: float | None) -> None:
        """Stop taking requests, let the handlers in flight finish and reply, end
        the helper thread."""
        self.taking = False
        assert self.waker is not None
        self.waker.detach()
        self.stopping = True
        self.arm()  # wake the helper if it waits to be armed
        with contextlib.suppress(ValueError):  # the server was closed under us
            self.server._wake_request()  # or if it waits for a request
        deadline = None if drain_timeout is None else self.loop.time() + drain_timeout
        try:
            # again while new ones come: a future's error may start an on_error task
            while self.tasks:
                wait = None if deadline is None else deadline - self.loop.time()
                if wait is not None and wait <= 0:
                    break
                await asyncio.wait(set(self.tasks), timeout=wait)
        finally:
            if self.tasks:  # drain_timeout passed, or we were cancelled again
                left = set(self.tasks)
                logger.warning(
                    "reqrep.aio serve: cancelling %d handler(s) still running at stop; "
                    "their requests are answered by the error policy",
                    len(left),
                )
                for t in left:
                    t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(left, timeout=1.0)
            await self.waker.wait_stopped()  # it closes the eventfd on its way out

    # ---- the helper thread

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
            self.arm_lock.release()

    def helper(self) -> None:
        """Sleep (GIL released) until a request is queued, then signal the loop's
        eventfd once and wait to be armed again."""
        server, waker = self.server, self.waker
        assert waker is not None
        try:
            while True:
                self.arm_lock.acquire()
                queued = False
                while not self.stopping and not queued:
                    queued = server._wait_request(IDLE)
                if self.stopping:
                    return
                self.armed = False
                waker.signal()
        except (ValueError, OSError):  # the server was closed under us
            if not self.stopping:
                logger.debug("reqrep.aio serve helper stopped", exc_info=True)
        except BaseException:
            logger.exception("reqrep.aio serve helper thread failed")

    # ---- taking requests

    def on_wake(self) -> None:
        assert self.waker is not None
        self.waker.clear()
        if self.waker.shared_fd >= 0:
            try:
                self.server.eventfd_consume()
            except ValueError as exc:  # closed under us
                self.fail(exc)
                return
        self.drain()

    def drain(self) -> None:
        """Take requests while there is room, at most ``_BATCH`` before yielding;
        arm the helper once the queue is empty."""
        if not self.taking:
            return
        server, budget = self.server, _BATCH
        try:
            while budget > 0 and self.taking:
                room = min(self.concurrency - self.inflight, budget)
                if room <= 0:
                    return  # a finishing handler calls drain() again
                items: list[tuple[Any, int]]
                if isinstance(server, Server):
                    items = server.recv_multi(room)
                else:
                    items = []
                    for _ in range(room):
                        got = server.recv()
                        if got is None:
                            break
                        items.append(got)
                if not items:
                    self.arm()
                    return
                budget -= len(items)
                for data, rid in items:
                    self.dispatch(data, rid)
        except ValueError as exc:  # the server was closed under us
            self.fail(exc)
            return
        if self.taking:
            self.loop.call_soon(self.drain)  # more may be queued: continue after others ran

    def dispatch(self, data: Any, rid: int) -> None:
        try:
            result = self.handler(data)
        except Exception as exc:  # noqa: BLE001 - the error policy handles it
            self.spawn(self.error(exc, data, rid))
            return
        if isinstance(result, asyncio.Future) and result.get_loop() is not self.loop:
            self.spawn(self.error(RuntimeError("the handler returned a future of another "
                                               "event loop"), data, rid))
            return
        if isinstance(result, asyncio.Future):  # its done callback replies: no task
            self.inflight += 1
            self.tasks.add(result)
            result.add_done_callback(partial(self.future_done, data, rid))
        elif self.is_async or inspect.isawaitable(result):
            self.spawn(self.finish(result, data, rid))
        else:
            self.spawn(self.reply(rid, result, data))

    def future_done(self, data: Any, rid: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            later = self.error(asyncio.CancelledError(), data, rid)
        elif (exc := fut.exception()) is not None:
            later = self.error(exc, data, rid)
        else:
            later = self.reply(rid, fut.result(), data)
        self.task_done(fut)
        self.spawn(later)  # an async on_error's reply, if any

    def spawn(self, coro: Coroutine[Any, Any, None] | None) -> None:
        """Run ``coro`` (if any) as a handler task: counted against ``concurrency``
        and awaited by a clean stop."""
        if coro is None:
            return
        self.inflight += 1
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)

    async def finish(self, awaitable: Awaitable[Any], data: Any, rid: int) -> None:
        try:
            result = await awaitable
        except (Exception, asyncio.CancelledError) as exc:
            later = self.error(exc, data, rid)
        else:
            later = self.reply(rid, result, data)
        if later is not None:
            await later

    def task_done(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        was_full = self.inflight >= self.concurrency
        self.inflight -= 1
        if was_full and self.taking:
            self.drain()

    # ---- replying and errors. These return a coroutine to await when an async
    # on_error is involved, else None.

    def reply(self, rid: int, result: Any, data: Any) -> Coroutine[Any, Any, None] | None:
        try:
            if not self.server.reply(rid, result):
                logger.debug("request %#x was cancelled by its client before the reply", rid)
        except Exception as exc:  # noqa: BLE001 - e.g. wrong type, too large: error policy
            return self.error(exc, data, rid)
        return None

    def error(self, exc: BaseException, data: Any, rid: int) -> Coroutine[Any, Any, None] | None:
        on_error = self.on_error
        if on_error is None:  # the error is the reply: its client gets a RemoteError
            if isinstance(exc, asyncio.CancelledError):
                logger.warning("handler for request %#x was cancelled", rid)
            try:
                self.server.reply_error(rid, exc)
            except Exception:  # noqa: BLE001 - e.g. closed under us
                logger.exception("the error reply to request %#x could not be sent", rid)
            return None
        try:
            result = on_error(exc, data, rid)
        except Exception as err:  # noqa: BLE001 - on_error asks serve() to stop with it
            self.fail(err)
            return None
        if inspect.isawaitable(result):
            return self.error_reply_later(result, rid)
        self.error_reply(rid, result)
        return None

    async def error_reply_later(self, awaitable: Awaitable[Any], rid: int) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError as err:  # stopped: the request still gets an answer
            with contextlib.suppress(Exception):
                self.server.reply_error(rid, err)
            raise
        except Exception as err:  # noqa: BLE001 - on_error asks serve() to stop with it
            self.fail(err)
            return
        self.error_reply(rid, result)

    def error_reply(self, rid: int, result: Any) -> None:
        if result is None:
            return
        try:
            self.server.reply(rid, result)
        except Exception:  # noqa: BLE001
            logger.exception("on_error's reply to request %#x could not be sent", rid)

    def fail(self, exc: BaseException) -> None:
        """Stop serve() with ``exc`` (after the usual clean stop)."""
        self.taking = False
        if self.failed is None:
            self.failed = exc
        if not self.done.done():
            self.done.set_result(None)


@overload
async def serve(
    server: Server,
    handler: Callable[[Any], _StrIn | Awaitable[_StrIn]],
    *,
    concurrency: int = 64,
    on_error: Callable[[BaseException, Any, int], _StrIn | Awaitable[_StrIn | None] | None]
    | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float | None = None,
) -> None: ...
@overload
async def serve(
    server: IntServer,
    handler: Callable[[int], int | Awaitable[int]],
    *,
    concurrency: int = 64,
    on_error: Callable[[BaseException, int, int], int | Awaitable[int | None] | None] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float | None = None,
) -> None: ...
async def serve(
    server: Server | IntServer,
    handler: Callable[[Any], Any],
    *,
    concurrency: int = 64,
    on_error: Callable[[BaseException, Any, int], Any] | None = None,
    stop: asyncio.Event | None = None,
    drain_timeout: float | None = None,
) -> None:
    """Answer the requests of ``server``'s channel in the running event loop.

    Each request's data is passed to ``handler(data)``; its return value (or, for
    an ``async`` handler or one that returns an awaitable, the awaited value) is
    the reply. A plain function runs in the event loop thread, so keep it short
    (or make it ``async`` and offload with ``asyncio.to_thread``). A plain function
    may also return an ``asyncio.Future``: its result is the reply, and no task is
    made for it (the cheapest way to have many requests in flight). At most
    ``concurrency`` async handlers (or futures) are in flight at once; requests
    beyond that stay queued in the channel, where other workers can take them.

    Requests are seen as soon as they are queued, from any client: one helper
    thread sleeps until the queue is non-empty and wakes the loop (clients sharing
    the server's request eventfd, e.g. ``server.client()`` after
    ``server.eventfd()``, may also ``notify()`` it directly).

    Errors: when the handler raises (or its reply is refused: wrong type, larger
    than ``resp_size``), ``on_error(exc, data, id)`` is called if given (a plain
    or an async function); a value it returns other than ``None`` is sent as the
    reply, ``None`` sends none, and an exception it raises stops ``serve``
    (cleanly, see below), which then raises it. Without ``on_error`` the error is
    the reply (``server.reply_error``): its client's call raises
    :class:`~reqrep.RemoteError` (on a ``"pickle"`` channel, the exception itself),
    and serving goes on.

    Stopping: cancel the task running ``serve``, or set ``stop`` (then ``serve``
    returns). Either way it stops taking requests, waits for the handlers in
    flight to finish and reply (at most ``drain_timeout`` seconds if given; then,
    or on a second cancellation, the remaining handlers are cancelled and their
    requests go through the error policy with ``asyncio.CancelledError``), ends
    its helper thread and returns or re-raises the cancellation. No request is
    left taken and unanswered, except by an ``on_error`` that returns ``None``.
    Requests still queued stay in the channel for the next worker.

    Returns ``None`` once stopped by ``stop``; raises what stopped it otherwise
    (the cancellation, or an exception from ``on_error`` or from the server).
    """
    if not isinstance(server, (Server, IntServer)):
        raise TypeError(f"serve needs a reqrep Server or IntServer, not {type(server)!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    check_timeout(drain_timeout, "drain_timeout")
    if server.closed:
        raise ValueError("operation on a closed channel")
    loop = asyncio.get_running_loop()
    svc = _Service(server, handler, concurrency, on_error, loop)
    svc.start()
    stop_task: asyncio.Task[Any] | None = None
    try:
        if stop is None:
            await svc.done
        else:
            stop_task = loop.create_task(stop.wait())
            await asyncio.wait({svc.done, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stop_task is not None:
            stop_task.cancel()
        await svc.stop(drain_timeout)
    if svc.failed is not None:
        raise svc.failed
