"""reqrep.aio: AsyncClient and serve, on the default asyncio loop and on uvloop.

Every test runs a real event loop (``asyncio.run`` / uvloop) under ``asyncio.wait_for``
and a pytest-timeout watchdog, so a lost wake-up fails instead of hanging. Workers and
clients in other processes are forked children that never touch an eventfd.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers import LONG, Client, IntClient, IntServer, Server, reverse
from procs import children, fork_call

import reqrep
from reqrep.aio import AsyncClient, serve

pytestmark = pytest.mark.timeout(120, method="thread")

T = TypeVar("T")

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - depends on the environment
    uvloop = None

LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")
    ),
]
VARIANTS = ["str", "int"]
WATCHDOG = 60.0  # seconds for one asyncio test body


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind, under a
    watchdog."""
    kind = request.param

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        guarded = asyncio.wait_for(coro, WATCHDOG)
        if kind == "uvloop":
            assert uvloop is not None
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            try:
                return loop.run_until_complete(guarded)
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
        return asyncio.run(guarded)

    return runner


def new_server(variant: str, path: Path | None, **geometry: Any) -> Any:
    if variant == "str":
        return Server(path, **geometry)
    geometry.pop("resp_size", None)
    return IntServer(path, **geometry)


def open_client(variant: str, path: Path) -> Any:
    return Client(path) if variant == "str" else IntClient(path)


def payload(variant: str, i: int) -> Any:
    if variant == "int":
        return i * 7919 - 10**9
    return f"req-{i}-é" if i % 2 else b"req-%d" % i


def sync_worker(variant: str, path: Path, n: int, delay: float = 0.0) -> int:
    """A plain worker in a child: answer n requests with reverse(data); no eventfds."""
    server = new_server(variant, path)
    for i in range(n):
        got = server.recv_wait(timeout=LONG)
        if got is None:
            raise AssertionError(f"worker: no request #{i}")
        if delay:
            time.sleep(delay)
        server.reply(got[1], reverse(got[0]))
    return n


def slots_free(obj: Any) -> int:
    return int(obj.stats()["slots_free"])


