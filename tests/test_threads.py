"""Threads sharing one Client (and one Server) object in one process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LONG,
    Client,
    Closer,
    IntClient,
    IntServer,
    Server,
    ThreadCall,
    echo_worker,
    make_server,
    open_client,
    open_server,
    reverse,
)
from procs import fork_call, wait_sleeping

pytestmark = pytest.mark.timeout(120, method="thread")

N_THREADS = 4
PER_THREAD = 300


def _chan(variant: str, closer: Closer, **geometry: Any) -> tuple[Any, Any]:
    if variant == "str":
        geometry.setdefault("resp_size", 256)
    s = closer(make_server(variant, "anon", **geometry))
    return s, closer(open_client(s, "anon"))


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


# ------------------------------------------------------------ close from another thread

# How long a blocked call may take to end once close() is called: the property is that
# it ends (SPEC §4 says within 0.1 s; this bound only keeps a broken build from hanging).
ENDS = 5.0

# A case's builder: (tmp_path, closer, timeout) -> (the object to close, the blocking
# call, another object of the channel to look at it afterwards)
_Builder = Callable[[Path, Closer, "float | None"], tuple[Any, Callable[[], Any], Any]]
_Chan = Callable[..., tuple[Any, Any]]


class _Case:
    """One blocking call, set up on a fresh channel so that it blocks."""

    def __init__(self, name: str, build: _Builder) -> None:
        self.name = name
        self.build = build

    def __repr__(self) -> str:
        return self.name


def _str(tmp: Path, closer: Closer, **geometry: Any) -> tuple[Any, Any]:
    s = closer(make_server("str", "file", tmp / "chan.rr", **geometry))
    return s, closer(open_client(s, "file"))


def _int(tmp: Path, closer: Closer, **geometry: Any) -> tuple[Any, Any]:
    s = closer(make_server("int", "file", tmp / "chan.rr", **geometry))
    return s, closer(open_client(s, "file"))


def _lock_held(tmp: Path, closer: Closer) -> tuple[Any, Any]:
    """A Str channel whose queue lock this process holds for good (another handle took it),
    with one request queued: every taker and sender waits for the lock."""
    s, c = _str(tmp, closer)
    c.send(b"queued")
    holder = closer(open_server(s, "file"))
    holder._test_hold_lock()
    return s, c


def _recv_wait(srv: _Chan) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, _ = srv(tmp, closer)
        return s, lambda: s.recv_wait(timeout=t), s
    return build


def _recv_wait_multi(srv: _Chan) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, _ = srv(tmp, closer)
        return s, lambda: s.recv_wait_multi(4, timeout=t), s
    return build


def _wait_request(srv: _Chan) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, _ = srv(tmp, closer)
        return s, lambda: s._wait_request(timeout=t), s
    return build


def _serve(srv: _Chan) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, _ = srv(tmp, closer)
        return s, lambda: s.serve(lambda d: d, timeout=t), s
    return build


def _req(srv: _Chan, val: Any) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = srv(tmp, closer)
        return c, lambda: c.req(val, timeout=t), s
    return build


def _get_wait(srv: _Chan, val: Any) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = srv(tmp, closer)
        rid = c.send(val)
        return c, lambda: c.get_wait(rid, timeout=t), s
    return build


def _send_wait(srv: _Chan, val: Any, **geometry: Any) -> _Builder:
    """send_wait with no free slot (resp_slots=1) or a full queue (req_cap=1)."""
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = srv(tmp, closer, **geometry)
        assert c.send(val) is not None
        return c, lambda: c.send_wait(val, timeout=t), s
    return build


def _req_no_slot(srv: _Chan, val: Any) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = srv(tmp, closer, resp_slots=1)
        assert c.send(val) is not None
        return c, lambda: c.req(val, timeout=t), s
    return build


def _bell_wait(srv: _Chan) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = srv(tmp, closer)
        seen = c._bell_claim()
        return c, lambda: c._bell_wait(seen, timeout=t), s
    return build


def _locked(call: str) -> _Builder:
    def build(tmp: Path, closer: Closer, t: float | None) -> tuple[Any, Callable[[], Any], Any]:
        s, c = _lock_held(tmp, closer)
        if call == "recv_wait":
            return s, lambda: s.recv_wait(timeout=t), c
        if call == "clear":
            return s, s.clear, c
        return c, lambda: c.send_wait(b"late", timeout=t), s
    return build


CASES = [
    _Case("Server.recv_wait", _recv_wait(_str)),
    _Case("Server.recv_wait_multi", _recv_wait_multi(_str)),
    _Case("Server._wait_request", _wait_request(_str)),
    _Case("Server.serve", _serve(_str)),
    _Case("Server.recv_wait(lock held)", _locked("recv_wait")),
    _Case("Server.clear(lock held)", _locked("clear")),
    _Case("Client.send_wait(lock held)", _locked("send_wait")),
    _Case("Client.req", _req(_str, b"q")),
    _Case("Client.req(no slot)", _req_no_slot(_str, b"q")),
    _Case("Client.get_wait", _get_wait(_str, "q")),
    _Case("Client.send_wait(no slot)", _send_wait(_str, b"q", resp_slots=1)),
    _Case("Client.send_wait(queue full)", _send_wait(_str, b"q", req_cap=1, resp_slots=2)),
    _Case("Client._bell_wait", _bell_wait(_str)),
    _Case("IntServer.recv_wait", _recv_wait(_int)),
    _Case("IntServer._wait_request", _wait_request(_int)),
    _Case("IntServer.serve", _serve(_int)),
    _Case("IntClient.req", _req(_int, 5)),
    _Case("IntClient.req(no slot)", _req_no_slot(_int, 5)),
    _Case("IntClient.get_wait", _get_wait(_int, 5)),
    _Case("IntClient.send_wait(no slot)", _send_wait(_int, 5, resp_slots=1)),
    _Case("IntClient.send_wait(queue full)", _send_wait(_int, 5, req_cap=1, resp_slots=2)),
    _Case("IntClient._bell_wait", _bell_wait(_int)),
]


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize(
    ("case", "timeout"),
    [pytest.param(case, t, id=f"{case.name}-{'timeout' if t else 'no-timeout'}")
     for case in CASES for t in (None, LONG)
     if t is None or "clear" not in case.name],  # clear() takes no timeout
)
def test_close_from_another_thread_ends_a_blocked_call(
    case: _Case, timeout: float | None, tmp_path: Path, closer: Closer
) -> None:
    """SPEC §4: close() from another thread ends every call blocked on that object; each
    raises ValueError (serve() returns how many it took, as documented)."""
    target, call, other = case.build(tmp_path, closer, timeout)
    blocked = ThreadCall(call)
    assert wait_sleeping(blocked.thread.native_id or 0), "the call never went to sleep"
    assert blocked.is_alive(), f"the call returned before close(): {blocked.value!r}"
    target.close()
    assert target.closed
    blocked.thread.join(ENDS)
    assert not blocked.is_alive(), f"{case.name} still blocked {ENDS} s after close()"
    if case.name.endswith(".serve"):
        assert blocked.join() == 0
    else:
        with pytest.raises(ValueError, match="closed"):
            blocked.join()
    # nothing leaked: a closed client gave back every slot it held (its pending requests
    # too); requests it sent before stay queued for a worker
    if isinstance(target, (Client, IntClient)) and "lock held" not in case.name:
        st = other.stats()
        assert st["slots_free"] == st["resp_slots"], st


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("variant", ["str", "int"])
def test_close_ends_many_blocked_calls_on_one_object(variant: str, closer: Closer) -> None:
    """More threads than the core's table of sleepers per handle (16), in different calls
    on one client, and as many on one server: every one ends."""
    s, c = _chan(variant, closer, req_cap=64, resp_slots=64)
    idle = closer(Server(None) if variant == "str" else IntServer(None))  # nothing queued
    val: Any = b"q" if variant == "str" else 5
    ids = [c.send(val) for _ in range(10)]
    calls = [ThreadCall(c.get_wait, rid, timeout=None if i % 2 else LONG)
             for i, rid in enumerate(ids)]
    calls += [ThreadCall(c.req, val, timeout=None if i % 2 else LONG) for i in range(10)]
    calls += [ThreadCall(idle.recv_wait, timeout=None if i % 2 else LONG) for i in range(20)]
    for t in calls:
        assert wait_sleeping(t.thread.native_id or 0), "a call never went to sleep"
    c.close()
    idle.close()
    deadline = time.monotonic() + ENDS
    for t in calls:
        t.thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in calls), "calls still blocked after close()"
    for t in calls:
        with pytest.raises(ValueError, match="closed"):
            t.join()
    st = s.stats()
    assert st["slots_free"] == st["resp_slots"], st


@pytest.mark.parametrize("variant", ["str", "int"])
def test_close_ends_only_that_objects_calls(variant: str, closer: Closer) -> None:
    """Closing one client does not touch another object of the same channel."""
    s, c = _chan(variant, closer, resp_slots=4)
    other = closer(s.client())
    val: Any = b"q" if variant == "str" else 5
    mine, theirs = c.send(val), other.send(val)
    waits = [ThreadCall(c.get_wait, mine), ThreadCall(other.get_wait, theirs, timeout=LONG)]
    assert all(wait_sleeping(w.thread.native_id or 0) for w in waits)
    c.close()
    with pytest.raises(ValueError, match="closed"):
        waits[0].join(ENDS)
    assert waits[1].is_alive()
    got = s.recv_wait(timeout=LONG)
    got2 = s.recv_wait(timeout=LONG)
    assert got is not None and got2 is not None
    for data, rid in (got, got2):
        s.reply(rid, data)  # the closed client's reply is refused: its request was cancelled
    assert waits[1].join(LONG) == val


def _fork_with_a_blocked_thread(s: Any) -> dict[str, Any]:
    """Runs in a child forked while another thread of the parent was blocked on `s`."""
    t0 = time.monotonic()
    s.close()
    out: dict[str, Any] = {"close_took": time.monotonic() - t0, "closed": s.closed}
    try:
        s.recv()
        out["after"] = "no error"
    except ValueError as e:
        out["after"] = str(e)
    return out


@pytest.mark.timeout(60, method="thread")
def test_fork_while_a_thread_is_blocked(closer: Closer) -> None:
    """The child has the object, not the parent's blocked thread: its close() returns at
    once (the object is closed in the child; the mapping stays until the child exits),
    and the parent's thread is not disturbed."""
    s, c = _chan("str", closer)
    blocked = ThreadCall(s.recv_wait)
    assert wait_sleeping(blocked.thread.native_id or 0)
    kid = fork_call(lambda: _fork_with_a_blocked_thread(s), watchdog=30)
    out = kid.result(timeout=LONG)
    assert out["closed"] and "closed" in out["after"], out
    assert out["close_took"] < ENDS, out
    assert blocked.is_alive() and not s.closed
    c.send(b"after the fork")
    assert blocked.join(LONG)[0] == b"after the fork"


