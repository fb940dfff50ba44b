"""Races between processes, as tests (SPEC sections 2 and 4):

* cancel against reply (and against a second, duplicate reply): exactly one wins;
* clear() against callers blocked in get_wait / req / send_wait / recv_wait, in this process
  and in another one: all are woken with the documented outcome;
* many processes creating the same path at once: one geometry, everyone can talk to
  everyone; clients opening while the channel is being created;
* targeted races from LESSONS.md: a reply landing in a recycled slot, lost wake-ups when
  nobody spins, cancel racing get_wait across processes.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    JOIN,
    LONG,
    Client,
    Server,
    ThreadCall,
    client_class,
    id_index,
    make_server,
    open_client,
    reverse,
    variant_value,
)
from procs import Shared, children, fork_call

import reqrep

pytestmark = pytest.mark.timeout(180, method="thread")

VARIANTS = ["str", "int"]



def _answer(variant: str, n: int, who: int) -> Any:
    return -(n * 10 + who) if variant == "int" else b"a%d/%d" % (n, who)


def _spin_until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    i = 0
    while not pred():
        i += 1
        if i % 1000 == 0:
            if time.monotonic() > deadline:
                raise AssertionError("a peer did not reach the barrier in time")
            os.sched_yield()


def _busy(n: int) -> None:
    for _ in range(n):
        pass


# --------------------------------------------------------------------------- cancel vs reply

ROUND, TAKEN, GO, RESULT = 0, 1, 2, 4  # shared words; RESULT + k for replier k


@pytest.mark.parametrize("repliers", [1, 2], ids=["reply", "reply-twice"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_against_reply_exactly_one_wins(variant: str, repliers: int,
                                               tmp_path: Path) -> None:
    """Each round: the worker takes the request, then it (and, with reply-twice, a second
    process replying to the same id) and the client's cancel go at the same moment, with
    random jitter on every side. Exactly one wins; when a reply won, get returns exactly
    that reply; nothing is left in the slot either way."""
    rounds = 400
    path = tmp_path / "chan.rr"
    s = make_server(variant, "file", path, req_cap=4, resp_slots=2)
    c = client_class(variant)(path)
    sh = Shared(16)
    seed = random.randrange(2**32)
    print(f"seed={seed}")

    def replier(k: int) -> int:
        srv = make_server(variant, "file", path)
        rnd = random.Random(seed + k)
        for r in range(1, rounds + 1):
            if k == 0:
                got = srv.recv_wait(timeout=20)
                assert got is not None, f"round {r}: nothing to take"
                assert got[0] == variant_value(variant, r)
                sh[TAKEN] = got[1]
                sh[ROUND] = r
            else:
                _spin_until(lambda r=r: sh[ROUND] == r)
            _spin_until(lambda r=r: sh[GO] == r)
            _busy(rnd.randrange(300))
            ok = srv.reply(sh[TAKEN], _answer(variant, r, k))
            sh[RESULT + k] = r << 1 | int(ok)
        return rounds

    outcomes: Counter[str] = Counter()
    rnd = random.Random(seed)
    with s, c, children() as kids:
        for k in range(repliers):
            kids.append(fork_call(lambda k=k: replier(k), watchdog=170))
        for r in range(1, rounds + 1):
            ident = c.send(variant_value(variant, r))
            assert ident is not None, f"round {r}: no slot"
            _spin_until(lambda r=r: sh[ROUND] == r)
            assert sh[TAKEN] == ident
            sh[GO] = r
            _busy(rnd.randrange(2000))
            cancelled = c.cancel(ident)
            _spin_until(lambda r=r: all(sh[RESULT + k] >> 1 == r for k in range(repliers)))
            replied = [k for k in range(repliers) if sh[RESULT + k] & 1]
            winners = len(replied) + int(cancelled)
            assert winners == 1, (f"round {r}: cancel={cancelled} replies={replied}: "
                                  "exactly one must win")
            if cancelled:
                outcomes["cancel"] += 1
                assert c.get(ident) is None
            else:
                outcomes[f"reply{replied[0]}"] += 1
                assert c.get_wait(ident, timeout=10) == _answer(variant, r, replied[0])
                assert c.get(ident) is None  # collected once
            assert c.pending() == 0
            st = s.stats()
            assert (st["slots_free"], st["slots_acquired"], st["slots_ready"]) == (2, 0, 0), st
        for kid in kids:
            assert kid.result(timeout=30) == rounds
    print(dict(outcomes))
    assert sum(outcomes.values()) == rounds


# --------------------------------------------------------------------------- clear vs waiters


def _blocked_callers(variant: str, path: Path, sh: Shared) -> dict[str, Any]:
    """Block a get_wait, a req and a send_wait (req_cap 4, resp_slots 8, no worker), say so,
    wait for the clear, report what each got."""
    s = make_server(variant, "file", path)
    c = client_class(variant)(path)
    waited_id = c.send(variant_value(variant, 1))  # taken by a live worker (us) that never answers
    got = s.recv()
    assert got is not None and got[1] == waited_id
    getter = ThreadCall(c.get_wait, waited_id, timeout=30)
    fillers = [c.send(variant_value(variant, 10 + i)) for i in range(3)]  # 3 + the req = req_cap
    assert None not in fillers
    requester = ThreadCall(c.req, variant_value(variant, 2), timeout=30)
    deadline = time.monotonic() + 10
    while s.size() < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.size() == 4, "the req never got into the queue"
    sender = ThreadCall(c.send_wait, variant_value(variant, 3), timeout=30)  # the queue is full
    time.sleep(0.3)
    calls = (("get_wait", getter), ("req", requester), ("send_wait", sender))
    blocked = {name: t.is_alive() for name, t in calls}
    sh[0] = 1  # ready for the clear
    _spin_until(lambda: sh[1] == 1, timeout=30)
    t_clear = sh.get_float(2)
    out: dict[str, Any] = {"blocked": blocked}
    for name, t in calls:
        t.thread.join(JOIN)
        out[name] = ("still blocked" if t.is_alive() else
                     f"raised {t.error!r}" if t.error is not None else t.value)
        out[name + "_s"] = (t.finished_at - t_clear) if t.finished_at else None
    out["queued"] = s.recv()
    out["fillers_after"] = [c.get(i) for i in fillers]
    if isinstance(out["send_wait"], int) and out["queued"] is not None:
        out["reply_to_sent"] = s.reply(out["send_wait"], variant_value(variant, 4))
        out["collected"] = c.get_wait(out["send_wait"], timeout=5)
    out["pending"] = c.pending()
    st = s.stats()
    out["stats"] = {k: st[k] for k in ("size", "slots_free", "slots_acquired", "slots_ready")}
    return out


def _clear_when_ready(variant: str, path: Path, sh: Shared) -> str:
    s = make_server(variant, "file", path)
    _spin_until(lambda: sh[0] == 1, timeout=30)
    sh.set_float(2, time.monotonic())
    s.clear()
    sh[1] = 1
    return "cleared"


@pytest.mark.parametrize("waiters", ["here", "other-process"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_clear_wakes_every_blocked_caller(variant: str, waiters: str, tmp_path: Path) -> None:
    """A clear() from another process wakes everyone at once: get_wait and req return None
    (their requests were dropped); send_wait, which was waiting for room, gets its request
    into the emptied queue, and that request is live: a worker can answer it."""
    path = tmp_path / "chan.rr"
    sh = Shared(8)
    with make_server(variant, "file", path, req_cap=4, resp_slots=8), children() as kids:
        if waiters == "here":
            kids.append(fork_call(lambda: _clear_when_ready(variant, path, sh), watchdog=120))
            out = _blocked_callers(variant, path, sh)
            assert kids[0].result(timeout=30) == "cleared"
        else:
            kid = fork_call(lambda: _blocked_callers(variant, path, sh), watchdog=120)
            kids.append(kid)
            _clear_when_ready(variant, path, sh)
            out = kid.result(timeout=90)
    print(out)
    assert all(out["blocked"].values()), f"not every caller was blocked: {out['blocked']}"
    assert out["get_wait"] is None, out
    assert out["req"] is None, out
    for name in ("get_wait", "req", "send_wait"):
        assert out[name + "_s"] is not None and out[name + "_s"] < 5.0, (name, out)
    assert out["fillers_after"] == [None, None, None], out
    # The woken send_wait either sent a live request (answerable) or sent nothing (None);
    # returning an id that clear() already freed, with its request still delivered to a
    # worker whose reply is then refused, is neither.
    if out["send_wait"] is None:
        assert out["queued"] is None, out
    else:
        assert out["queued"] == (variant_value(variant, 3), out["send_wait"]), out
        assert out["reply_to_sent"] is True, \
            f"send_wait returned an id that clear() had already freed: {out}"
        assert out["collected"] == variant_value(variant, 4), out
    assert out["pending"] == 0, out
    assert out["stats"] == {"size": 0, "slots_free": 8, "slots_acquired": 0,
                            "slots_ready": 0}, out


@pytest.mark.parametrize("variant", VARIANTS)
def test_clear_against_blocked_receivers(variant: str, tmp_path: Path) -> None:
    """Receivers asleep on an empty queue in two processes: clear() wakes them, they find
    nothing and sleep on; every request sent after the clear reaches exactly one of them."""
    path = tmp_path / "chan.rr"
    sh = Shared(8)
    with make_server(variant, "file", path, req_cap=8, resp_slots=8) as s, \
            client_class(variant)(path) as c, children() as kids:

        def receivers_elsewhere() -> list[Any]:
            srv = make_server(variant, "file", path)
            ts = [ThreadCall(srv.recv_wait, timeout=30) for _ in range(2)]
            return [t.join(40) for t in ts]

        kids.append(fork_call(receivers_elsewhere, watchdog=90))
        here = [ThreadCall(s.recv_wait, timeout=30) for _ in range(2)]
        time.sleep(0.5)  # everyone asleep
        assert all(t.is_alive() for t in here)
        kids.append(fork_call(lambda: _clear_when_ready(variant, path, sh), watchdog=60))
        sh[0] = 1
        assert kids[1].result(timeout=30) == "cleared"
        time.sleep(0.3)
        assert all(t.is_alive() for t in here), "a receiver returned from clear() with nothing"
        values = [variant_value(variant, 50 + i) for i in range(4)]
        ids = {c.send(v): v for v in values}
        assert None not in ids
        got = [t.join() for t in here] + kids[0].result(timeout=40)
    assert sorted(g[1] for g in got) == sorted(ids), got
    assert all(ids[rid] == data for data, rid in got)


@pytest.mark.parametrize("variant", VARIANTS)
def test_clear_wakes_senders_waiting_for_a_slot(variant: str, tmp_path: Path) -> None:
    """Three threads wait for a slot of a dry pool; clear() frees the pool and each of them
    gets one (resp_slots = 3)."""
    path = tmp_path / "chan.rr"
    with make_server(variant, "file", path, req_cap=16, resp_slots=3) as s, \
            client_class(variant)(path) as c:
        held = [c.send(variant_value(variant, i)) for i in range(3)]
        assert None not in held and c.send(variant_value(variant, 9)) is None
        senders = [ThreadCall(c.send_wait, variant_value(variant, 20 + i), timeout=30)
                   for i in range(3)]
        time.sleep(0.3)
        assert all(t.is_alive() for t in senders)

        def clear() -> str:
            s.clear()
            return "ok"

        with children() as kids:
            kids.append(fork_call(clear, watchdog=60))
            assert kids[0].result(timeout=30) == "ok"
        ids = [t.join() for t in senders]
        assert None not in ids and len(set(ids)) == 3
        for ident in held:
            assert c.get(ident) is None
        got = sorted(s.recv()[0] for _ in range(3))
        assert got == sorted(variant_value(variant, 20 + i) for i in range(3))
        assert s.recv() is None


# --------------------------------------------------------------------------- creation races

N_CREATORS = 8


def _creator(path: Path, i: int, sh: Shared, rnd_seed: int) -> dict[str, Any]:
    geometry = {"req_cap": 8 << (i % 4), "resp_slots": 8 + i, "resp_size": 64 * (i + 1)}
    _spin_until(lambda: sh[0] == 1)
    _busy(random.Random(rnd_seed).randrange(2000))
    try:
        s = Server(path, **geometry)
    except ValueError:  # another creator won with its geometry: open it as it is
        s = Server(path)
    mine = (s.capacity, s.resp_slots, s.resp_size)
    sh[1 + i] = 1
    _spin_until(lambda: all(sh[1 + k] >= 1 for k in range(N_CREATORS)))
    c = s.client()
    ident = c.send(b"from %d" % i)
    assert ident is not None
    sh[1 + i] = 2
    _spin_until(lambda: all(sh[1 + k] >= 2 for k in range(N_CREATORS)))
    got = s.recv_wait(timeout=20)  # exactly one request each: everyone serves someone
    assert got is not None
    assert s.reply(got[1], got[0] + b" served by %d" % i)
    resp = c.get_wait(ident, timeout=20)
    return {"geometry": mine, "wanted": tuple(geometry.values()), "served": got[0],
            "resp": resp, "size": os.path.getsize(path)}


@pytest.mark.parametrize("round_", range(4))
def test_many_processes_create_the_same_file(round_: int, tmp_path: Path) -> None:
    path = tmp_path / "chan.rr"
    sh = Shared(1 + N_CREATORS)
    seed = random.randrange(2**32)
    with children() as kids:
        for i in range(N_CREATORS):
            kids.append(fork_call(lambda i=i: _creator(path, i, sh, seed + i), watchdog=120))
        time.sleep(0.1)
        sh[0] = 1
        results = [kid.result(timeout=60) for kid in kids]
    geometries = {r["geometry"] for r in results}
    assert len(geometries) == 1, f"several geometries: {geometries}"
    (geometry,) = geometries
    assert geometry in {r["wanted"] for r in results}, "a geometry nobody asked for"
    assert len({r["size"] for r in results}) == 1
    served = sorted(r["served"] for r in results)
    assert served == sorted(b"from %d" % i for i in range(N_CREATORS))
    for i, r in enumerate(results):
        assert r["resp"] is not None and r["resp"].startswith(b"from %d served by " % i), r
    with Client(path) as c:
        assert (c.capacity, c.resp_slots, c.resp_size) == geometry


def _eager_client(path: Path) -> dict[str, int]:
    """Open the path as soon as it exists, retrying only while it does not."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            c = Client(path)
        except FileNotFoundError:
            counts["missing"] += 1
            continue
        except reqrep.ChannelFormatError as e:
            counts[f"ChannelFormatError: {str(e).split(': ', 1)[-1]}"] += 1
            return dict(counts)
        c.close()
        counts["opened"] += 1
        return dict(counts)
    return dict(counts)


