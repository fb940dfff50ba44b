"""Every example runs to completion, quickly, and exits 0.

Each runs as a user would run it (``python examples/NAME.py``) in a subprocess with a
timeout, so a hanging example fails the test instead of hanging the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300, method="thread")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUN_TIMEOUT = 120.0


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = EXAMPLES / name
    assert script.is_file(), script
    res = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=EXAMPLES.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert res.returncode == 0, f"{name} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_echo() -> None:
    out = run_example("echo.py").stdout
    assert "req('hello') -> 'HELLO'" in out
    assert "round trips/s" in out


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_process_pool(method: str) -> None:
    out = run_example("process_pool.py", "--start-method", method).stdout
    assert f"({method})" in out
    assert "200 jobs answered correctly" in out
    assert "stats: 204 requests, 204 replies, 64 of 64 slots free" in out


def test_prefork_server() -> None:
    out = run_example("prefork_server.py", "--workers", "3", "--clients", "3").stdout
    assert out.count("answers ok") == 3
    assert out.count("requests answered, exiting") == 3  # every worker left cleanly
    assert "stats: 900 requests, 900 replies, 0 still queued, 64 of 64 slots free" in out
    assert out.rstrip().endswith("done")

