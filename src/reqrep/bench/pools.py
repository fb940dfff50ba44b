"""Process-pool rows (SPEC §6): tiny tasks through ``reqrep.futures.ProcessPoolExecutor``
against ``concurrent.futures.ProcessPoolExecutor``, ``multiprocessing.Pool`` and loky
(when installed). The row's client process makes the pool (``WORKERS`` workers, started
with fork, but loky's, which start its own way) and its op runs tasks through it; the
task echoes its 12-byte argument. Three ways of using a pool (``MODES``): one task at a
time (submit, then wait for the result), ``map`` with ``chunksize=1``, and ``map`` at the
standard pool's best chunksize on this kind of machine (``BEST_CHUNKSIZE``, measured:
1,024 of 64 Ki tiny tasks)."""

from __future__ import annotations

import collections
import multiprocessing
from itertools import repeat
from typing import Any

from reqrep.bench.transports import Op, Transport, _echo

WORKERS = 2
BEST_CHUNKSIZE = 1024
# mode -> (tasks per op, map's chunksize; None: one submit-and-wait)
MODES = {"submit": (1, None), "map": (256, 1), "best": (64 * 1024, BEST_CHUNKSIZE)}


class PoolOp:
    """A pool and the op a row times on it; ``finish`` shuts the pool down (the runner
    calls it once the workload is over, so that no worker outlives its client)."""

    def __init__(self, pool: Any, mode: str, api: str) -> None:
        self.pool = pool
        self.mode = mode
        self.api = api  # "executor" (submit/map) or "mp" (apply/map of multiprocessing)

    def __call__(self, msg: Any) -> Any:
        pool = self.pool
        items, chunksize = MODES[self.mode]
        if chunksize is None:
            if self.api == "mp":
                return pool.apply(_echo, (msg,))
            return pool.submit(_echo, msg).result()
        if self.api == "mp":
            return pool.map(_echo, repeat(msg, items), chunksize)[-1]
        results = pool.map(_echo, repeat(msg, items), chunksize=chunksize)
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
        return MODES[self.mode][0]

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
