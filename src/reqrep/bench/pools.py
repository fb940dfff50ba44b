"""Process-pool rows (SPEC §6): tiny tasks through ``reqrep.futures.ProcessPoolExecutor``
against ``concurrent.futures.ProcessPoolExecutor``, ``multiprocessing.Pool`` and loky
(when installed). The row's client process makes the pool (``WORKERS`` workers, started
with fork for every pool) and its op runs tasks through it; the task echoes its 12-byte
argument. Three ways of using a pool: one task at a time (submit, then wait for the
result), ``map`` with ``chunksize=1``, and ``map`` at the standard pool's best chunksize
on this kind of machine (``BEST_CHUNKSIZE``, measured: 1,024 of 64 Ki tiny tasks)."""

from __future__ import annotations

import collections
import multiprocessing
from itertools import repeat
from typing import Any

from reqrep.bench.transports import Op, Transport

WORKERS = 2
MAP_ITEMS = 256  # tasks per op of the chunksize=1 rows
BEST_ITEMS = 64 * 1024  # tasks per op of the best-chunksize rows
BEST_CHUNKSIZE = 1024
MODES = ("submit", "map", "best")


def echo_task(data: Any) -> Any:
    """The task: its argument back."""
    return data


class PoolOp:
    """A pool and the op a row times on it; ``finish`` shuts the pool down (the runner
    calls it once the workload is over, so that no worker outlives its client)."""

    def __init__(self, pool: Any, mode: str, api: str) -> None:
        self.pool = pool
        self.mode = mode
        self.api = api  # "executor" (submit/map) or "mp" (apply/map of multiprocessing)

    def __call__(self, msg: Any) -> Any:
        pool, mode = self.pool, self.mode
        if mode == "submit":
            if self.api == "mp":
                return pool.apply(echo_task, (msg,))
            return pool.submit(echo_task, msg).result()
        items, chunksize = (MAP_ITEMS, 1) if mode == "map" else (BEST_ITEMS, BEST_CHUNKSIZE)
        if self.api == "mp":
            return pool.map(echo_task, repeat(msg, items), chunksize)[-1]
        results = pool.map(echo_task, repeat(msg, items), chunksize=chunksize)
        return collections.deque(results, maxlen=1)[0]  # every result, the last kept

    def finish(self) -> None:
        if self.api == "mp":
            self.pool.close()
            self.pool.join()
        else:
            self.pool.shutdown(wait=True)


class PoolTransport(Transport):
    """A pool of ``kind`` ("reqrep", "futures", "mp" or "loky") used in ``mode``."""

    def __init__(self, kind: str, mode: str) -> None:
        self.kind = kind
        self.mode = mode

    @property
    def per_op(self) -> int:  # type: ignore[override]
        return {"submit": 1, "map": MAP_ITEMS, "best": BEST_ITEMS}[self.mode]

    def serve(self, worker: int) -> None:
        raise NotImplementedError("a pool row has no worker processes of its own")

    def connect(self, client: int) -> Op:
        ctx = multiprocessing.get_context("fork")
        if self.kind == "reqrep":
            from reqrep.futures import ProcessPoolExecutor

            return PoolOp(ProcessPoolExecutor(WORKERS, mp_context=ctx), self.mode, "executor")
        if self.kind == "futures":
            import concurrent.futures

            pool = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=ctx)
            return PoolOp(pool, self.mode, "executor")
        if self.kind == "loky":
            import loky

            return PoolOp(loky.get_reusable_executor(WORKERS), self.mode, "executor")
        return PoolOp(ctx.Pool(WORKERS), self.mode, "mp")
