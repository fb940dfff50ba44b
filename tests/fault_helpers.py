"""Helpers for the fault tests: the on-disk layout, process identities, forging shared words,
bounded probes in forked children, and the file fuzzer (run as a script in a subprocess).

The layout comes from ``reqrep._format`` (the core's own description of its file), so the
tests follow the format instead of hard-coding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reqrep
from reqrep import _format


def variant_server(variant: str, path: Path, **geometry: Any) -> Any:
    """A Str (resp_size 64 unless given) or Int server on `path`."""
    if variant == "str":
        geometry.setdefault("resp_size", 64)
        return reqrep.Server(path, **geometry)
    return reqrep.IntServer(path, **geometry)


def variant_client(variant: str, path: Path) -> Any:
    return reqrep.Client(path) if variant == "str" else reqrep.IntClient(path)


def variant_value(variant: str, n: int) -> Any:
    """Request number n as the variant's payload."""
    return n if variant == "int" else b"v%d" % n

FMT = _format.FILE
HEADER_SIZE = FMT["header_size"]
OFF_LOCK = _format.HEADER.offset("lock")
OFF_HEAD = _format.HEADER.offset("head")
OFF_TAIL = _format.HEADER.offset("tail")
OFF_RECOVERIES = _format.HEADER.offset("recoveries")
SLOT_CTL = _format.SLOT.offset("ctl")
SLOT_OWNER = _format.SLOT.offset("owner")
SLOT_WORKER = _format.SLOT.offset("worker")
SLOT_LEN = _format.SLOT.offset("len")
SLOT_FLAGS = _format.SLOT.offset("flags")
# A Str cell's fields (an entry of up to STR_INLINE bytes lies in the cell itself).
STR_CELL_MARK = _format.STR_CELL.offset("mark")
STR_CELL_BEG = _format.STR_CELL.offset("beg")
STR_CELL_LEN = _format.STR_CELL.offset("len")
STR_CELL_FLAGS = _format.STR_CELL.offset("flags")
STR_CELL_ID = _format.STR_CELL.offset("id")
STR_INLINE = FMT["str_inline"]
LOCK_WAITERS = _format.IDENT["lock_waiters"]

# The header's geometry: name -> (offset, struct code), as the core describes it.
_GEOMETRY = ("magic", "version", "variant", "total_size", "req_cap", "resp_slots", "resp_size",
             "slot_stride", "arena_cap", "off_cells", "off_slots", "off_arena")
_CODE = {4: "I", 8: "Q"}


def geom_fields(data: bytes | bytearray | mmap.mmap | None = None) -> dict[str, tuple[int, str]]:
    """Every geometry field of the header: name -> (offset, struct code)."""
    fields = _format.HEADER.fields
    return {k: (fields[k].offset, _CODE[fields[k].size]) for k in _GEOMETRY}


SLOT_FREE, SLOT_ACQUIRED, SLOT_WRITING, SLOT_READY = (
    _format.SLOT_STATES[k] for k in ("free", "acquired", "writing", "ready"))

# Generous bounds: two busy cores, CI noise.
PROBE_TIMEOUT = 30.0


# --------------------------------------------------------------------------- layout


def read_geometry(data: bytes | bytearray | mmap.mmap,
                  fields: dict[str, tuple[int, str]] | None = None) -> dict[str, int]:
    """The header's geometry fields."""
    fields = fields if fields is not None else geom_fields(data)
    return {k: struct.unpack_from("<" + f, data, off)[0] for k, (off, f) in fields.items()}


def write_field(buf: bytearray | mmap.mmap, fields: dict[str, tuple[int, str]], name: str,
                value: int) -> None:
    off, f = fields[name]
    struct.pack_into("<" + f, buf, off, value & ((1 << (8 * struct.calcsize(f))) - 1))


def get_u64(buf: bytes | bytearray | mmap.mmap, off: int) -> int:
    return _format.get_uint(buf, off, 8)


def put_u64(buf: bytearray | mmap.mmap, off: int, value: int) -> None:
    _format.put_uint(buf, off, 8, value)


def get_u32(buf: bytes | bytearray | mmap.mmap, off: int) -> int:
    return _format.get_uint(buf, off, 4)


def put_u32(buf: bytearray | mmap.mmap, off: int, value: int) -> None:
    _format.put_uint(buf, off, 4, value)


