"""``reqrep.futures.ProcessPoolExecutor``: a drop-in for
:class:`concurrent.futures.ProcessPoolExecutor` whose workers take tasks from one reqrep
channel (SPEC §7).

Functions, arguments and results travel by pickle, as with the standard pool, and of
any size (what does not fit the channel goes through a temporary file in ``/dev/shm``,
removed once read). Unlike the standard pool, a worker that dies fails only the
futures of the tasks it was running, with :class:`reqrep.WorkerDiedError`, and is
replaced; the pool goes on.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from reqrep.futures._pool import Pool, PoolFuture

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["ProcessPoolExecutor", "PoolFuture"]

_T = TypeVar("_T")

# Pools not shut down yet: shut down (waiting for their tasks) at interpreter exit.
_live: weakref.WeakSet[Pool] = weakref.WeakSet()
_live_lock = threading.Lock()


def _shutdown_at_exit() -> None:
    with _live_lock:
        pools = list(_live)
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=False)


atexit.register(_shutdown_at_exit)


class ProcessPoolExecutor(Executor):
    """An executor that runs calls in a pool of worker processes fed by a reqrep
    channel; the standard :class:`concurrent.futures.ProcessPoolExecutor`'s interface.

    ``max_workers`` (default: the number of CPUs this process may use) worker
    processes are started, with ``mp_context`` (a ``multiprocessing`` context;
    default the default one, or ``"spawn"`` with ``max_tasks_per_child``), on the
    first :meth:`submit`. Each runs ``initializer(*initargs)`` first; one that
    raises breaks the pool (:class:`~concurrent.futures.process.BrokenProcessPool`
    for every pending future and further submit). A worker exits after
    ``max_tasks_per_child`` tasks and is replaced; one that dies fails only the
    tasks it held (:class:`reqrep.WorkerDiedError`) and is replaced too.

    ``Future.cancel()`` cancels a task no worker has taken yet (its request leaves
    the channel); ``Future.running()`` says whether a worker has taken it.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = len(os.sched_getaffinity(0)) or 1
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int or None, not {type(max_workers).__name__}")
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
                raise TypeError("max_tasks_per_child must be an int or None")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if mp_context is None:
            mp_context = (multiprocessing.get_context("spawn") if max_tasks_per_child
                          else multiprocessing.get_context())
        elif isinstance(mp_context, str):
            mp_context = multiprocessing.get_context(mp_context)
        if max_tasks_per_child is not None and mp_context.get_start_method() == "fork":
            raise ValueError("max_tasks_per_child is incompatible with the 'fork' "
                             "multiprocessing start method; supply a different mp_context.")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._pool = Pool(max_workers, mp_context, initializer, tuple(initargs),
                          max_tasks_per_child)
        with _live_lock:
            _live.add(self._pool)
        # A pool dropped without shutdown() finishes its tasks and stops its workers.
        self._finalizer = weakref.finalize(self, Pool.abandon, self._pool)

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` in a worker; its :class:`PoolFuture`.

        ``fn``, the arguments and the result travel by pickle (``fn`` by reference, as
        with the standard pool); one that does not pickle fails its future. Raises
        ``RuntimeError`` after :meth:`shutdown`, ``BrokenProcessPool`` once broken.
        """
        return self._pool.submit(fn, args, kwargs)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """``map(fn, *iterables)`` run in the pool; the results in order, as they come.

        All tasks are submitted at once. ``chunksize`` tasks travel as one (fewer,
        larger messages). ``timeout`` (seconds from this call) bounds the wait for
        each result: ``TimeoutError`` beyond. A task's exception is raised when its
        result would be returned.
        """
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            return _results(self._pool.submit_many(fn, zip(*iterables)), end)  # noqa: B905
        chunks = self._pool.submit_many(partial(_process_chunk, fn),
                                        ((chunk,) for chunk in _chunks(iterables, chunksize)))
        return itertools.chain.from_iterable(_results(chunks, end))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; with ``cancel_futures`` the tasks no worker has taken are
        cancelled. With ``wait``, return once every task is done and the workers have
        exited (else that happens in the background). Idempotent."""
        self._pool.shutdown(wait, cancel_futures)

    @property
    def _worker_pids(self) -> list[int]:
        """The pids of the worker processes now (for tests and tools)."""
        return self._pool.worker_pids


def _results(futures: list[PoolFuture], end: float | None) -> Iterator[Any]:
    """map's results in order (each waited for until ``end``); the tasks not reached yet
    are cancelled when the iterator is closed or dropped, as the standard map does."""
    futures.reverse()
    try:
        while futures:
            fut = futures.pop()
            try:
                yield fut.result(None if end is None else end - time.monotonic())
            finally:
                fut.cancel()
    finally:
        for fut in futures:
            fut.cancel()


def _chunks(iterables: tuple[Iterable[Any], ...],
            size: int) -> Iterator[tuple[tuple[Any, ...], ...]]:
    it = zip(*iterables)  # noqa: B905 - stops at the shortest, as map() does
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _process_chunk(fn: Callable[..., _T], chunk: tuple[tuple[Any, ...], ...]) -> list[_T]:
    return [fn(*args) for args in chunk]
