"""The examples in README.md and docs/ that a reader would paste and run: each ```python
block right after a `<!-- test: run -->` line runs, in a fresh interpreter, and must
succeed (after `<!-- test: run nats -->`, with a nats-server of its own at $NATS_URL);
what a ``print(...)  # text`` line promises must be a line of its output; and the
examples pass ``mypy --strict`` (the stubs and the typed package make that possible
without annotations a reader would not write)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from natsproc import NatsServer, need_nats

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"<!-- test: run( nats)? -->\n```python\n(.*?)```", re.S)
_PROMISE = re.compile(r"^\s*print\(.*\)\s+# (.+?)\s*$", re.M)


def _examples() -> list[tuple[str, str, bool]]:
    """(where, code, whether it needs a nats-server) of every example."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, m in enumerate(_BLOCK.finditer(doc.read_text()), 1):
            found.append((f"{doc.relative_to(ROOT)}#{n}", m.group(2), bool(m.group(1))))
    return found


EXAMPLES = _examples()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize(("where", "code", "nats"), EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_example_runs(where: str, code: str, nats: bool, tmp_path: Path) -> None:
    script = tmp_path / "example.py"  # a file: spawn children re-import __main__ from it
    script.write_text(code)
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if nats:
            need_nats()
            server = NatsServer(tmp_path)
            stack.callback(server.stop)
            env["NATS_URL"] = server.url
        res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env=env)
    assert res.returncode == 0, f"{where} failed:\n{res.stderr}"
    printed = res.stdout.splitlines()
    for promise in _PROMISE.findall(code):
        assert promise in printed, f"{where}: no line {promise!r} in its output {printed}"


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed")
    files = []
    for n, (_, code, _) in enumerate(EXAMPLES):
        f = tmp_path / f"example_{n}.py"
        f.write_text(code)
        files.append(str(f))
    res = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                          str(tmp_path / "cache"), *files], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    where = {f"example_{n}.py": w for n, (w, _, _) in enumerate(EXAMPLES)}
    out = res.stdout
    for name, w in where.items():
        out = out.replace(name, w)
    assert res.returncode == 0, out
