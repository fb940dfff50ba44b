"""An asyncio service and an asyncio client on one reqrep channel, in two processes.

Run it with ``python examples/asyncio_service.py``. It

1. creates a Str channel file in a temporary directory,
2. starts a service process that answers requests with ``reqrep.aio.serve`` and
   an ``async`` handler (which pretends to do some I/O), at most 64 at once,
3. in this process, makes 2000 requests through one ``reqrep.aio.AsyncClient``
   with 200 of them in flight at once, checks every answer and prints the rate,
4. shows that a plain synchronous client is answered by the same service,
5. stops the service with SIGTERM: ``serve`` lets the handlers in flight reply,
   then returns, and the service exits 0.

Every wait has a timeout, so it cannot hang.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time

import reqrep
from reqrep.aio import AsyncClient, serve

REQUESTS = 2000
IN_FLIGHT = 200
TIMEOUT = 10.0  # seconds for any single request


async def handle(data: bytes | str) -> bytes | str:
    """The service's handler: some 'I/O', then the upper-cased request."""
    await asyncio.sleep(0.0005)
    return data.upper()


def on_error(exc: BaseException, data: bytes | str, rid: int) -> bytes:
    """Answer a failed request with an error value instead of leaving it unanswered."""
    return b"ERROR " + type(exc).__name__.encode()


async def service_main(path: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with reqrep.Server(path) as server:
        await serve(server, handle, concurrency=64, on_error=on_error, stop=stop)


def service(path: str) -> None:
    asyncio.run(service_main(path))


async def client_main(path: str) -> int:
    with reqrep.Client(path) as client:
        async with AsyncClient(client) as ac:
            limit = asyncio.Semaphore(IN_FLIGHT)

            async def one(i: int) -> bool:
                async with limit:
                    answer = await ac.req(f"request {i}", timeout=TIMEOUT)
                return answer == f"REQUEST {i}"

            # the first answer also tells that the service is up
            if await ac.req("ping", timeout=TIMEOUT) != "PING":
                print("the service did not answer")
                return 1
            t0 = time.perf_counter()
            ok = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
            took = time.perf_counter() - t0
            bad = ok.count(False)
            print(f"{REQUESTS} requests, {IN_FLIGHT} in flight: {REQUESTS / took:,.0f} requests/s")
            if bad:
                print(f"{bad} wrong or missing answers")
                return 1
            print("all answers correct")
        # a plain synchronous client (no event loop, no eventfd) is served too
        print("sync req(b'hello') ->", client.req(b"hello", timeout=TIMEOUT))
    return 0


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="reqrep-aio-")
    path = os.path.join(tmp, "service.rr")
    proc = None
    try:
        with reqrep.Server(path, req_cap=1024, resp_slots=256, resp_size=256):
            proc = multiprocessing.Process(target=service, args=(path,), daemon=True)
            proc.start()
            rc = asyncio.run(asyncio.wait_for(client_main(path), 60))
            proc.terminate()  # SIGTERM: the service stops cleanly
            proc.join(TIMEOUT)
            if proc.exitcode != 0:
                print(f"service exited with {proc.exitcode}")
                rc = 1
            else:
                print("service stopped cleanly")
            return rc
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
