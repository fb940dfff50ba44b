"""Cross-process round trips over file-backed, anonymous and memfd channels."""

from __future__ import annotations

import mmap
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    KINDS,
    LONG,
    Server,
    client_class,
    make_server,
    open_client,
    open_server,
    reverse,
    server_class,
)
from procs import children, fork_call

ROUNDS = 2000
pytestmark = pytest.mark.timeout(120, method="thread")


def _payload(variant: str, i: int) -> Any:
    if variant == "int":
        return i * 7919 - 10**12 if i % 2 else -(i * 104729)
    if i % 3 == 0:
        return f"{i}:é✓" + "s" * (i % 61)
    if i % 3 == 1:
        return b"%d:" % i + bytes(range(i % 200))
    return bytearray(b"ba%d" % i)


def _expected(variant: str, i: int) -> Any:
    p = _payload(variant, i)
    return reverse(bytes(p) if isinstance(p, bytearray) else p)


def _new(variant: str, kind: str, tmp_path: Path) -> Any:
    geometry = {"resp_size": 512} if variant == "str" else {}
    return make_server(variant, kind, tmp_path / "chan.rr", req_cap=64, resp_slots=8, **geometry)


def _serve(server: Any, n: int) -> int:
    """Answer n requests with reverse(request); returns the number answered."""
    for i in range(n):
        got = server.recv_wait(timeout=LONG)
        if got is None:
            raise AssertionError(f"worker timed out waiting for request #{i}")
        data, rid = got
        if not server.reply(rid, reverse(data)):
            raise AssertionError(f"reply #{i} refused")
    return n


def _ask(client: Any, variant: str, n: int) -> list[str]:
    """Send n requests with req(); returns a list of mismatches (empty when all good)."""
    bad: list[str] = []
    for i in range(n):
        got = client.req(_payload(variant, i), timeout=LONG)
        want = _expected(variant, i)
        if got != want or type(got) is not type(want):
            bad.append(f"#{i}: got {got!r}, want {want!r}")
            if len(bad) > 5:
                break
    return bad


@pytest.mark.parametrize("variant", ["str", "int"])
@pytest.mark.parametrize("kind", KINDS)
def test_worker_in_child(variant: str, kind: str, tmp_path: Path) -> None:
    with _new(variant, kind, tmp_path) as server, children() as kids:

        def worker() -> int:
            return _serve(open_server(server, kind), ROUNDS)

        kids.append(fork_call(worker))
        with open_client(server, kind) as client:
            assert _ask(client, variant, ROUNDS) == []
            assert client.pending() == 0
        assert kids[0].result() == ROUNDS
        st = server.stats()
        assert st["size"] == 0 and st["slots_free"] == 8
        assert st["replies"] >= ROUNDS


@pytest.mark.parametrize("variant", ["str", "int"])
@pytest.mark.parametrize("kind", KINDS)
def test_client_in_child(variant: str, kind: str, tmp_path: Path) -> None:
    with _new(variant, kind, tmp_path) as server, children() as kids:

        def client_proc() -> list[str]:
            with open_client(server, kind) as c:
                return _ask(c, variant, ROUNDS)

        kids.append(fork_call(client_proc))
        assert _serve(server, ROUNDS) == ROUNDS
        assert kids[0].result() == []
        assert server.stats()["slots_free"] == 8


@pytest.mark.parametrize("variant", ["str", "int"])
def test_file_channel_opened_by_path_in_child(variant: str, tmp_path: Path) -> None:
    """The child opens the channel by path on its own (no inherited objects used)."""
    path = tmp_path / "by-path.rr"
    cls = server_class(variant)
    with cls(path, req_cap=8, resp_slots=2), children() as kids:

        def worker() -> int:
            with cls(path) as s:
                return _serve(s, 200)

        kids.append(fork_call(worker))
        with client_class(variant)(path) as client:
            assert _ask(client, variant, 200) == []
        assert kids[0].result() == 200