@pytest.mark.timeout(240, method="thread")
def test_clients_opening_while_the_channel_is_created(tmp_path: Path) -> None:
    """Clients that wait for the file to appear and open it at once never see a
    half-created channel: creation is race-free (SPEC section 2). Many rounds: the window
    is between the creator's open(O_CREAT) and its exclusive lock."""
    rounds = 60
    bad: Counter[str] = Counter()
    opened = 0
    for r in range(rounds):
        path = tmp_path / f"chan{r}.rr"
        with children() as kids:
            for _ in range(3):
                kids.append(fork_call(lambda path=path: _eager_client(path), watchdog=60))
            time.sleep(0.02)  # the clients are spinning on FileNotFoundError
            with Server(path, req_cap=64, resp_slots=8, resp_size=64):
                results = [kid.result(timeout=40) for kid in kids]
        for counts in results:
            opened += counts.get("opened", 0)
            bad.update({k: v for k, v in counts.items() if k.startswith("ChannelFormatError")})
    print(f"opened={opened} refused={dict(bad)}")
    assert bad == Counter(), (f"{sum(bad.values())} of {3 * rounds} clients saw the channel "
                              f"half-created: {dict(bad)}")
    assert opened == 3 * rounds


# ------------------------------------------------------------------------ recycled slots, wake-ups


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


