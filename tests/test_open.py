"""Opening and creating channels (SPEC sections 3, 4 and 5).

* a header rewritten by another process while it is opened: only the validated copy of the
  geometry is used (issue 10, defect 4);
* a channel that does not fit its file system: ENOSPC at creation, never SIGBUS later
  (defect 5, on a real 8 MiB tmpfs);
* memfds that are not sealed against shrinking: ``from_fd`` seals them or refuses them
  (defect 6);
* re-opening with other geometry, ``mode=``, ``Client(path, wait=...)`` and the dead
  clients' sweep when a server re-opens a file (defect 12).

Anything that could crash the interpreter runs in a subprocess, so that a crash shows as a
signal in its exit status instead of killing the test run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import geom_fields, read_geometry
from helpers import Client, IntClient, IntServer, Server

import reqrep
from reqrep import ChannelFormatError

pytestmark = pytest.mark.timeout(120, method="thread")

SRC = str(Path(reqrep.__file__).resolve().parent.parent)
TESTS = str(Path(__file__).resolve().parent)

# F_ADD_SEALS / F_GET_SEALS flags (fcntl has them from Python 3.8 on Linux).
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 1, 2, 4


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, TESTS])
    return env


def run_py(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter; a crash shows as a negative return code."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=_env(), check=False,
    )


def spawn_py(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    rc = proc.returncode
    how = f"died of {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
    return f"the child {how}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kills and reaps `proc` on the way out, whatever happened."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


# --------------------------------------------------------------------------- defect 4

# Flips geometry words of the header between their real values and forged ones, through
# a mapping of its own (another process), until killed.
TOGGLER = """
import mmap, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096)
fields = [(int(off), f, int(good), int(bad)) for off, f, good, bad in
          (w.split(":") for w in sys.argv[2:])]
print("ready", flush=True)
while True:
    for off, f, good, bad in fields:
        struct.pack_into("<" + f, m, off, bad)
    for off, f, good, bad in fields:
        struct.pack_into("<" + f, m, off, good)
"""

# Opens the channel over and over (as a Client and as a Server) while the toggler runs;
# every open must either fail with ChannelFormatError or give the real geometry, and
# stats() (which walks every slot) must not crash.
OPENER = """
import json, sys, time
import reqrep
path, want = sys.argv[1], json.loads(sys.argv[2])
ok = refused = 0
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end or ok < 50:
    for cls in (reqrep.Client, reqrep.Server):
        try:
            ch = cls(path)
        except reqrep.ChannelFormatError:
            refused += 1
            continue
        with ch:
            st = ch.stats()
            got = [ch.capacity, ch.resp_slots, ch.resp_size, st["resp_slots"], st["capacity"]]
            assert got == want, (got, want)
            ok += 1
print(json.dumps({"ok": ok, "refused": refused}))
"""


def test_header_rewritten_while_opening(tmp_path: Path) -> None:
    """A process rewriting resp_slots (and other geometry words) in the file while another
    opens it: never a crash, and every open that succeeds has the real geometry."""
    path = tmp_path / "chan.rr"
    Server(path, req_cap=4, resp_slots=2, resp_size=64).close()
    with open(path, "rb") as f:
        head = f.read(4096)
    fields = geom_fields(head)
    g = read_geometry(head, fields)
    forged = {"resp_slots": 1 << 20, "req_cap": 1 << 24, "slot_stride": 1 << 30}
    words = [f"{fields[k][0]}:{fields[k][1]}:{g[k]}:{v}" for k, v in forged.items()]
    with reaped(spawn_py(TOGGLER, str(path), *words)) as toggler:
        assert toggler.stdout is not None
        assert toggler.stdout.readline().strip() == "ready"
        want = [4, 2, 64, 2, 4]
        proc = run_py(OPENER, str(path), json.dumps(want), "4", timeout=90)
    assert proc.returncode == 0, describe(proc)
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    print(counts)
    assert counts["ok"] >= 50