@pytest.mark.parametrize("variant", ["str", "int"])
def test_two_children_through_parent_channel(variant: str, tmp_path: Path) -> None:
    """Worker and client are both children; the parent only created the channel."""
    with _new(variant, "anon", tmp_path) as server, children() as kids:
        kids.append(fork_call(lambda: _serve(server, 500)))
        kids.append(fork_call(lambda: _ask(server.client(), variant, 500)))
        assert kids[1].result() == []
        assert kids[0].result() == 500


def _mp_worker(server: Any, n: int) -> None:
    _serve(server, n)
    os._exit(0)


def _mp_client(server: Any, variant: str, n: int) -> None:
    bad = _ask(server.client(), variant, n)
    os._exit(0 if not bad else 3)


@pytest.mark.parametrize("variant", ["str", "int"])
@pytest.mark.parametrize("kind", KINDS)
def test_multiprocessing_fork_context(variant: str, kind: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with _new(variant, kind, tmp_path) as server:
        procs = [ctx.Process(target=_mp_worker, args=(server, 300)),
                 ctx.Process(target=_mp_client, args=(server, variant, 300))]
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.join(LONG * 2)
            assert [p.exitcode for p in procs] == [0, 0]
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        assert server.stats()["slots_free"] == 8


@pytest.mark.parametrize("variant", ["str", "int"])
def test_async_pipelining_across_processes(variant: str, tmp_path: Path) -> None:
    """Many requests in flight from one client; responses collected out of order."""
    with _new(variant, "memfd", tmp_path) as server, children() as kids:
        kids.append(fork_call(lambda: _serve(open_server(server, "memfd"), 8 * 50)))
        with open_client(server, "memfd") as client:
            for batch in range(50):
                ids = []
                for j in range(8):
                    ident = client.send_wait(_payload(variant, batch * 8 + j), timeout=LONG)
                    assert ident is not None
                    ids.append(ident)
                assert client.pending() == 8
                for j in reversed(range(8)):
                    got = client.get_wait(ids[j], timeout=LONG)
                    assert got == _expected(variant, batch * 8 + j)
                assert client.pending() == 0
        assert kids[0].result() == 400


def test_large_payloads_across_processes(tmp_path: Path) -> None:
    """64 KiB requests and responses through a file channel, the arena wrapping many times."""
    big = 64 * 1024
    with Server(tmp_path / "big.rr", req_cap=8, resp_slots=4, resp_size=big,
                arena=4 * big) as server, children() as kids:
        kids.append(fork_call(lambda: _serve(Server(server.path), 300)))
        with open_client(server, "file") as client:
            for i in range(300):
                size = big if i % 3 == 0 else (i * 997) % big
                req = os.urandom(size) if i % 2 else "ü" * (size // 2)
                assert client.req(req, timeout=LONG) == reverse(req), f"round {i}"
        assert kids[0].result() == 300


@pytest.mark.parametrize("variant", ["str", "int"])
def test_concurrent_create_is_race_free(variant: str, tmp_path: Path) -> None:
    """Several processes create the same new file at once: one channel comes out of it, with
    one geometry, and no process wipes another's requests."""
    cls = server_class(variant)
    n = 4
    for attempt in range(15):
        path = tmp_path / f"race-{attempt}.rr"
        go = mmap.mmap(-1, 1)

        def creator(k: int, path: Path = path, go: mmap.mmap = go) -> tuple[int, int]:
            while not go[0]:
                pass
            try:
                s = cls(path, req_cap=8 + k, resp_slots=4 + k)
            except ValueError:  # another creator won with its geometry (SPEC 4): open that
                s = cls(path)
            c = s.client()
            if c.send(k if variant == "int" else b"%d" % k) is None:
                raise AssertionError("send refused on a fresh channel")
            return s.capacity, s.resp_slots  # exits without close: the request stays queued

        with children() as kids:
            kids.extend(fork_call(lambda k=k: creator(k), watchdog=30) for k in range(n))
            go[0] = 1
            geometries = {kid.result() for kid in kids}
        assert len(geometries) == 1, f"attempt {attempt}: several geometries {geometries}"
        with cls(path) as s:
            got = sorted(str(d) for d, _ in iter(s.recv, None))
            want = sorted(str(k if variant == "int" else b"%d" % k) for k in range(n))
            assert got == want, f"attempt {attempt}: requests lost"
