"""Ratios, the printed table and the JSON document."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

from reqrep.bench.runner import Line

RATIO_NOTE = (
    "ratio: speed relative to the fastest peer (non-reqrep row) of the same group "
    "(>1 = faster; for latency, lower is faster)"
)

SPREAD_NOTE = "spread: (max - min) / median of the runs; a large one means a noisy machine"


def add_ratios(lines: Iterable[Line]) -> None:
    """Set ``ratio`` on every measured line that has a measured peer in its group."""
    lines = list(lines)
    best: dict[str, float] = {}
    for ln in lines:
        med = ln.median
        if not ln.peer or med is None or med <= 0:
            continue
        cur = best.get(ln.group)
        better = cur is None or (med > cur if ln.higher_is_better else med < cur)
        if better:
            best[ln.group] = med
    for ln in lines:
        med = ln.median
        ref = best.get(ln.group)
        if med is None or ref is None or med <= 0:
            ln.ratio = None
        else:
            ln.ratio = med / ref if ln.higher_is_better else ref / med


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def spread(values: list[float]) -> float | None:
    """(max - min) / median of the runs, or None with fewer than two runs."""
    if len(values) < 2:
        return None
    med = sorted(values)[len(values) // 2]
    return (max(values) - min(values)) / med if med > 0 else None


def fmt_spread(values: list[float]) -> str:
    sp = spread(values)
    return "-" if sp is None else f"{sp * 100:.0f}%"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_avg": list(os.getloadavg()),
    }


def by_group(lines: list[Line]) -> list[Line]:
    """The lines grouped, groups in order of first appearance (stable within a group)."""
    order: dict[str, int] = {}
    for ln in lines:
        order.setdefault(ln.group, len(order))
    return sorted(lines, key=lambda ln: order[ln.group])


def render(lines: list[Line], header: str) -> str:
    """The table as text, grouped, groups in order of first appearance."""
    lines = by_group(lines)
    width = max([24, *(len(ln.label) for ln in lines)]) + 2
    out = [header, RATIO_NOTE, SPREAD_NOTE, ""]
    out.append(f"  {'row':<{width}}{'median':>10}  {'unit':<6}{'ratio':>8}{'spread':>8}  notes")
    group = None
    for ln in lines:
        if ln.group != group:
            group = ln.group
            out.append(group)
        note = ln.note if ln.status == "ok" else f"{ln.status}: {ln.note}"
        row = (
            f"  {ln.label:<{width}}{fmt_value(ln.median):>10}  {ln.unit:<6}"
            f"{fmt_ratio(ln.ratio):>8}{fmt_spread(ln.values):>8}  {note}"
        )
        out.append(row.rstrip())
    return "\n".join(out)


def line_json(ln: Line) -> dict[str, Any]:
    return {
        "id": ln.id,
        "metric": ln.metric,
        "group": ln.group,
        "label": ln.label,
        "unit": ln.unit,
        "peer": ln.peer,
        "higher_is_better": ln.higher_is_better,
        "status": ln.status,
        "median": ln.median,
        "values": ln.values,
        "ratio": ln.ratio,
        "spread": spread(ln.values),
        "note": ln.note,
    }


def document(lines: list[Line], settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The machine-readable results (``--json``)."""
    from reqrep import __version__

    return {
        "reqrep": __version__,
        "machine": machine(),
        "settings": settings,
        "ratio": RATIO_NOTE,
        "rows": [line_json(ln) for ln in lines],
        **extra,
    }
