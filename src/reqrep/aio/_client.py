"""reqrep.aio's client: AsyncClient, with any number of requests in flight on one
client object, woken by the channel's bell through a Waker (``_waker.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from reqrep._reqrep import Client, IntClient, WorkerDiedError
from reqrep.aio._waker import IDLE, Waker, check_timeout

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["AsyncClient"]

logger = logging.getLogger("reqrep.aio")

_C = TypeVar("_C", bound="Client[Any] | IntClient")
_T = TypeVar("_T")

# Backoff, in seconds, of an AsyncClient retrying a send that found no free slot
# or a full queue (it also retries as soon as one of its own replies frees a slot).
_BACKOFF_MIN = 0.001
_BACKOFF_MAX = 0.05
# A request's timeout may fire this much early (it shares one loop timer with others).
_TIMER_SLACK = 0.0005
_U32 = 0xFFFFFFFF


@dataclass(eq=False)
class _Request:
    """One request of an AsyncClient: its future, and its id once it is sent (a request
    that found the channel full waits in the backlog with ``rid`` None)."""

    data: Any
    fut: asyncio.Future[Any]
    rid: int | None = None


@dataclass
class _Failed:
    """An error reply, collected: the exception its request raises."""

    exc: BaseException


def _resolve(fut: asyncio.Future[Any], resp: Any) -> None:
    """Complete a request's future with what ``_take`` collected."""
    if isinstance(resp, _Failed):
        fut.set_exception(resp.exc)
    else:
        fut.set_result(resp)


@dataclass(order=True)
class _Deadline:
    """An entry of the deadline heap: when, then send order (a tie-breaker)."""

    when: float
    seq: int
    req: _Request = field(compare=False)


