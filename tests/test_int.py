"""Unit tests of every Int call (IntServer / IntClient), single process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import KINDS, Closer, IntClient, IntServer, id_index, make_server, open_client
from hypothesis import given, settings
from hypothesis import strategies as st

INT_STATS_KEYS = {
    "requests", "replies", "send_full", "recv_empty", "recoveries", "size", "capacity",
    "resp_slots", "resp_size", "slots_free", "slots_acquired", "slots_ready",
}
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


def test_file_create_then_open(chan_path: Path, closer: Closer) -> None:
    s = closer(IntServer(chan_path, req_cap=8, resp_slots=4))
    assert chan_path.exists()
    assert s.path == str(chan_path) and s.memfd == -1
    c = closer(IntClient(chan_path))
    assert isinstance(c, IntClient)
    assert (c.capacity, c.resp_slots, c.resp_size) == (8, 4, 0)
    assert c.path == str(chan_path) and c.memfd == -1
    ident = c.send(42)
    assert s.recv() == (42, ident)
    with pytest.raises(ValueError, match="has 8, asked for 1024"):  # SPEC 4: explicit, differs
        IntServer(chan_path, req_cap=1024, resp_slots=64)
    s2 = closer(IntServer(chan_path))
    assert (s2.capacity, s2.resp_slots) == (8, 4)


def test_anonymous_and_client(closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=4, resp_slots=2))
    assert s.path is None and s.memfd == -1
    c = closer(s.client())
    assert isinstance(c, IntClient)
    ident = c.send(-5)
    assert s.recv() == (-5, ident)
    assert s.reply(ident, 25)
    assert c.get(ident) == 25


def test_memfd_and_from_fd(closer: Closer) -> None:
    s = closer(IntServer.new_memfd("rr-int", req_cap=4, resp_slots=2))
    assert s.memfd >= 0 and s.path is None
    assert not os.get_inheritable(s.memfd)
    fd = os.dup(s.memfd)
    try:
        c = closer(IntClient.from_fd(fd))
        s2 = closer(IntServer.from_fd(fd))
    finally:
        os.close(fd)
    ident = c.send(1)
    assert s2.recv() == (1, ident)
    assert s2.reply(ident, 2)
    assert c.get(ident) == 2


def test_default_geometry(closer: Closer) -> None:
    s = closer(IntServer(None))
    assert (s.capacity, s.resp_slots, s.resp_size) == (1024, 64, 0)


@pytest.mark.parametrize(("req_cap", "expected"), [(1, 1), (3, 4), (100, 128), (4096, 4096)])
def test_capacity_rounds(req_cap: int, expected: int, closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=req_cap, resp_slots=1))
    assert s.capacity == expected == s.stats()["capacity"]


def test_properties_and_spin(int_server: Any, closer: Closer) -> None:
    assert (int_server.capacity, int_server.resp_slots, int_server.resp_size) == (16, 8, 0)
    assert int_server.closed is False
    int_server.spin = 0
    assert int_server.spin == 0
    c = closer(int_server.client())
    c.spin = 9
    assert c.spin == 9
    assert closer(IntServer(None, spin=4)).spin == 4


def test_every_kind_roundtrip(int_server: Any, kind: str, closer: Closer) -> None:
    c = closer(open_client(int_server, kind))
    ids = [c.send(v) for v in (0, 1, -1, I64_MAX, I64_MIN)]
    assert None not in ids and len(set(ids)) == 5
    for v, ident in zip((0, 1, -1, I64_MAX, I64_MIN), ids, strict=True):
        got = int_server.recv_wait(timeout=1)
        assert got == (v, ident)
        assert int_server.reply(ident, v)
    for v, ident in zip((0, 1, -1, I64_MAX, I64_MIN), ids, strict=True):
        got = c.get(ident)
        assert type(got) is int and got == v


def test_recv_empty(int_server: Any) -> None:
    before = int_server.stats()["recv_empty"]
    assert int_server.recv() is None
    assert int_server.recv_wait(timeout=0) is None
    assert int_server.recv_wait(timeout=0.01) is None
    assert int_server.stats()["recv_empty"] > before


def test_zero_response_is_not_none(int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    ident = c.send(0)
    assert c.get(ident) is None
    _, rid = int_server.recv()
    assert int_server.reply(rid, 0)
    assert c.get(ident) == 0
    assert c.get(ident) is None


def test_bool_is_an_int(int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    ident = c.send(True)
    v, rid = int_server.recv()
    assert type(v) is int and v == 1
    assert int_server.reply(rid, False)
    got = c.get(ident)
    assert type(got) is int and got == 0


def test_fifo_queue_full_and_slots(closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=4, resp_slots=16))
    c = closer(s.client())
    before = s.stats()["send_full"]
    ids = [c.send(i) for i in range(4)]
    assert None not in ids
    assert all(id_index(i) < 16 for i in ids)
    assert c.send(99) is None
    assert c.send_wait(99, timeout=0.02) is None
    assert s.stats()["send_full"] > before
    st = s.stats()
    assert st["size"] == 4 and st["slots_free"] == 12 and st["slots_acquired"] == 4
    assert [s.recv() for _ in range(4)] == [(i, ids[i]) for i in range(4)]
    assert s.recv() is None

    s2 = closer(IntServer(None, req_cap=16, resp_slots=2))
    c2 = closer(s2.client())
    a, b = c2.send(1), c2.send(2)
    assert a is not None and b is not None
    assert c2.send(3) is None
    assert c2.cancel(b)
    assert c2.send(3) is not None


def test_queue_wraps_many_times(closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=2, resp_slots=2))
    c = closer(s.client())
    for i in range(1000):
        x, y = c.send(i), c.send(-i)
        assert x is not None and y is not None
        assert s.recv() == (i, x)
        assert s.recv() == (-i, y)
        assert s.reply(y, i * 3)
        assert s.reply(x, i * 2)
        assert c.get(x) == i * 2
        assert c.get(y) == i * 3


def test_req_timeout_and_send_wait_get_wait(int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    assert c.req(5, timeout=0.02) is None
    assert c.pending() == 0
    assert int_server.stats()["slots_free"] == int_server.resp_slots
    v, rid = int_server.recv()
    assert v == 5 and int_server.reply(rid, 6) is False
    ident = c.send_wait(7, timeout=1)
    v, rid = int_server.recv_wait(timeout=1)
    assert int_server.reply(rid, v + 1)
    assert c.get_wait(ident, timeout=1) == 8


def test_clear_size_len_stats(int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    st0 = int_server.stats()
    assert set(st0) == INT_STATS_KEYS == set(c.stats())
    assert st0["resp_size"] == 0 and st0["recoveries"] == 0
    ids = [c.send(i) for i in range(3)]
    assert int_server.size() == len(int_server) == c.size() == len(c) == 3
    assert not int_server.is_empty() and not c.is_empty()
    st = c.stats()
    assert st["requests"] == st0["requests"] + 3
    assert (st["slots_free"], st["slots_acquired"], st["slots_ready"]) == (5, 3, 0)
    _, rid = int_server.recv()
    assert int_server.reply(rid, 1)
    st = int_server.stats()
    assert st["replies"] == st0["replies"] + 1
    assert (st["size"], st["slots_free"], st["slots_acquired"], st["slots_ready"]) == (2, 5, 2, 1)
    assert c.pending() == 3
    int_server.clear()
    assert int_server.is_empty() and int_server.size() == 0
    st = int_server.stats()
    assert (st["slots_free"], st["slots_acquired"], st["slots_ready"]) == (8, 0, 0)
    for ident in ids:
        assert c.get(ident) is None
        assert c.cancel(ident) is False
        assert int_server.reply(ident, 0) is False
    assert c.pending() == 0


def test_pending_and_close_cancels(int_server: Any) -> None:
    c = int_server.client()
    try:
        ids = [c.send(i) for i in range(3)]
        assert c.pending() == 3
        assert c.cancel(ids[0])
        assert c.pending() == 2
        c.close()
        assert int_server.stats()["slots_free"] == int_server.resp_slots
        for _v, rid in [int_server.recv() for _ in range(3)]:
            assert int_server.reply(rid, 0) is False
    finally:
        c.close()


def test_sync_unlink(chan_path: Path, closer: Closer) -> None:
    s = closer(IntServer(chan_path, req_cap=4, resp_slots=2))
    c = closer(IntClient(chan_path))
    s.sync()
    s.unlink()
    assert not chan_path.exists()
    ident = c.send(3)
    assert s.recv() == (3, ident)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "file"])
def test_unlink_without_path(kind: str, tmp_path: Path, closer: Closer) -> None:
    s = closer(make_server("int", kind, tmp_path / "chan.rr", req_cap=4, resp_slots=2))
    s.unlink()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- data rules


@pytest.mark.parametrize("value", [I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX])
def test_int64_bounds_ok(value: int, int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    ident = c.send(value)
    assert int_server.recv() == (value, ident)
    assert int_server.reply(ident, value)
    assert c.get(ident) == value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, -(2**64), 10**30])
def test_out_of_range_overflow(value: int, int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    with pytest.raises(OverflowError):
        c.send(value)
    with pytest.raises(OverflowError):
        c.send_wait(value, timeout=0)
    with pytest.raises(OverflowError):
        c.req(value, timeout=0)
    assert int_server.is_empty() and c.pending() == 0
    assert int_server.stats()["slots_free"] == int_server.resp_slots
    ident = c.send(1)
    _, rid = int_server.recv()
    with pytest.raises(OverflowError):
        int_server.reply(rid, value)
    assert c.get(ident) is None
    assert int_server.reply(rid, 2) is True
    assert c.get(ident) == 2


@pytest.mark.parametrize("bad", [1.0, "1", b"1", None, [1], object(), 1j], ids=repr)
def test_wrong_types(bad: Any, int_server: Any, closer: Closer) -> None:
    c = closer(int_server.client())
    with pytest.raises(TypeError):
        c.send(bad)
    with pytest.raises(TypeError):
        c.send_wait(bad, timeout=0)
    with pytest.raises(TypeError):
        c.req(bad, timeout=0)
    assert int_server.is_empty() and c.pending() == 0
    ident = c.send(1)
    _, rid = int_server.recv()
    with pytest.raises(TypeError):
        int_server.reply(rid, bad)
    assert int_server.reply(rid, 3)
    assert c.get(ident) == 3


# --------------------------------------------------------------------------- closed objects


def test_closed_int_objects_raise(chan_path: Path) -> None:
    s = IntServer(chan_path, req_cap=4, resp_slots=2)
    c = IntClient(chan_path)
    c.close()
    s.close()
    assert s.closed and c.closed
    server_calls: list[Any] = [
        lambda: s.client(), lambda: s.recv(), lambda: s.recv_wait(timeout=0),
        lambda: s.reply(0, 1), lambda: s.clear(), lambda: s.sync(), lambda: s.unlink(),
        lambda: s.size(), lambda: len(s), lambda: s.is_empty(), lambda: s.stats(),
        lambda: s.__enter__(),
    ]
    client_calls: list[Any] = [
        lambda: c.req(1, timeout=0), lambda: c.send(1), lambda: c.send_wait(1, timeout=0),
        lambda: c.get(0), lambda: c.get_wait(0, timeout=0), lambda: c.cancel(0),
        lambda: c.pending(), lambda: c.size(), lambda: len(c), lambda: c.is_empty(),
        lambda: c.stats(), lambda: c.__enter__(),
    ]
    for i, call in enumerate(server_calls + client_calls):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"call #{i} on a closed Int object did not raise")
    assert chan_path.exists()
    s.close()
    c.close()


def test_int_context_managers(chan_path: Path) -> None:
    with IntServer(chan_path, req_cap=4, resp_slots=2) as s, IntClient(chan_path) as c:
        assert isinstance(s, IntServer) and isinstance(c, IntClient)
        ident = c.send(1)
        assert s.recv() == (1, ident)
    assert s.closed and c.closed


@pytest.mark.parametrize("req_cap", [1, 2, 4])
def test_tiny_queue_fills_and_keeps_every_request(req_cap: int, closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=req_cap, resp_slots=16))
    c = closer(s.client())
    assert s.capacity == req_cap
    for round_ in range(3):
        ids = [c.send(round_ * 100 + i) for i in range(req_cap)]
        assert None not in ids
        assert c.send(-1) is None, "a full queue must refuse the next request"
        assert s.size() == req_cap
        got = [s.recv() for _ in range(req_cap)]
        assert got == [(round_ * 100 + i, ids[i]) for i in range(req_cap)]
        assert s.recv() is None and s.size() == 0
        for ident in ids:
            assert c.cancel(ident)


@pytest.fixture(scope="module")
def int_roundtrip_chan() -> Iterator[tuple[Any, Any]]:
    with IntServer(None, req_cap=2, resp_slots=1) as s, s.client() as c:
        yield s, c


@settings(max_examples=300, deadline=None)
@given(req=st.integers(), resp=st.integers())
def test_any_int_roundtrips(int_roundtrip_chan: tuple[Any, Any], req: int, resp: int) -> None:
    s, c = int_roundtrip_chan
    if not I64_MIN <= req <= I64_MAX:
        with pytest.raises(OverflowError):
            c.send(req)
        return
    ident = c.send(req)
    assert ident is not None
    value, rid = s.recv()
    assert rid == ident and type(value) is int and value == req
    if I64_MIN <= resp <= I64_MAX:
        assert s.reply(rid, resp)
        got = c.get(ident)
        assert type(got) is int and got == resp
    else:
        with pytest.raises(OverflowError):
            s.reply(rid, resp)
        assert c.cancel(ident)
