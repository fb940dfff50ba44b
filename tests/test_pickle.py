"""Channel objects travel to other processes by pickling (multiprocessing).

A file-backed channel re-opens by path, a memfd channel travels as a file descriptor
(multiprocessing's own fd passing), an anonymous channel refuses with a helpful
``pickle.PicklingError``. Covered under the fork, forkserver and spawn start methods, with
worker pools (``concurrent.futures.ProcessPoolExecutor``) and plain ``Process`` objects.

Every wait is bounded: workers give up after LONG seconds without a request, futures and
joins have timeouts, and pools are torn down (stragglers killed) whatever happens.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
import threading
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    JOIN,
    LONG,
    Client,
    IntClient,
    IntServer,
    Server,
    ThreadCall,
    echo_worker,
    make_server,
    open_client,
    reverse,
)

import reqrep

pytestmark = pytest.mark.timeout(180, method="thread")

METHODS = ("fork", "forkserver", "spawn")
STR_STOP = b"\x00stop"
INT_STOP = -(2**63)
N_REQUESTS = 40


# --------------------------------------------------------------------------- workers
# (module level so that spawn and forkserver children can import them)


def serve_until_stop(server: Any) -> tuple[int, int]:
    """Answer requests with reverse(request) until the stop request; returns
    (pid, requests answered). Runs in a pool worker that received `server` pickled."""
    stop = INT_STOP if isinstance(server, reqrep.IntServer) else STR_STOP
    answered = 0
    try:
        while True:
            got = server.recv_wait(timeout=LONG)
            if got is None:
                raise AssertionError(f"no request for {LONG} s")
            data, rid = got
            if data == stop:
                assert server.reply(rid, stop)
                return os.getpid(), answered
            assert server.reply(rid, reverse(data))
            answered += 1
    finally:
        server.close()


def ask(client: Any, values: list[Any]) -> tuple[int, list[Any]]:
    """Send every value with req(); returns (pid, answers). `client` arrived pickled."""
    try:
        answers = [client.req(v, timeout=LONG) for v in values]
        assert client.pending() == 0
        return os.getpid(), answers
    finally:
        client.close()


def describe(obj: Any) -> tuple[str, str | None, bool, int, int]:
    """What a pickled object looks like on arrival."""
    return type(obj).__name__, obj.path, obj.memfd >= 0, obj.capacity, obj.resp_slots


def process_main(client: Any, values: list[Any]) -> None:
    """Target of a plain Process: exit code 0 only if every answer is right."""
    _, answers = ask(client, values)
    if answers != [reverse(v) for v in values]:
        raise SystemExit(3)


# --------------------------------------------------------------------------- helpers


def values_for(variant: str, base: int, n: int) -> list[Any]:
    if variant == "int":
        return [base * 1000 + i - 500 for i in range(n)]
    return [f"{base}:{i}é" if i % 2 else b"%d:%d" % (base, i) for i in range(n)]


def new_server(variant: str, backing: str, tmp_path: Path) -> Any:
    geometry = {"resp_size": 256} if variant == "str" else {}
    return make_server(variant, backing, tmp_path / f"{variant}.chan", req_cap=64,
                       resp_slots=16, **geometry)


def new_client(server: Any) -> Any:
    """A client object of the kind that pickles like its server's channel."""
    return open_client(server, "file" if server.path is not None else "memfd")


@contextlib.contextmanager
def bounded_pool(
    ctx: BaseContext, workers: int
) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    """A process pool that never outlives the test: on the way out, wait a bounded time
    for the workers, then kill what is left."""
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        yield pool
    finally:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(JOIN)
            if p.is_alive():
                p.kill()
                p.join(JOIN)


def serve_in_thread(server: Any) -> tuple[threading.Event, ThreadCall]:
    stop = threading.Event()
    return stop, ThreadCall(echo_worker, server, stop, reverse)


# --------------------------------------------------------------------------- pools


