"""Bad arguments, bad files and bad ids: always a clear exception, never a crash."""

from __future__ import annotations

import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from helpers import Client, Closer, IntClient, IntServer, Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout import GEOM_FIELDS, channel_bytes, read_geometry
from procs import fork_call

import reqrep

ChannelFormatError = reqrep.ChannelFormatError

# --------------------------------------------------------------------------- geometry

BAD_STR_GEOMETRY: list[dict[str, Any]] = [
    {"req_cap": 0}, {"req_cap": -1}, {"req_cap": 2**24 + 1}, {"req_cap": 2**40},
    {"req_cap": 2**64}, {"req_cap": -(2**64)},
    {"resp_slots": 0}, {"resp_slots": -3}, {"resp_slots": 2**20 + 1}, {"resp_slots": 2**40},
    {"resp_size": 0}, {"resp_size": -1}, {"resp_size": 2**30 + 1}, {"resp_size": 2**64},
    {"arena": 0}, {"arena": 4095}, {"arena": -4096}, {"arena": 2**40 + 1}, {"arena": 2**70},
]
BAD_INT_GEOMETRY: list[dict[str, Any]] = [
    {"req_cap": 0}, {"req_cap": -1}, {"req_cap": 2**24 + 1}, {"req_cap": 2**40},
    {"req_cap": 2**64}, {"resp_slots": 0}, {"resp_slots": -1}, {"resp_slots": 2**20 + 1},
    {"resp_slots": 2**63},
]
WRONG_TYPE_GEOMETRY: list[dict[str, Any]] = [
    {"req_cap": "8"}, {"req_cap": 8.0}, {"resp_slots": "1"},
    {"resp_slots": 1.5}, {"resp_size": b"1"}, {"resp_size": [1]}, {"arena": "4096"},
    {"arena": 4096.0},
]


@pytest.mark.parametrize("kwargs", BAD_STR_GEOMETRY, ids=repr)
def test_str_geometry_out_of_range(kwargs: dict[str, Any], chan_path: Path) -> None:
    with pytest.raises(ValueError):
        Server(chan_path, **kwargs)
    assert not chan_path.exists(), "a refused geometry must create nothing"
    with pytest.raises(ValueError):
        Server(None, **kwargs)
    with pytest.raises(ValueError):
        Server.new_memfd("bad", **kwargs)


@pytest.mark.parametrize("kwargs", BAD_INT_GEOMETRY, ids=repr)
def test_int_geometry_out_of_range(kwargs: dict[str, Any], chan_path: Path) -> None:
    with pytest.raises(ValueError):
        IntServer(chan_path, **kwargs)
    assert not chan_path.exists()
    with pytest.raises(ValueError):
        IntServer(None, **kwargs)
    with pytest.raises(ValueError):
        IntServer.new_memfd("bad", **kwargs)


