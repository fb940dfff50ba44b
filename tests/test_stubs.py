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


PRECISE_GOOD = '''
from typing import Any

import reqrep
from reqrep.aio import AsyncClient
from reqrep.futures import ProcessPoolExecutor

# a bytes-only program: say so once, and every call is bytes
server: reqrep.Server[bytes] = reqrep.Server("/tmp/x.chan")
client: reqrep.Client[bytes] = server.client()
reply: bytes | None = client.req(b"x", timeout=1.0)
rid = client.send(memoryview(b"any buffer"))
msg = server.recv()
if msg is not None:
    payload: bytes = msg[0]
    server.reply(msg[1], payload.upper())
got: bytes | None = client.get_wait(rid or 0)
served: int = server.serve(lambda data: data[::-1])

# a codec channel: the objects it carries
objs = reqrep.Server(None, codec="pickle")
with objs.client() as oc:
    answer = oc.req({"op": "add", "args": [1, 2]})
    if answer is not None:
        total: int = answer["sum"]
points: reqrep.Client[dict[str, int]] = reqrep.Client("/tmp/p.chan")
point = points.req({"x": 1})
if point is not None:
    x: int = point["x"]

async def ask(ac: AsyncClient[reqrep.Client[bytes]]) -> bytes | None:
    return await ac.req(b"x")

def square(n: int) -> int:
    return n * n

with ProcessPoolExecutor() as pool:
    nine: int = pool.submit(square, 3).result()
    squares: list[int] = list(pool.map(square, [1, 2, 3]))
'''

PRECISE_BAD = '''
import reqrep
from reqrep.futures import ProcessPoolExecutor

client: reqrep.Client[bytes] = reqrep.Client("/tmp/x.chan")
client.req("a str on a bytes channel")
text: str | None = client.req(b"x")

def square(n: int) -> int:
    return n * n

with ProcessPoolExecutor() as pool:
    wrong: str = pool.submit(square, 3).result()
'''


def test_precise_payload_types(tmp_path: Path) -> None:
    """A bytes-only program, a codec program and a pool program type-check under --strict
    (issue 12: `bytes | str` returns made bytes-only programs fail), and their mistakes
    do not."""
    good = tmp_path / "precise_good.py"
    good.write_text(PRECISE_GOOD)
    res = _run(["mypy", "--strict", str(good)], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    bad = tmp_path / "precise_bad.py"
    bad.write_text(PRECISE_BAD)
    res = _run(["mypy", "--strict", str(bad)], tmp_path)
    assert res.returncode == 1
    assert res.stdout.count("error:") == 3, res.stdout


def test_channel_types_subscript_at_run_time() -> None:
    import reqrep

    assert reqrep.Client[bytes].__origin__ is reqrep.Client  # type: ignore[attr-defined]
    assert reqrep.Server[dict[str, int]].__args__ == (dict[str, int],)  # type: ignore[attr-defined]
