"""A pre-forking server: one channel, N forked workers, clients in other processes.

Run it with ``python examples/prefork_server.py [--workers N] [--clients M]``.

1. The parent creates a Str channel in a temporary file, then ``fork()``s N worker
   processes. Each worker inherits the parent's ``reqrep.Server`` object (no pickling
   with fork) and answers with ``server.serve(handler)``.
2. M client processes are started as separate programs (this same file run with
   ``--client PATH``): they open the channel by path with ``reqrep.Client`` — any
   process of the same user that knows the path could do the same.
3. When the clients are done, the parent shuts the workers down cleanly with SIGTERM:
   a worker's SIGTERM handler closes its server, and ``serve`` then finishes the
   request in hand and returns. Workers that do not exit in time are killed.

A worker also leaves when its parent has gone, and every wait has a timeout, so the
example cannot hang or leave processes behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import reqrep

TIMEOUT = 10.0  # seconds for any single wait
POLL = 0.1  # how often an idle worker looks whether its parent is still there
REQUESTS_PER_CLIENT = 300


# --------------------------------------------------------------------------- worker


def worker_loop(server: reqrep.Server, parent: int) -> int:
    """A forked worker: answer until SIGTERM (or until the parent is gone)."""

    def on_term(signum: int, frame: object) -> None:
        # serve() sends the reply in hand, then returns: no request is ever taken
        # and then dropped.
        server.close()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business

    def answer(data: bytes | str) -> str:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        return f"{os.getpid()}:{text.upper()}"

    answered = 0
    while not server.closed and os.getppid() == parent:
        # The loop runs in C; it comes back after POLL seconds without a request,
        # so that a vanished parent is noticed.
        answered += server.serve(answer, timeout=POLL)
    return answered


def fork_worker(server: reqrep.Server) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    # The child: never return into the parent's code; always leave with os._exit.
    code = 1
    try:
        n = worker_loop(server, parent)
        print(f"  worker {os.getpid()}: {n} requests answered, exiting", flush=True)
        code = 0
    except BaseException as e:  # noqa: BLE001 - report anything, then exit
        print(f"  worker {os.getpid()} failed: {e!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


# --------------------------------------------------------------------------- client


def client_main(path: str, n: int) -> int:
    """A client process: n requests, each answer checked; prints who served them."""
    served_by: Counter[str] = Counter()
    with reqrep.Client(path) as client:
        for i in range(n):
            text = f"request {i} from {os.getpid()}"
            answer = client.req(text, timeout=TIMEOUT)
            if not isinstance(answer, str):
                print(f"client {os.getpid()}: no answer to {text!r}", file=sys.stderr)
                return 1
            pid, _, echoed = answer.partition(":")
            if echoed != text.upper():
                print(f"client {os.getpid()}: wrong answer {answer!r}", file=sys.stderr)
                return 1
            served_by[pid] += 1
    shares = ", ".join(f"{pid}: {k}" for pid, k in sorted(served_by.items()))
    print(f"  client {os.getpid()}: {n} answers ok (by worker {shares})", flush=True)
    return 0


# --------------------------------------------------------------------------- parent


def reap(pids: list[int], timeout: float) -> dict[int, int]:
    """Wait for the given children for at most `timeout` seconds; kill and reap the
    ones still running. Returns pid -> exit code (negative: killed by that signal)."""
    codes: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    for pid in pids:
        if pid not in codes:
            os.kill(pid, signal.SIGKILL)
            codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return codes


def parent_main(n_workers: int, n_clients: int) -> int:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmpdir = tempfile.mkdtemp(prefix="reqrep-prefork-", dir=base)
    path = os.path.join(tmpdir, "prefork.chan")
    workers: list[int] = []
    clients: list[subprocess.Popen[bytes]] = []
    ok = True
    try:
        with reqrep.Server(path, req_cap=1024, resp_slots=64, resp_size=512) as server:
            print(f"channel {path}: forking {n_workers} workers")
            sys.stdout.flush()  # nothing buffered may be written twice by the children
            workers = [fork_worker(server) for _ in range(n_workers)]

            print(f"starting {n_clients} client processes")
            cmd = [sys.executable, os.path.abspath(__file__), "--client", path,
                   "--requests", str(REQUESTS_PER_CLIENT)]
            clients = [subprocess.Popen(cmd) for _ in range(n_clients)]
            for proc in clients:
                try:
                    ok = proc.wait(timeout=4 * TIMEOUT) == 0 and ok
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    ok = False

            print("clients done; stopping the workers with SIGTERM")
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            codes = reap(workers, TIMEOUT)
            workers = []
            if any(code != 0 for code in codes.values()):
                print(f"worker exit codes: {codes}", file=sys.stderr)
                ok = False

            stats = server.stats()
            print(
                f"stats: {stats['requests']} requests, {stats['replies']} replies, "
                f"{stats['size']} still queued, {stats['slots_free']} of "
                f"{stats['resp_slots']} slots free"
            )
            ok = ok and stats["requests"] == stats["replies"] == n_clients * REQUESTS_PER_CLIENT
            server.unlink()
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if workers:  # something went wrong before the clean shutdown
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            reap(workers, TIMEOUT)
        shutil.rmtree(tmpdir, ignore_errors=True)
    print("done" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--client", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=REQUESTS_PER_CLIENT,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args.client, args.requests)

    # A watchdog: whatever happens, give up after a minute instead of hanging.
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("prefork example took too long")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    try:
        return parent_main(args.workers, args.clients)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
