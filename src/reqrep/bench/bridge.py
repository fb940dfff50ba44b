"""NATS bridge rows (SPEC §6): the bridge (``reqrep.bridge``) against plain nats-py
request/reply with as many requests in flight (``INFLIGHT``), 12-byte payloads, through
a nats-server that each run starts on a free loopback port and stops afterwards.

* ``nats-py``: one requester process keeps ``INFLIGHT`` ``await nc.request(...)`` going
  on one connection; one responder process answers in its subscription's callback
  (``await msg.respond(msg.data)``, in a queue group).
* ``nats-bridge``: the same traffic through a bridged channel: a ``reqrep.aio``
  ``AsyncClient`` with ``INFLIGHT`` in flight on channel A, a ``forward`` bridge
  serving A, a ``serve`` bridge on channel B, one worker echoing on B.
* ``nats-bridge-2serve``: two ``serve`` bridges on the subject (one queue group), each
  with a channel and a worker of its own: what a second serve bridge adds, without
  two bridges sharing one channel's workers in the way.
* ``nats-bridge-busy`` and ``nats-bridge-2serve-busy``: the same two, with workers
  that spend ``BUSY`` seconds on each request (asleep, as a worker waiting on a disk or
  a database would): the capacity behind each serve bridge is then the limit, not the
  two CPUs that every process of the echo rows shares, so the pair shows what a second
  bridge (a second host) adds.

Every Python process is one of the runner's forked children (killed when the run
ends); the nats-server is the parent's child, started in ``open`` and stopped in
``close`` with the channel files, whatever became of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from functools import partial
from typing import Any

import reqrep
from reqrep.bench.aio import _KEEP, INFLIGHT, AsyncOp
from reqrep.bench.transports import Op, Transport, _echo

SUBJECT = "reqrep.bench"
START_TIMEOUT = 10.0  # for the nats-server, then for the subscribers
REQUEST_TIMEOUT = 10.0
FALLBACK_SERVER = "/usr/sbin/nats-server"  # Debian's, off a user's PATH
TWO_SERVE_TARGET = 1.6  # SPEC: two serve bridges against one
BUSY = 0.001  # seconds a busy worker spends on a request

# layout -> the worker processes, by role and channel B index (spawned in this order:
# a bridge's workers first, so that they are up once its requests arrive)
LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "nats-py": (("responder", 0),),
    "bridge": (("echo", 0), ("serve", 0), ("forward", 0)),
    "bridge-2serve": (("echo", 0), ("echo", 1), ("serve", 0), ("serve", 1), ("forward", 0)),
    "bridge-busy": (("busy", 0), ("serve", 0), ("forward", 0)),
    "bridge-2serve-busy": (("busy", 0), ("busy", 1), ("serve", 0), ("serve", 1),
                           ("forward", 0)),
}
# the pairs of rows whose second has two serve bridges, the first one
TWO_SERVE_PAIRS = (("nats-bridge", "nats-bridge-2serve"),
                   ("nats-bridge-busy", "nats-bridge-2serve-busy"))


def nats_server_path() -> str | None:
    """The nats-server program: on PATH, else Debian's place."""
    found = shutil.which("nats-server")
    if found is None and os.access(FALLBACK_SERVER, os.X_OK):
        found = FALLBACK_SERVER
    return found


def missing() -> str | None:
    """Why the NATS rows cannot run here, or None."""
    if nats_server_path() is None:
        return "no nats-server on PATH (https://nats.io; Debian: apt-get install nats-server)"
    if importlib.util.find_spec("nats") is None:
        return "nats-py not installed (pip install 'reqrep[nats]')"
    return None