@dataclass
class ChannelMap:
    """A read/write mapping of a channel file, for forging shared words behind the library's
    back. Offsets of slots and cells come from the header."""

    path: Path
    mm: mmap.mmap
    geom: dict[str, int]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ChannelMap:
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        return cls(Path(path), mm, read_geometry(mm))

    def close(self) -> None:
        self.mm.close()

    def __enter__(self) -> ChannelMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def slot_off(self, index: int) -> int:
        return self.geom["off_slots"] + index * self.geom["slot_stride"]

    def cell_off(self, pos: int) -> int:
        return self.geom["off_cells"] + (pos & (self.geom["req_cap"] - 1)) * FMT["cell_size"]

    @property
    def lock(self) -> int:
        return get_u64(self.mm, OFF_LOCK)

    @lock.setter
    def lock(self, value: int) -> None:
        put_u64(self.mm, OFF_LOCK, value)

    head_off = OFF_HEAD
    tail_off = OFF_TAIL

    @property
    def head(self) -> int:
        return get_u64(self.mm, OFF_HEAD)

    @property
    def tail(self) -> int:
        return get_u64(self.mm, OFF_TAIL)


mk_ctl = _format.ctl_word
ctl_state = _format.ctl_state
worker_word = _format.worker_word


def owner_word(gen: int, pid: int, start: int | None = None) -> int:
    """A slot's owner word: the client that acquired it for generation `gen` (its start
    time read from /proc unless given)."""
    return _format.owner_word(gen, pid, proc_start_time(pid) if start is None else start)


TURN_FREE, TURN_CLAIMED, TURN_FULL, TURN_TAKEN = (
    _format.TURN_STATES[k] for k in ("free", "claimed", "full", "taken"))
turn_word = _format.turn_word


# --------------------------------------------------------------------------- identities


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat.rsplit(")", 1)[1].split()[19])


def ident_of(pid: int, start: int | None = None) -> int:
    """The identity the library stores for a process (the lock's holder, a bell's owner)."""
    return _format.ident_word(pid, proc_start_time(pid) if start is None else start)


@contextlib.contextmanager
def live_stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process unrelated to the channel (a `sleep`), killed on the way out."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- shared memory


