"""Faults in channel files (SPEC sections 2 and 5): creators that die or get stuck, hostile
and corrupt files, shared memory damaged after opening, and a fuzzer.

Anything that could crash the interpreter runs in a forked child or a subprocess, so a crash
shows up as a signal in the child (and the test names the case) instead of killing the run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Client, IntClient, IntServer, Server
from layout import GEOMETRY, ChannelMap, channel_bytes, read_geometry, write_geometry
from procs import Shared, bounded, children, fork_call

import reqrep
from reqrep import ChannelFormatError, _format

pytestmark = pytest.mark.timeout(120, method="thread")

PAIRS = [(Server, Client), (IntServer, IntClient)]
PAIR_IDS = ["str", "int"]
GEOM: dict[type, dict[str, Any]] = {
    Server: {"req_cap": 8, "resp_slots": 4, "resp_size": 128},
    IntServer: {"req_cap": 8, "resp_slots": 4},
}
FREE, READY = (_format.SLOT_STATES[k] for k in ("free", "ready"))
INT_CELL_FIELDS = ("turn", "value", "id")  # the words of an Int cell


def _v(scls: type, n: int) -> Any:
    return n if scls is IntServer else b"v%d" % n


def _roundtrip(s: Any, c: Any, scls: type, n: int = 3) -> None:
    for i in range(n):
        ident = c.send(_v(scls, i))
        assert ident is not None
        got = s.recv()
        assert got == (_v(scls, i), ident)
        assert s.reply(ident, _v(scls, i + 100))
        assert c.get(ident) == _v(scls, i + 100)


# --------------------------------------------------------------------------- creation


def _hold_flock_forever(path: str, ready: Shared, size: int = 0) -> None:
    """Child body: create `path`, take LOCK_EX on it, optionally size it with zeros, say so
    in ready[0], then sleep until killed (the child of a dead or stuck creator)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if size:
        os.ftruncate(fd, size)
    ready[0] = 1
    while True:
        time.sleep(1)


@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("content", ["empty", "zero-100", "zero-header", "zero-page",
                                     "zero-right-size", "zero-wrong-size", "zero-1MiB"])
