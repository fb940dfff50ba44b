"""What a client process does in one run: warm up, wait at the gate, time.

Every loop is time-boxed rather than iteration-counted: the warm-up lasts
``warmup`` seconds (at least ``MIN_WARMUP_OPS`` ops), the timed part
``seconds``; the op runs in chunks between clock reads, and the rate is the
number of ops actually done over the time actually taken (``time.perf_counter``).
After the timed part one more op checks that the echo is right.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Protocol

from reqrep.bench.transports import Op

MIN_WARMUP_OPS = 50
CHUNK = 16


@dataclass(frozen=True)
class Timing:
    """Seconds of warm-up and of timed work in one run of a row."""

    warmup: float
    seconds: float


class GateLike(Protocol):
    """What the workloads need from the start gate (see ``procs.Gate``)."""

    def wait(self) -> None: ...


def _same(a: Any, b: Any) -> bool:
    eq = a == b
    return bool(eq.all()) if hasattr(eq, "all") else bool(eq)  # NumPy compares elementwise


def _check(op: Op, msg: Any) -> None:
    got = op(msg)
    if not _same(got, msg):
        raise AssertionError(f"wrong echo: sent {msg!r:.40}, got {got!r:.40}")


def _warm_up(op: Op, msg: Any, seconds: float) -> None:
    _check(op, msg)
    clock = time.perf_counter
    end = clock() + seconds
    done = 0
    while done < MIN_WARMUP_OPS or clock() < end:
        for _ in repeat(None, CHUNK):
            op(msg)
        done += CHUNK


def rate(op: Op, msg: Any, timing: Timing, gate: GateLike) -> dict[str, float]:
    """Ops per second over ``timing.seconds``: ``{"ops": n, "elapsed": s}``."""
    _warm_up(op, msg, timing.warmup)
    gate.wait()
    clock = time.perf_counter
    ops = 0
    t0 = clock()
    end = t0 + timing.seconds
    while True:
        for _ in repeat(None, CHUNK):
            op(msg)
        ops += CHUNK
        t1 = clock()
        if t1 >= end:
            break
    _check(op, msg)
    return {"ops": float(ops), "elapsed": t1 - t0}


def coarse_rate(op: Op, msg: Any, timing: Timing, gate: GateLike) -> dict[str, float]:
    """``rate`` for ops that take milliseconds (a ``map`` of many tasks): one op per
    clock read, one op of warm-up at least, two timed ones at least."""
    _check(op, msg)
    clock = time.perf_counter
    end = clock() + timing.warmup
    while clock() < end:
        op(msg)
    gate.wait()
    ops = 0
    t0 = clock()
    end = t0 + timing.seconds
    while True:
        op(msg)
        ops += 1
        t1 = clock()
        if t1 >= end and ops >= 2:
            break
    _check(op, msg)
    return {"ops": float(ops), "elapsed": t1 - t0}


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (``q`` in 0..1)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


def latency(op: Op, msg: Any, timing: Timing, gate: GateLike) -> dict[str, float]:
    """Each round trip timed on its own: ``{"p50_us", "p99_us", "ops"}``."""
    _warm_up(op, msg, timing.warmup)
    gate.wait()
    clock = time.perf_counter_ns
    samples: list[int] = []
    add = samples.append
    end = clock() + int(timing.seconds * 1e9)
    while True:
        for _ in repeat(None, CHUNK):
            t = clock()
            op(msg)
            add(clock() - t)
        if clock() >= end:
            break
    _check(op, msg)
    samples.sort()
    return {
        "p50_us": percentile(samples, 0.50) / 1e3,
        "p99_us": percentile(samples, 0.99) / 1e3,
        "ops": float(len(samples)),
    }