@pytest.mark.parametrize("variant", ["str", "int"])
@pytest.mark.parametrize("backing", ["file", "memfd"])
@pytest.mark.parametrize("method", METHODS)
def test_worker_pool(method: str, backing: str, variant: str, tmp_path: Path) -> None:
    """Servers and clients handed to pool workers work end to end, both ways."""
    ctx = multiprocessing.get_context(method)
    server = new_server(variant, backing, tmp_path)
    client = new_client(server)
    stop = INT_STOP if variant == "int" else STR_STOP
    try:
        with bounded_pool(ctx, 2) as pool:
            # What arrives is a channel object of the same class and geometry.
            arrived = pool.submit(describe, server).result(timeout=LONG)
            assert arrived == (type(server).__name__, server.path, backing == "memfd",
                               server.capacity, server.resp_slots)
            assert pool.submit(describe, client).result(timeout=LONG)[0] == type(client).__name__

            # 1. The pool serves: each worker got the Server pickled.
            servers = [pool.submit(serve_until_stop, server) for _ in range(2)]
            values = values_for(variant, 1, N_REQUESTS)
            for v in values:
                assert client.req(v, timeout=LONG) == reverse(v)
            for _ in servers:
                assert client.req(stop, timeout=LONG) == stop
            results = [f.result(timeout=LONG) for f in servers]
            assert sum(n for _, n in results) == N_REQUESTS
            assert all(pid != os.getpid() for pid, _ in results)

            # 2. The pool asks: each worker got the Client pickled; this process serves.
            halt, worker = serve_in_thread(server)
            try:
                batches = [values_for(variant, k + 2, N_REQUESTS // 2) for k in range(2)]
                asks = [pool.submit(ask, client, batch) for batch in batches]
                for batch, fut in zip(batches, asks, strict=True):
                    pid, answers = fut.result(timeout=LONG)
                    assert pid != os.getpid()
                    assert answers == [reverse(v) for v in batch]
            finally:
                halt.set()
                assert worker.join() == N_REQUESTS
        stats = server.stats()
        assert stats["slots_free"] == stats["resp_slots"]  # nothing leaked in the pool
        assert server.size() == 0
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("backing", ["file", "memfd"])
@pytest.mark.parametrize("method", METHODS)
def test_process_argument(method: str, backing: str, tmp_path: Path) -> None:
    """A Client passed to Process(args=...) (pickled at start() under spawn and
    forkserver, inherited under fork) reaches the channel."""
    ctx = multiprocessing.get_context(method)
    server = new_server("str", backing, tmp_path)
    client = new_client(server)
    halt, worker = serve_in_thread(server)
    values = values_for("str", 7, 10)
    try:
        proc = ctx.Process(target=process_main, args=(client, values))
        proc.start()
        proc.join(LONG)
        if proc.is_alive():
            proc.kill()
            proc.join(JOIN)
            raise AssertionError(f"{method} child did not finish in {LONG} s")
        assert proc.exitcode == 0
    finally:
        halt.set()
        worker.join()
        client.close()
        server.close()


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("cls", [Server, IntServer])
def test_roundtrip_in_process(cls: Any, tmp_path: Path) -> None:
    """pickle.loads(pickle.dumps(obj)) gives an independent object on the same channel."""
    for server in (cls(tmp_path / "rt.chan", req_cap=8, resp_slots=4),
                   cls.new_memfd("rt", req_cap=8, resp_slots=4)):
        with server, server.client() as client:
            value: Any = 5 if cls is IntServer else b"five"
            copies = [pickle.loads(pickle.dumps(obj)) for obj in (server, client)]
            with copies[0] as server2, copies[1] as client2:
                assert type(server2) is type(server) and type(client2) is type(client)
                assert server2.path == server.path
                assert (server2.memfd >= 0) == (server.memfd >= 0)
                if server.memfd >= 0:
                    assert server2.memfd != server.memfd  # its own descriptor
                rid = client2.send(value)
                got = server2.recv()
                assert got is not None and got == (value, rid)
                assert server.reply(rid, value)
                assert client2.get(rid) == value
            assert not server.closed and not client.closed  # the copies close alone


def test_spin_and_pending_are_not_carried(tmp_path: Path) -> None:
    with Server(tmp_path / "c.chan", spin=0) as server, server.client() as client:
        rid = client.send(b"x")
        assert rid is not None and client.pending() == 1
        with pickle.loads(pickle.dumps(client)) as copy:
            assert copy.pending() == 0  # pending requests stay with the original
            assert copy.spin == 50 and server.spin == 0  # the copy has the default budget


ANON = [
    ("Server", lambda: Server(None)),
    ("IntServer", lambda: IntServer(None)),
    ("Client", lambda: Server(None).client()),
    ("IntClient", lambda: IntServer(None).client()),
]


@pytest.mark.parametrize("name,make", ANON, ids=[n for n, _ in ANON])
def test_anonymous_refuses(name: str, make: Any) -> None:
    obj = make()
    try:
        with pytest.raises(pickle.PicklingError) as info:
            pickle.dumps(obj)
        msg = str(info.value)
        assert name in msg and "anonymous" in msg
        assert "fork" in msg and "new_memfd" in msg  # says what to do instead
    finally:
        obj.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_anonymous_to_spawned_process_refuses(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with Server(None) as server:
        proc = ctx.Process(target=describe, args=(server,))
        with pytest.raises(pickle.PicklingError):
            proc.start()
        if proc.pid is not None:  # started before pickling failed: reap it
            proc.join(JOIN)
            if proc.is_alive():
                proc.kill()
                proc.join(JOIN)


def test_anonymous_inherited_by_fork_process() -> None:
    """What the error message recommends: under fork, Process(args=...) is not pickled."""
    ctx = multiprocessing.get_context("fork")
    with Server(None, req_cap=8, resp_slots=4) as server:
        halt, worker = serve_in_thread(server)
        try:
            proc = ctx.Process(target=process_main, args=(server.client(), [b"ab", "cd"]))
            proc.start()
            proc.join(LONG)
            if proc.is_alive():
                proc.kill()
                proc.join(JOIN)
            assert proc.exitcode == 0
        finally:
            halt.set()
            worker.join()


def test_closed_object_refuses(tmp_path: Path) -> None:
    server = Server(tmp_path / "closed.chan")
    server.close()
    with pytest.raises(ValueError):
        pickle.dumps(server)


@pytest.mark.parametrize("cls", [Server, Client, IntServer, IntClient])
def test_removed_file_is_not_recreated(cls: Any, tmp_path: Path) -> None:
    """A pickled file channel whose file is gone raises FileNotFoundError on arrival; it
    never creates a new, empty channel that nobody else would see."""
    path = tmp_path / "gone.chan"
    scls = IntServer if cls in (IntServer, IntClient) else Server
    with scls(path, req_cap=8, resp_slots=4) as server:
        obj = server if cls is scls else cls(path)
        blob = pickle.dumps(obj)
        server.unlink()
        with pytest.raises(FileNotFoundError):
            pickle.loads(blob)
        assert not path.exists()
        # A file put back in its place that is not that channel is refused too.
        path.write_bytes(bytes(8192))
        with pytest.raises(reqrep.ChannelFormatError):
            pickle.loads(blob)
        assert path.read_bytes() == bytes(8192)  # not initialised by the unpickling
        if obj is not server:
            obj.close()


def test_removed_file_in_pool_worker(tmp_path: Path) -> None:
    """The same in a spawned process: the error comes back to the parent."""
    path = tmp_path / "gone2.chan"
    ctx = multiprocessing.get_context("spawn")
    with Server(path) as server:
        blob = pickle.dumps(server.client())
        server.unlink()
        with bounded_pool(ctx, 1) as pool:
            fut = pool.submit(pickle.loads, blob)
            with pytest.raises(FileNotFoundError):
                fut.result(timeout=LONG)
        assert not path.exists()