async def until(pred: Callable[[], bool], timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- AsyncClient


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("slots", [64, 256])
def test_client_200_concurrent_against_forked_worker(
    run: Any, variant: str, slots: int, tmp_path: Path
) -> None:
    """200 coroutines on one AsyncClient; the worker is another process that never
    signals an eventfd. With 64 slots most requests wait for a slot first."""
    path = tmp_path / "chan.rr"
    n = 200
    with new_server(variant, path, req_cap=256, resp_slots=slots) as server, children() as kids:
        kids.append(fork_call(lambda: sync_worker(variant, path, n)))

        async def main() -> list[Any]:
            with open_client(variant, path) as c:
                async with AsyncClient(c) as ac:
                    out = await asyncio.gather(
                        *(ac.req(payload(variant, i), timeout=LONG) for i in range(n))
                    )
                    assert ac.pending() == 0
                    assert c.pending() == 0
                return out

        out = run(main())
        assert out == [reverse(payload(variant, i)) for i in range(n)]
        assert kids[0].result() == n
        assert slots_free(server) == slots


@pytest.mark.parametrize("variant", VARIANTS)
def test_client_sequential_and_waves(run: Any, variant: str) -> None:
    """Several waves of requests, each from a fresh burst of coroutines, in one process
    (a worker thread with plain recv_wait/reply)."""
    with new_server(variant, None, resp_slots=16) as server:
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                got = server.recv_wait(timeout=0.05)
                if got is not None:
                    server.reply(got[1], reverse(got[0]))

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        try:

            async def main() -> None:
                c = server.client()
                async with AsyncClient(c) as ac:
                    for wave in range(5):
                        xs = [payload(variant, wave * 100 + i) for i in range(40)]
                        got = await asyncio.gather(*(ac.req(x, timeout=LONG) for x in xs))
                        assert got == [reverse(x) for x in xs]
                        assert await ac.req(xs[0], timeout=LONG) == reverse(xs[0])
                c.close()

            run(main())
        finally:
            stop.set()
            t.join(LONG)
        assert slots_free(server) == 16


@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_frees_slot(run: Any, variant: str) -> None:
    """Cancelling the awaiting task cancels the request: the slot is free again."""
    with new_server(variant, None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            ac = AsyncClient(c)
            task = asyncio.create_task(ac.req(payload(variant, 1)))
            await until(lambda: c.pending() == 1)
            assert slots_free(c) == 3
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert c.pending() == 0
            assert ac.pending() == 0
            assert slots_free(c) == 4
            # the request was cancelled: a worker that still takes it cannot reply
            got = server.recv()
            assert got is not None
            assert server.reply(got[1], payload(variant, 2)) is False
            await ac.aclose()

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_after_reply_arrived_drains_it(run: Any, variant: str) -> None:
    """The reply is there but not collected when the task is cancelled: cancel loses,
    the reply is drained, the slot is free."""
    with new_server(variant, None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                task = asyncio.create_task(ac.req(payload(variant, 1)))
                await until(lambda: c.pending() == 1)
                got = server.recv()
                assert got is not None
                assert server.reply(got[1], payload(variant, 3))  # no await: not collected
                assert c.stats()["slots_ready"] == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert c.pending() == 0
                st = c.stats()
                assert st["slots_ready"] == 0
                assert st["slots_free"] == 4

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_timeout_returns_none_and_frees_slot(run: Any, variant: str) -> None:
    """No worker: req(timeout) returns None after about timeout; the slot is freed and a
    late reply is refused."""
    with new_server(variant, None, resp_slots=2) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                t0 = time.monotonic()
                assert await ac.req(payload(variant, 1), timeout=0.2) is None
                took = time.monotonic() - t0
                assert 0.15 <= took < 5.0
                assert c.pending() == 0
                assert slots_free(c) == 2
                got = server.recv()
                assert got is not None
                assert server.reply(got[1], payload(variant, 2)) is False
                # timeout=0 tries once
                assert await ac.req(payload(variant, 1), timeout=0) is None
                assert slots_free(c) == 2
                with pytest.raises(ValueError):
                    await ac.req(payload(variant, 1), timeout=-1)
                with pytest.raises(ValueError):
                    await ac.req(payload(variant, 1), timeout=float("nan"))

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_timeout_while_waiting_for_a_slot(run: Any, variant: str) -> None:
    """One slot, held by a request nobody answers: a second request times out while it
    waits for a slot (never sent), then the first is cancelled too."""
    with new_server(variant, None, resp_slots=1) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                first = asyncio.create_task(ac.req(payload(variant, 1)))
                await until(lambda: c.pending() == 1)
                t0 = time.monotonic()
                assert await ac.req(payload(variant, 2), timeout=0.1) is None
                assert time.monotonic() - t0 >= 0.05
                assert server.size() == 1  # the second was never sent
                first.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await first
                assert slots_free(c) == 1

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_queue_backlog(run: Any, variant: str, tmp_path: Path) -> None:
    """A 2-cell queue and a slow worker in another process: most sends find the queue
    full and wait their turn in order; all complete."""
    path = tmp_path / "chan.rr"
    n = 60
    with new_server(variant, path, req_cap=2, resp_slots=64) as server, children() as kids:
        kids.append(fork_call(lambda: sync_worker(variant, path, n, delay=0.001)))

        async def main() -> list[Any]:
            with open_client(variant, path) as c:
                async with AsyncClient(c) as ac:
                    return await asyncio.gather(
                        *(ac.req(payload(variant, i), timeout=LONG) for i in range(n))
                    )

        assert run(main()) == [reverse(payload(variant, i)) for i in range(n)]
        assert kids[0].result() == n
        assert server.stats()["send_full"] > 0
        assert slots_free(server) == 64


def test_bad_data_raises_and_leaks_nothing(run: Any) -> None:
    with Server(None, resp_slots=2, arena=4096) as server, IntServer(None) as iserver:
        c, ic = server.client(), iserver.client()

        async def main() -> None:
            async with AsyncClient(c) as ac, AsyncClient(ic) as iac:
                with pytest.raises(TypeError):
                    await ac.req(12)  # type: ignore[arg-type]
                with pytest.raises(ValueError):
                    await ac.req(b"x" * 10000)  # larger than the arena
                with pytest.raises(OverflowError):
                    await iac.req(2**70)
                with pytest.raises(TypeError):
                    await iac.req("x")  # type: ignore[arg-type]
                assert c.pending() == 0 and ic.pending() == 0

        run(main())
        assert slots_free(server) == 2
        c.close()
        ic.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_death_raises(run: Any, variant: str, tmp_path: Path) -> None:
    """A worker in another process takes the request and dies without replying: the
    AsyncClient request raises WorkerDiedError within a bounded time and the slot is
    free again."""
    path = tmp_path / "chan.rr"
    with new_server(variant, path, resp_slots=4) as server, children() as kids:

        def taker() -> None:
            s = new_server(variant, path)
            assert s.recv_wait(timeout=LONG) is not None
            os._exit(0)  # dies holding the request

        async def main() -> None:
            with open_client(variant, path) as c:
                async with AsyncClient(c, worker_check=0.2) as ac:
                    task = asyncio.create_task(ac.req(payload(variant, 1)))
                    await until(lambda: c.pending() == 1)
                    kids.append(fork_call(taker))
                    t0 = time.monotonic()
                    with pytest.raises(reqrep.WorkerDiedError):
                        await asyncio.wait_for(task, 20)
                    assert time.monotonic() - t0 < 20
                    assert c.pending() == 0

        run(main())
        assert slots_free(server) == 4


def test_clear_wakes_pending_request(run: Any) -> None:
    """server.clear() drops the request: req returns None (like the sync API)."""
    with Server(None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c, worker_check=0.2) as ac:
                task = asyncio.create_task(ac.req(b"x"))
                await until(lambda: c.pending() == 1)
                server.clear()
                assert await asyncio.wait_for(task, 20) is None

        run(main())
        c.close()


def test_close_fails_pending_and_frees(run: Any) -> None:
    with Server(None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            ac = AsyncClient(c)
            tasks = [asyncio.create_task(ac.req(b"x%d" % i)) for i in range(6)]
            await until(lambda: c.pending() == 4)  # two wait for a slot
            helper = ac._waker.thread if ac._waker is not None else None
            await ac.aclose()
            assert ac.closed
            for t in tasks:
                with pytest.raises(ValueError):
                    await t
            assert helper is not None and not helper.is_alive()
            with pytest.raises(ValueError):
                await ac.req(b"y")
            assert c.pending() == 0
            # the client is still usable, and can be wrapped again
            async with AsyncClient(c) as ac2:
                server_task = asyncio.create_task(serve(server, lambda d: d))
                assert await ac2.req(b"again", timeout=LONG) == b"again"
                server_task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await server_task

        run(main())
        assert slots_free(server) == 4
        c.close()


def test_client_closed_under_async_client(run: Any) -> None:
    """Closing the wrapped client while a request waits fails it (ValueError), promptly."""
    with Server(None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            ac = AsyncClient(c)
            task = asyncio.create_task(ac.req(b"x"))
            await until(lambda: c.pending() == 1)
            c.close()
            with pytest.raises(ValueError):
                await asyncio.wait_for(task, 10)
            await until(lambda: ac.closed, 10)
            with pytest.raises(ValueError):
                await ac.req(b"y")

        run(main())
        assert slots_free(server) == 4


def test_one_async_client_per_client_and_per_loop(run: Any) -> None:
    with Server(None) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                task = asyncio.create_task(serve(server, lambda d: d))
                assert await ac.req(b"a", timeout=LONG) == b"a"
                with pytest.raises(RuntimeError):
                    await AsyncClient(c).req(b"b")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return None

        run(main())
        with pytest.raises(TypeError):
            AsyncClient(server)  # type: ignore[type-var]
        c.close()


def _echo_thread(server: Any, stop: threading.Event) -> threading.Thread:
    """A plain worker thread answering with the request itself until `stop`."""

    def work() -> None:
        while not stop.is_set():
            got = server.recv_wait(timeout=0.05)
            if got is not None:
                server.reply(got[1], got[0])

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


def _helpers_alive() -> int:
    return sum(t.name == "reqrep-aio-client" and t.is_alive() for t in threading.enumerate())


def test_client_refuses_another_open_loop_before_sending() -> None:
    """Issue 10 #11: a request from a second loop while the first is open raises
    RuntimeError, and nothing is sent (no request queued, no slot taken)."""
    with Server(None, resp_slots=4) as server:
        c = server.client()
        ac = AsyncClient(c)
        first = asyncio.new_event_loop()
        try:
            stop = threading.Event()
            worker = _echo_thread(server, stop)
            assert first.run_until_complete(ac.req(b"a", timeout=LONG)) == b"a"
            stop.set()
            worker.join(LONG)

            async def second() -> None:
                with pytest.raises(RuntimeError, match="another event loop"):
                    await ac.req(b"b", timeout=LONG)

            asyncio.run(asyncio.wait_for(second(), WATCHDOG))
            assert server.size() == 0 and c.pending() == 0 and slots_free(server) == 4
            assert ac.pending() == 0 and not ac.closed
            first.run_until_complete(ac.aclose())
        finally:
            first.close()
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_client_moves_to_a_new_loop_once_the_old_one_is_closed(run: Any, variant: str) -> None:
    """Issue 10 #11: one AsyncClient through more asyncio.run calls than the channel has
    slots; each request gets its reply and no slot is left behind."""
    with new_server(variant, None, resp_slots=4) as server:
        c = server.client()
        ac = AsyncClient(c)
        stop = threading.Event()
        worker = _echo_thread(server, stop)
        try:
            for i in range(8):
                want = payload(variant, i)
                assert run(ac.req(want, timeout=LONG)) == want
                assert slots_free(server) == 4 and c.pending() == 0
        finally:
            stop.set()
            worker.join(LONG)
        run(ac.aclose())
        assert ac.closed and slots_free(server) == 4
        deadline = time.monotonic() + LONG
        while _helpers_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _helpers_alive() == 0  # each loop's helper thread ended
        c.close()


def test_client_moving_cancels_what_the_closed_loop_left(run: Any) -> None:
    """A loop closed with a request still in flight (its task never finished): moving to
    the next loop cancels that request in the channel and frees its slot."""
    with Server(None, resp_slots=2) as server:
        c = server.client()
        ac = AsyncClient(c)
        first = asyncio.new_event_loop()
        task = first.create_task(ac.req(b"left behind"))
        first.run_until_complete(asyncio.sleep(0.05))
        assert c.pending() == 1 and slots_free(server) == 1
        first.close()  # the task stays pending for ever
        stop = threading.Event()
        worker = _echo_thread(server, stop)
        try:
            assert run(ac.req(b"next", timeout=LONG)) == b"next"
        finally:
            stop.set()
            worker.join(LONG)
        assert c.pending() == 0 and slots_free(server) == 2
        assert not task.done()
        run(ac.aclose())
        c.close()


def test_rewrap_after_loop_ended_without_close() -> None:
    """An AsyncClient left open when its loop ended does not lock its client out."""
    with Server(None, resp_slots=4) as server:
        c = server.client()
        ac = AsyncClient(c)

        async def first() -> None:
            t = asyncio.create_task(serve(server, lambda d: d))
            assert await ac.req(b"a", timeout=LONG) == b"a"
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

        async def second() -> None:
            t = asyncio.create_task(serve(server, lambda d: d))
            async with AsyncClient(c) as ac2:
                assert await ac2.req(b"b", timeout=LONG) == b"b"
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)

        asyncio.run(first())  # ac never closed
        asyncio.run(second())
        assert ac.closed
        assert slots_free(server) == 4
        c.close()


def test_clients_sharing_an_eventfd_in_two_threads() -> None:
    """Two server.client() clones share the server's reply eventfd (one kernel object).
    Each is used by an AsyncClient in its own thread's loop: a wake-up consumed by the
    other loop must not strand a reply."""
    with Server(None, resp_slots=64) as server:
        server.reply_eventfd()
        clients = [server.client(), server.client()]
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                for data, rid in server.recv_wait_multi(16, timeout=0.05):
                    server.reply(rid, data[::-1])

        def user(c: Any) -> list[Any]:
            async def main() -> list[Any]:
                async with AsyncClient(c) as ac:
                    out: list[Any] = []
                    for wave in range(20):
                        out += await asyncio.gather(
                            *(ac.req(b"%d-%d" % (wave, i), timeout=LONG) for i in range(16))
                        )
                    return out

            return asyncio.run(asyncio.wait_for(main(), WATCHDOG))

        w = threading.Thread(target=worker, daemon=True)
        w.start()
        results: list[list[Any]] = [[], []]
        threads = [
            threading.Thread(target=lambda k=k: results.__setitem__(k, user(clients[k])))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WATCHDOG + 5)
            assert not t.is_alive()
        stop.set()
        w.join(LONG)
        want = [(b"%d-%d" % (wave, i))[::-1] for wave in range(20) for i in range(16)]
        assert results == [want, want]
        for c in clients:
            c.close()


def test_idle_waits_do_not_spin(run: Any) -> None:
    """A request waiting in an AsyncClient and an idle serve() burn (almost) no CPU."""
    with Server(None) as server, Server(None) as other:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                task = asyncio.create_task(ac.req(b"x"))
                svc = asyncio.create_task(serve(other, lambda d: d))
                await until(lambda: c.pending() == 1)
                await asyncio.sleep(0.2)
                cpu0, t0 = time.process_time(), time.monotonic()
                await asyncio.sleep(1.0)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
                assert cpu < 0.25 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s idle"
                task.cancel()
                svc.cancel()
                await asyncio.gather(task, svc, return_exceptions=True)

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_process_fast_path(run: Any, variant: str) -> None:
    """serve() and an AsyncClient in one loop, the client sharing the server's eventfds
    (server.client() after server.eventfd()/reply_eventfd())."""
    with new_server(variant, None, resp_slots=32) as server:
        server.eventfd()
        server.reply_eventfd()
        c = server.client()
        assert c.fileno() >= 0 and c.req_fileno() >= 0

        async def main() -> None:
            svc = asyncio.create_task(serve(server, reverse))
            async with AsyncClient(c) as ac:
                xs = [payload(variant, i) for i in range(300)]
                got = await asyncio.gather(*(ac.req(x, timeout=LONG) for x in xs))
                assert got == [reverse(x) for x in xs]
            svc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await svc

        run(main())
        assert slots_free(server) == 32
        c.close()


# --------------------------------------------------------------------------- serve


def make_handler(variant: str, kind: str) -> Callable[[Any], Any]:
    if kind == "sync":
        return reverse

    async def handler(data: Any) -> Any:
        await asyncio.sleep(0)
        return reverse(data)

    return handler


def sync_client_proc(variant: str, path: Path, n: int, burst: int) -> list[Any]:
    """A plain client in a child: n requests, `burst` at a time with send/get_wait, then
    some with req(); it never calls notify()."""
    c = open_client(variant, path)
    out: list[Any] = []
    i = 0
    while i < n:
        ids = [c.send_wait(payload(variant, j), timeout=LONG) for j in range(i, min(n, i + burst))]
        out += [c.get_wait(rid, timeout=LONG) for rid in ids]
        i += burst
    out += [c.req(payload(variant, j), timeout=LONG) for j in range(5)]
    c.close()
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_serve_answers_sync_client_in_other_process(
    run: Any, variant: str, kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "chan.rr"
    n = 300
    with new_server(variant, path, req_cap=64, resp_slots=64) as server, children() as kids:

        async def main() -> list[Any]:
            svc = asyncio.create_task(serve(server, make_handler(variant, kind), concurrency=16))
            kid = fork_call(lambda: sync_client_proc(variant, path, n, burst=32))
            kids.append(kid)
            out: list[Any] = await asyncio.to_thread(kid.result)
            svc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await svc
            return out

        out = run(main())
        want = [reverse(payload(variant, j)) for j in range(n)]
        want += [reverse(payload(variant, j)) for j in range(5)]
        assert out == want
        st = server.stats()
        assert st["replies"] == n + 5
        assert st["slots_free"] == 64


def test_serve_concurrency_bound(run: Any) -> None:
    with Server(None, resp_slots=64) as server:
        c = server.client()
        running = 0
        peak = 0

        async def handler(data: bytes) -> bytes:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            return data.upper()

        async def main() -> None:
            ids = [c.send(b"r%d" % i) for i in range(40)]
            svc = asyncio.create_task(serve(server, handler, concurrency=5))
            await until(lambda: server.stats()["slots_ready"] == 40)
            assert [c.get(rid) for rid in ids if rid is not None] == [b"R%d" % i for i in range(40)]
            svc.cancel()
            await asyncio.gather(svc, return_exceptions=True)

        run(main())
        assert peak == 5
        c.close()


def test_serve_handler_returning_awaitable(run: Any) -> None:
    """A plain function that returns an awaitable is awaited too."""
    with Server(None) as server:
        c = server.client()

        def handler(data: bytes) -> Awaitable[bytes]:
            async def later() -> bytes:
                await asyncio.sleep(0.001)
                return data * 2

            return later()

        async def main() -> None:
            svc = asyncio.create_task(serve(server, handler))
            async with AsyncClient(c) as ac:
                assert await ac.req(b"ab", timeout=LONG) == b"abab"
            svc.cancel()
            await asyncio.gather(svc, return_exceptions=True)

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_clean_stop_leaves_nothing_taken_unanswered(
    run: Any, variant: str, tmp_path: Path
) -> None:
    """Cancelling serve() while async handlers run: it stops taking, lets them reply,
    and returns; the rest stays queued for the next worker, which answers all."""
    path = tmp_path / "chan.rr"
    n = 20
    with new_server(variant, path, resp_slots=32) as server:
        c = open_client(variant, path)
        started = 0

        async def slow(data: Any) -> Any:
            nonlocal started
            started += 1
            await asyncio.sleep(0.2)
            return reverse(data)

        async def main() -> list[Any]:
            nonlocal started
            ids = [c.send(payload(variant, i)) for i in range(n)]
            svc = asyncio.create_task(serve(server, slow, concurrency=4))
            await until(lambda: started == 4)
            svc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await svc
            st = server.stats()
            assert 4 <= started < n  # (more than 4 only on a very slow machine)
            assert st["replies"] == started  # every request taken got its reply
            assert server.size() == n - started
            assert st["slots_acquired"] - server.size() == 0  # nothing taken unanswered
            assert st["slots_ready"] == started
            # a second worker finishes the job
            started = 0
            svc2 = asyncio.create_task(serve(server, slow, concurrency=8))
            await until(lambda: server.stats()["slots_ready"] == n)
            svc2.cancel()
            await asyncio.gather(svc2, return_exceptions=True)
            return [c.get(rid) for rid in ids]

        assert run(main()) == [reverse(payload(variant, i)) for i in range(n)]
        assert server.stats()["slots_free"] == 32
        c.close()


def test_serve_stop_event_returns(run: Any) -> None:
    with Server(None) as server:
        c = server.client()

        async def main() -> None:
            stop = asyncio.Event()
            svc = asyncio.create_task(serve(server, lambda d: d + b"!", stop=stop))
            async with AsyncClient(c) as ac:
                assert await ac.req(b"x", timeout=LONG) == b"x!"
            stop.set()
            await asyncio.wait_for(svc, LONG)  # returns, no CancelledError
            assert svc.done() and not svc.cancelled()

        run(main())
        c.close()


def test_serve_drain_timeout_cancels_handlers_through_on_error(run: Any) -> None:
    """drain_timeout: handlers still running are cancelled; on_error sees the
    CancelledError and its value is sent as the reply."""
    with Server(None) as server:
        c = server.client()
        seen: list[type[BaseException]] = []

        async def forever(data: bytes) -> bytes:
            await asyncio.sleep(3600)
            return data

        def on_error(exc: BaseException, data: Any, rid: int) -> bytes:
            seen.append(type(exc))
            return b"shutting down"

        async def main() -> None:
            ids = [c.send(b"a"), c.send(b"b")]
            svc = asyncio.create_task(serve(server, forever, on_error=on_error, drain_timeout=0.1))
            await until(lambda: server.size() == 0)
            svc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await svc
            assert [c.get(rid) for rid in ids if rid is not None] == [b"shutting down"] * 2

        run(main())
        assert seen == [asyncio.CancelledError] * 2
        c.close()


def test_serve_handler_errors(run: Any) -> None:
    """Without on_error (SPEC §7): the error is the reply (the client raises RemoteError),
    serving goes on. With on_error: its value is the reply (also for a reply refused by
    the channel); None sends nothing."""
    with Server(None, resp_size=64) as server:
        c = server.client()

        def handler(data: bytes) -> bytes:
            if data == b"boom":
                raise KeyError("boom")
            if data == b"big":
                return b"x" * 1000  # larger than resp_size: refused
            return data

        async def main() -> None:
            async with AsyncClient(c) as ac:
                svc = asyncio.create_task(serve(server, handler))
                with pytest.raises(reqrep.RemoteError) as info:
                    await ac.req(b"boom", timeout=LONG)
                assert info.value.type_name == "KeyError"
                with pytest.raises(reqrep.RemoteError, match="ValueError"):
                    await ac.req(b"big", timeout=LONG)  # the refused reply's error
                assert await ac.req(b"ok", timeout=LONG) == b"ok"
                svc.cancel()
                await asyncio.gather(svc, return_exceptions=True)

                errors: list[str] = []

                def on_error(exc: BaseException, data: Any, rid: int) -> bytes | None:
                    errors.append(type(exc).__name__)
                    return None if data == b"big" else b"error: " + repr(exc).encode()

                svc = asyncio.create_task(serve(server, handler, on_error=on_error))
                assert await ac.req(b"boom", timeout=LONG) == b"error: KeyError('boom')"
                assert await ac.req(b"big", timeout=0.3) is None
                assert errors == ["KeyError", "ValueError"]
                svc.cancel()
                await asyncio.gather(svc, return_exceptions=True)

        run(main())
        assert slots_free(server) == server.resp_slots
        c.close()


def test_serve_async_on_error(run: Any) -> None:
    with Server(None) as server:
        c = server.client()

        def handler(data: bytes) -> bytes:
            raise ValueError(data.decode())

        async def on_error(exc: BaseException, data: Any, rid: int) -> bytes:
            await asyncio.sleep(0.001)
            return b"E:" + str(exc).encode()

        async def main() -> None:
            svc = asyncio.create_task(serve(server, handler, on_error=on_error))
            async with AsyncClient(c) as ac:
                got = await asyncio.gather(*(ac.req(b"m%d" % i, timeout=LONG) for i in range(20)))
                assert got == [b"E:m%d" % i for i in range(20)]
            svc.cancel()
            await asyncio.gather(svc, return_exceptions=True)

        run(main())
        c.close()


def test_serve_on_error_raising_stops_serve(run: Any) -> None:
    with Server(None) as server:
        c = server.client()

        async def bad(data: bytes) -> bytes:
            raise RuntimeError("handler")

        def on_error(exc: BaseException, data: Any, rid: int) -> None:
            raise SystemError("give up")

        async def main() -> None:
            c.send(b"x")
            with pytest.raises(SystemError, match="give up"):
                await asyncio.wait_for(serve(server, bad, on_error=on_error), LONG)
            assert server.stats()["slots_acquired"] == 1  # the failed one, unanswered

        run(main())
        c.close()


def test_serve_rejects_bad_arguments(run: Any) -> None:
    with Server(None) as server:

        async def main() -> None:
            with pytest.raises(ValueError):
                await serve(server, lambda d: d, concurrency=0)
            with pytest.raises(TypeError):
                await serve(server.client(), lambda d: d)  # type: ignore[call-overload]
            with pytest.raises(ValueError):
                await serve(server, lambda d: d, drain_timeout=-1)

        run(main())


# --------------------------------------------------------------------------- the example


def test_asyncio_service_example() -> None:
    script = Path(__file__).resolve().parent.parent / "examples" / "asyncio_service.py"
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert "all answers correct" in res.stdout


def test_idle_helpers_are_woken_to_stop(run: Any) -> None:
    """Idle helper threads sleep without a poll (5 s at most) and are woken to stop:
    close() rings the client's bell, stopping serve() wakes the receivers."""
    with Server(None) as server:
        c = server.client()

        async def main() -> None:
            ac = AsyncClient(c, worker_check=None)
            stop = asyncio.Event()
            serving = asyncio.create_task(serve(server, lambda d: d, stop=stop))
            assert await ac.req(b"ping") == b"ping"
            await asyncio.sleep(0.3)  # both helpers are asleep by now
            before = {t.name for t in threading.enumerate()}
            assert {"reqrep-aio-client", "reqrep-aio-serve"} <= before
            t0 = time.monotonic()
            await ac.aclose()
            stop.set()
            await asyncio.wait_for(serving, LONG)
            took = time.monotonic() - t0
            assert took < 2.5, f"helpers took {took:.2f} s to stop"
            after = {t.name for t in threading.enumerate()}
            assert not after & {"reqrep-aio-client", "reqrep-aio-serve"}

        run(main())
        c.close()


# --------------------------------------------------------------------------- futures


@pytest.mark.parametrize("variant", VARIANTS)
def test_submit_returns_a_future_of_the_reply(run: Any, variant: str) -> None:
    """submit(): a future, resolved by the reply; cancelling it cancels the request."""
    with new_server(variant, None, resp_slots=4) as server:
        c = server.client()

        async def main() -> None:
            async with AsyncClient(c) as ac:
                fut = ac.submit(payload(variant, 3), timeout=LONG)
                assert isinstance(fut, asyncio.Future) and not fut.done()
                got = await asyncio.to_thread(server.recv_wait, LONG)
                assert got is not None
                server.reply(got[1], reverse(got[0]))
                assert await fut == reverse(payload(variant, 3))
                # a cancelled future's request is cancelled: its slot comes back
                fut = ac.submit(payload(variant, 4))
                await until(lambda: c.pending() == 1)
                fut.cancel()
                await asyncio.sleep(0)
                assert c.pending() == 0 and slots_free(c) == 4
                # a timeout resolves it with None
                assert await ac.submit(payload(variant, 5), timeout=0.05) is None
                with pytest.raises((TypeError, ValueError, OverflowError)):
                    ac.submit(object())
                assert ac.pending() == 0

        run(main())
        c.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_takes_futures_from_a_handler(run: Any, variant: str) -> None:
    """A plain handler may return a future: its result is the reply, its exception the
    error reply; at a stop, serve waits for the futures in flight."""
    with new_server(variant, None) as server:
        c = server.client()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            futures: list[asyncio.Future[Any]] = []

            def handler(data: Any) -> asyncio.Future[Any]:
                fut = loop.create_future()
                futures.append(fut)
                return fut

            stop = asyncio.Event()
            worker = asyncio.create_task(serve(server, handler, stop=stop))
            async with AsyncClient(c) as ac:
                first = asyncio.create_task(ac.req(payload(variant, 1), timeout=LONG))
                second = asyncio.create_task(ac.req(payload(variant, 2), timeout=LONG))
                third = asyncio.create_task(ac.req(payload(variant, 3), timeout=LONG))
                await until(lambda: len(futures) == 3)
                futures[0].set_result(payload(variant, 10))
                futures[1].set_exception(LookupError("not there"))
                assert await first == payload(variant, 10)
                with pytest.raises(reqrep.RemoteError) as info:
                    await second
                assert info.value.type_name == "LookupError"
                stop.set()
                await asyncio.sleep(0.05)
                assert not worker.done()  # it waits for the future in flight
                futures[2].set_result(payload(variant, 30))
                assert await third == payload(variant, 30)
                await asyncio.wait_for(worker, LONG)

        run(main())
        c.close()


def test_an_error_reply_that_meets_its_deadline_is_raised(run: Any) -> None:
    """The error reply and the deadline in one loop iteration: the deadline's cancel
    finds the reply there, and the request raises it (it used to hang for ever)."""
    with Server(None) as server:
        c = server.client()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            async with AsyncClient(c) as ac:
                t0 = loop.time()
                fut = ac.submit(b"x", timeout=0.2)
                got = server.recv()
                assert got is not None
                loop.call_at(t0 + 0.19, lambda: server.reply_error(got[1], LookupError("boom")))
                loop.call_at(t0 + 0.1, lambda: time.sleep(0.2))  # both due in one iteration
                with pytest.raises(reqrep.RemoteError) as info:
                    await asyncio.wait_for(fut, LONG)
                assert info.value.type_name == "LookupError"
                assert slots_free(c) == server.resp_slots

        run(main())
        c.close()


def test_serve_stop_answers_a_future_that_fails_with_an_async_on_error(run: Any) -> None:
    """A handler's future fails while serve stops, and on_error is async: its answer
    is still sent (the task it needs came after stop began waiting)."""
    with Server(None) as server:
        c = server.client()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            futures: list[asyncio.Future[Any]] = []

            def handler(data: Any) -> asyncio.Future[Any]:
                futures.append(loop.create_future())
                return futures[-1]

            async def on_error(exc: BaseException, data: Any, rid: int) -> bytes:
                await asyncio.sleep(0)
                return b"handled: " + str(exc).encode()

            stop = asyncio.Event()
            worker = asyncio.create_task(serve(server, handler, on_error=on_error, stop=stop))
            async with AsyncClient(c) as ac:
                reply = ac.submit(b"x")
                await until(lambda: len(futures) == 1)
                stop.set()
                await asyncio.sleep(0.05)
                futures[0].set_exception(LookupError("boom"))
                await asyncio.wait_for(worker, LONG)
                assert await asyncio.wait_for(reply, LONG) == b"handled: boom"

        run(main())
        c.close()
