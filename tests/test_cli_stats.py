"""``python -m reqrep stats PATH [--json]`` on live channels and on files that are not channels.

The command runs in a subprocess each time, as a user would run it, against channels that
other processes (forked from the test) are using right now.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import LONG, Client, IntServer, Server
from layout import channel_bytes, write_geometry
from procs import Child, children, fork_call

from reqrep import _format

FORMAT_VERSION = _format.VERSION

pytestmark = pytest.mark.timeout(120, method="thread")

CLI_TIMEOUT = 60.0


def run_stats(path: str | Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reqrep", "stats", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def stats_json(path: str | Path) -> dict[str, Any]:
    res = run_stats(path, "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    rep = json.loads(res.stdout)
    assert isinstance(rep, dict)
    return rep


def slot_by_id(rep: dict[str, Any], rid: int) -> dict[str, Any]:
    rows = [row for row in rep["slots"]["busy"] if row["id"] == rid]
    assert len(rows) == 1, rep["slots"]["busy"]
    return rows[0]


def proc_by_pid(rep: dict[str, Any], pid: int) -> dict[str, Any]:
    rows = [p for p in rep["processes"] if p["pid"] == pid]
    assert len(rows) == 1, rep["processes"]
    return rows[0]


def kill_and_reap(kid: Child) -> None:
    os.kill(kid.pid, signal.SIGKILL)
    status = kid.wait_status(LONG)
    assert os.WIFSIGNALED(status)


def blocking_child(fn: Callable[[], int]) -> tuple[Child, int]:
    """Fork a child that runs fn(), reports its int result over a pipe, then blocks
    until killed (bounded by its SIGALRM watchdog). Returns the child and the result."""
    rfd, wfd = os.pipe()

    def body() -> None:
        os.close(rfd)
        os.write(wfd, struct.pack("<Q", fn()))
        signal.pause()  # until the test kills it; the watchdog alarm ends it otherwise

    kid = fork_call(body, watchdog=90)
    os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], LONG)
        assert ready, "child did not report in time"
        data = os.read(rfd, 8)
        assert len(data) == 8, "child died before reporting"
        return kid, struct.unpack("<Q", data)[0]
    finally:
        os.close(rfd)


@dataclass
class Live:
    path: Path
    server: Any
    client: Any
    ids: list[int]
    worker: Child
    taken: int
    replied: int
    queued: int


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A Str channel with three requests from this process: one taken by a worker in
    another process (which then hangs on to it), one replied to and not collected,
    one still queued."""
    path = tmp_path / "live.chan"
    with Server(path, req_cap=16, resp_slots=8, resp_size=128) as server, Client(
        path
    ) as client, children() as kids:
        # too large to live in a queue cell: the queued one shows in arena_used
        ids = [client.send(f"request {i} ".ljust(64, ".")) for i in range(3)]
        assert None not in ids

        def take_one() -> int:
            with Server(path) as worker_side:
                got = worker_side.recv_wait(timeout=LONG)
                assert got is not None
                return int(got[1])  # keeps the request: never replies

        worker, taken = blocking_child(take_one)
        kids.append(worker)
        got = server.recv_wait(timeout=LONG)
        assert got is not None
        replied = got[1]
        assert server.reply(replied, b"done")
        (queued,) = [i for i in ids if i not in (taken, replied)]
        yield Live(path, server, client, ids, worker, taken, replied, queued)


