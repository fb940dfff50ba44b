"""The channel-file fuzzer: damage channel files (header fields, random bytes anywhere,
resized), open them and use them with tiny timeouts, some damaged again after opening.

Run as a script in a subprocess (``python file_fuzz.py WORKDIR SECONDS SEED``, with this
directory on the path), so a crash kills the subprocess and not the test run; the progress
file in WORKDIR names the case it was in.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layout import GEOMETRY, ChannelMap, read_geometry, write_geometry

import reqrep
from reqrep import _format

HEADER_SIZE = _format.FILE["header_size"]

FUZZ_VALUES = [0, 1, 2, 3, 0x3F, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0xFFFF,
               0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**32, 2**40, 2**62, 2**63 - 1,
               2**63, 2**64 - 1]


def _mutate(rnd: random.Random, data: bytearray) -> str:
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
        name = rnd.choice(GEOMETRY)
        value = rnd.choice(FUZZ_VALUES) if rnd.random() < 0.7 else rnd.getrandbits(64)
        if rnd.random() < 0.3 and len(data) >= 512:
            value = read_geometry(data)[name] + rnd.choice([-64, -8, -1, 1, 8, 64, 4096])
        write_geometry(data, name, value)
        return f"field {name}={value:#x}"
    if kind == 2:  # random bytes anywhere
        offs = [rnd.randrange(n) for _ in range(rnd.randint(1, 32))]
        for off in offs:
            data[off] = rnd.randrange(256)
        return f"bytes {offs[:8]}..."
    if kind == 3:  # an interesting u64 at an aligned offset anywhere (cells, slots, counters)
        off = rnd.randrange(n // 8) * 8
        value = rnd.choice(FUZZ_VALUES)
        _format.put_uint(data, off, 8, value)
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
    templates: list[tuple[bytes, bool]] = []
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
        templates.append((data, is_int))
        p.unlink()
    progress = d / "progress"
    target = d / "fuzz.rr"
    signal.signal(signal.SIGALRM, _alarm)
    end = time.monotonic() + seconds
    tried = hung = 0
    hung_cases: list[str] = []
    while time.monotonic() < end:
        template, is_int = rnd.choice(templates)
        data = bytearray(template)
        what = [_mutate(rnd, data) for _ in range(rnd.randint(1, 3))]
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
                            more = _mutate(rnd, buf)
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
                lock_at = _format.HEADER.offset("lock")
                lock = (_format.HEADER.get(head, 0, "lock") if len(head) >= lock_at + 8
                        else -1)
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
