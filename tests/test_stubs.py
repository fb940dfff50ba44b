"""The type stubs (src/reqrep/_reqrep.pyi) match the extension module.

``mypy.stubtest`` imports ``reqrep._reqrep`` and compares every public name, signature and
class with the stubs; private names may be missing (tests/stubtest_allowlist.txt). The
stubs must also pass ``mypy --strict``. Skipped when mypy is not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed")

pytestmark = pytest.mark.timeout(300, method="thread")

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "src" / "reqrep" / "_reqrep.pyi"
ALLOWLIST = Path(__file__).resolve().parent / "stubtest_allowlist.txt"


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if args[0] == "mypy":  # stubtest has no cache option (and keeps no cache)
        args = [*args, "--cache-dir", str(tmp_path / "mypy-cache")]
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # import reqrep as installed, not from a source directory
    )


def test_stubtest(tmp_path: Path) -> None:
    res = _run(
        ["mypy.stubtest", "reqrep._reqrep", "--allowlist", str(ALLOWLIST),
         "--ignore-unused-allowlist"],
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_stubs_strict(tmp_path: Path) -> None:
    res = _run(["mypy", "--strict", str(STUB)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_typed_usage(tmp_path: Path) -> None:
    """A typical program type-checks under --strict with the stubs, and mistakes do not."""
    good = tmp_path / "good.py"
    good.write_text(
        "import pickle\n"
        "import reqrep\n"
        "srv = reqrep.Server('/tmp/x.chan')\n"
        "with srv.client() as c:\n"
        "    rid: int | None = c.send_notify(b'x')\n"
        "    fd: int = c.eventfd()\n"
        "    n: int = srv.eventfd_consume()\n"
        "    ok: bool = srv.reply_notify()\n"
        "    data: bytes | str | None = c.req('hi', timeout=1.0)\n"
        "try:\n"
        "    pass\n"
        "except reqrep.WorkerDiedError as e:\n"
        "    pid: int = e.pid\n"
        "    ident: int = e.id\n"
        "blob: bytes = pickle.dumps(srv)\n"
        "ic = reqrep.IntClient('/tmp/y.chan')\n"
        "v: int | None = ic.req(3)\n"
        "i2: int | None = ic.send_wait_notify(4, timeout=None)\n"
    )
    res = _run(["mypy", "--strict", str(good)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr

    bad = tmp_path / "bad.py"
    bad.write_text(
        "import reqrep\n"
        "ic = reqrep.IntClient('/tmp/y.chan')\n"
        "ic.send_notify(b'not an int')\n"
        "s: str = reqrep.Server(None).fileno()\n"
    )
    res = _run(["mypy", "--strict", str(bad)], tmp_path)
    assert res.returncode == 1
    assert res.stdout.count("error:") == 2, res.stdout
