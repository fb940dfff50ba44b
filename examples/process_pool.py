"""A ``concurrent.futures.ProcessPoolExecutor`` as the worker pool of a reqrep channel.

Run it with ``python examples/process_pool.py [--start-method spawn|forkserver|fork]``.

1. The main process creates a Str channel in a temporary file.
2. It submits one ``serve`` task per pool worker, passing the ``reqrep.Server`` object
   itself: the object is pickled and re-opens the same channel (by path) in the worker.
   (A ``Server.new_memfd(...)`` channel works the same way: it travels as a file
   descriptor. An anonymous ``Server(None)`` refuses to be pickled.)
3. Each worker loops ``recv_wait`` / ``reply`` until it receives the stop request.
4. The main process is the client: it keeps many requests in flight with
   ``send_wait`` / ``get_wait``, checks every answer, then stops the workers and
   prints how the work was shared.

Every wait has a timeout and the workers give up when they hear nothing for a while,
so the example cannot hang.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter

import reqrep

STOP = "\x00stop"  # the request that ends a worker's loop
TIMEOUT = 10.0  # seconds for any single wait
IDLE = 30.0  # a worker that hears nothing for this long assumes the parent is gone
WORKERS = 4
JOBS = 200


def work(data: str) -> str:
    """The 'expensive' function the pool computes: a few rounds of SHA-256."""
    digest = data.encode()
    for _ in range(200):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def serve(server: reqrep.Server) -> tuple[int, int]:
    """Runs in a pool worker: answer requests until the stop request.

    ``server`` arrived pickled: it is this worker's own handle on the channel.
    Returns (this worker's pid, requests answered)."""
    answered = 0
    with server:
        while True:
            msg = server.recv_wait(timeout=IDLE)
            if msg is None:  # nobody asked for a long time: give up
                break
            data, rid = msg
            if data == STOP:
                server.reply(rid, "bye")
                break
            # Requests are sent as str and arrive as str (bytes would stay bytes).
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            # The answer names the worker so that the parent can show the sharing.
            server.reply(rid, f"{os.getpid()} {work(text)}")
            answered += 1
    return os.getpid(), answered


def run(start_method: str) -> int:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmpdir = tempfile.mkdtemp(prefix="reqrep-pool-", dir=base)
    path = os.path.join(tmpdir, "pool.chan")
    ctx = multiprocessing.get_context(start_method)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx)
    try:
        with reqrep.Server(path, req_cap=256, resp_slots=64, resp_size=256) as server:
            print(f"channel {path}; {WORKERS} pool workers ({start_method})")
            # One long-running task per worker; each receives the Server pickled.
            tasks = [pool.submit(serve, server) for _ in range(WORKERS)]

            with reqrep.Client(path) as client:
                jobs = {f"job {i}": work(f"job {i}") for i in range(JOBS)}  # expected answers
                served_by: Counter[int] = Counter()
                in_flight: dict[int, str] = {}

                def collect(rid: int) -> None:
                    answer = client.get_wait(rid, timeout=TIMEOUT)
                    if not isinstance(answer, str):
                        raise SystemExit(f"process_pool: no answer to {in_flight[rid]!r}")
                    pid, result = answer.split()
                    if result != jobs[in_flight.pop(rid)]:
                        raise SystemExit(f"process_pool: wrong answer {answer!r}")
                    served_by[int(pid)] += 1

                # Keep up to 32 requests in flight (the channel has 64 response slots).
                for job in jobs:
                    if len(in_flight) >= 32:
                        collect(next(iter(in_flight)))
                    rid = client.send_wait(job, timeout=TIMEOUT)
                    if rid is None:
                        raise SystemExit("process_pool: could not send within the timeout")
                    in_flight[rid] = job
                while in_flight:
                    collect(next(iter(in_flight)))
                print(f"{JOBS} jobs answered correctly")

                # Stop every worker: one stop request each.
                for _ in tasks:
                    if client.req(STOP, timeout=TIMEOUT) != "bye":
                        raise SystemExit("process_pool: a worker did not acknowledge the stop")

            # A pool process may have run more than one serve task (one after another):
            # count per process.
            per_worker: Counter[int] = Counter()
            for t in tasks:
                pid, n = t.result(timeout=TIMEOUT)
                per_worker[pid] += n
            for pid, n in sorted(per_worker.items()):
                print(f"worker {pid}: {n} requests")
            if per_worker != served_by:
                raise SystemExit("process_pool: the workers' counts do not match the answers")
            stats = server.stats()
            print(
                f"stats: {stats['requests']} requests, {stats['replies']} replies, "
                f"{stats['slots_free']} of {stats['resp_slots']} slots free"
            )
            server.unlink()
    finally:
        # Never wait forever for the pool: bounded join, then kill what is left.
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(TIMEOUT)
            if p.is_alive():
                p.kill()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--start-method",
        choices=multiprocessing.get_all_start_methods(),
        default="spawn",
        help="how the pool starts its workers (default: spawn)",
    )
    args = parser.parse_args()

    # A watchdog: whatever happens, give up after a minute instead of hanging.
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("process_pool example took too long")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    try:
        return run(args.start_method)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
