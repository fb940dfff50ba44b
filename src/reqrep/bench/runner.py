"""Runs the cases: each run in fresh processes, the median of several runs."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

from reqrep.bench.aio import aio_rate
from reqrep.bench.procs import BenchError, Gate, Group, busy_loop
from reqrep.bench.rows import Case
from reqrep.bench.transports import Transport
from reqrep.bench.workloads import Timing, coarse_rate, latency, rate

# What a row's client loop does (see rows.Case.workload).
WORKLOADS = {"rate": rate, "latency": latency, "aio_rate": aio_rate, "coarse_rate": coarse_rate}


@dataclass(frozen=True)
class Settings:
    """How much work a run does and how many runs make a row."""

    mode: str
    runs: int
    timing: Timing
    timeout: float  # per run: the children are killed after this

    @classmethod
    def quick(cls) -> Settings:
        return cls("quick", 3, Timing(warmup=0.02, seconds=0.2), timeout=30.0)

    @classmethod
    def full(cls) -> Settings:
        return cls("full", 5, Timing(warmup=0.08, seconds=0.8), timeout=60.0)


@dataclass
class Line:
    """One line of the table: one metric of one case, over every run."""

    id: str
    metric: str
    group: str
    label: str
    unit: str
    peer: bool
    higher_is_better: bool
    status: str  # "ok", "skipped" or "failed"
    values: list[float] = field(default_factory=list)
    note: str = ""
    ratio: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


_KEEP_ALIVE: list[object] = []


def _client(
    transport: Transport, index: int, workload: str, timing: Timing, gate: Gate
) -> dict[str, float]:
    op = transport.connect(index)
    # Keep the connection open until the process exits: a socket closed (by garbage
    # collection) before the result is reported would make the worker see the
    # hang-up first and the run look failed.
    _KEEP_ALIVE.append(op)
    result = WORKLOADS[workload](op, transport.payload(), timing, gate)
    # a pool row's op shuts its pool down; a shared queue's releases the queue's lock
    finish = getattr(op, "finish", None)
    if finish is not None:
        finish()
    return result


def _worker(transport: Transport, index: int) -> None:
    """A worker process: serve until killed, or until its client hangs up."""
    try:
        transport.serve(index)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass


def combine(case: Case, transport: Transport, results: list[dict[str, float]]) -> dict[str, float]:
    """The metrics of one run from its clients' reports."""
    if case.workload == "latency":
        return results[0]
    rt = sum(r["ops"] * transport.per_op / r["elapsed"] for r in results)
    return {"rt_per_s": rt, "mib_per_s": rt * transport.size / 2**20}


def run_once(case: Case, settings: Settings) -> dict[str, float]:
    """One run of ``case`` in fresh processes; ``BenchError`` if it fails."""
    transport = case.make()
    group = Group(settings.timeout)
    ok = False
    try:
        transport.open()
        if case.loaded:
            group.spawn("busy process", busy_loop)
        for w in range(case.workers):
            group.spawn("worker", partial(_worker, transport, w))
        clients = [
            group.spawn(
                "client",
                partial(_client, transport, i, case.workload, settings.timing, group.gate),
            )
            for i in range(case.clients)
        ]
        results = group.collect(clients)
        ok = True
    finally:
        group.close(failed=not ok)
        transport.close()
    return combine(case, transport, results)


def _lines(case: Case, status: str, note: str = "") -> list[Line]:
    return [
        Line(
            case.id,
            m.key,
            m.group,
            case.label + m.suffix,
            m.unit,
            case.peer,
            m.higher_is_better,
            status,
            note=note,
        )
        for m in case.metrics
    ]


class Progress:
    """Progress on stderr: one rewritten status line on a terminal, else a line per row."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.index = 0
        self.started = time.monotonic()

    def _say(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def case(self, case: Case) -> Callable[[int, int], None]:
        self.index += 1
        head = f"[{self.index:>2}/{self.total}] {case.id}"

        def tick(run: int, runs: int) -> None:
            self._say(f"{head}: run {run}/{runs}", final=False)

        return tick

    def done(self, lines: list[Line]) -> None:
        first = lines[0]
        if first.status == "ok":
            what = ", ".join(f"{_short(ln.median)} {ln.unit}" for ln in lines)
        else:
            what = f"{first.status}: {first.note}"
        elapsed = time.monotonic() - self.started
        self._say(f"[{self.index:>2}/{self.total}] {first.id}: {what}  ({elapsed:.0f} s)", True)


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.1f}{suffix}"
    return f"{value:.1f}"


def run_case(case: Case, settings: Settings, tick: Callable[[int, int], None]) -> list[Line]:
    """Every run of one case; a skipped or failed case gives lines without values."""
    missing = case.missing()
    if missing:
        return _lines(case, "skipped", missing)
    lines = _lines(case, "ok")
    for run in range(1, settings.runs + 1):
        tick(run, settings.runs)
        try:
            values = run_once(case, settings)
        except BenchError as exc:
            return _lines(case, "failed", f"run {run}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken peer must not stop the suite
            return _lines(case, "failed", f"run {run}: {type(exc).__name__}: {exc}")
        for line in lines:
            line.values.append(values[line.metric])
    return lines


def run_all(cases: list[Case], settings: Settings, progress: Progress | None = None) -> list[Line]:
    """Run every case in order (progress to stderr) and return the table's lines."""
    progress = progress or Progress(len(cases))
    out: list[Line] = []
    for case in cases:
        lines = run_case(case, settings, progress.case(case))
        progress.done(lines)
        out.extend(lines)
    return out


def describe(settings: Settings) -> dict[str, Any]:
    return {
        "mode": settings.mode,
        "runs": settings.runs,
        "warmup_s": settings.timing.warmup,
        "seconds": settings.timing.seconds,
        "timeout_s": settings.timeout,
    }
