"""asyncio support for reqrep: an event-loop client and an event-loop worker.

* :class:`AsyncClient` wraps a :class:`~reqrep.Client` or :class:`~reqrep.IntClient`:
  ``await ac.req(data, timeout=None)`` with any number of requests in flight on
  one client. Between replies the event loop sleeps on an eventfd
  (``loop.add_reader``): there is no polling and no thread per request. One
  helper thread per ``AsyncClient`` sleeps (without the GIL) on the client's
  shared-memory *bell*, which every reply to this client rings, and turns it
  into an eventfd signal, so replies from workers in unrelated processes that
  know nothing about eventfds wake the loop too.
* :func:`serve` runs a worker loop in the event loop: it takes requests from the
  channel and answers them with a plain or an ``async`` handler, with at most
  ``concurrency`` async handlers in flight. Requests from plain synchronous
  clients are seen through one helper thread that sleeps until a request is
  queued.

Both work with the default asyncio loop and with uvloop.

Example::

    import asyncio, reqrep
    from reqrep.aio import AsyncClient, serve

    async def main() -> None:
        with reqrep.Server(None) as server, server.client() as client:
            worker = asyncio.create_task(serve(server, lambda data: data.upper()))
            async with AsyncClient(client) as ac:
                print(await asyncio.gather(*(ac.req(f"hi {i}", timeout=5) for i in range(9))))
            worker.cancel()  # a clean stop: handlers in flight finish first
            await asyncio.gather(worker, return_exceptions=True)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from reqrep._reqrep import Client, IntClient, IntServer, Server, WorkerDiedError

if TYPE_CHECKING:
    from typing_extensions import Self

    from reqrep._reqrep import _StrIn, _StrOut

__all__ = ["AsyncClient", "serve"]

logger = logging.getLogger("reqrep.aio")

_C = TypeVar("_C", Client, IntClient)

# How long a helper thread sleeps at most before it looks at its stop flag: the
# most a helper outlives close()/the end of serve(). Idle cost: a few wake-ups a second.
# Idle helper threads sleep this long at most: they are woken for everything they
# must do (a reply rings the bell, close() rings it too, stop() wakes the receivers),
# so this only bounds how late one notices an event loop closed under it.
_IDLE = 5.0
# serve() takes at most this many requests before it lets other tasks run.
_BATCH = 64
# Backoff, in seconds, of an AsyncClient retrying a send that found no free slot
# or a full queue (it also retries as soon as one of its own replies frees a slot).
_BACKOFF_MIN = 0.001
_BACKOFF_MAX = 0.05
# A request's timeout may fire this much early (it shares one loop timer with others).
_TIMER_SLACK = 0.0005
_EFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC
_U32 = 0xFFFFFFFF


def _efd_clear(fd: int) -> None:
    """Reset an eventfd (nonblocking) to zero."""
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)


async def _wait_thread_exit(thread: threading.Thread | None, limit: float = 2.0) -> None:
    """Wait without blocking the loop for ``thread`` to end (at most ``limit`` seconds)."""
    if thread is None:
        return
    deadline = time.monotonic() + limit
    while thread.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        raise ValueError("timeout must be None or a number >= 0")


# --------------------------------------------------------------------------- client

# The open AsyncClient of each client object: two AsyncClients on one client object
# would share (and one of them release) its bell.
_owners: weakref.WeakKeyDictionary[Client | IntClient, AsyncClient[Any]] = (
    weakref.WeakKeyDictionary()
)


class AsyncClient(Generic[_C]):
    """An asyncio front end to a :class:`~reqrep.Client` or :class:`~reqrep.IntClient`.

    ``await ac.req(data, timeout=None)`` sends a request and waits for its response
    in the event loop; any number of coroutines may have requests in flight at once
    on one ``AsyncClient`` (each holds one response slot of the channel while it
    waits, so ``resp_slots`` bounds them across all clients; the others wait their
    turn, in order, without polling).

    The ``AsyncClient`` binds itself to the running loop on its first request. A
    request from another loop raises ``RuntimeError`` (and sends nothing) while the
    loop it is bound to is open; once that loop is closed (``asyncio.run`` returned),
    the next request moves it to the new loop, so one ``AsyncClient`` can serve
    several ``asyncio.run`` calls in turn. It owns one helper thread and one eventfd,
    released by :meth:`close` / :meth:`aclose` / ``async with``. It does not close
    ``client``: that stays the caller's. One ``client`` object can be wrapped by
    one open ``AsyncClient`` at a time, and a channel has at most 64 of them open
    at once (``RuntimeError`` beyond). Use ``client`` itself only for status calls
    while it is wrapped.

    ``worker_check`` (seconds, or ``None`` to disable) is how often the helper
    thread looks for requests that have been waiting across a whole period and
    probes one of them (round robin) for a dead worker, a ``clear()`` of the
    channel or a lost wake-up. A probe is one liveness check; it does not wait.
    A request whose worker died raises :class:`~reqrep.WorkerDiedError`; one
    dropped by ``clear()`` returns ``None``.
    """

    def __init__(self, client: _C, *, worker_check: float | None = 2.0) -> None:
        if not isinstance(client, (Client, IntClient)):
            raise TypeError(f"AsyncClient needs a reqrep Client or IntClient, not {type(client)!r}")
        if worker_check is not None and not worker_check > 0:
            raise ValueError("worker_check must be None or a number > 0")
        self._client: _C = client
        self._worker_check = worker_check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # request id -> future of its response, in send order (oldest first)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # requests waiting for a free slot / queue room: (data, future, [id once sent])
        self._backlog: deque[tuple[Any, asyncio.Future[Any], list[int | None]]] = deque()
        self._backoff = _BACKOFF_MIN
        self._retry: asyncio.TimerHandle | None = None
        # (deadline, tie-breaker, future, id, cell) of requests with a timeout
        self._deadlines: list[
            tuple[float, int, asyncio.Future[Any], int | None, list[int | None] | None]
        ] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._efd = -1  # private eventfd: the helper thread -> the loop
        self._shared_fd = -1  # the client's own reply eventfd, if a server signals it
        self._seen = 0  # bell count up to which the loop has looked for replies
        self._thread: threading.Thread | None = None

    # ---- properties

    @property
    def client(self) -> _C:
        """The wrapped client."""
        return self._client

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def pending(self) -> int:
        """Requests of this ``AsyncClient`` in flight (sent, or waiting to be sent)."""
        return len(self._pending) + sum(1 for _, fut, _ in self._backlog if not fut.done())

    # ---- lifecycle

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, once this is bound to it (checked before anything is sent)."""
        if self._closed:
            raise ValueError("operation on a closed AsyncClient")
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            if loop is self._loop:
                return loop
            if not self._loop.is_closed():
                raise RuntimeError(
                    "this AsyncClient is bound to another event loop, which is still open; "
                    "use it from that loop, or close() it first (nothing was sent)"
                )
            # The loop it was bound to has been closed: what it left is abandoned, and
            # the AsyncClient moves to this loop (keeping its bell).
            self._unbind("the event loop of the request was closed")
        client = self._client
        owner = _owners.get(client)
        if owner is not None and owner is not self:
            if owner._loop is not None and not owner._loop.is_closed():
                raise RuntimeError("this client is already wrapped by an open AsyncClient")
            owner.close()  # left open by a loop that has ended: take over
        seen = client._bell_claim()  # ValueError if closed, RuntimeError if 64 are taken
        efd = os.eventfd(0, _EFD_FLAGS)
        try:
            loop.add_reader(efd, self._on_wake)
            shared = client.fileno()  # >= 0: shares a server's reply eventfd (server.client())
            if shared >= 0:
                loop.add_reader(shared, self._on_wake)
        except BaseException:
            loop.remove_reader(efd)
            os.close(efd)
            client._bell_release()
            raise
        _owners[client] = self
        self._loop, self._efd, self._shared_fd, self._seen = loop, efd, shared, seen
        self._thread = threading.Thread(
            target=self._helper, args=(loop, seen), name="reqrep-aio-client", daemon=True
        )
        self._backoff = _BACKOFF_MIN
        self._thread.start()
        return loop

    def close(self) -> None:
        """Stop: requests still in flight are cancelled in the channel (their slots
        freed) and their ``req`` calls raise ``ValueError``; the helper thread is
        woken and ends. Idempotent. The wrapped client stays open."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        bound = self._loop is not None
        self._unbind("the AsyncClient was closed while the request was in flight")
        if bound:
            client._bell_release()
            if _owners.get(client) is self:
                del _owners[client]

    def _unbind(self, msg: str) -> None:
        """Leave the loop this is bound to: cancel its timers, cancel the requests in
        flight in the channel (their ``req`` calls raise ``ValueError(msg)`` if the loop
        is still alive), and wake the helper thread, which ends."""
        loop = self._loop
        live = loop is None or not loop.is_closed()  # else its futures cannot be resolved
        for handle in (self._retry, self._timer):
            if handle is not None:
                handle.cancel()
        self._retry = self._timer = None
        self._deadlines.clear()
        while self._backlog:
            _, fut, _ = self._backlog.popleft()
            if live and not fut.done():
                fut.set_exception(ValueError(msg))
        client = self._client
        pending, self._pending = self._pending, {}
        for rid, fut in pending.items():
            self._abandon(rid)
            if live and not fut.done():
                fut.set_exception(ValueError(msg))
        if loop is not None:
            if live:
                loop.remove_reader(self._efd)
                if self._shared_fd >= 0:
                    loop.remove_reader(self._shared_fd)
            # the helper thread closes the eventfd when it ends: it may still write to it
            self._loop, self._efd, self._shared_fd = None, -1, -1
            client._bell_ring()  # the helper wakes and sees it is no longer bound

    async def aclose(self) -> None:
        """:meth:`close`, then wait (in the loop) for the helper thread to end."""
        self.close()
        await _wait_thread_exit(self._thread)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---- requests

    @overload
    async def req(
        self: AsyncClient[Client], data: _StrIn, timeout: float | None = None
    ) -> _StrOut | None: ...
    @overload
    async def req(
        self: AsyncClient[IntClient], data: int, timeout: float | None = None
    ) -> int | None: ...
    async def req(self, data: Any, timeout: float | None = None) -> Any:
        """Send a request and wait, in the event loop, for its response.

        Returns the response, or ``None`` on timeout (the request is then
        cancelled and its slot freed; if the reply had already arrived it is
        returned instead) and when the channel was ``clear()``-ed. One deadline
        covers waiting for a free slot / queue room and for the reply.
        Cancelling the awaiting task cancels the request and frees its slot.
        Raises :class:`~reqrep.WorkerDiedError` if the worker that took the
        request died, ``ValueError``/``TypeError``/``OverflowError`` for bad data
        (as the client does), ``ValueError`` if the ``AsyncClient`` is or
        gets closed, and ``RuntimeError``, before anything is sent, if called from
        another event loop while the one it is bound to is still open.
        """
        loop = self._loop
        if loop is None or self._closed or loop is not asyncio.get_running_loop():
            loop = self._bind()
        if timeout is not None and not timeout >= 0:  # also NaN
            raise ValueError("timeout must be None or a number >= 0")
        fut: asyncio.Future[Any] = loop.create_future()
        rid: int | None = None
        cell: list[int | None] | None = None
        if not self._backlog:  # nobody queued before us: try at once
            rid = self._client.send(data)
        if rid is not None:
            self._pending[rid] = fut
        else:
            cell = [None]
            self._backlog.append((data, fut, cell))
            self._schedule_retry()
        if timeout is not None:
            self._add_deadline(loop.time() + timeout, fut, rid, cell)
        try:
            return await fut
        except asyncio.CancelledError:
            sent = rid if cell is None else cell[0]
            if sent is not None and self._pending.pop(sent, None) is not None:
                self._abandon(sent)
            raise

    def _abandon(self, rid: int) -> Any:
        """Cancel a request (already out of ``_pending``); a reply that beat the
        cancel is drained and returned (else ``None``)."""
        client = self._client
        try:
            if client.cancel(rid):
                return None
            return client.get(rid)  # the reply arrived first: collect it, free the slot
        except ValueError:  # the client was closed under us
            return None

    # ---- timeouts: one heap of deadlines and one loop timer for the earliest.
    # (A loop timer per request costs more than the rest of a request.) Entries
    # of finished requests are dropped lazily, and the heap is compacted when
    # they outnumber the live ones.

    def _add_deadline(
        self,
        when: float,
        fut: asyncio.Future[Any],
        rid: int | None,
        cell: list[int | None] | None,
    ) -> None:
        heap = self._deadlines
        if len(heap) > 64 and len(heap) > 2 * (len(self._pending) + len(self._backlog)):
            heap[:] = [e for e in heap if not e[2].done()]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, next(self._seq), fut, rid, cell))
        timer = self._timer
        if timer is None or when < timer.when():
            if timer is not None:
                timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(when, self._expire_due)

    def _expire_due(self) -> None:
        self._timer = None
        heap = self._deadlines
        assert self._loop is not None
        now = self._loop.time() + _TIMER_SLACK
        while heap:
            when, _, fut, rid, cell = heap[0]
            if fut.done():
                heapq.heappop(heap)
                continue
            if when > now:
                self._timer = self._loop.call_at(when, self._expire_due)
                return
            heapq.heappop(heap)
            sent = rid if cell is None else cell[0]
            resp = None
            if sent is not None and self._pending.pop(sent, None) is not None:
                resp = self._abandon(sent)
            fut.set_result(resp)
        if self._backlog:
            self._pump()

    # ---- sending when the channel is full

    def _schedule_retry(self) -> None:
        if self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(self._backoff, self._retry_sends)

    def _retry_sends(self) -> None:
        self._retry = None
        if not self._pump():
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
            self._schedule_retry()

    def _pump(self) -> bool:
        """Send queued requests in order while the channel takes them. True once
        the backlog is empty."""
        backlog, pending, send = self._backlog, self._pending, self._client.send
        while backlog:
            data, fut, cell = backlog[0]
            if fut.done():  # timed out or cancelled before it could be sent
                backlog.popleft()
                continue
            try:
                rid = send(data)
            except Exception as exc:  # noqa: BLE001 - belongs to that request
                backlog.popleft()
                fut.set_exception(exc)
                continue
            if rid is None:
                return False
            backlog.popleft()
            cell[0] = rid
            pending[rid] = fut
            self._backoff = _BACKOFF_MIN
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        return True

    # ---- collecting replies (loop thread)

    def _on_wake(self) -> None:
        """An eventfd fired: collect the replies rung on the bell since last time."""
        if self._closed:
            return
        _efd_clear(self._efd)
        client = self._client
        try:
            if self._shared_fd >= 0:
                client.eventfd_consume()
            now = client._bell_wait(self._seen, 0)  # the bell's count, no wait
            if now != self._seen:
                delta = (now - self._seen) & _U32
                self._seen = now
                self._collect(delta)
        except Exception as exc:  # noqa: BLE001 - e.g. the client was closed under us
            self._fail_all(exc)
            return
        if self._backlog:
            self._pump()

    def _collect(self, rung: int) -> None:
        """Collect ready replies, oldest request first. ``rung`` replies were rung
        on the bell since the last look, so the scan stops once it found that many:
        every ready reply it leaves behind was rung after the bell was read, or is
        paired with one collected here before its ring, and that ring comes later
        and wakes us again."""
        get = self._client.get
        found: list[tuple[int, asyncio.Future[Any], Any]] = []
        for rid, fut in self._pending.items():
            resp = get(rid)
            if resp is not None:
                found.append((rid, fut, resp))
                if len(found) >= rung:
                    break
        pending = self._pending
        for rid, fut, resp in found:
            del pending[rid]
            if not fut.done():
                fut.set_result(resp)

    def _deliver(self, rid: int, resp: Any, exc: BaseException | None, stale: bool) -> None:
        """Outcome of a probe made by the helper thread (runs in the loop)."""
        fut = self._pending.get(rid)
        if fut is None:
            return  # collected, cancelled or timed out meanwhile
        if resp is None and exc is None and not stale:
            return  # still in flight
        del self._pending[rid]
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(resp)  # None for a request dropped by clear()
        if self._backlog:
            self._pump()

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        while self._backlog:
            _, fut, _ = self._backlog.popleft()
            if not fut.done():
                fut.set_exception(exc)

    # ---- the helper thread

    def _helper(self, loop: asyncio.AbstractEventLoop, seen: int) -> None:
        """Sleep on the bell (GIL released); signal the eventfd whenever it moves.
        Every ``worker_check`` seconds, probe one long-waiting request."""
        client, efd = self._client, self._efd
        period = self._worker_check
        next_check = time.monotonic() + period if period is not None else math.inf
        previous: set[int] = set()
        try:
            while self._loop is loop and not loop.is_closed():
                wait = min(_IDLE, max(0.0, next_check - time.monotonic()))  # inf - x: _IDLE
                now = client._bell_wait(seen, wait)
                if now != seen:
                    seen = now
                    if self._loop is not loop:  # closed, or moved to another loop
                        break
                    os.eventfd_write(efd, 1)
                if period is None or time.monotonic() < next_check:
                    continue
                next_check = time.monotonic() + period
                current = set(list(self._pending))  # atomic copy under the GIL
                suspects = sorted(previous & current)
                previous = current
                for rid in suspects:  # cheap: one liveness check each, no wait
                    if self._loop is not loop:
                        break
                    self._probe(loop, rid)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            # The client was closed under us (ValueError), or worse. Without the
            # helper, replies would go unnoticed: fail what is in flight and close.
            if self._loop is loop and not loop.is_closed():
                if not isinstance(exc, ValueError):
                    logger.exception("reqrep.aio client helper thread failed")
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._helper_died, exc)
        finally:
            os.close(efd)

    def _helper_died(self, exc: BaseException) -> None:
        if not self._closed:
            self._fail_all(exc)
            self.close()

    def _probe(self, loop: asyncio.AbstractEventLoop, rid: int) -> None:
        """Look, without waiting, whether one request's worker died or it went stale."""
        exc: BaseException | None = None
        try:
            state = self._client._check(rid)
        except WorkerDiedError as e:
            exc, state = e, 2
        if state == 2:  # dead worker, or dropped by clear(): the loop settles it
            loop.call_soon_threadsafe(self._deliver, rid, None, exc, exc is None)


