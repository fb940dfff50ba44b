"""Real NATS parts for the bridge tests: a nats-server on loopback, bridge processes
(``python -m reqrep bridge ...``) and worker processes, each bounded and cleaned up.

Every process started here is a real one; the tests skip when ``nats-server`` or
nats-py is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import pytest

from reqrep.bench.bridge import missing, nats_server_path

NATS_SERVER = nats_server_path()
START_TIMEOUT = 30.0


def need_nats() -> None:
    """Skip unless a nats-server and nats-py are here (as the benchmark's rows ask)."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def _env() -> dict[str, str]:
    """The environment of a child: it imports reqrep as this process does."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    import reqrep

    if Path(reqrep.__file__).resolve().is_relative_to(Path(src)):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


class NatsServer:
    """A nats-server on a loopback port, with `config` (nats-server's syntax) added."""

    def __init__(self, tmp: Path, config: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = tmp / f"nats-{self.port}.conf"
        self.conf.write_text(f"listen: 127.0.0.1:{self.port}\n{config}\n")
        self.log = tmp / f"nats-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert NATS_SERVER is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class Proc:
    """A child process whose stderr goes to a file (read with `log()`)."""

    def __init__(self, argv: list[str], logfile: Path, env: dict[str, str] | None = None,
                 stdout: int | IO[Any] | None = subprocess.DEVNULL) -> None:
        self.logfile = logfile
        with open(logfile, "ab") as err:
            self.popen = subprocess.Popen(argv, stdout=stdout, stderr=err,
                                          env=env if env is not None else _env())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:
        """Until `text` is in the log; AssertionError if the process ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.popen.poll() is not None and text not in self.log():
                raise AssertionError(f"exited {self.popen.returncode} before {text!r}:\n"
                                     f"{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"did not exit in {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


class Procs:
    """The processes of one test, all killed at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.servers: list[NatsServer] = []

    def nats(self, config: str = "") -> NatsServer:
        server = NatsServer(self.tmp, config)
        self.servers.append(server)
        return server

    def bridge(self, role: str, path: Path, url: str, subject: str, *extra: str,
               env: dict[str, str] | None = None, connected: bool = True) -> Proc:
        """`python -m reqrep bridge ROLE` (waiting until it is connected, if asked)."""
        argv = [sys.executable, "-m", "reqrep", "bridge", role, str(path), "--nats", url,
                "--subject", subject, *extra]
        proc = self.start(argv, f"bridge-{role}", env)
        if connected:
            proc.wait_log("taking requests")
        return proc

    def worker(self, path: Path, handler: str, *, setup: str = "", make: str = "Server",
               args: str = "", count: int = 1) -> list[Proc]:
        """`count` processes that serve the channel at `path` (``reqrep.<make>(path<args>)``,
        made by the first) with `handler`, a Python expression of `data` (after `setup`);
        each writes 'ready'."""
        code = textwrap.dedent(f"""\
            import os, sys, time, reqrep
            {setup}
            s = reqrep.{make}({str(path)!r}{args})
            sys.stderr.write('ready\\n'); sys.stderr.flush()
            s.serve(lambda data: {handler})
            """)
        procs = []
        for _ in range(count):
            proc = self.start([sys.executable, "-c", code], "worker")
            proc.wait_log("ready")
            procs.append(proc)
        return procs

    def start(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, self.tmp / f"{name}-{len(self.procs)}.log", env)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGKILL)
        for proc in self.procs:
            proc.kill()
        for server in self.servers:
            server.stop()


def run_python(code: str, timeout: float = 60.0, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """`python -c code` to its end; its output as text."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env if env is not None else _env())