def test_unpublished_file_server_initialises_client_refuses(scls: type, ccls: type,
                                                            content: str,
                                                            tmp_path: Path) -> None:
    """What a creator that died before publishing leaves: an empty or all-zero file. A
    Client refuses it and says so; a Server initialises it with its own geometry."""
    right = len(channel_bytes(tmp_path, scls, **GEOM[scls]))
    size = {"empty": 0, "zero-100": 100, "zero-header": 512, "zero-page": 4096,
            "zero-right-size": right, "zero-wrong-size": right + 8192,
            "zero-1MiB": 1 << 20}[content]
    p = tmp_path / "chan.rr"
    p.write_bytes(bytes(size))
    with pytest.raises(ChannelFormatError) as e:
        ccls(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "never initialised" in msg, f"the reason does not say so: {msg}"
    assert p.stat().st_size == size and p.read_bytes() == bytes(size), "a refusal changed it"
    with scls(p, **GEOM[scls]) as s:
        assert (s.capacity, s.resp_slots) == (8, 4)
        assert p.stat().st_size == right
        with ccls(p) as c:
            _roundtrip(s, c, scls)


@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
def test_creator_killed_after_writing_the_geometry(scls: type, ccls: type,
                                                   tmp_path: Path) -> None:
    """A creator killed between writing the header's geometry and publishing the magic leaves
    a file that is all zero except for an unpublished header. It is not a foreign file:
    a Server initialises it, a Client refuses it as never initialised."""
    good = channel_bytes(tmp_path, scls, **GEOM[scls])
    data = bytearray(len(good))
    data[8:512] = good[8:512]  # the header as init_header writes it, magic still 0
    p = tmp_path / "chan.rr"
    p.write_bytes(bytes(data))
    with pytest.raises(ChannelFormatError) as e:
        ccls(p)
    assert "never initialised" in str(e.value), str(e.value)
    with scls(p, **GEOM[scls]) as s, ccls(p) as c:
        _roundtrip(s, c, scls)


@pytest.mark.parametrize("size", ["empty", "zero-right-size"])
@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
def test_creator_killed_holding_the_file_lock(scls: type, ccls: type, size: str,
                                              tmp_path: Path) -> None:
    """A process dies (SIGKILL) holding LOCK_EX on a new file: the lock goes with it, the
    next Server proceeds at once and initialises the file."""
    right = len(channel_bytes(tmp_path, scls, **GEOM[scls]))
    p = tmp_path / "chan.rr"
    ready = Shared(1)
    with children() as kids:
        kid = fork_call(lambda: _hold_flock_forever(str(p), ready,
                                                   right if size != "empty" else 0),
                        watchdog=120)
        kids.append(kid)
        assert ready.wait_for(0, 1)
        kid.kill()

        def opener() -> tuple[str, float]:
            t0 = time.monotonic()
            with scls(p, **GEOM[scls]) as s, ccls(p) as c:
                _roundtrip(s, c, scls)
            return "ok", time.monotonic() - t0

        what, took = bounded(opener, timeout=30)
    assert what == "ok"
    assert took < 2.0, f"opening after the creator died took {took:.2f}s"


@pytest.mark.timeout(180, method="thread")
def test_stuck_creator_makes_openers_time_out(tmp_path: Path) -> None:
    """A creator stopped (not dead) while holding LOCK_EX: openers give up with TimeoutError
    after ~5 s instead of hanging; once it is gone they proceed."""
    p = tmp_path / "chan.rr"
    ready = Shared(1)
    with children() as kids:
        holder = fork_call(lambda: _hold_flock_forever(str(p), ready), watchdog=170)
        kids.append(holder)
        assert ready.wait_for(0, 1)
        os.kill(holder.pid, signal.SIGSTOP)

        def opener(cls: type) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                t0 = time.monotonic()
                try:
                    obj = cls(p)
                except TimeoutError as e:
                    return {"exc": "TimeoutError", "errno": e.errno, "msg": str(e),
                            "took": time.monotonic() - t0}
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    return {"exc": type(e).__name__, "msg": str(e),
                            "took": time.monotonic() - t0}
                obj.close()
                return {"exc": None, "took": time.monotonic() - t0}
            return run

        probes = {cls.__name__: fork_call(opener(cls), watchdog=90)
                  for cls in (Server, IntServer, Client, IntClient)}
        kids.extend(probes.values())
        results = {name: kid.result(timeout=60) for name, kid in probes.items()}
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        with Server(p, req_cap=4, resp_slots=2, resp_size=8) as s, Client(p) as c:
            _roundtrip(s, c, Server)
    print(results)
    for name, r in results.items():
        assert r["exc"] == "TimeoutError", f"{name}: {r}"
        assert r["errno"] == errno.ETIMEDOUT, f"{name}: {r}"
        assert 3.0 <= r["took"] < 15.0, f"{name}: {r}"


# --------------------------------------------------------------------------- hostile files


def _hostile_cases(good: bytes, variant: str) -> dict[str, bytes]:
    g = read_geometry(good)
    total = g["total_size"]
    cases: dict[str, bytes] = {
        "truncated-by-one": good[:-1],
        "truncated-half": good[: len(good) // 2],
        "truncated-to-header": good[:512],
        "truncated-inside-header": good[:300],
        "truncated-by-a-page": good[:-4096],
        "extended-by-one": good + b"\0",
        "extended-by-a-page": good + bytes(4096),
        "zero-filled-but-magic": good[:8] + bytes(len(good) - 8),
        "foreign-pdf": b"%PDF-1.7\n" + os.urandom(len(good) - 9),
        "foreign-elf": b"\x7fELF\x02\x01\x01" + bytes(len(good) - 7),
        "random-same-size": os.urandom(len(good)),
        "random-header": os.urandom(512) + good[512:],
    }

    def forged(name: str, **change: int) -> None:
        data = bytearray(good)
        for k, v in change.items():
            write_geometry(data, k, v)
        cases[name] = bytes(data)

    forged("magic-flipped", magic=g["magic"] ^ 0x100)
    forged("magic-byteswapped", magic=int.from_bytes(g["magic"].to_bytes(8, "little"), "big"))
    forged("version-0", version=0)
    forged("version-next", version=g["version"] + 1)
    forged("version-max", version=0xFFFFFFFF)
    forged("variant-0", variant=0)
    forged("variant-other", variant=3 - g["variant"])
    forged("variant-99", variant=99)
    forged("total-size-larger", total_size=total + 4096)
    forged("total-size-smaller", total_size=total - 4096)
    forged("req-cap-doubled", req_cap=g["req_cap"] * 2)
    forged("req-cap-not-pow2", req_cap=g["req_cap"] + 1)
    forged("resp-slots-doubled", resp_slots=g["resp_slots"] * 2)
    forged("slot-stride-small", slot_stride=16)
    for region in ("off_cells", "off_slots", "off_arena"):
        forged(f"{region}-at-end", **{region: total})
        forged(f"{region}-beyond", **{region: total + 4096})
        forged(f"{region}-huge", **{region: 2**63})
        forged(f"{region}-wraps", **{region: 2**64 - 64})
        forged(f"{region}-in-header", **{region: 64})
        forged(f"{region}-zero", **{region: 0})
    forged("slots-overlap-cells", off_slots=g["off_cells"])
    forged("cells-overlap-slots", off_cells=g["off_slots"])
    forged("arena-overlap-slots", off_arena=g["off_slots"])
    forged("all-regions-at-512", off_cells=512, off_slots=512, off_arena=512)
    # A self-consistent larger geometry, with total_size matching a file that is too short.
    forged("consistent-but-file-short", req_cap=g["req_cap"] * 4,
           off_slots=g["off_slots"] + 3 * g["req_cap"] * _format.FILE["cell_size"],
           off_arena=g["off_arena"] + 3 * g["req_cap"] * _format.FILE["cell_size"],
           total_size=total + 4096)
    # total_size equal to the file size, geometry saying otherwise.
    data = bytearray(good + bytes(4096))
    write_geometry(data, "total_size", total + 4096)
    cases["total-matches-longer-file-geometry-not"] = bytes(data)
    if variant == "str":
        forged("resp-size-beyond-stride", resp_size=g["slot_stride"])
        forged("arena-cap-doubled", arena_cap=g["arena_cap"] * 2)
        forged("arena-cap-unaligned", arena_cap=g["arena_cap"] + 8)
        forged("arena-cap-zero", arena_cap=0)
    else:
        forged("int-with-resp-size", resp_size=64)
        forged("int-with-arena", arena_cap=4096)
    return cases


@pytest.mark.timeout(180, method="thread")
@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
def test_hostile_files_are_refused(scls: type, ccls: type, tmp_path: Path) -> None:
    """Every case is refused with ChannelFormatError naming the path, by Server, Client and
    from_fd alike, and the refusal leaves the file as it was."""
    variant = "int" if scls is IntServer else "str"
    good = channel_bytes(tmp_path, scls, **GEOM[scls])
    cases = _hostile_cases(good, variant)
    paths: dict[str, str] = {}
    for name, content in cases.items():
        p = tmp_path / f"{name}.rr"
        p.write_bytes(content)
        paths[name] = str(p)

    def probe() -> dict[str, str]:
        out: dict[str, str] = {}
        for name, path in paths.items():
            before = Path(path).read_bytes()
            for label, opener in (
                ("Client", lambda p=path: ccls(p)),
                ("Server", lambda p=path: scls(p, **GEOM[scls])),
                ("from_fd", lambda p=path: _from_fd(ccls, p)),
            ):
                try:
                    obj = opener()
                except ChannelFormatError as e:
                    ok = path in str(e) or label == "from_fd"
                    out[f"{name}/{label}"] = "refused" if ok else f"no path in: {e}"
                except Exception as e:  # noqa: BLE001 - reported to the parent
                    out[f"{name}/{label}"] = f"{type(e).__name__}: {e}"
                else:
                    obj.close()
                    out[f"{name}/{label}"] = "opened"
                if Path(path).read_bytes() != before:
                    out[f"{name}/{label}"] += " (and modified the file)"
        return out

    out = bounded(probe, timeout=150)
    wrong = {k: v for k, v in out.items() if v != "refused"}
    assert wrong == {}, f"not refused cleanly: {wrong}"
    assert len(out) == 3 * len(cases)


def _from_fd(cls: type, path: str) -> Any:
    fd = os.open(path, os.O_RDWR)
    try:
        return cls.from_fd(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("cls", [Server, Client, IntServer, IntClient])
def test_special_files_are_refused(cls: type, tmp_path: Path) -> None:
    """A FIFO or a device is not a channel: refused, not blocked on or mapped."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def probe() -> dict[str, str]:
        out: dict[str, str] = {}
        for name, opener in (("fifo", lambda: cls(fifo)),
                             ("dev-zero-fd", lambda: _from_fd(cls, "/dev/zero")),
                             ("dev-null", lambda: cls("/dev/null"))):
            try:
                obj = opener()
            except (ChannelFormatError, OSError) as e:
                out[name] = type(e).__name__
            else:
                obj.close()
                out[name] = "opened"
        return out

    out = bounded(probe, timeout=30)
    assert out["fifo"] == "ChannelFormatError", out
    assert out["dev-zero-fd"] == "ChannelFormatError", out
    assert out["dev-null"] in ("ChannelFormatError", "PermissionError", "OSError"), out
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# --------------------------------------------------------------------------- damage after open


@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("damage", ["garbage", "zeros", "huge-regions"])
def test_header_changed_after_open_changes_nothing(scls: type, ccls: type, damage: str,
                                                   tmp_path: Path) -> None:
    """The geometry is copied at open: rewriting it afterwards affects neither the open
    handles (round trips, stats) nor memory safety; new opens are refused."""
    p = tmp_path / "chan.rr"
    with scls(p, **GEOM[scls]) as s, ccls(p) as c, ChannelMap.open(p) as cm:
        _roundtrip(s, c, scls, 2)
        stats_before = {k: v for k, v in s.stats().items()
                        if k in ("capacity", "resp_slots", "resp_size", "arena_cap")}
        g = read_geometry(cm.mm)
        for name in GEOMETRY:
            if damage == "garbage":
                value = random.getrandbits(64)
            elif damage == "zeros":
                value = 0
            else:
                value = {"off_cells": g["total_size"] * 1000, "off_slots": 2**62,
                         "off_arena": 2**63, "req_cap": 2**24, "resp_slots": 2**20,
                         "resp_size": 2**30, "slot_stride": 2**31, "total_size": 2**42,
                         "arena_cap": 2**40}.get(name, g[name])
            write_geometry(cm.mm, name, value)

        def use() -> dict[str, Any]:
            _roundtrip(s, c, scls, 200)
            for _ in range(8):  # fill the queue and the pool, then empty them
                c.send(_v(scls, 1))
            while s.recv() is not None:
                pass
            return {k: v for k, v in s.stats().items()
                    if k in ("capacity", "resp_slots", "resp_size", "arena_cap")}

        assert bounded(use, timeout=60) == stats_before
        with pytest.raises(ChannelFormatError):
            ccls(p)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("field", ["beg", "len", "both", "flags", "id", "mark", "all"])
def test_corrupt_str_cells_after_open(field: str, size: str, tmp_path: Path) -> None:
    """Queue cells are shared memory: recv never reads outside the arena (or the cell, for a
    small entry kept there) whatever they say; it returns data or raises
    ChannelFormatError, and the queue goes on working."""
    p = tmp_path / "chan.rr"
    inline = _format.FILE["str_inline"]  # an entry up to this long lies in its cell
    values = [2**64 - 1, 2**63, 2**32 - 1, 2**31, 4096, 4095, 4089, 4088, inline + 1, 1]

    def payload(i: int) -> bytes:
        data = b"payload-%d" % i
        return data if size == "small" else data * (2 * inline // len(data) + 1)

    with Server(p, req_cap=16, resp_slots=16, resp_size=64) as s, Client(p) as c, \
            ChannelMap.open(p) as cm:

        def run() -> dict[str, Any]:
            outcomes: dict[str, int] = {}
            for round_ in range(3):
                for i, value in enumerate(values):
                    if c.send(payload(i)) is None:
                        outcomes["full"] = outcomes.get("full", 0) + 1  # damage says full
                        continue
                    off = cm.cell_off(cm.tail - 1)
                    if field in ("beg", "both", "all"):
                        _format.STR_CELL.put(cm.mm, off, "beg", value + round_)
                    if field in ("len", "both", "all"):
                        _format.STR_CELL.put(cm.mm, off, "len", value + round_)
                    if field in ("flags", "all"):
                        _format.STR_CELL.put(cm.mm, off, "flags", value)
                    if field in ("id", "all"):
                        _format.STR_CELL.put(cm.mm, off, "id", value * 7919)
                    if field in ("mark", "all"):
                        _format.STR_CELL.put(cm.mm, off, "mark", value + round_)
                for _ in values:
                    for call in (s.recv, lambda: s.recv_multi(2), lambda: s.drain(1)):
                        try:
                            got = call()
                        except ChannelFormatError:
                            outcomes["ChannelFormatError"] = outcomes.get(
                                "ChannelFormatError", 0) + 1
                            continue
                        outcomes["data"] = outcomes.get("data", 0) + 1
                        for data, rid in (got if isinstance(got, list)
                                          else [] if got is None else [got]):
                            assert isinstance(data, (bytes, str)) and len(data) <= 4096
                            assert isinstance(rid, int)
                            s.reply(rid, b"r")
                s.clear()  # frees the slots of requests whose ids were damaged
            while True:  # whatever is left goes, then the queue works again
                try:
                    if s.recv() is None:
                        break
                except ChannelFormatError:
                    pass
            s.clear()
            ident = c.send(b"after")
            assert s.recv() == (b"after", ident)
            st = s.stats()
            return {"outcomes": outcomes, "size": st["size"], "arena_used": st["arena_used"]}

        res = bounded(run, timeout=60)
    print(res)
    assert res["size"] == 0 and res["arena_used"] == 0


def test_corrupt_int_cells_after_open(tmp_path: Path) -> None:
    p = tmp_path / "chan.rr"
    with IntServer(p, req_cap=8, resp_slots=16) as s, IntClient(p) as c, \
            ChannelMap.open(p) as cm:

        def run() -> int:
            n = 0
            for value in (0, 1, 2, 3, 2**63, 2**64 - 1, 17, 16):
                for i in range(3):
                    c.send(i)
                for k in range(8):
                    _format.INT_CELL.put(cm.mm, cm.cell_off(k), INT_CELL_FIELDS[value % 3],
                                         value + k)
                for _ in range(10):
                    for call in (s.recv, lambda: s.recv_wait(timeout=0.01),
                                 lambda: c.send(5), s.size, s.stats):
                        call()
                        n += 1
                s.clear()
            return n

        assert bounded(run, timeout=60) > 0


@pytest.mark.parametrize(("scls", "ccls"), PAIRS, ids=PAIR_IDS)
def test_corrupt_slots_after_open(scls: type, ccls: type, tmp_path: Path) -> None:
    """Slot words are shared memory too: get/get_wait/cancel/reply/stats never read outside
    the slot or block past their timeout, whatever ctl/len/flags/owner/worker say."""
    p = tmp_path / "chan.rr"
    resp_size = 128
    with scls(p, **GEOM[scls]) as s, ccls(p) as c, ChannelMap.open(p) as cm:

        def run() -> dict[str, int]:
            outcomes: dict[str, int] = {}
            rnd = random.Random(1234)
            words = [0, 1, 2, 3, 4, 15, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
            for round_ in range(60):
                ident = c.send(_v(scls, round_))
                got = s.recv()
                assert got is not None and got[1] == ident
                if round_ % 2:
                    s.reply(ident, _v(scls, 1) if scls is IntServer else b"x" * 100)
                off = cm.slot_off(ident & 0xFFFFFFFF)
                which = rnd.choice(["ctl", "len", "flags", "owner", "worker", "ready-len",
                                    "ready-flags"])
                value = rnd.choice(words)
                if which == "ctl":
                    _format.SLOT.put(cm.mm, off, "ctl", value)
                elif which == "len":
                    _format.SLOT.put(cm.mm, off, "len", value)
                elif which == "flags":
                    _format.SLOT.put(cm.mm, off, "flags", value)
                elif which == "owner":
                    _format.SLOT.put(cm.mm, off, "owner", value)
                elif which == "worker":
                    _format.SLOT.put(cm.mm, off, "worker", value)
                else:  # a READY slot of this generation with a lying length or flags
                    _format.SLOT.put(cm.mm, off, "ctl", _format.ctl_word(ident >> 32, READY))
                    _format.SLOT.put(cm.mm, off, "len" if which == "ready-len" else "flags",
                                     value)
                calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
                    (c.get, (ident,)), (c.get_wait, (ident, 0.02)), (c.cancel, (ident,)),
                    (s.reply, (ident, _v(scls, 2))), (c.get, (ident,)), (s.stats, ()),
                    (c.pending, ())]
                for call, args in calls:
                    try:
                        r = call(*args)
                    # (a forged flags word may mark the reply an error: RemoteError)
                    except (ChannelFormatError, reqrep.WorkerDiedError, reqrep.RemoteError) as e:
                        key = type(e).__name__
                    else:
                        key = type(r).__name__
                        if isinstance(r, (bytes, str)):
                            assert len(r) <= resp_size, f"{which}={value:#x}: {len(r)} bytes"
                    outcomes[key] = outcomes.get(key, 0) + 1
                _format.SLOT.put(cm.mm, off, "ctl", _format.ctl_word((ident >> 32) + 1, FREE))
                _format.SLOT.put(cm.mm, off, "owner", 0)
            return outcomes

        print(bounded(run, timeout=60))


def test_corrupt_counters_after_open(tmp_path: Path) -> None:
    """head/tail far apart, behind each other, or at the end of their range: size() and
    stats() stay in range, recv/send return, clear() puts things right."""
    p = tmp_path / "chan.rr"
    with Server(p, req_cap=8, resp_slots=4, resp_size=64) as s, Client(p) as c, \
            ChannelMap.open(p) as cm:

        def run() -> list[tuple[int, int]]:
            seen: list[tuple[int, int]] = []
            for head, tail in ((0, 2**63), (2**63, 0), (5, 3), (2**64 - 1, 2**64 - 1),
                               (2**64 - 2, 1), (0, 9), (100, 100 + 8)):
                cm.head = head
                cm.tail = tail
                st = s.stats()
                assert 0 <= st["size"] <= 8 and 0 <= s.size() <= 8
                assert 0 <= st["arena_used"] <= st["arena_cap"]
                for call in (s.recv, lambda: s.recv_multi(3), lambda: c.send(b"x")):
                    try:
                        got = call()
                    except ChannelFormatError:
                        continue
                    if isinstance(got, tuple):
                        s.reply(got[1], b"y")
                s.clear()
                ident = c.send(b"ok")
                assert s.recv() == (b"ok", ident)
                seen.append((head, tail))
            return seen

        assert len(bounded(run, timeout=60)) == 7


# --------------------------------------------------------------------------- fuzzer


@pytest.mark.timeout(150, method="thread")
def test_fuzzed_files_never_crash(tmp_path: Path) -> None:
    """Thousands of damaged channel files (header fields, random bytes anywhere, resized),
    opened and used with tiny timeouts, some damaged again after opening. The process must
    never die of a signal, and no call may block past its timeout."""
    seed = random.randrange(2**32)
    helper = Path(__file__).with_name("file_fuzz.py")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(helper.parent), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(helper), str(tmp_path), "35", str(seed)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    progress = (tmp_path / "progress").read_text() if (tmp_path / "progress").exists() else "?"
    print(f"seed={seed} rc={proc.returncode} {proc.stdout.strip()} last: {progress.strip()}")
    if proc.returncode < 0:
        raise AssertionError(
            f"the fuzzer died of {signal.Signals(-proc.returncode).name} (seed {seed}) at: "
            f"{progress}\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tried = int(proc.stdout.split("tried=")[1].split()[0])
    hung = int(proc.stdout.split("hung=")[1].split()[0])
    assert tried >= 300, f"only {tried} files in the time budget"
    cases = (tmp_path / "hung_cases").read_text()
    assert hung == 0, (f"{hung} files where a call with a tiny timeout blocked for 2 s or "
                       f"more (seed {seed}), e.g.:\n{cases}")


def test_fuzz_helper_counts(tmp_path: Path) -> None:
    """The fuzzer itself runs (a short in-process smoke run, so a broken harness is seen)."""
    def run() -> int:
        import file_fuzz

        return file_fuzz.fuzz_main(str(tmp_path), 1.0, 7)[0]

    assert bounded(run, timeout=60) > 10


@pytest.mark.parametrize("how", ["stale", "missing"])
def test_str_cell_mark_is_only_a_hint(how: str, tmp_path: Path) -> None:
    """Receivers watch the mark of the cell at head, but tail decides: a stale mark (its
    sender died before moving tail) reads as empty and is cleared; a missing one (a forged
    file) hides nothing."""
    p = tmp_path / "chan.rr"
    with Server(p, req_cap=8, resp_slots=8, resp_size=64) as s, Client(p) as c, \
            ChannelMap.open(p) as cm:
        if how == "stale":
            cell = cm.cell_off(cm.tail)
            _format.STR_CELL.put(cm.mm, cell, "mark", cm.tail + 1)
            assert s.recv() is None and s.recv_wait(timeout=0.05) is None
            assert _format.STR_CELL.get(cm.mm, cell, "mark") == cm.tail  # cleared by the looker
        rid = c.send(b"x")
        if how == "missing":
            _format.STR_CELL.put(cm.mm, cm.cell_off(cm.head), "mark", 0)
        assert bounded(lambda: s.recv_wait(timeout=5.0), timeout=60) == (b"x", rid)
        assert s.size() == 0