# --------------------------------------------------------------------------- serve

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
        self.multi = isinstance(server, Server)
        self.inflight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.taking = False
        self.failed: BaseException | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self.efd = -1
        self.shared_fd = -1
        self.thread: threading.Thread | None = None
        self.stopping = False
        # Arming handshake with the helper thread: the loop arms it (releases the
        # lock) when it found the queue empty; the helper disarms itself when it
        # signals. So it sleeps while the loop drains instead of spinning on a
        # non-empty queue.
        self.arm_lock = threading.Lock()
        self.arm_lock.acquire()
        self.armed = False

    # ---- start / stop

    def start(self) -> None:
        loop, server = self.loop, self.server
        self.efd = os.eventfd(0, _EFD_FLAGS)
        loop.add_reader(self.efd, self.on_wake)
        self.shared_fd = server.fileno()  # clients that notify() signal this one
        if self.shared_fd >= 0:
            loop.add_reader(self.shared_fd, self.on_wake)
        self.taking = True
        self.thread = threading.Thread(target=self.helper, name="reqrep-aio-serve", daemon=True)
        self.thread.start()
        loop.call_soon(self.drain)

    async def stop(self, drain_timeout: float | None) -> None:
        """Stop taking requests, let the handlers in flight finish and reply, end
        the helper thread."""
        self.taking = False
        loop = self.loop
        loop.remove_reader(self.efd)
        if self.shared_fd >= 0:
            loop.remove_reader(self.shared_fd)
        self.stopping = True
        self.arm()  # wake the helper if it waits to be armed
        with contextlib.suppress(ValueError):  # the server was closed under us
            self.server._wake_request()  # or if it waits for a request
        try:
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=drain_timeout)
        finally:
            if self.tasks:  # drain_timeout passed, or we were cancelled again
                left = set(self.tasks)
                logger.warning(
                    "reqrep.aio serve: cancelling %d handler(s) still running at stop; "
                    "their requests get no reply unless on_error gives one",
                    len(left),
                )
                for t in left:
                    t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(left, timeout=1.0)
            await _wait_thread_exit(self.thread)  # it closes the eventfd on its way out

    # ---- the helper thread

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
            self.arm_lock.release()

    def helper(self) -> None:
        """Sleep (GIL released) until a request is queued, then signal the loop's
        eventfd once and wait to be armed again."""
        server, efd = self.server, self.efd
        try:
            while True:
                self.arm_lock.acquire()
                queued = False
                while not self.stopping and not queued:
                    queued = server._wait_request(_IDLE)
                if self.stopping:
                    return
                self.armed = False
                os.eventfd_write(efd, 1)
        except (ValueError, OSError):  # the server was closed under us
            if not self.stopping:
                logger.debug("reqrep.aio serve helper stopped", exc_info=True)
        except BaseException:
            logger.exception("reqrep.aio serve helper thread failed")
        finally:
            os.close(efd)

    # ---- taking requests

    def on_wake(self) -> None:
        _efd_clear(self.efd)
        if self.shared_fd >= 0:
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
        if self.is_async or inspect.isawaitable(result):
            self.spawn(self.finish(result, data, rid))
        else:
            self.spawn(self.reply(rid, result, data))

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

    def task_done(self, task: asyncio.Task[None]) -> None:
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
        if on_error is None:
            if isinstance(exc, asyncio.CancelledError):
                logger.warning("handler for request %#x was cancelled; no reply sent", rid)
            else:
                logger.error("handler failed for request %#x; no reply sent", rid, exc_info=exc)
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
    (or make it ``async`` and offload with ``asyncio.to_thread``). At most
    ``concurrency`` async handlers run at once; requests beyond that stay queued
    in the channel, where other workers can take them.

    Requests are seen as soon as they are queued, from any client: one helper
    thread sleeps until the queue is non-empty and wakes the loop (clients sharing
    the server's request eventfd, e.g. ``server.client()`` after
    ``server.eventfd()``, may also ``notify()`` it directly).

    Errors: when the handler raises (or its reply is refused: wrong type, larger
    than ``resp_size``), ``on_error(exc, data, id)`` is called if given (a plain
    or an async function); a value it returns other than ``None`` is sent as the
    reply, ``None`` sends none, and an exception it raises stops ``serve``
    (cleanly, see below), which then raises it.
    Without ``on_error`` the error is logged on the ``reqrep.aio`` logger and the
    request gets no reply (its client waits until its own timeout), so pass an
    ``on_error`` that answers with whatever error value your protocol uses.

    Stopping: cancel the task running ``serve``, or set ``stop`` (then ``serve``
    returns). Either way it stops taking requests, waits for the handlers in
    flight to finish and reply (at most ``drain_timeout`` seconds if given; then,
    or on a second cancellation, the remaining handlers are cancelled and their
    requests go through the error policy with ``asyncio.CancelledError``), ends
    its helper thread and returns or re-raises the cancellation. No request is
    left taken and unanswered except by a handler that fails or is cut short.
    Requests still queued stay in the channel for the next worker.
    """
    if not isinstance(server, (Server, IntServer)):
        raise TypeError(f"serve needs a reqrep Server or IntServer, not {type(server)!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be an int >= 1")
    _check_timeout(drain_timeout)
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
