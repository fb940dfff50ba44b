"""Echo server and client in two processes sharing one reqrep channel file.

Run it with ``python examples/echo.py``. It

1. creates a Str channel (``reqrep.Server``) in a temporary file,
2. starts a worker process that opens the same file and replies to every
   request with the upper-cased request,
3. sends a few requests (blocking ``req``, then several in flight at once with
   ``send``/``get_wait``) and prints the answers,
4. measures round trips per second of a 1:1 cross-process echo for a moment,
5. stops the worker and removes the file.

Every wait has a timeout, so it cannot hang.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time

import reqrep

STOP = b"\x00stop"  # a request the worker answers, then quits
TIMEOUT = 5.0  # seconds for any single wait
BENCH_SECONDS = 1.5  # how long the round-trip measurement runs


def worker(path: str) -> None:
    """Reply to every request with its upper-cased data until told to stop."""
    with reqrep.Server(path) as server:
        while True:
            # A worker that hears nothing for a while assumes its parent is gone.
            msg = server.recv_wait(timeout=30.0)
            if msg is None:
                return
            data, rid = msg
            if data == STOP:
                server.reply(rid, b"bye")
                return
            server.reply(rid, data.upper())  # str stays str, bytes stay bytes


def check(answer: bytes | str | None, what: str) -> bytes | str:
    if answer is None:
        raise SystemExit(f"echo: no answer to {what} within {TIMEOUT} s")
    return answer


def bench(client: reqrep.Client) -> None:
    """Count request/response round trips of a 12-byte message."""
    payload = b"hello world!"
    expected = payload.upper()
    n = 0
    start = time.perf_counter()
    deadline = start + BENCH_SECONDS
    while True:
        for _ in range(1000):
            if client.req(payload, timeout=TIMEOUT) != expected:
                raise SystemExit("echo: wrong or missing answer during the benchmark")
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    rate = n / elapsed
    print(
        f"1:1 cross-process echo, 12-byte payload: {n} round trips in {elapsed:.2f} s"
        f" = {rate:,.0f} round trips/s ({1e6 / rate:.1f} us each)"
    )


def main() -> int:
    # A watchdog: whatever happens, give up after a minute instead of hanging.
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("echo example took too long")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)

    # /dev/shm is memory-backed; fall back to the default temp dir elsewhere.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    tmpdir = tempfile.mkdtemp(prefix="reqrep-echo-", dir=base)
    path = os.path.join(tmpdir, "echo.chan")

    proc = None
    try:
        with reqrep.Server(path, req_cap=256, resp_slots=16, resp_size=4096) as server:
            print(
                f"channel {server.path}: capacity {server.capacity}, "
                f"{server.resp_slots} response slots of {server.resp_size} bytes"
            )

            proc = multiprocessing.Process(target=worker, args=(path,), daemon=True)
            proc.start()

            with reqrep.Client(path) as client:
                # Blocking request/response; the payload type is preserved.
                for data in ("hello", b"bytes stay bytes", "größe"):
                    answer = check(client.req(data, timeout=TIMEOUT), repr(data))
                    print(f"req({data!r}) -> {answer!r}")

                # Several requests in flight at once, collected by id.
                ids = []
                for i in range(3):
                    rid = client.send_wait(f"async request {i}", timeout=TIMEOUT)
                    if rid is None:
                        raise SystemExit("echo: could not send within the timeout")
                    ids.append(rid)
                print(f"sent {len(ids)} requests, pending: {client.pending()}")
                for rid in ids:
                    answer = check(client.get_wait(rid, timeout=TIMEOUT), f"id {rid:#x}")
                    print(f"get_wait({rid:#x}) -> {answer!r}")

                bench(client)

                check(client.req(STOP, timeout=TIMEOUT), "the stop request")

            proc.join(TIMEOUT)
            if proc.exitcode != 0:
                print(f"echo: worker exit code {proc.exitcode}", file=sys.stderr)
                return 1
            stats = server.stats()
            print(
                f"stats: {stats['requests']} requests, {stats['replies']} replies, "
                f"{stats['slots_free']} of {stats['resp_slots']} slots free"
            )
            server.unlink()
    finally:
        signal.alarm(0)
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(TIMEOUT)
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