def test_live_channel_json(live: Live) -> None:
    rep = stats_json(live.path)
    me = os.getpid()

    assert rep["path"] == str(live.path)
    assert rep["variant"] == "str"
    assert rep["format_version"] == FORMAT_VERSION
    geo = rep["geometry"]
    assert geo["capacity"] == 16 and geo["resp_slots"] == 8 and geo["resp_size"] == 128
    assert geo["arena"] == 4096
    assert geo["file_size"] == os.path.getsize(live.path)

    counters = rep["counters"]
    assert counters == {**counters, **{"requests": 3, "replies": 1, "size": 1}}
    assert set(counters) >= set(live.server.stats())

    assert rep["queue"]["size"] == 1
    assert 0 < rep["queue"]["arena_used"] <= rep["queue"]["arena_cap"] == 4096
    assert rep["lock"] == {"held": False, "waiters": False}

    slots = rep["slots"]
    assert (slots["free"], slots["acquired"], slots["writing"], slots["ready"]) == (5, 2, 0, 1)
    assert {row["id"] for row in slots["busy"]} == set(live.ids)
    for row in slots["busy"]:
        assert row["owner"] == {"pid": me, "alive": True}
        assert row["index"] == row["id"] & 0xFFFFFFFF and row["generation"] == row["id"] >> 32

    taken = slot_by_id(rep, live.taken)
    assert taken["state"] == "acquired"
    assert taken["worker"] == {"pid": live.worker.pid, "alive": True}
    assert slot_by_id(rep, live.queued)["worker"] is None
    replied = slot_by_id(rep, live.replied)
    assert replied["state"] == "ready" and replied["worker"] == {"pid": me, "alive": True}

    worker = proc_by_pid(rep, live.worker.pid)
    assert worker["alive"] and worker["requests_taken"] == 1 and worker["slots_owned"] == 0
    mine = proc_by_pid(rep, me)
    assert mine["slots_owned"] == 3 and mine["requests_taken"] == 1
    assert rep["bells"] == {"total": 64, "in_use": []}

    # The worker dies holding the request: the report says so (before any client notices).
    kill_and_reap(live.worker)
    rep = stats_json(live.path)
    assert slot_by_id(rep, live.taken)["worker"] == {"pid": live.worker.pid, "alive": False}
    assert proc_by_pid(rep, live.worker.pid)["alive"] is False


