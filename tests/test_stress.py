"""Multi-process stress: 3 client processes x 2 worker processes, with cancels mixed in.

Every response is checked against its own request, nothing is lost, nothing is delivered
twice, and exactly one of a racing cancel and reply wins.
"""

from __future__ import annotations

import mmap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import LONG, Server, make_server, open_client, open_server
from procs import Child, children, fork_call

pytestmark = pytest.mark.timeout(180, method="thread")

N_CLIENTS = 3
N_WORKERS = 2
ROUND = 7
PER_CLIENT = ROUND * 150  # 1050 requests per client


def _request(variant: str, client: int, i: int) -> Any:
    if variant == "int":
        return (client << 40) | (i << 4) | 5
    if i % 2:
        return f"c{client}:{i}:" + "é" * (i % 23)
    return b"c%d:%d:" % (client, i) + bytes([i % 256]) * (i % 97)


def _response(data: Any) -> Any:
    if isinstance(data, int):
        return ~data
    if isinstance(data, str):
        return data[::-1] + "|w"
    return data[::-1] + b"|w"


def _worker(server: Any, stop: mmap.mmap) -> dict[str, Any]:
    received: list[Any] = []
    won = lost = 0
    while True:
        batch: list[tuple[Any, int]]
        if isinstance(server, Server) and len(received) % 3 == 0:
            batch = server.recv_wait_multi(3, timeout=0.05)
        else:
            got = server.recv_wait(timeout=0.05)
            batch = [] if got is None else [got]
        if not batch:
            if stop[0]:
                return {"received": received, "won": won, "lost": lost}
            continue
        for data, rid in batch:
            received.append(data)
            if server.reply(rid, _response(data)):
                won += 1
            else:
                lost += 1


def _client(client: Any, variant: str, k: int) -> dict[str, Any]:
    errors: list[str] = []
    cancelled: list[Any] = []
    answered: list[Any] = []

    def check(req: Any, got: Any) -> None:
        want = _response(req)
        if got is None:
            errors.append(f"no response to {req!r}")
        elif type(got) is not type(want) or got != want:
            errors.append(f"response to {req!r} was {got!r}")
        else:
            answered.append(req)

    # each round: one req(), one send + get_wait, two send + cancel, a pipeline of three
    i = 0
    while i < PER_CLIENT and not errors:
        req = _request(variant, k, i)
        check(req, client.req(req, timeout=LONG))

        req = _request(variant, k, i + 1)
        ident = client.send_wait(req, timeout=LONG)
        if ident is None:
            errors.append(f"send_wait timed out for {req!r}")
        else:
            check(req, client.get_wait(ident, timeout=LONG))

        for req in (_request(variant, k, i + 2), _request(variant, k, i + 3)):
            # cancel at once: races the workers' replies
            ident = client.send_wait(req, timeout=LONG)
            if ident is None:
                errors.append(f"send_wait timed out for {req!r}")
            elif client.cancel(ident):
                cancelled.append(req)
                if client.get(ident) is not None:
                    errors.append(f"get after a successful cancel returned data for {req!r}")
            else:  # the reply won: it must be collectable
                check(req, client.get_wait(ident, timeout=LONG))

        reqs = [_request(variant, k, i + 4 + j) for j in range(3)]
        ids = [client.send_wait(r, timeout=LONG) for r in reqs]
        for req, ident in reversed(list(zip(reqs, ids, strict=True))):
            if ident is None:
                errors.append(f"send_wait timed out for {req!r}")
            else:
                check(req, client.get_wait(ident, timeout=LONG))
        i += ROUND
    if client.pending() != 0:
        errors.append(f"pending() is {client.pending()} at the end")
    sent = [_request(variant, k, j) for j in range(i)]
    return {"errors": errors, "cancelled": cancelled, "answered": answered, "sent": sent}


def _run(variant: str, kind: str, tmp_path: Path, req_cap: int = 16, slots: int = 8) -> None:
    geometry = {"resp_size": 512, "arena": 8192} if variant == "str" else {}
    server = make_server(variant, kind, tmp_path / "chan.rr", req_cap=req_cap, resp_slots=slots,
                         **geometry)
    stop = mmap.mmap(-1, 1)  # shared with the forked workers
    t0 = time.monotonic()
    with server, children() as kids:
        workers: list[Child] = []
        clients: list[Child] = []
        for _ in range(N_WORKERS):
            workers.append(fork_call(lambda: _worker(open_server(server, kind), stop),
                                     watchdog=150))
        kids.extend(workers)
        for k in range(N_CLIENTS):
            clients.append(fork_call(lambda k=k: _client(open_client(server, kind), variant, k),
                                     watchdog=150))
        kids.extend(clients)

        cres = [c.result(timeout=150) for c in clients]
        stop[0] = 1
        wres = [w.result(timeout=30) for w in workers]
        final = server.stats()
    elapsed = time.monotonic() - t0

    errors = [e for r in cres for e in r["errors"]]
    assert errors == [], errors[:10]

    sent = [x for r in cres for x in r["sent"]]
    answered = [x for r in cres for x in r["answered"]]
    cancelled = [x for r in cres for x in r["cancelled"]]
    received = [x for r in wres for x in r["received"]]
    assert len(set(map(repr, sent))) == len(sent) == N_CLIENTS * PER_CLIENT

    # each request was delivered to exactly one worker
    dup = [k for k, n in Counter(map(repr, received)).items() if n > 1]
    assert dup == [], f"requests delivered twice: {dup[:5]}"
    assert set(map(repr, received)) <= set(map(repr, sent))
    # nothing lost: every request that was not cancelled reached a worker and was answered
    assert set(map(repr, answered)) | set(map(repr, cancelled)) == set(map(repr, sent))
    assert not set(map(repr, answered)) & set(map(repr, cancelled))
    assert set(map(repr, answered)) <= set(map(repr, received))
    # exactly one of cancel and reply won for each request
    won = sum(r["won"] for r in wres)
    assert won == len(answered), (won, len(answered), len(cancelled))
    assert final["size"] == 0
    assert final["slots_free"] == slots
    assert final["slots_acquired"] == 0 and final["slots_ready"] == 0
    assert final["replies"] == won
    print(f"{variant}/{kind}: {len(sent)} requests, {len(cancelled)} cancelled, "
          f"{sum(r['lost'] for r in wres)} replies refused, {elapsed:.2f}s")


@pytest.mark.parametrize("kind", ["file", "memfd"])
def test_stress_str(kind: str, tmp_path: Path) -> None:
    _run("str", kind, tmp_path)


@pytest.mark.parametrize("kind", ["anon", "file"])
def test_stress_int(kind: str, tmp_path: Path) -> None:
    _run("int", kind, tmp_path)


@pytest.mark.parametrize("variant", ["str", "int"])
def test_stress_tight_geometry(variant: str, tmp_path: Path) -> None:
    """A 2-entry queue and 7 slots for 3 clients pipelining 3 (9 wanted at worst; 7 is the
    fewest that cannot deadlock): senders wait for space and for slots all the time."""
    _run(variant, "anon", tmp_path, req_cap=2, slots=7)
