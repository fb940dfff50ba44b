"""Threads sharing one Client (and one Server) object in one process."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import Closer
from helpers import LONG, IntServer, Server, ThreadCall, echo_worker, reverse

pytestmark = pytest.mark.timeout(120, method="thread")

N_THREADS = 4
PER_THREAD = 300


def _chan(variant: str, closer: Closer, **geometry: Any) -> tuple[Any, Any]:
    if variant == "str":
        s = closer(Server(None, resp_size=256, **geometry))
    else:
        s = closer(IntServer(None, **geometry))
    return s, closer(s.client())


def _req_for(variant: str, t: int, i: int) -> Any:
    if variant == "int":
        return (t << 32) | i
    return f"t{t}-{i}-" + "ü" * (i % 13) if i % 2 else b"t%d-%d" % (t, i)


@pytest.mark.parametrize("variant", ["str", "int"])
@pytest.mark.parametrize("workers", [1, 2])
def test_threads_share_one_client(variant: str, workers: int, closer: Closer) -> None:
    s, c = _chan(variant, closer, req_cap=8, resp_slots=N_THREADS)
    stop = threading.Event()
    ws = [ThreadCall(echo_worker, s, stop, reverse) for _ in range(workers)]

    def asker(t: int) -> list[str]:
        bad = []
        for i in range(PER_THREAD):
            req = _req_for(variant, t, i)
            got = c.req(req, timeout=LONG)
            if got != reverse(req) or type(got) is not type(req):
                bad.append(f"{req!r} -> {got!r}")
        return bad

    try:
        askers = [ThreadCall(asker, t) for t in range(N_THREADS)]
        results = [a.join(LONG * 2) for a in askers]
    finally:
        stop.set()
        served = sum(w.join(LONG) for w in ws)
    assert results == [[]] * N_THREADS
    assert served == N_THREADS * PER_THREAD
    assert c.pending() == 0
    assert s.stats()["slots_free"] == N_THREADS


@pytest.mark.parametrize("variant", ["str", "int"])
def test_threads_send_get_cancel_on_one_client(variant: str, closer: Closer) -> None:
    """send/get_wait/cancel from several threads on one object: pending() stays exact."""
    s, c = _chan(variant, closer, req_cap=16, resp_slots=16)
    stop = threading.Event()
    w = ThreadCall(echo_worker, s, stop, reverse)

    def asker(t: int) -> tuple[int, int, list[str]]:
        answered = cancelled = 0
        bad = []
        for i in range(200):
            req = _req_for(variant, t, i)
            ident = c.send_wait(req, timeout=LONG)
            if ident is None:
                bad.append(f"send_wait timed out for {req!r}")
                break
            if i % 3 == 0 and c.cancel(ident):
                cancelled += 1
                continue
            got = c.get_wait(ident, timeout=LONG)
            if got != reverse(req):
                bad.append(f"{req!r} -> {got!r}")
            answered += 1
        return answered, cancelled, bad

    try:
        askers = [ThreadCall(asker, t) for t in range(N_THREADS)]
        results = [a.join(LONG * 2) for a in askers]
    finally:
        stop.set()
        w.join(LONG)
    assert [r[2] for r in results] == [[]] * N_THREADS
    assert sum(r[0] + r[1] for r in results) == N_THREADS * 200
    assert c.pending() == 0
    st = s.stats()
    assert st["slots_free"] == 16 and st["size"] == 0


@pytest.mark.parametrize("variant", ["str", "int"])
def test_threads_each_with_own_client(variant: str, closer: Closer) -> None:
    s, _ = _chan(variant, closer, req_cap=4, resp_slots=8)
    stop = threading.Event()
    ws = [ThreadCall(echo_worker, s, stop, reverse) for _ in range(2)]

    def asker(t: int) -> int:
        with s.client() as own:
            for i in range(PER_THREAD):
                req = _req_for(variant, t, i)
                assert own.req(req, timeout=LONG) == reverse(req)
        return PER_THREAD

    try:
        askers = [ThreadCall(asker, t) for t in range(N_THREADS)]
        assert sum(a.join(LONG * 2) for a in askers) == N_THREADS * PER_THREAD
    finally:
        stop.set()
        for w in ws:
            w.join(LONG)