# An Int reply that another reader is copying out (READING: a process stopped or
# killed between its view and its release, which nothing else ends while the
# client lives) is collected by its client as a second look at the same reply, as
# a Str client does: at once, the slot freed (and by close(), which freed only a
# READY one); before, the client's wait found it
# "there" and not to collect, and looped on it (with the GIL held, for good, in
# one version). cancel() then says "there", and get() must drain it (SPEC §4). In a
# child process, whose run time bounds the test even if the GIL is never given back.
_READING_CHILD = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
from layout import ChannelMap
import reqrep
from reqrep import _format

path = sys.argv[2]
srv = reqrep.IntServer(path, req_cap=8, resp_slots=2)
cli = srv.client()

def replied_and_held(reply):
    rid = cli.send(5)
    data, wid = srv.recv()
    if reply == "error":
        srv.reply_error(wid, KeyError("gone"))
    else:
        srv.reply(wid, reply)
    with ChannelMap.open(path) as cm:
        _format.SLOT.put(cm.mm, cm.slot_off(rid & 0xFFFFFFFF), "ctl",
                         _format.ctl_word(rid >> 32, _format.SLOT_STATES["reading"]))
    return rid

got = []
rid = replied_and_held(6)
waiter = threading.Thread(target=lambda: got.append(cli.get_wait(rid, timeout=30)))
waiter.start()
waiter.join(30)
print("get_wait:", got, cli.pending(), srv.stats()["slots_free"])
rid = replied_and_held(7)
print("cancel, get:", cli.cancel(rid), cli.get(rid), cli.pending(), srv.stats()["slots_free"])
rid = replied_and_held("error")
try:
    cli.get(rid)
except reqrep.RemoteError as e:
    print("error:", e.type_name, cli.pending(), srv.stats()["slots_free"])
replied_and_held(8)
cli.close()  # gives the slot back, from READING too
print("close:", srv.stats()["slots_free"])
"""


def test_a_reply_another_reader_left_half_read_is_collected_by_its_client(
    tmp_path: Path,
) -> None:
    res = subprocess.run(
        [sys.executable, "-c", _READING_CHILD, str(Path(__file__).parent),
         str(tmp_path / "reading.rr")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "get_wait: [6] 0 2",
        "cancel, get: False 7 0 2",
        "error: KeyError 0 2",
        "close: 2",
    ], res.stdout