def _die_with_parent(libc: Any) -> None:
    """In the nats-server's child before exec: killed if the benchmark dies, so that
    not even a SIGKILLed suite leaves a server behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class NatsRow(Transport):
    """One ``LAYOUTS`` layout; its processes' roles are the runner's workers."""

    def __init__(self, layout: str) -> None:
        self.roles = LAYOUTS[layout]
        self.dir = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.monitor = ""

    @property
    def subscribers(self) -> int:
        """How many subscriptions on ``SUBJECT`` a run waits for before it starts."""
        return sum(role in ("responder", "serve") for role, _ in self.roles)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # ---- parent --------------------------------------------------------------
    def open(self) -> None:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="reqrep-bench-nats-", dir=shm)
        self._start_server()
        for role, index in self.roles:  # serve bridges and the client open existing ones
            if role in ("echo", "busy"):
                reqrep.Server(self._path(f"b{index}.rr")).close()
        if "forward" in (role for role, _ in self.roles):
            reqrep.Server(self._path("a.rr")).close()

    def _start_server(self) -> None:
        program = nats_server_path()
        assert program is not None, "missing() says so first"
        argv = [program, "-a", "127.0.0.1", "-p", "-1", "-m", "-1",
                "--ports_file_dir", self.dir, "-l", self._path("nats.log")]
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     preexec_fn=partial(_die_with_parent, libc))
        ports = self._wait_ports(self.proc)
        self.url, self.monitor = ports["nats"][0], ports["monitoring"][0]

    def _wait_ports(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        """The ports file the server writes once it listens (-p -1: no port race)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            # named <program>_<pid>.ports; not there yet, or half written: try again
            for path in glob.glob(self._path(f"*_{proc.pid}.ports")):
                with contextlib.suppress(OSError, ValueError), open(path) as f:
                    ports: dict[str, Any] = json.load(f)
                    return ports
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: {self._log_tail()}")
            time.sleep(0.01)

    def _log_tail(self) -> str:
        try:
            with open(self._path("nats.log"), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-2:]) or "no log"
        except OSError:
            return "no log"

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.dir:  # the channel files, the log and the ports file
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    # ---- worker processes ------------------------------------------------------
    def serve(self, worker: int) -> None:
        role, index = self.roles[worker]
        if role == "echo":
            reqrep.Server(self._path(f"b{index}.rr")).serve(_echo)
        elif role == "busy":
            reqrep.Server(self._path(f"b{index}.rr")).serve(_busy_echo)
        elif role == "responder":
            asyncio.run(_respond(self.url))
        else:
            asyncio.run(self._bridge(role, index))

    async def _bridge(self, role: str, index: int) -> None:
        from reqrep import bridge

        conn = bridge.Connection(self.url)
        if role == "serve":
            await bridge.serve(self._path(f"b{index}.rr"), SUBJECT, connection=conn,
                               inflight=INFLIGHT)
        else:
            await bridge.forward(self._path("a.rr"), SUBJECT, connection=conn,
                                 inflight=INFLIGHT)

    # ---- client process ----------------------------------------------------------
    def connect(self, client: int) -> Op:
        # Start timing only once every responder or serve bridge takes requests: one
        # that subscribed late would leave the others all the work, or no responders.
        self._wait_subscribers()
        forward = any(role == "forward" for role, _ in self.roles)

        async def start() -> AsyncOp:
            if not forward:
                return await _requester(self.url)
            from reqrep.aio import AsyncClient

            ac = AsyncClient(reqrep.Client(self._path("a.rr")))
            _KEEP.append(ac)
            return ac.req

        return start

    def _wait_subscribers(self) -> None:
        url = f"{self.monitor}/subsz?subs=1&test={SUBJECT}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with urllib.request.urlopen(url, timeout=START_TIMEOUT) as r:
                subs = json.load(r).get("subscriptions_list") or []
            if sum(s.get("subject") == SUBJECT for s in subs) >= self.subscribers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(subs)} of {self.subscribers} subscribers on "
                                   f"{SUBJECT!r} after {START_TIMEOUT:g} s")
            time.sleep(0.01)


def _busy_echo(data: bytes | str) -> bytes | str:
    time.sleep(BUSY)
    return data


async def _respond(url: str) -> None:
    """The nats-py responder: echo each request from the subscription's callback."""
    import nats

    nc = await nats.connect(url)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(SUBJECT, queue="bench", cb=echo)
    await asyncio.Future()  # until killed


async def _requester(url: str) -> AsyncOp:
    """The nats-py requester's op: one request, its reply's payload."""
    import nats

    nc = await nats.connect(url)
    _KEEP.append(nc)

    async def op(msg: bytes) -> bytes:
        reply = await nc.request(SUBJECT, msg, timeout=REQUEST_TIMEOUT)
        return reply.data

    return op
