"""The whole suite as one call: select rows, run them, print, write JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from reqrep.bench import bridge, core, rows, table
from reqrep.bench.runner import Line, Progress, Settings, describe, run_all


def list_rows(out: TextIO) -> None:
    """Print every row id with its group and label."""
    cases = rows.all_cases()
    width = max(len(c.id) for c in cases) + 2
    for c in cases:
        groups = " / ".join(dict.fromkeys(m.group for m in c.metrics))
        out.write(f"{c.id:<{width}}{c.label}  [{groups}]\n")
    for cid, label in core.ROWS:
        out.write(f"{cid:<{width}}{label}  [{core.GROUP}, with --core]\n")


def run_suite(
    *,
    quick: bool = False,
    patterns: list[str] | None = None,
    json_path: str | None = None,
    with_core: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the selected rows and print the table; 0 on success, 2 on a bad selection."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cases = rows.select(rows.all_cases(), patterns)
    except ValueError as exc:
        err.write(f"reqrep bench: {exc}\n")
        return 2
    settings = Settings.quick() if quick else Settings.full()
    started = time.time()
    lines = run_all(cases, settings, Progress(len(cases), err))
    extra: dict[str, Any] = {}
    if with_core:
        core_lines, core_info = core.run(settings, lines, err)
        lines.extend(core_lines)
        extra["core"] = core_info
    table.add_ratios(lines)
    _two_serve_note(lines)
    elapsed = time.time() - started
    info = table.machine()
    header = (
        f"reqrep bench ({settings.mode}): median of {settings.runs} runs, each in fresh "
        f"processes, {settings.timing.seconds:g} s timed after {settings.timing.warmup:g} s "
        f"warm-up\nPython {info['python']}, {info['platform']}, {info['usable_cpus']} usable "
        f"CPUs, load {info['load_avg'][0]:.2f}; suite took {elapsed:.0f} s"
    )
    out.write(table.render(lines, header) + "\n")
    out.flush()
    if json_path:
        doc = table.document(lines, describe(settings), elapsed_s=elapsed, started=started, **extra)
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
        err.write(f"reqrep bench: results written to {json_path}\n")
    return 0


def _two_serve_note(lines: list[Line]) -> None:
    """Each two-serve row's note: its rate against its one-serve row's (the ratio column
    compares it with nats-py, the peer of the group)."""
    rate = {ln.id: ln.median for ln in lines if ln.median}
    for one_id, two_id in bridge.TWO_SERVE_PAIRS:
        one, two = rate.get(one_id), rate.get(two_id)
        line = next((ln for ln in lines if ln.id == two_id), None)
        if one is None or two is None or line is None:
            continue
        line.note = (f"{two / one:.2f}x the one-serve row "
                     f"(target {bridge.TWO_SERVE_TARGET:g}x)")