class Shared:
    """An anonymous shared mapping of u64 words (made before fork, seen by every child)."""

    def __init__(self, words: int) -> None:
        self.mm = mmap.mmap(-1, max(8, words * 8))

    def __getitem__(self, i: int) -> int:
        return get_u64(self.mm, i * 8)

    def __setitem__(self, i: int, value: int) -> None:
        put_u64(self.mm, i * 8, value)

    def get_float(self, i: int) -> float:
        return float(struct.unpack_from("<d", self.mm, i * 8)[0])

    def set_float(self, i: int, value: float) -> None:
        struct.pack_into("<d", self.mm, i * 8, value)

    def wait_for(self, i: int, value: int = 1, timeout: float = PROBE_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self[i] == value:
                return True
            time.sleep(0.001)
        return self[i] == value


def lock_word_of_holder(cm: ChannelMap, pid: int, timeout: float = 10.0) -> bool:
    """Wait until the channel's lock word names `pid` (waiters bit ignored)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cm.lock & 0x7FFFFFFF == pid:
            return True
        time.sleep(0.002)
    return False


# --------------------------------------------------------------------------- files


def channel_bytes(tmp: Path, cls: type, name: str = "model", **geometry: Any) -> bytes:
    """The bytes of a freshly created channel file."""
    p = tmp / f"{name}-{cls.__name__}.rr"
    with cls(p, **geometry):
        pass
    data = p.read_bytes()
    p.unlink()
    return data


def hold_flock_forever(path: str, ready: Shared, size: int = 0) -> None:
    """Child body: create `path`, take LOCK_EX on it, optionally size it with zeros, say so
    in ready[0], then sleep until killed (the child of a dead or stuck creator)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    if size:
        os.ftruncate(fd, size)
    ready[0] = 1
    while True:
        time.sleep(1)


# --------------------------------------------------------------------------- fuzzer

FUZZ_VALUES = [0, 1, 2, 3, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0xFFFF,
               0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**32, 2**40, 2**62, 2**63 - 1,
               2**63, 2**64 - 1]


def _mutate(rnd: random.Random, data: bytearray, fields: dict[str, tuple[int, str]]) -> str:
    """Damage `data` in place; return a description (for the progress file)."""
    kind = rnd.randrange(6)
    n = len(data)
    if n < 512 and kind != 4:  # already cut short: only random bytes make sense
        if n == 0:
            return "empty"
        kind = 2
    if kind == 0:  # random header bytes
        offs = [rnd.randrange(min(n, HEADER_SIZE)) for _ in range(rnd.randint(1, 8))]
        for off in offs:
            data[off] = rnd.randrange(256)
        return f"header-bytes {offs}"
    if kind == 1:  # an interesting value in a geometry field
        name = rnd.choice(list(fields))
        value = rnd.choice(FUZZ_VALUES) if rnd.random() < 0.7 else rnd.getrandbits(64)
        if rnd.random() < 0.3 and len(data) >= 512:
            value = read_geometry(data, fields)[name] + rnd.choice([-64, -8, -1, 1, 8, 64, 4096])
        write_field(data, fields, name, value)
        return f"field {name}={value:#x}"
    if kind == 2:  # random bytes anywhere
        offs = [rnd.randrange(n) for _ in range(rnd.randint(1, 32))]
        for off in offs:
            data[off] = rnd.randrange(256)
        return f"bytes {offs[:8]}..."
    if kind == 3:  # an interesting u64 at an aligned offset anywhere (cells, slots, counters)
        off = rnd.randrange(n // 8) * 8
        value = rnd.choice(FUZZ_VALUES)
        put_u64(data, off, value)
        return f"u64 @{off}={value:#x}"
    if kind == 4:  # truncated / extended
        cut = rnd.choice([0, 7, 8, 100, 511, 512, 513, n // 2, n - 4096, n - 1, n + 1, n + 4096])
        cut = max(0, cut)
        del data[cut:]
        data.extend(bytes(max(0, cut - len(data))))
        return f"resize {n}->{cut}"
    block = rnd.randrange(n)  # a run of 0xff or random bytes
    length = rnd.randint(1, 256)
    data[block:block + length] = (bytes([0xFF]) * length if rnd.random() < 0.5
                                  else rnd.randbytes(length))[: max(0, n - block)]
    return f"run @{block}+{length}"


def _exercise(obj: Any, rnd: random.Random, is_int: bool) -> None:
    """Every kind of call with tiny timeouts; Python exceptions are fine, crashes are not."""
    payload: Any = rnd.randrange(-(2**63), 2**63) if is_int else rnd.randbytes(rnd.randrange(64))
    calls: list[Callable[[], Any]] = [
        obj.stats, obj.size, obj.is_empty,
    ]
    if isinstance(obj, (reqrep.Server, reqrep.IntServer)):
        calls += [
            obj.recv,
            lambda: obj.recv_wait(timeout=0.001),
            lambda: obj.reply(rnd.getrandbits(rnd.choice([8, 33, 40, 63])), payload),
        ]
        if not is_int:
            calls += [lambda: obj.recv_multi(3), lambda: obj.drain(4),
                      lambda: obj.recv_wait_multi(2, timeout=0.001)]
        client = obj.client()
    else:
        client = obj
    calls += [
        lambda: client.send(payload),
        lambda: client.send_wait(payload, timeout=0.001),
        lambda: client.req(payload, timeout=0.002),
        lambda: client.get(rnd.getrandbits(40)),
        lambda: client.get_wait(rnd.getrandbits(40), timeout=0.001),
        lambda: client.cancel(rnd.getrandbits(40)),
        client.pending,
    ]
    rnd.shuffle(calls)
    global _CURRENT
    try:
        for call in calls:
            _CURRENT = getattr(call, "__name__", "?")
            if _CURRENT == "<lambda>":
                _CURRENT = _lambda_text(call)
            with contextlib.suppress(Exception):
                call()
        _CURRENT = "round trip"
        # A full round trip when the damage allows one.
        with contextlib.suppress(Exception):
            ident = client.send(payload)
            if ident is not None and isinstance(obj, (reqrep.Server, reqrep.IntServer)):
                got = obj.recv()
                if got is not None:
                    obj.reply(got[1], got[0])
                client.get(ident)
    finally:
        if client is not obj:
            client.close()


_CURRENT = ""  # the call _exercise is in, for the report of a blocked call


def _lambda_text(fn: Callable[[], Any]) -> str:
    """The source line of a lambda (which call it wraps)."""
    import linecache

    line = linecache.getline(fn.__code__.co_filename, fn.__code__.co_firstlineno).strip()
    return line.removeprefix("lambda: ").rstrip(",")


class FuzzHung(BaseException):
    """Raised by the alarm handler out of a call that blocked past the file's budget."""


_ARMED = False


def _alarm(signum: int, frame: Any) -> None:
    if _ARMED:
        raise FuzzHung


def fuzz_main(workdir: str, seconds: float, seed: int) -> tuple[int, int]:
    """Mutate channel files and use them; write progress so a crash names its case.
    Returns (files tried, files where a call blocked for 2 s and was cut short by the
    alarm); the first few of the latter are listed in `hung_cases`."""
    global _ARMED
    rnd = random.Random(seed)
    d = Path(workdir)
    templates: list[tuple[bytes, bool, dict[str, tuple[int, str]]]] = []
    for cls, geom, is_int in [
        (reqrep.Server, {"req_cap": 4, "resp_slots": 2, "resp_size": 64}, False),
        (reqrep.Server, {"req_cap": 16, "resp_slots": 5, "resp_size": 200, "arena": 4096}, False),
        (reqrep.IntServer, {"req_cap": 4, "resp_slots": 2}, True),
        (reqrep.IntServer, {"req_cap": 32, "resp_slots": 7}, True),
    ]:
        p = d / "template.rr"
        with cls(p, **geom) as s:  # a used channel: queued requests and ready replies
            c = s.client()
            for i in range(3):
                c.send(i if is_int else b"q%d" % i)
            got = s.recv()
            if got is not None:
                s.reply(got[1], got[0])
            c.send(7 if is_int else b"left")
        data = p.read_bytes()
        templates.append((data, is_int, geom_fields(data)))
        p.unlink()
    progress = d / "progress"
    target = d / "fuzz.rr"
    signal.signal(signal.SIGALRM, _alarm)
    end = time.monotonic() + seconds
    tried = hung = 0
    hung_cases: list[str] = []
    while time.monotonic() < end:
        template, is_int, fields = rnd.choice(templates)
        data = bytearray(template)
        what = [_mutate(rnd, data, fields) for _ in range(rnd.randint(1, 3))]
        after = rnd.random() < 0.4  # damage the file again after opening it
        desc = f"#{tried} seed={seed} int={is_int} {what} after_open={after}"
        progress.write_text(desc + "\n")
        target.write_bytes(bytes(data))
        if is_int:
            classes: list[type] = [reqrep.IntServer, reqrep.IntClient]
        else:
            classes = [reqrep.Server, reqrep.Client]
        cls = rnd.choice(classes + [reqrep.Server if is_int else reqrep.IntServer])
        tried += 1
        try:
            # 2 s for the whole file, then every 0.2 s until the blocked call gives up.
            _ARMED = True
            signal.setitimer(signal.ITIMER_REAL, 2.0, 0.2)
            try:
                if cls in (reqrep.Client, reqrep.IntClient):
                    obj = cls(target)
                else:
                    obj = cls(target, req_cap=4, resp_slots=2)
            except (ValueError, OSError):
                continue
            with obj:
                _exercise(obj, rnd, is_int=obj.resp_size == 0)
                if after:
                    with contextlib.suppress(ValueError, OSError):
                        cm = ChannelMap.open(target)
                        with cm:
                            buf = bytearray(cm.mm[:])
                            more = _mutate(rnd, buf, fields)
                            if len(buf) == len(cm.mm):
                                cm.mm[:] = bytes(buf)
                            desc += f" then {more}"
                            progress.write_text(desc + "\n")
                        _exercise(obj, rnd, is_int=obj.resp_size == 0)
        except FuzzHung:
            hung += 1
            if len(hung_cases) < 5:
                with open(target, "rb") as f:
                    head = f.read(HEADER_SIZE)
                lock = get_u64(head, OFF_LOCK) if len(head) >= OFF_LOCK + 8 else -1
                hung_cases.append(f"{desc}: blocked in {_CURRENT}, lock word {lock:#x}")
        finally:
            _ARMED = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    progress.write_text(f"done tried={tried} hung={hung}\n")
    (d / "hung_cases").write_text("\n".join(hung_cases) + "\n")
    return tried, hung


if __name__ == "__main__":
    n, h = fuzz_main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
    print(f"tried={n} hung={h}")
