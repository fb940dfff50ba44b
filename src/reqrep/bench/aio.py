"""The asyncio rows: many requests in flight from one event loop.

A transport here returns from ``connect`` a coroutine function that, awaited
inside the client's running loop, gives the async op ``await op(msg)``; the
``aio_rate`` workload keeps ``INFLIGHT`` of them going at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from reqrep.bench.transports import ECHO_SIZE, Op, ReqrepStr, Transport
from reqrep.bench.workloads import GateLike, Timing

INFLIGHT = 64

AsyncOp = Callable[[Any], Awaitable[Any]]


class ReqrepAio(ReqrepStr):
    """``reqrep.aio.AsyncClient`` over a Str channel; the worker is the plain sync loop."""

    def connect(self, client: int) -> Op:
        c = self._server().client()

        async def start() -> AsyncOp:
            from reqrep.aio import AsyncClient

            ac = AsyncClient(c)
            _KEEP.append(ac)
            return ac.req

        return start


class AioUnixStreams(Transport):
    """asyncio streams over a Unix socket: a stream server echoes, the client keeps
    one connection per request in flight."""

    def __init__(self, size: int = ECHO_SIZE) -> None:
        self.size = size
        self.dir = ""

    def open(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="reqrep-bench-")

    @property
    def path(self) -> str:
        return os.path.join(self.dir, "echo.sock")

    def serve(self, worker: int) -> None:
        n = self.size

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    writer.write(await reader.readexactly(n))
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        async def main() -> None:
            server = await asyncio.start_unix_server(handle, self.path)
            async with server:
                await server.serve_forever()

        asyncio.run(main())

    def connect(self, client: int) -> Op:
        n = self.size

        async def start() -> AsyncOp:
            for _ in range(500):  # the worker process may still be starting its server
                if os.path.exists(self.path):
                    break
                await asyncio.sleep(0.01)
            pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
            pool = asyncio.Queue()
            for _ in range(INFLIGHT):
                pool.put_nowait(await asyncio.open_unix_connection(self.path))
            _KEEP.append(pool)

            async def op(msg: bytes) -> bytes:
                reader, writer = await pool.get()
                writer.write(msg)
                got = await reader.readexactly(n)
                pool.put_nowait((reader, writer))
                return got

            return op

        return start

    def close(self) -> None:
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""


_KEEP: list[object] = []  # connections live until the client process exits


def aio_rate(start: Op, msg: Any, timing: Timing, gate: GateLike) -> dict[str, float]:
    """Round trips per second with ``INFLIGHT`` requests in flight on one loop."""

    async def main() -> dict[str, float]:
        op: AsyncOp = await start()
        clock = time.perf_counter

        async def check() -> None:
            got = await op(msg)
            if got != msg:
                raise AssertionError(f"wrong echo: sent {msg!r:.40}, got {got!r:.40}")

        async def loop_until(end: float) -> int:
            done = 0
            while clock() < end:
                await op(msg)
                done += 1
            return done

        await check()
        await asyncio.gather(*(loop_until(clock() + timing.warmup) for _ in range(INFLIGHT)))
        gate.wait()  # blocks the loop, but nothing is in flight now
        t0 = clock()
        counts = await asyncio.gather(
            *(loop_until(t0 + timing.seconds) for _ in range(INFLIGHT))
        )
        t1 = clock()
        await check()
        return {"ops": float(sum(counts)), "elapsed": t1 - t0}

    return asyncio.run(main())