@pytest.mark.timeout(150, method="thread")
@pytest.mark.parametrize("variant", VARIANTS)
def test_reply_never_lands_in_recycled_slot(variant: str, tmp_path: Path) -> None:
    """One response slot, so every request reuses slot 0 under a new generation. The client
    cancels most requests at once and immediately re-acquires the slot while two workers
    are still replying to the cancelled ones. A response must only ever be the one for the
    request that is current in the slot."""
    rounds = 3000
    server = make_server(variant, "anon", req_cap=64, resp_slots=1)
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


@pytest.mark.timeout(150, method="thread")
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_lost_wakeups_without_spinning(variant: str, tmp_path: Path) -> None:
    """spin=0 on both sides: every hand-over sleeps on a futex. A lost wake-up shows up as a
    timeout (a None) instead of a response."""
    rounds = 3000
    server = make_server(variant, "anon", req_cap=4, resp_slots=2, spin=0)
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


@pytest.mark.timeout(150, method="thread")
@pytest.mark.parametrize("variant", VARIANTS)
def test_racing_cancel_and_get_wait_from_threads_and_processes(variant: str,
                                                                tmp_path: Path) -> None:
    """Two client processes share the channel with one worker; each cancels half of its
    requests right after the worker may have replied. Whatever happens, a client only ever
    sees its own responses, and no slot is left behind."""
    rounds = 1500
    server = make_server(variant, "anon", req_cap=8, resp_slots=3)
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
