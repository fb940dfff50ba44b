"""``--core``: build and run the C micro-benchmark (benchmarks/c/core_bench.c).

It needs a source checkout (the C core in ``csrc/`` and the benchmark in
``benchmarks/c/``) and a C compiler. The checkout is ``$REQREP_SOURCE``, else the
tree this package was installed from in editable mode, else the current
directory. Each test runs as its own process, ``runs`` times, and its median is
compared with the matching row of the Python binding.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, TextIO

from reqrep.bench.runner import Line, Settings

GROUP = "C core, no Python (--core)"
ROWS: tuple[tuple[str, str], ...] = (
    ("core-floor", "floor: one shared cache line, 2 processes"),
    ("core-int", "core Int 1:1"),
    ("core-str", "core Str 1:1"),
    ("core-int-single", "core Int, single process"),
    ("core-str-single", "core Str, single process"),
)
# The Python row each core test is the floor of.
BINDING = {
    "core-int": "reqrep-int",
    "core-str": "reqrep-str",
    "core-int-single": "single-reqrep-int",
    "core-str-single": "single-reqrep-str",
}
HOW = "see benchmarks/README.md"


def find_checkout() -> Path | None:
    """The source tree holding ``benchmarks/c/core_bench.c`` and ``csrc/``, or None."""
    candidates = [os.environ.get("REQREP_SOURCE"), Path(__file__).resolve().parents[3], Path.cwd()]
    for cand in candidates:
        if not cand:
            continue
        root = Path(cand)
        if (root / "benchmarks/c/core_bench.c").is_file() and (root / "csrc/reqrep.h").is_file():
            return root
    return None


def find_compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc.split()[0]):
            return cc
    return None


def build(root: Path, cc: str, outdir: Path) -> Path:
    """Compile core_bench against the core's sources; ``RuntimeError`` on failure."""
    exe = outdir / "core_bench"
    cmd = [
        *cc.split(),
        "-O2",
        "-std=gnu11",
        "-pthread",
        f"-I{root / 'csrc'}",
        str(root / "benchmarks/c/core_bench.c"),
        *sorted(str(p) for p in (root / "csrc").glob("rr_*.c")),
        "-o",
        str(exe),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError("build failed: " + " | ".join(tail))
    return exe


def run_test(exe: Path, test: str, settings: Settings) -> float:
    """One run of one test in its own process: round trips per second."""
    t = settings.timing
    proc = subprocess.run(
        [str(exe), test, str(t.seconds), str(t.warmup)],
        capture_output=True,
        text=True,
        timeout=settings.timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"exit status {proc.returncode}")
    for word in proc.stdout.split():
        if word.startswith("rt_per_s="):
            return float(word.split("=", 1)[1])
    raise RuntimeError(f"unexpected output {proc.stdout!r:.80}")


def _line(cid: str, label: str, status: str, note: str = "") -> Line:
    return Line(cid, "rt_per_s", GROUP, label, "rt/s", False, True, status, note=note)


def _skipped(reason: str) -> tuple[list[Line], dict[str, Any]]:
    return [_line(cid, label, "skipped", reason) for cid, label in ROWS], {"skipped": reason}


def run(
    settings: Settings, python_lines: list[Line], err: TextIO
) -> tuple[list[Line], dict[str, Any]]:
    """The core rows (their notes give the Python binding as a fraction of the core)."""
    root = find_checkout()
    if root is None:
        return _skipped(f"needs a source checkout (set REQREP_SOURCE); {HOW}")
    cc = find_compiler()
    if cc is None:
        return _skipped(f"no C compiler found (set CC); {HOW}")
    py = {ln.id: ln.median for ln in python_lines if ln.metric == "rt_per_s"}
    lines: list[Line] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="reqrep-core-bench-") as tmp:
        err.write(f"reqrep bench: building core_bench with {cc}\n")
        try:
            exe = build(root, cc, Path(tmp))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return _skipped(f"{exc}; {HOW}")
        tty = err.isatty()
        for cid, label in ROWS:
            line = _line(cid, label, "ok")
            try:
                for i in range(settings.runs):
                    if tty:
                        err.write(f"\r\x1b[K{cid}: run {i + 1}/{settings.runs}")
                        err.flush()
                    line.values.append(run_test(exe, cid.removeprefix("core-"), settings))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                line = _line(cid, label, "failed", str(exc))
            done = f"{line.median:.0f} rt/s" if line.median else f"{line.status}: {line.note}"
            err.write(("\r\x1b[K" if tty else "") + f"{cid}: {done}\n")
            ref = BINDING.get(cid)
            core_med, py_med = line.median, py.get(ref) if ref else None
            if ref and core_med and py_med:
                ratios[cid] = py_med / core_med
                line.note = f"Python binding ({ref}) = {ratios[cid]:.2f}x of this"
            elif ref and line.status == "ok":
                line.note = f"run row {ref} too for the binding ratio"
            lines.append(line)
    return lines, {"source": str(root), "compiler": cc, "binding_vs_core": ratios}