@pytest.mark.parametrize("kwargs", WRONG_TYPE_GEOMETRY, ids=repr)
def test_str_geometry_wrong_type(kwargs: dict[str, Any], chan_path: Path) -> None:
    with pytest.raises(TypeError):
        Server(chan_path, **kwargs)
    assert not chan_path.exists()
    with pytest.raises(TypeError):
        Server(None, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [k for k in WRONG_TYPE_GEOMETRY if set(k) <= {"req_cap", "resp_slots"}], ids=repr
)
def test_int_geometry_wrong_type(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        IntServer(None, **kwargs)


def test_int_server_has_no_str_geometry() -> None:
    with pytest.raises(TypeError):
        IntServer(None, 4, 2, 4096)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        IntServer(None, resp_size=10)  # type: ignore[call-arg]


def test_geometry_limits_accepted(closer: Closer) -> None:
    s = closer(Server(None, req_cap=1, resp_slots=1, resp_size=1, arena=4096))
    assert (s.capacity, s.resp_slots, s.resp_size) == (1, 1, 1)
    c = closer(s.client())
    ident = c.send(b"")
    assert s.recv() == (b"", ident)
    assert s.reply(ident, b"z")
    assert c.get(ident) == b"z"


@pytest.mark.parametrize("bad", [-1, -(2**70), "x", 1.5])
def test_bad_spin(bad: Any, closer: Closer) -> None:
    exc = TypeError if not isinstance(bad, int) else (ValueError, OverflowError)
    with pytest.raises(exc):
        Server(None, req_cap=2, spin=bad)
    with pytest.raises(exc):
        IntServer(None, req_cap=2, spin=bad)
    s = closer(Server(None, req_cap=2))
    spin = s.spin
    with pytest.raises(exc):
        s.spin = bad
    assert s.spin == spin
    c = closer(s.client())
    with pytest.raises(exc):
        c.spin = bad


# --------------------------------------------------------------------------- paths and fds


@pytest.mark.parametrize("bad", [123, 1.0, ["p"], object()], ids=repr)
def test_bad_path_types(bad: Any) -> None:
    for cls in (Server, IntServer, Client, IntClient):
        with pytest.raises(TypeError):
            cls(bad)


def test_client_needs_a_path() -> None:
    with pytest.raises(TypeError):
        Client(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        IntClient(None)  # type: ignore[arg-type]


def test_nul_in_path(tmp_path: Path) -> None:
    for cls in (Server, IntServer, Client, IntClient):
        with pytest.raises(ValueError):
            cls(str(tmp_path / "a\0b"))


def test_client_on_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Client(tmp_path / "missing.rr")
    with pytest.raises(FileNotFoundError):
        IntClient(tmp_path / "missing.rr")
    assert not (tmp_path / "missing.rr").exists()


def test_server_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Server(tmp_path / "no" / "such" / "dir.rr")
    with pytest.raises(FileNotFoundError):
        IntServer(tmp_path / "nodir" / "x.rr")


def test_server_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Server(tmp_path)
    with pytest.raises((OSError, ChannelFormatError)):
        Client(tmp_path)


def test_bad_memfd_names() -> None:
    with pytest.raises(TypeError):
        Server.new_memfd(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        IntServer.new_memfd(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Server.new_memfd("a\0b")


def test_bad_from_fd(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(w)
    closed_fd = r
    os.close(r)
    for cls in (Server, IntServer, Client, IntClient):
        with pytest.raises(TypeError):
            cls.from_fd("3")
        with pytest.raises(TypeError):
            cls.from_fd(3.0)
        with pytest.raises((OSError, ValueError)):
            cls.from_fd(-1)
        with pytest.raises(OSError):
            cls.from_fd(closed_fd)
        with pytest.raises((OSError, ValueError, OverflowError)):
            cls.from_fd(2**40)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fd = os.open(empty, os.O_RDWR)
    r, w = os.pipe()
    try:
        for cls in (Server, IntServer, Client, IntClient):
            with pytest.raises(ChannelFormatError):
                cls.from_fd(fd)
            with pytest.raises((ChannelFormatError, OSError)):
                cls.from_fd(r)
        os.fstat(fd)  # the caller still owns its fd
    finally:
        os.close(fd)
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------------- bad files


def _assert_format_error(exc: pytest.ExceptionInfo[BaseException], path: Path) -> None:
    assert isinstance(exc.value, ChannelFormatError)
    assert isinstance(exc.value, ValueError)
    assert str(path) in str(exc.value), "the message must name the path"


def test_str_file_opened_as_int(chan_path: Path, closer: Closer) -> None:
    closer(Server(chan_path, req_cap=4, resp_slots=2, resp_size=16))
    with pytest.raises(ChannelFormatError) as e1:
        IntClient(chan_path)
    _assert_format_error(e1, chan_path)
    with pytest.raises(ChannelFormatError) as e2:
        IntServer(chan_path, req_cap=4, resp_slots=2)
    _assert_format_error(e2, chan_path)
    fd = os.open(chan_path, os.O_RDWR)
    try:
        with pytest.raises(ChannelFormatError):
            IntClient.from_fd(fd)
        with pytest.raises(ChannelFormatError):
            IntServer.from_fd(fd)
    finally:
        os.close(fd)
    # the refused opens left the channel alone
    c = closer(Client(chan_path))
    assert c.send(b"x") is not None


def test_int_file_opened_as_str(chan_path: Path, closer: Closer) -> None:
    closer(IntServer(chan_path, req_cap=4, resp_slots=2))
    with pytest.raises(ChannelFormatError) as e1:
        Client(chan_path)
    _assert_format_error(e1, chan_path)
    with pytest.raises(ChannelFormatError) as e2:
        Server(chan_path)
    _assert_format_error(e2, chan_path)
    c = closer(IntClient(chan_path))
    assert c.send(1) is not None


def test_memfd_of_other_variant(closer: Closer) -> None:
    s = closer(Server.new_memfd("str", req_cap=4, resp_slots=2, resp_size=16))
    i = closer(IntServer.new_memfd("int", req_cap=4, resp_slots=2))
    with pytest.raises(ChannelFormatError):
        IntClient.from_fd(s.memfd)
    with pytest.raises(ChannelFormatError):
        Client.from_fd(i.memfd)


@pytest.mark.parametrize("ccls", [Client, IntClient])
def test_client_refuses_garbage_files(ccls: type, tmp_path: Path) -> None:
    scls = IntServer if ccls is IntClient else Server
    good = channel_bytes(tmp_path, scls, req_cap=4, resp_slots=2)
    rnd = os.urandom(len(good))
    cases = {
        "empty": b"",
        "one-byte": b"R",
        "random-small": os.urandom(100),
        "random-same-size": rnd,
        "zeros-same-size": bytes(len(good)),
        "zeros-page": bytes(4096),
        "truncated-half": good[: len(good) // 2],
        "truncated-by-one": good[:-1],
        "header-only": good[:64],
        "extended": good + bytes(4096),
        "text": b"#!/bin/sh\necho not a channel\n" * 50,
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.rr"
        p.write_bytes(content)
        with pytest.raises(ChannelFormatError) as e:
            ccls(p)
        _assert_format_error(e, p)
        fd = os.open(p, os.O_RDWR)
        try:
            with pytest.raises(ChannelFormatError):
                ccls.from_fd(fd)
        finally:
            os.close(fd)
        assert p.read_bytes() == content, f"{name}: a refused open must not modify the file"


@pytest.mark.parametrize("scls", [Server, IntServer])
def test_server_refuses_foreign_or_truncated(scls: type, tmp_path: Path) -> None:
    good = channel_bytes(tmp_path, scls, req_cap=4, resp_slots=2)
    cases = {
        "random-same-size": os.urandom(len(good)),
        "truncated-half": good[: len(good) // 2],
        "truncated-by-one": good[:-1],
        "extended": good + b"\x01" * 4096,
        "text": b"hello world\n" * 100,
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.rr"
        p.write_bytes(content)
        with pytest.raises(ChannelFormatError) as e:
            scls(p, req_cap=4, resp_slots=2)
        _assert_format_error(e, p)
        assert p.read_bytes() == content, f"{name}: a refused open must not modify the file"


@pytest.mark.parametrize("scls", [Server, IntServer])
def test_server_initialises_all_zero_file_of_right_size(scls: type, tmp_path: Path,
                                                         closer: Closer) -> None:
    geometry: dict[str, Any] = {"req_cap": 8, "resp_slots": 4}
    good = channel_bytes(tmp_path, scls, **geometry)
    p = tmp_path / "zeros.rr"
    p.write_bytes(bytes(len(good)))
    ccls = IntClient if scls is IntServer else Client
    with pytest.raises(ChannelFormatError):
        ccls(p)  # a client refuses the unpublished file
    s = closer(scls(p, **geometry))
    assert (s.capacity, s.resp_slots) == (8, 4)
    c = closer(ccls(p))
    ident = c.send(1 if scls is IntServer else b"1")
    assert s.recv()[1] == ident


# One child opens every forged header and runs the read-only calls. A crash shows up as a
# signal in the child; the progress file names the case that crashed.
FORGED_VALUES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**32, 2**63 - 1, 2**64 - 1,
                 4096, 2**40]


def _forge_all(template: bytes, workdir: str, ccls: type, scls: type) -> dict[str, int]:
    counts = {"opened": 0, "refused": 0}
    progress = os.path.join(workdir, "progress")
    p = os.path.join(workdir, "forged.rr")
    limit = min(len(template), 512)
    for off in range(0, limit, 4):
        for value in FORGED_VALUES:
            for width in (4, 8):
                if off + width > len(template) or (width == 8 and off % 8):
                    continue
                raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
                data = template[:off] + raw + template[off + width:]
                with open(progress, "w") as f:
                    f.write(f"offset={off} width={width} value={value:#x}\n")
                with open(p, "wb") as f:
                    f.write(data)
                for cls in (ccls, scls):
                    try:
                        obj = cls(p)
                    except ChannelFormatError:
                        counts["refused"] += 1
                        continue
                    counts["opened"] += 1
                    obj.stats()
                    obj.size()
                    obj.is_empty()
                    obj.close()
    return counts


@pytest.mark.timeout(180, method="thread")
@pytest.mark.parametrize("scls", [Server, IntServer])
def test_forged_headers_never_crash(scls: type, tmp_path: Path) -> None:
    ccls = IntClient if scls is IntServer else Client
    template = channel_bytes(tmp_path, scls, req_cap=4, resp_slots=2)
    child = fork_call(lambda: _forge_all(template, str(tmp_path), ccls, scls), watchdog=150)
    try:
        counts = child.result(timeout=160)
    except AssertionError as e:
        where = (tmp_path / "progress").read_text() if (tmp_path / "progress").exists() else "?"
        raise AssertionError(f"forged header crashed or hung the opener at {where}: {e}") \
            from None
    finally:
        child.kill()
    assert counts["refused"] > 0


@pytest.mark.timeout(300, method="thread")
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    variant=st.sampled_from(["str", "int"]),
    patches=st.lists(st.tuples(st.integers(0, 4095), st.binary(min_size=1, max_size=16)),
                     min_size=1, max_size=4),
    truncate=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_random_corruption_never_crashes(variant: str, patches: list[tuple[int, bytes]],
                                         truncate: int | None) -> None:
    scls, ccls = (Server, Client) if variant == "str" else (IntServer, IntClient)
    with tempfile.TemporaryDirectory() as d:
        template = channel_bytes(Path(d), scls, req_cap=4, resp_slots=2)
        data = bytearray(template)
        for off, blob in patches:
            off %= len(data)
            data[off:off + len(blob)] = blob
        if truncate is not None:
            data = data[:truncate]
        p = os.path.join(d, "corrupt.rr")
        with open(p, "wb") as f:
            f.write(data)

        def probe() -> str:
            try:
                obj = ccls(p)
            except ChannelFormatError as e:
                assert p in str(e)
                return "refused"
            obj.stats()
            obj.size()
            obj.close()
            return "opened"

        child = fork_call(probe, watchdog=30)
        try:
            outcome = child.result(timeout=40)
        finally:
            child.kill()
        if bytes(data) != template and len(data) != len(template):
            assert outcome == "refused"


# --------------------------------------------------------------------------- timeouts


BAD_TIMEOUTS: list[tuple[Any, type[BaseException]]] = [
    (-1, ValueError), (-0.001, ValueError), (-math.inf, ValueError), (math.nan, ValueError),
    ("1", TypeError), (b"1", TypeError), ([1], TypeError),
]


@pytest.mark.parametrize(("timeout", "exc"), BAD_TIMEOUTS, ids=repr)
def test_bad_timeouts_str(timeout: Any, exc: type[BaseException], closer: Closer) -> None:
    s = closer(Server(None, req_cap=8, resp_slots=4, resp_size=16))
    c = closer(s.client())
    ident = c.send(b"queued")
    calls = [
        lambda: s.recv_wait(timeout=timeout),
        lambda: s.recv_wait(timeout),
        lambda: s.recv_wait_multi(2, timeout=timeout),
        lambda: c.req(b"r", timeout=timeout),
        lambda: c.send_wait(b"w", timeout=timeout),
        lambda: c.get_wait(ident, timeout=timeout),
    ]
    for call in calls:
        with pytest.raises(exc):
            call()
    # nothing was sent, taken or cancelled by the refused calls
    assert s.size() == 1
    assert c.pending() == 1
    assert s.stats()["slots_acquired"] == 1
    assert s.recv() == (b"queued", ident)


@pytest.mark.parametrize(("timeout", "exc"), BAD_TIMEOUTS, ids=repr)
def test_bad_timeouts_int(timeout: Any, exc: type[BaseException], closer: Closer) -> None:
    s = closer(IntServer(None, req_cap=8, resp_slots=4))
    c = closer(s.client())
    ident = c.send(1)
    for call in (lambda: s.recv_wait(timeout=timeout), lambda: c.req(2, timeout=timeout),
                 lambda: c.send_wait(3, timeout=timeout),
                 lambda: c.get_wait(ident, timeout=timeout)):
        with pytest.raises(exc):
            call()
    assert s.size() == 1 and c.pending() == 1
    assert s.recv() == (1, ident)


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 2**70, 10**9])
def test_huge_timeouts_do_not_crash(timeout: Any, closer: Closer) -> None:
    s = closer(Server(None, req_cap=8, resp_slots=4, resp_size=16))
    c = closer(s.client())
    ident = c.send(b"q")
    try:
        got = s.recv_wait(timeout=timeout)
    except (ValueError, OverflowError):
        return
    assert got == (b"q", ident)
    assert s.reply(ident, b"r")
    assert c.get_wait(ident, timeout=timeout) == b"r"


def test_int_and_zero_timeouts_accepted(closer: Closer) -> None:
    s = closer(Server(None, req_cap=8, resp_slots=4, resp_size=16))
    c = closer(s.client())
    assert s.recv_wait(0) is None
    assert s.recv_wait(timeout=0.0) is None
    assert s.recv_wait(timeout=False) is None  # bool is an int
    ident = c.send_wait(b"x", timeout=1)
    assert s.recv_wait(1) == (b"x", ident)


# --------------------------------------------------------------------------- ids


BAD_ID_OVERFLOW = [-1, -(2**32), 2**64, 2**64 + 1, 2**100, -(2**100)]
BAD_ID_TYPE: list[Any] = [1.0, "1", b"1", None, [1], object()]


def _stale_ids(resp_slots: int) -> list[int]:
    return [resp_slots, resp_slots + 1, 2**32 - 1, (5 << 32) | resp_slots, 2**64 - 1,
            (2**32 - 1) << 32, 0xFFFFFFFF00000000 | resp_slots]


@pytest.mark.parametrize("variant", ["str", "int"])
def test_bad_ids(variant: str, closer: Closer) -> None:
    if variant == "str":
        s = closer(Server(None, req_cap=8, resp_slots=4, resp_size=16))
        val: Any = b"v"
    else:
        s = closer(IntServer(None, req_cap=8, resp_slots=4))
        val = 7
    c = closer(s.client())
    ident = c.send(val)
    _, rid = s.recv()
    assert rid == ident

    for bad in BAD_ID_OVERFLOW:
        for call in (lambda b=bad: s.reply(b, val), lambda b=bad: c.get(b),
                     lambda b=bad: c.get_wait(b, timeout=0), lambda b=bad: c.cancel(b)):
            with pytest.raises(OverflowError):
                call()
    for bad in BAD_ID_TYPE:
        for call in (lambda b=bad: s.reply(b, val), lambda b=bad: c.get(b),
                     lambda b=bad: c.get_wait(b, timeout=0), lambda b=bad: c.cancel(b)):
            with pytest.raises(TypeError):
                call()
    for stale in _stale_ids(4) + [ident ^ (1 << 32), ident + (1 << 32)]:
        assert s.reply(stale, val) is False
        assert c.get(stale) is None
        assert c.get_wait(stale, timeout=0) is None
        assert c.get_wait(stale, timeout=0.01) is None
        assert c.cancel(stale) is False
    # the real request was not touched by any of it
    st = s.stats()
    assert (st["slots_acquired"], st["slots_ready"], st["slots_free"]) == (1, 0, 3)
    assert c.pending() == 1
    assert s.reply(ident, val) is True
    assert c.get(ident) == val


# --------------------------------------------------------------------------- counts


def test_bad_batch_counts(closer: Closer) -> None:
    s = closer(Server(None, req_cap=8, resp_slots=8, resp_size=16))
    c = closer(s.client())
    for i in range(3):
        c.send(b"%d" % i)
    for call in (lambda: s.recv_multi(-1), lambda: s.recv_wait_multi(-1, timeout=0),
                 lambda: s.drain(-1), lambda: s.drain(max=-5)):
        with pytest.raises(ValueError):
            call()
    for call in (lambda: s.recv_multi("2"), lambda: s.recv_multi(2.0),
                 lambda: s.recv_wait_multi("1", timeout=0), lambda: s.drain("1"),
                 lambda: s.drain(1.0)):
        with pytest.raises(TypeError):
            call()
    for call in (lambda: s.recv_multi(2**64), lambda: s.recv_multi(-(2**64)),
                 lambda: s.drain(2**70)):
        with pytest.raises((ValueError, OverflowError)):
            call()
    assert s.size() == 3
    assert len(s.drain()) == 3


def test_recv_wait_multi_n_none_is_type_error(closer: Closer) -> None:
    """n is an int (SPEC: recv_wait_multi(n, timeout=None); stub: n: int); None is not a count
    (drain(max=None) is the call that means "everything")."""
    s = closer(Server(None, req_cap=8, resp_slots=8, resp_size=16))
    c = closer(s.client())
    c.send(b"x")
    with pytest.raises(TypeError):
        s.recv_wait_multi(None, timeout=0)
    with pytest.raises(TypeError):
        s.recv_multi(None)
    assert s.size() == 1


def _forgeries(g: dict[str, int], variant: str) -> dict[str, dict[str, int]]:
    """Single-field (and a few double-field) lies that no valid channel can contain."""
    total = g["total_size"]
    cases: dict[str, dict[str, int]] = {
        "magic": {"magic": g["magic"] ^ 1},
        "version-0": {"version": 0},
        "version-next": {"version": g["version"] + 1},
        "version-max": {"version": 2**32 - 1},
        "variant-0": {"variant": 0},
        "variant-other": {"variant": 3 - g["variant"]},
        "variant-bogus": {"variant": 77},
        "total-smaller": {"total_size": total - 64},
        "total-larger": {"total_size": total + 4096},
        "total-0": {"total_size": 0},
        "total-huge": {"total_size": 2**63},
        "req_cap-0": {"req_cap": 0},
        "req_cap-not-pow2": {"req_cap": 3},
        "req_cap-huge": {"req_cap": 2**31},
        "resp_slots-0": {"resp_slots": 0},
        "resp_slots-huge": {"resp_slots": 2**31},
        "off_cells-0": {"off_cells": 0},
        "off_cells-outside": {"off_cells": total},
        "off_cells-wrap": {"off_cells": 2**64 - 64},
        "off_slots-0": {"off_slots": 0},
        "off_slots-overlap-cells": {"off_slots": g["off_cells"]},
        "off_slots-outside": {"off_slots": total - 8},
        "off_slots-wrap": {"off_slots": 2**64 - 8},
        "slot_stride-0": {"slot_stride": 0},
        "slot_stride-huge": {"slot_stride": 2**31},
        "cells-overlap-header": {"off_cells": 64},
    }
    if variant == "str":
        cases.update({
            "resp_size-0": {"resp_size": 0},
            "resp_size-huge": {"resp_size": 2**31},
            "resp_size-beyond-stride": {"resp_size": g["slot_stride"] * 4},
            "arena-0": {"arena_cap": 0},
            "arena-huge": {"arena_cap": 2**40},
            "arena-beyond-file": {"arena_cap": total},
            "off_arena-0": {"off_arena": 0},
            "off_arena-outside": {"off_arena": total},
            "off_arena-overlap-slots": {"off_arena": g["off_slots"]},
            "off_arena-wrap": {"off_arena": 2**64 - 4096},
        })
    return cases


@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("variant", ["str", "int"])
def test_forged_geometry_is_refused(variant: str, tmp_path: Path) -> None:
    scls, ccls = (Server, Client) if variant == "str" else (IntServer, IntClient)
    template = channel_bytes(tmp_path, scls, req_cap=8, resp_slots=4)
    g = read_geometry(template)  # the header as the core describes it (layout.py)
    if g["total_size"] != len(template) or g["req_cap"] != 8 or g["resp_slots"] != 4:
        pytest.skip(f"header layout differs from the one this test knows: {g}")
    files: dict[str, str] = {}
    for name, change in _forgeries(g, variant).items():
        data = bytearray(template)
        for field_name, value in change.items():
            off, fmt = GEOM_FIELDS[field_name]
            struct.pack_into("<" + fmt, data, off, value)
        p = tmp_path / f"{name}.rr"
        p.write_bytes(bytes(data))
        files[name] = str(p)

    def probe() -> dict[str, str]:
        out: dict[str, str] = {}
        for name, path in files.items():
            for cls in (ccls, scls):
                try:
                    obj = cls(path)
                except ChannelFormatError as e:
                    out[f"{name}/{cls.__name__}"] = "refused" if path in str(e) else \
                        f"refused without naming the path: {e}"
                    continue
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    out[f"{name}/{cls.__name__}"] = f"{type(e).__name__}: {e}"
                    continue
                obj.close()
                out[f"{name}/{cls.__name__}"] = "opened"
        return out

    kid = fork_call(probe, watchdog=90)
    try:
        out = kid.result(timeout=100)
    finally:
        kid.kill()
    wrong = {k: v for k, v in out.items() if v != "refused"}
    assert wrong == {}, f"forged headers not refused with ChannelFormatError: {wrong}"