# The open AsyncClient of each client object: two AsyncClients on one client object
# would share (and one of them release) its bell.
_owners: weakref.WeakKeyDictionary[Client[Any] | IntClient, AsyncClient[Any]] = (
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
        # requests waiting for a free slot / queue room, in order
        self._backlog: deque[_Request] = deque()
        self._backoff = _BACKOFF_MIN
        self._retry: asyncio.TimerHandle | None = None
        self._deadlines: list[_Deadline] = []  # a heap, of requests with a timeout
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._waker: Waker | None = None  # while bound to a loop
        self._seen = 0  # bell count up to which the loop has looked for replies

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
        return len(self._pending) + sum(1 for r in self._backlog if not r.fut.done())

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
        try:
            # client.fileno() >= 0: it shares a server's reply eventfd (server.client())
            waker = Waker(loop, self._on_wake, client.fileno())
        except BaseException:
            client._bell_release()
            raise
        _owners[client] = self
        self._loop, self._waker, self._seen = loop, waker, seen
        self._backoff = _BACKOFF_MIN
        waker.start(lambda: self._helper(loop, waker, seen), "reqrep-aio-client")
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
            fut = self._backlog.popleft().fut
            if live and not fut.done():
                fut.set_exception(ValueError(msg))
        client = self._client
        pending, self._pending = self._pending, {}
        for rid, fut in pending.items():
            self._abandon(rid)
            if live and not fut.done():
                fut.set_exception(ValueError(msg))
        if loop is not None:
            if live and self._waker is not None:
                self._waker.detach()
            self._loop = None
            client._bell_ring()  # the helper wakes and sees it is no longer bound

    async def aclose(self) -> None:
        """:meth:`close`, then wait (in the loop) for the helper thread to end."""
        self.close()
        if self._waker is not None:
            await self._waker.wait_stopped()

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
        self: AsyncClient[Client[_T]], data: _T | Buffer, timeout: float | None = None
    ) -> _T | None: ...
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
        return await self._submit(data, timeout)

    @overload
    def submit(
        self: AsyncClient[Client[_T]], data: _T | Buffer, timeout: float | None = None
    ) -> asyncio.Future[_T | None]: ...
    @overload
    def submit(
        self: AsyncClient[IntClient], data: int, timeout: float | None = None
    ) -> asyncio.Future[int | None]: ...
    def submit(self, data: Any, timeout: float | None = None) -> asyncio.Future[Any]:
        """Send a request; a future of its response (what :meth:`req` returns or
        raises). For code that would rather add a done callback than run a task per
        request. Cancelling the future cancels the request and frees its slot. Bad
        data and a wrong event loop raise here, as for :meth:`req`; call it from a
        coroutine or a callback of the running loop."""
        return self._submit(data, timeout)

    def _submit(self, data: Any, timeout: float | None) -> asyncio.Future[Any]:
        check_timeout(timeout)  # before anything happens
        loop = self._loop
        if loop is None or self._closed or loop is not asyncio.get_running_loop():
            loop = self._bind()
        req = _Request(data, loop.create_future())
        if not self._backlog:  # nobody queued before us: try at once
            req.rid = self._client.send(data)
        if req.rid is not None:
            self._pending[req.rid] = req.fut
        else:
            self._backlog.append(req)
            self._schedule_retry()
        if timeout is not None:
            self._add_deadline(loop.time() + timeout, req)
        req.fut.add_done_callback(partial(self._finished, req))
        return req.fut

    def _finished(self, req: _Request, fut: asyncio.Future[Any]) -> None:
        """A request's future is done: if it was cancelled, so is the request."""
        if (fut.cancelled() and req.rid is not None
                and self._pending.pop(req.rid, None) is not None):
            self._abandon(req.rid)

    def _take(self, rid: int) -> Any:
        """``get(rid)``: the reply, ``None``, or an error reply as a :class:`_Failed`;
        raises if the client was closed under us."""
        client = self._client
        try:
            return client.get(rid)
        except Exception as exc:  # noqa: BLE001 - an error reply: that request's
            if client.closed:  # not a reply
                raise
            return _Failed(exc)

    def _abandon(self, rid: int) -> Any:
        """Cancel a request (already out of ``_pending``); a reply that beat the
        cancel is collected and returned, as ``_take`` gives it (else ``None``)."""
        client = self._client
        try:
            if client.cancel(rid):
                return None
            return self._take(rid)  # the reply arrived first: collect it, free the slot
        except Exception:  # noqa: BLE001 - only when closed under us (_take keeps errors)
            if client.closed:
                return None
            raise

    # ---- timeouts: one heap of deadlines and one loop timer for the earliest.
    # (A loop timer per request costs more than the rest of a request.) Entries
    # of finished requests are dropped lazily, and the heap is compacted when
    # they outnumber the live ones.

    def _add_deadline(self, when: float, req: _Request) -> None:
        heap = self._deadlines
        if len(heap) > 64 and len(heap) > 2 * (len(self._pending) + len(self._backlog)):
            heap[:] = [e for e in heap if not e.req.fut.done()]
            heapq.heapify(heap)
        heapq.heappush(heap, _Deadline(when, next(self._seq), req))
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
            first = heap[0]
            req = first.req
            if req.fut.done():
                heapq.heappop(heap)
                continue
            if first.when > now:
                self._timer = self._loop.call_at(first.when, self._expire_due)
                return
            heapq.heappop(heap)
            resp = None
            if req.rid is not None and self._pending.pop(req.rid, None) is not None:
                resp = self._abandon(req.rid)
            _resolve(req.fut, resp)  # None, or a reply (an error too) that beat the timeout
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
            req = backlog[0]
            if req.fut.done():  # timed out or cancelled before it could be sent
                backlog.popleft()
                continue
            try:
                rid = send(req.data)
            except Exception as exc:  # noqa: BLE001 - belongs to that request
                backlog.popleft()
                req.fut.set_exception(exc)
                continue
            if rid is None:
                return False
            backlog.popleft()
            req.rid = rid
            pending[rid] = req.fut
            self._backoff = _BACKOFF_MIN
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        return True

    # ---- collecting replies (loop thread)

    def _on_wake(self) -> None:
        """An eventfd fired: collect the replies rung on the bell since last time."""
        waker = self._waker
        if self._closed or waker is None:
            return
        waker.clear()
        client = self._client
        try:
            if waker.shared_fd >= 0:
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
        take = self._take
        found: list[tuple[int, asyncio.Future[Any], Any]] = []
        for rid, fut in self._pending.items():
            resp = take(rid)
            if resp is not None:
                found.append((rid, fut, resp))
                if len(found) >= rung:
                    break
        pending = self._pending
        for rid, fut, resp in found:
            del pending[rid]
            if not fut.done():
                _resolve(fut, resp)

    def _settle(self, rid: int, exc: BaseException | None) -> None:
        """A probe by the helper thread found request ``rid`` over (runs in the loop):
        its worker died (``exc``), or ``clear()`` dropped it (``None``)."""
        fut = self._pending.pop(rid, None)
        if fut is None or fut.done():
            return  # collected, cancelled or timed out meanwhile
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        if self._backlog:
            self._pump()

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        while self._backlog:
            fut = self._backlog.popleft().fut
            if not fut.done():
                fut.set_exception(exc)

    # ---- the helper thread

    def _helper(self, loop: asyncio.AbstractEventLoop, waker: Waker, seen: int) -> None:
        """Sleep on the bell (GIL released); wake the loop whenever it moves. Every
        ``worker_check`` seconds, probe the requests waiting across a whole period."""
        client = self._client
        period = self._worker_check
        next_check = time.monotonic() + period if period is not None else math.inf
        previous: set[int] = set()
        try:
            while self._loop is loop and not loop.is_closed():
                wait = min(IDLE, max(0.0, next_check - time.monotonic()))  # inf - x: IDLE
                now = client._bell_wait(seen, wait)
                if now != seen:
                    seen = now
                    if self._loop is not loop:  # closed, or moved to another loop
                        break
                    waker.signal()
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
            loop.call_soon_threadsafe(self._settle, rid, exc)


