"""Targeted cross-process races from LESSONS.md: a reply landing in a recycled slot, and lost
wake-ups when nobody spins."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LONG,
    IntServer,
    Server,
    children,
    fork_call,
    id_index,
    make_server,
    open_client,
    reverse,
)

pytestmark = pytest.mark.timeout(150, method="thread")


def _new(variant: str, tmp_path: Path, **geometry: Any) -> Any:
    if variant == "str":
        return make_server(Server, "anon", tmp_path, resp_size=64, **geometry)
    return make_server(IntServer, "anon", tmp_path, **geometry)


def _req(variant: str, i: int) -> Any:
    return i * 3 + 1 if variant == "int" else b"r%d" % i


def _replier(server: Any, stop: mmap.mmap) -> dict[str, int]:
    """Reply to everything, as fast as possible, whether the request is still wanted or not."""
    won = lost = 0
    while True:
        got = server.recv_wait(timeout=0.05)
        if got is None:
            if stop[0]:
                return {"won": won, "lost": lost}
            continue
        data, rid = got
        if server.reply(rid, reverse(data)):
            won += 1
        else:
            lost += 1


@pytest.mark.parametrize("variant", ["str", "int"])
def test_reply_never_lands_in_recycled_slot(variant: str, tmp_path: Path) -> None:
    """One response slot, so every request reuses slot 0 under a new generation. The client
    cancels most requests at once and immediately re-acquires the slot while two workers
    are still replying to the cancelled ones. A response must only ever be the one for the
    request that is current in the slot."""
    rounds = 3000
    server = _new(variant, tmp_path, req_cap=64, resp_slots=1)
    stop = mmap.mmap(-1, 1)
    with server, children() as kids:
        workers = [fork_call(lambda: _replier(server, stop), watchdog=120) for _ in range(2)]
        kids.extend(workers)

        def client_loop() -> dict[str, Any]:
            c = open_client(server, "anon")
            answered = cancelled = 0
            bad: list[str] = []
            for i in range(rounds):
                req = _req(variant, i)
                ident = c.send_wait(req, timeout=LONG)
                if ident is None:
                    bad.append(f"send_wait timed out at {i}")
                    break
                if id_index(ident) != 0:
                    bad.append(f"id {ident:#x} is not in slot 0")
                if i % 4 != 3 and c.cancel(ident):
                    cancelled += 1
                    continue
                got = c.get_wait(ident, timeout=LONG)
                if got != reverse(req):
                    bad.append(f"request {req!r} got {got!r}")
                    if len(bad) > 5:
                        break
                answered += 1
            return {"answered": answered, "cancelled": cancelled, "bad": bad}

        clients = [fork_call(client_loop, watchdog=120)]
        kids.extend(clients)
        res = clients[0].result(timeout=130)
        stop[0] = 1
        wres = [w.result(timeout=30) for w in workers]
        st = server.stats()
    assert res["bad"] == []
    assert res["answered"] + res["cancelled"] == rounds
    assert sum(w["won"] for w in wres) == res["answered"]
    assert sum(w["won"] + w["lost"] for w in wres) == rounds
    assert st["slots_free"] == 1 and st["size"] == 0


@pytest.mark.parametrize("variant", ["str", "int"])
def test_no_lost_wakeups_without_spinning(variant: str, tmp_path: Path) -> None:
    """spin=0 on both sides: every hand-over sleeps on a futex. A lost wake-up shows up as a
    timeout (a None) instead of a response."""
    rounds = 3000
    server = _new(variant, tmp_path, req_cap=4, resp_slots=2, spin=0)
    with server, children() as kids:

        def worker() -> int:
            server.spin = 0
            for i in range(rounds):
                got = server.recv_wait(timeout=LONG)
                if got is None:
                    raise AssertionError(f"worker waited {LONG}s for request #{i}")
                server.reply(got[1], reverse(got[0]))
            return rounds

        kids.append(fork_call(worker, watchdog=120))
        c = open_client(server, "anon")
        c.spin = 0
        for i in range(rounds):
            req = _req(variant, i)
            assert c.req(req, timeout=LONG) == reverse(req), f"round {i}"
        assert kids[0].result(timeout=60) == rounds


@pytest.mark.parametrize("variant", ["str", "int"])
def test_racing_cancel_and_get_wait_from_threads_and_processes(variant: str,
                                                                tmp_path: Path) -> None:
    """Two client processes share the channel with one worker; each cancels half of its
    requests right after the worker may have replied. Whatever happens, a client only ever
    sees its own responses, and no slot is left behind."""
    rounds = 1500
    server = _new(variant, tmp_path, req_cap=8, resp_slots=3)
    stop = mmap.mmap(-1, 1)
    with server, children() as kids:
        worker = fork_call(lambda: _replier(server, stop), watchdog=120)
        kids.append(worker)

        def client_loop(k: int) -> list[str]:
            c = server.client()
            bad: list[str] = []
            for i in range(rounds):
                req = _req(variant, k * 1_000_000 + i)
                ident = c.send_wait(req, timeout=LONG)
                if ident is None:
                    return [*bad, f"send_wait timed out at {i}"]
                if i % 2 and c.cancel(ident):
                    if c.get(ident) is not None:
                        bad.append(f"cancelled {req!r} still had a response")
                    continue
                got = c.get_wait(ident, timeout=LONG)
                if got != reverse(req):
                    bad.append(f"{req!r} got {got!r}")
            if c.pending():
                bad.append(f"pending {c.pending()} at the end")
            return bad

        clients = [fork_call(lambda k=k: client_loop(k), watchdog=120) for k in (1, 2)]
        kids.extend(clients)
        results = [cl.result(timeout=130) for cl in clients]
        stop[0] = 1
        worker.result(timeout=30)
        st = server.stats()
    assert results == [[], []]
    assert st["slots_free"] == 3 and st["slots_acquired"] == 0 and st["slots_ready"] == 0