def test_live_channel_human(live: Live) -> None:
    res = run_stats(live.path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    out = res.stdout
    assert out.startswith(f"reqrep channel {live.path}\n")
    for text in (f"Str (format version {FORMAT_VERSION})", "16 request cells", "8 x 128 bytes",
                 "4,096 bytes",
                 "requests", "replies", "recoveries", "queued          1 of 16",
                 "lock            free",
                 "5 free, 2 awaiting a reply, 1 replied, not collected yet",
                 "event-loop bells: 0 of 64 in use", "not taken yet"):
        assert text in out, (text, out)
    lines = out.splitlines()
    taken = [ln for ln in lines if f"{live.taken:#018x}" in ln]
    assert len(taken) == 1 and f"{live.worker.pid} (alive)" in taken[0]
    assert f"{os.getpid()} (alive)" in taken[0]
    ready = [ln for ln in lines if f"{live.replied:#018x}" in ln]
    assert len(ready) == 1 and " ready " in ready[0]
    assert any(ln.split()[:2] == [str(live.worker.pid), "alive"] for ln in lines)

    kill_and_reap(live.worker)
    out = run_stats(live.path).stdout
    assert f"{live.worker.pid} (DEAD)" in out
    assert any(ln.split()[:2] == [str(live.worker.pid), "DEAD"] for ln in out.splitlines())


def test_lock_holder_alive_then_dead(tmp_path: Path) -> None:
    path = tmp_path / "lock.chan"
    with Server(path, req_cap=8, resp_slots=4) as server, children() as kids:

        def hold() -> int:
            holder = Server(path)
            holder._test_hold_lock()
            return os.getpid()

        kid, pid = blocking_child(hold)
        kids.append(kid)
        assert pid == kid.pid
        rep = stats_json(path)
        assert rep["lock"]["held"] is True
        assert rep["lock"]["holder"] == {"pid": kid.pid, "alive": True}
        assert proc_by_pid(rep, kid.pid)["holds_lock"] is True
        assert f"held by pid {kid.pid} (alive)" in run_stats(path).stdout

        kill_and_reap(kid)
        rep = stats_json(path)
        assert rep["lock"]["holder"] == {"pid": kid.pid, "alive": False}
        assert "takes it over" in run_stats(path).stdout

        # The next process that needs the lock takes it over; the report follows. (A
        # receive on an empty queue does not need it: it sees the queue empty without it.)
        assert server.recv() is None
        assert stats_json(path)["lock"]["held"] is True
        with Client(path) as c:
            assert c.send(b"x") is not None
        rep = stats_json(path)
        assert rep["lock"]["held"] is False
        assert rep["counters"]["recoveries"] >= 1


def test_dead_client_owner(tmp_path: Path) -> None:
    path = tmp_path / "owner.chan"
    with Server(path, req_cap=8, resp_slots=4) as server:

        def send_and_vanish() -> int:
            client = Client(path)
            rid = client.send(b"orphan")
            assert rid is not None
            os._exit(0)  # no close(): the slot keeps naming this (now dead) process

        kid = fork_call(send_and_vanish)
        kid.wait_status(LONG)
        rep = stats_json(path)
        (row,) = rep["slots"]["busy"]
        assert row["owner"] == {"pid": kid.pid, "alive": False}
        assert row["worker"] is None
        assert server.size() == 1


def test_int_channel(tmp_path: Path) -> None:
    path = tmp_path / "int.chan"
    with IntServer(path, req_cap=32, resp_slots=4) as server, server.client() as client:
        rid = client.send(41)
        assert rid is not None
        rep = stats_json(path)
        assert rep["variant"] == "int"
        assert rep["lock"] is None
        assert rep["geometry"]["resp_size"] == 0 and rep["geometry"]["arena"] == 0
        assert rep["queue"] == {"size": 1, "capacity": 32}
        assert "arena_cap" not in rep["counters"]
        (row,) = rep["slots"]["busy"]
        assert row["id"] == rid and row["owner"] == {"pid": os.getpid(), "alive": True}
        out = run_stats(path).stdout
        assert f"Int (format version {FORMAT_VERSION})" in out and "lock-free" in out


def test_bell_owner(tmp_path: Path) -> None:
    path = tmp_path / "bell.chan"
    with Server(path) as server, server.client() as client:
        client._bell_claim()
        try:
            rep = stats_json(path)
            assert [(b["pid"], b["alive"]) for b in rep["bells"]["in_use"]] == [
                (os.getpid(), True)
            ]
            assert proc_by_pid(rep, os.getpid())["bells"] == 1
            assert "event-loop bells: 1 of 64 in use" in run_stats(path).stdout
        finally:
            client._bell_release()


def test_memfd_through_proc(tmp_path: Path) -> None:
    with Server.new_memfd("stats-test", req_cap=8, resp_slots=2) as server:
        path = f"/proc/{os.getpid()}/fd/{server.memfd}"
        client = server.client()
        assert client.send(b"x") is not None
        rep = stats_json(path)
        assert rep["variant"] == "str" and rep["queue"]["size"] == 1
        assert rep["geometry"]["resp_slots"] == 2
        client.close()


def test_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "shape.chan"
    with Server(path):
        rep = stats_json(path)
    assert set(rep) == {"path", "variant", "format_version", "codec", "geometry", "counters",
                        "queue", "lock", "slots", "bells", "processes"}
    assert rep["codec"] is None
    assert set(rep["geometry"]) == {"capacity", "resp_slots", "resp_size", "arena", "file_size",
                                    "slot_stride", "regions"}
    assert set(rep["geometry"]["regions"]) == {"off_bells", "off_cells", "off_slots", "off_arena"}
    assert set(rep["slots"]) == {"total", "free", "acquired", "writing", "ready", "reading",
                                 "pinned", "cancelled", "free_with_owner", "busy"}
    assert rep["slots"]["free"] == rep["slots"]["total"] == 64
    assert rep["slots"]["busy"] == [] and rep["processes"] == []
    assert set(rep["bells"]) == {"total", "in_use"}
    for value in rep["counters"].values():
        assert isinstance(value, int)


# --------------------------------------------------------------------------- bad files


def _channel_bytes(tmp_path: Path) -> bytes:
    return channel_bytes(tmp_path, Server, req_cap=8, resp_slots=2, resp_size=64)


def _forged_offsets(tmp_path: Path) -> bytes:
    data = bytearray(_channel_bytes(tmp_path))
    write_geometry(data, "off_slots", len(data) * 4)  # far outside the file
    return bytes(data)


BAD_FILES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "random": (lambda tmp: os.urandom(8192), "not a reqrep channel"),
    "tiny": (lambda tmp: b"hello\n", "too small"),
    "empty": (lambda tmp: b"", "never initialised"),
    "all-zero": (lambda tmp: bytes(12288), "never initialised"),
    "truncated": (lambda tmp: _channel_bytes(tmp)[:4096], "header says"),
    "forged-offsets": (_forged_offsets, "offsets"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_not_a_channel(tmp_path: Path, name: str) -> None:
    make, reason = BAD_FILES[name]
    path = tmp_path / f"{name}.bin"
    path.write_bytes(make(tmp_path))
    before = path.read_bytes()
    for extra in ((), ("--json",)):
        res = run_stats(path, *extra)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert res.stdout == ""
        assert "Traceback" not in res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1, res.stderr
        assert str(path) in lines[0] and reason in lines[0], lines[0]
    assert path.read_bytes() == before  # the tool never writes


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.chan"
    res = run_stats(path)
    assert res.returncode == 2
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"reqrep stats: {path}: No such file or directory"
    assert not path.exists()  # never created


@pytest.mark.parametrize("what", ["directory", "fifo", "dangling-symlink"])
def test_not_a_regular_channel_file(tmp_path: Path, what: str) -> None:
    path = tmp_path / what
    if what == "directory":
        path.mkdir()
        reason = "not a regular file"
    elif what == "fifo":
        os.mkfifo(path)
        reason = "not a regular file"
    else:
        path.symlink_to(tmp_path / "missing.chan")
        reason = "which does not exist"
    res = run_stats(path)
    assert res.returncode == 2
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert str(path) in res.stderr and reason in res.stderr


def test_a_symlink_to_a_channel_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "target.chan"
    link = tmp_path / "link.chan"
    with Server(target, codec="json"):
        link.symlink_to(target)
        rep = stats_json(link)
        assert rep["variant"] == "str" and rep["codec"] == "json"


def test_usage_error() -> None:
    res = subprocess.run([sys.executable, "-m", "reqrep", "stats"], capture_output=True,
                         text=True, timeout=CLI_TIMEOUT)
    assert res.returncode == 2 and "PATH" in res.stderr


def test_in_process_matches_subprocess(live: Live) -> None:
    """collect() is the library form of the command (same report, no subprocess)."""
    from reqrep._stats_cli import collect

    rep = collect(live.path)
    assert {row["id"] for row in rep["slots"]["busy"]} == set(live.ids)
    assert stats_json(live.path)["slots"]["busy"] == rep["slots"]["busy"]


def test_every_slot_state_is_named(tmp_path: Path) -> None:
    """A slot in each state the format has (READING included) is reported by its name."""
    import mmap

    from reqrep._stats_cli import collect

    path = tmp_path / "states.rr"
    states = list(_format.SLOT_STATES.items())
    with Server(path, resp_slots=len(states), resp_size=64):
        pass
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        base = _format.HEADER.get(mm, 0, "off_slots")
        stride = _format.HEADER.get(mm, 0, "slot_stride")
        for idx, (_, state) in enumerate(states):
            _format.SLOT.put(mm, base + idx * stride, "ctl", _format.ctl_word(1, state))
    rep = collect(path)
    for name, _ in states:
        assert rep["slots"][name] == 1, name
    assert not [k for k in rep["slots"] if k.startswith("invalid")]
    assert [row["state"] for row in rep["slots"]["busy"]] == [n for n, _ in states[1:]]
    human = subprocess.run([sys.executable, "-m", "reqrep", "stats", str(path)],
                           capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert human.returncode == 0 and "invalid" not in human.stdout
    assert "reading" in human.stdout
