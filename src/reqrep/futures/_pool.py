"""The pool's side of reqrep.futures: one channel in a private directory, workers that
take tasks from it, and the futures of what was submitted.

Who collects a reply: the thread waiting in ``result()`` for its own task collects it
itself (``get_wait`` with the GIL released: no hand-off between threads); every other
reply is collected by the collector thread, which sleeps on the channel's bell while
nobody waits in ``result()`` and looks every ``_POLL`` seconds while someone does (then
the bell would wake it for replies that thread collects anyway). The watcher thread
waits on the workers' process sentinels: it fails the futures of a worker that died
(``WorkerDiedError``) and starts another one.

One lock (``_mutex``) guards the client handle's sends, gets and cancels (but a waiting
``result()``'s ``get_wait``, on a task marked ``driven`` so that nobody else touches
it) and the task tables. Futures are completed and cancelled outside it: their
callbacks may submit.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import tempfile
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from reqrep._remote import RemoteError
from reqrep._reqrep import Client, Server, WorkerDiedError
from reqrep.futures import _payload, _worker

# The channel: in-flight tasks (response slots), the arena for inline tasks, the
# largest inline task and result (larger ones spill to a file).
_RESP_SLOTS = 128
_RESULT_LIMIT = 32 * 1024
_TASK_LIMIT = 64 * 1024
_ARENA = 4 * 1024 * 1024
# The collector looks this often while a thread waits in result() (seconds), and goes
# on looking for this long after the last one returned (so that a submit-and-wait loop
# does not wake it for every task).
_POLL = 0.002
_LINGER = 0.02
# A result() wait, a collector's sleep and a worker's stop, in slices of at most
# this long (seconds): how soon each notices what changed around it.
_SLICE = 0.1
_IDLE = 1.0
_STOP_GRACE = 10.0
_START_TRIES = 3  # (see Pool._reap and Pool._replace)
# The stop message: a worker answers it and exits.
_STOP = b""
_U32 = 0xFFFFFFFF
_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Functions (and a module's built-in functions), pickled by name: the pool keeps their
# pickles, at most _FN_CACHE of them.
_FN_CACHE = 256
# concurrent.futures' state names
_PENDING = "PENDING"
_FINISHED = "FINISHED"
_CANCELLED = ("CANCELLED", "CANCELLED_AND_NOTIFIED")


class _Task:
    """A submitted task: its future and its payload; its request id once sent (a task
    that found the channel full waits in the backlog with ``rid`` None)."""

    __slots__ = ("fut", "payload", "rid", "driven", "settled", "cancelled")

    def __init__(self, fut: PoolFuture, payload: bytes | str) -> None:
        self.fut = fut
        self.payload = payload
        self.rid: int | None = None
        self.driven = False  # a result() waits for it with get_wait: hands off
        self.settled = False  # its reply was collected, or it was cancelled
        self.cancelled = False  # (settled by a cancel)


# A settled task with its reply (or None) and its error (or None), to be finished.
_Outcome = tuple[_Task, Any, "BaseException | None"]


class PoolFuture(Future[Any]):
    """The future of a pool task: ``result()`` and ``exception()`` collect its reply
    themselves, and ``cancel()`` cancels its request while no worker has taken it."""

    def __init__(self, pool: Pool) -> None:
        # Future.__init__'s fields, but the pool's condition (one per future costs more
        # than the rest of a task): our result() waits on it only to look again.
        self._condition = pool.condition
        self._state = _PENDING
        self._result = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self._pool = pool
        self._task: _Task | None = None

    def cancel(self) -> bool:
        """Cancel the task unless a worker took it; ``True`` if it is cancelled."""
        state = self._state
        if state != _PENDING:  # done: no lock needed to say so (map asks after each result)
            return state in _CANCELLED
        return self._pool.cancel(self)

    def running(self) -> bool:
        """Whether a worker has taken the task and it is not done yet."""
        return not self.done() and self._pool.taken(self)

    def result(self, timeout: float | None = None) -> Any:
        """The task's result (see ``concurrent.futures.Future.result``)."""
        if self._state != _FINISHED:
            timeout = self._pool.drive(self, timeout)
            if self._state != _FINISHED:
                return super().result(timeout)  # cancelled, or timed out: raises
        if self._exception is None:
            return self._result
        return super().result()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception (see ``concurrent.futures.Future.exception``)."""
        remaining = self._pool.drive(self, timeout)
        return super().exception(remaining)


class Pool:
    """A running pool; :class:`~reqrep.futures.ProcessPoolExecutor` is its face."""

    def __init__(
        self,
        max_workers: int,
        ctx: Any,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
    ) -> None:
        self._max_workers = max_workers
        self._ctx = ctx
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks = max_tasks
        self._mutex = threading.Lock()
        self.condition = threading.Condition()  # the futures'
        self._fn_cache: dict[Any, bytes] = {}  # function -> its pickle (a reference)
        self._pending: dict[int, _Task] = {}  # sent, in send order
        self._backlog: deque[_Task] = deque()  # waiting for room in the channel
        self._procs: dict[int, Any] = {}  # pid -> Process
        self._drivers = 0  # threads in result()/exception() waiting on the channel
        self._last_drive = 0.0
        self._shutdown = False  # no new tasks
        self._stopping = False  # workers are told to stop: none is started any more
        self._broken: str | None = None
        self._started = False
        self._dir: str | None = None
        self._client: Client | None = None
        self._collector: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._path = ""
        self._seen = 0  # the bell's count the collector starts from
        self._stop_deadline = 0.0  # when workers still running after their stop are killed
        self._missing = 0  # workers to start (the watcher's)
        self._unready = 0  # workers in a row that died before they were ready
        self._spawn_errors = 0  # failed starts in a row

    # ---- starting

    def _start(self) -> None:
        """Make the channel, start the workers and the two threads (under _mutex)."""
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._dir = tempfile.mkdtemp(prefix="reqrep-pool-", dir=base)
        try:
            path = os.path.join(self._dir, "channel")
            with Server(path, req_cap=_RESP_SLOTS * 2, resp_slots=_RESP_SLOTS,
                        resp_size=_RESULT_LIMIT, arena=_ARENA):
                pass
            client = Client(path, spin=_worker.SPIN)
            self._seen = client._bell_claim()
            self._client = client
            self._path = path
            for _ in range(self._max_workers):  # before any thread of ours: fork is safe
                self._spawn()
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
            self._collector = threading.Thread(target=self._collect_loop, daemon=True,
                                               name="reqrep-pool-collector")
            self._watcher = threading.Thread(target=self._watch_loop, daemon=True,
                                             name="reqrep-pool-watcher")
            self._collector.start()
            self._watcher.start()
        except BaseException:
            self._kill_workers()
            if self._client is not None:
                self._client.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._client = None
            raise
        self._started = True

    def _spawn(self) -> None:
        assert self._dir is not None
        proc = self._ctx.Process(
            target=_worker.main,
            args=(self._path, self._dir, os.getpid(), _RESULT_LIMIT, self._initializer,
                  self._initargs, self._max_tasks),
            name="reqrep-pool-worker",
            daemon=True,
        )
        proc.start()
        self._procs[proc.pid] = proc

    # ---- submitting

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> PoolFuture:
        fut, task = self._prepare(self._fn_ref(fn), args, kwargs)
        if task is not None:
            self._enqueue([task])
        return fut

    def submit_many(self, fn: Callable[..., Any],
                    arg_tuples: Iterable[tuple[Any, ...]]) -> list[PoolFuture]:
        """``submit(fn, *args)`` for each of ``arg_tuples`` (map's), under one lock."""
        ref = self._fn_ref(fn)
        futures: list[PoolFuture] = []
        tasks: list[_Task] = []
        try:
            for args in arg_tuples:
                fut, task = self._prepare(ref, args, {})
                futures.append(fut)
                if task is not None:
                    tasks.append(task)
        finally:
            if tasks:  # what was prepared goes out, even if the iterable raised
                self._enqueue(tasks)
        return futures

    def _prepare(self, ref: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> tuple[PoolFuture, _Task | None]:
        """A task's future and its pickled payload (no task: it failed to pickle, and the
        future has the error, as in the standard pool)."""
        fut = PoolFuture(self)
        try:
            # _payload.dump, but the directory asked for only when it is needed (asking
            # starts the pool: a task that does not pickle must not)
            data = pickle.dumps((ref, args, kwargs), _PROTOCOL)
            payload = data if len(data) <= _TASK_LIMIT else _payload.spill(data, self._spill_dir())
        except Exception as exc:  # noqa: BLE001 - the future has it
            self._check_open()
            fut.set_exception(exc)
            return fut, None
        task = fut._task = _Task(fut, payload)
        return fut, task

    def _enqueue(self, tasks: list[_Task]) -> None:
        """Send tasks in order while the channel takes them; the rest wait in the backlog."""
        with self._mutex:
            try:
                self._ensure_started()
            except BaseException:
                for task in tasks:
                    _payload.discard(task.payload)
                raise
            backlog = self._backlog
            for i, task in enumerate(tasks):
                if backlog or self._send(task) is None:
                    backlog.extend(tasks[i:])
                    return

    def _fn_ref(self, fn: Callable[..., Any]) -> Any:
        """A plain function as its pickle (a reference by name, the same every time:
        pickling it anew costs more than the rest of a task), anything else as is."""
        if not (type(fn) is types.FunctionType
                or (type(fn) is types.BuiltinFunctionType
                    and isinstance(getattr(fn, "__self__", None), types.ModuleType))):
            return fn  # a bound method's pickle holds its object's state: never kept
        ref = self._fn_cache.get(fn)
        if ref is None:
            try:
                ref = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - pickled with its task: its future says why
                return fn
            if len(self._fn_cache) >= _FN_CACHE:
                self._fn_cache.clear()
            self._fn_cache[fn] = ref
        return ref

    def _spill_dir(self) -> str:
        if self._dir is None:  # before the first task: make the directory now
            with self._mutex:
                self._ensure_started()
        assert self._dir is not None
        return self._dir

    def _ensure_started(self) -> None:
        """Raise if no task may be submitted; else start the pool if it is not yet
        (under _mutex)."""
        if self._shutdown or not self._started:
            self._check_open()
            self._start()

    def _check_open(self) -> None:
        if self._broken is not None:
            raise BrokenProcessPool(self._broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _send(self, task: _Task) -> int | None:
        """Send a task (under _mutex); its id, or None when the channel is full."""
        assert self._client is not None
        rid = self._client.send(task.payload)
        if rid is not None:
            task.rid = rid
            self._pending[rid] = task
        return rid

    def _pump(self) -> None:
        """Send backlogged tasks while the channel takes them (under _mutex)."""
        backlog = self._backlog
        while backlog:
            task = backlog[0]
            if task.settled:
                backlog.popleft()
                continue
            if self._send(task) is None:
                return
            backlog.popleft()

    # ---- collecting

    def drive(self, fut: PoolFuture, timeout: float | None) -> float | None:
        """Collect ``fut``'s reply in this thread until it is done or ``timeout`` passed;
        the time left (for ``Future.result``)."""
        task = fut._task
        if task is None or fut.done():
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        mutex = self._mutex
        first = True  # one look even with timeout 0: the reply may be there
        while True:
            left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
            if left <= 0:
                if not first:
                    return 0.0
                left = 0.0
            first = False
            with mutex:
                rid = task.rid
                mine = rid is not None and not task.driven and not task.settled
                if mine:
                    task.driven = True
                    self._drivers += 1
            if not mine:  # over, backlogged, or another thread has it: wait for the future
                if fut.done():
                    break
                if rid is None and not task.settled:
                    # Backlogged: help the collector (this may be a callback it runs, and
                    # then nobody else frees the slots the backlog waits for).
                    with mutex:
                        found = (self._collect(len(self._pending) or 1)
                                 if self._client is not None else [])
                    self._finish_all(found)
                    left = min(left, _POLL * 5)
                try:
                    Future.exception(fut, left)
                except Exception:  # noqa: BLE001 - timed out or cancelled: looked at again
                    pass
                continue
            assert rid is not None and self._client is not None
            reply: bytes | str | None = None
            error: BaseException | None = None
            try:
                reply = self._client.get_wait(rid, left)
            except (WorkerDiedError, RemoteError) as exc:
                error = exc
            except ValueError:  # the client closed under us: the pool broke, and
                if not task.settled:  # settled the task (its future tells how)
                    raise
            finally:
                with mutex:
                    task.driven = False
                    self._drivers -= 1
                    self._last_drive = time.monotonic()
                    if reply is None and error is None and not task.settled:
                        # Timed out: a reply that came since rang a bell the collector
                        # may have spent while we held the task; collect it now, or
                        # nobody would (its ring is gone).
                        try:
                            reply = self._client.get(rid)
                        except (WorkerDiedError, RemoteError) as exc:
                            error = exc
                        except ValueError:  # closed: the pool broke, as above
                            pass
                    done = (reply is not None or error is not None) and not task.settled
                    if done:
                        task.settled = True
                        del self._pending[rid]
                        if self._backlog:
                            self._pump()
            if done:
                self._finish(task, reply, error)
                break
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _finish(self, task: _Task, reply: bytes | str | None, error: BaseException | None,
                again: bool = True) -> None:
        """Complete a settled task's future from its reply (outside _mutex). The reply is
        in no other hands: if Ctrl-C (or another BaseException) interrupts this, the
        future is completed all the same before it goes on out."""
        fut = task.fut
        if error is None:
            try:
                outcome = _payload.load(reply)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - e.g. a result's class unknown here
                error = exc
            except BaseException as exc:
                if not again:
                    error = exc  # twice: the future carries it
                else:
                    self._finish(task, reply, None, again=False)
                    if threading.current_thread() is threading.main_thread():
                        raise  # Ctrl-C: the caller's; the pool's threads go on
                    return
            else:
                if outcome[0]:
                    if isinstance(task.payload, str):
                        _payload.discard(task.payload)
                    fut.set_result(outcome[1])
                    return
                error = _payload.decode_error(*outcome[1:])
        _payload.discard(task.payload)
        fut.set_exception(error)

    def _collect(self, rung: int) -> list[_Outcome]:
        """Collect ready replies of tasks nobody waits for, oldest first (under _mutex).
        ``rung`` replies rang the bell since the last look: the scan stops once it found
        that many (see reqrep.aio's client for why nothing is missed)."""
        assert self._client is not None
        get = self._client.get
        found: list[_Outcome] = []
        for rid, task in self._pending.items():
            if task.driven:
                continue
            try:
                reply = get(rid)
            except (WorkerDiedError, RemoteError) as exc:
                found.append((task, None, exc))
            else:
                if reply is None:
                    continue
                found.append((task, reply, None))
            if len(found) >= rung:
                break
        return self._settle(found)

    def _probe(self) -> list[_Outcome]:
        """Fail the tasks whose worker died (under _mutex): one liveness check each."""
        assert self._client is not None
        check = self._client._check
        dead: list[_Outcome] = []
        for rid, task in self._pending.items():
            if task.driven:
                continue
            try:
                check(rid)
            except WorkerDiedError as exc:
                dead.append((task, None, exc))
        return self._settle(dead)

    def _settle(self, found: list[_Outcome]
                ) -> list[_Outcome]:
        """Take sent tasks whose outcome is known out of _pending (under _mutex): their
        slots are free, so the backlog moves on. Returns ``found``, to be finished."""
        for task, _, _ in found:
            task.settled = True
            assert task.rid is not None
            del self._pending[task.rid]
        if found:
            self._pump()
        return found

    def _collect_loop(self) -> None:
        client = self._client
        assert client is not None
        seen = self._seen
        next_probe = time.monotonic() + _IDLE
        while True:
            now_t = time.monotonic()
            if self._drivers or now_t - self._last_drive < _LINGER:
                time.sleep(_POLL)
                now = client._bell_wait(seen, 0)
            else:
                now = client._bell_wait(seen, _IDLE)
            with self._mutex:
                found: list[_Outcome] = []
                if now != seen:
                    found = self._collect((now - seen) & _U32 or 1)
                    seen = now
                if time.monotonic() >= next_probe:
                    found += self._probe()
                    next_probe = time.monotonic() + _IDLE
                    if self._backlog:  # a safety net: every slot freed pumps already
                        self._pump()
                over = self._shutdown and not self._pending and not self._backlog
            self._finish_all(found)
            del found  # nothing of a finished task may stay referenced here (its
            if over:   # callbacks may hold the executor, whose collection shuts it down)
                break
        self._stop_workers()

    def _finish_all(self, found: list[_Outcome]) -> None:
        while found:
            self._finish(*found.pop())

    # ---- workers

    def _watch_loop(self) -> None:
        """Reap workers (this thread alone joins them: a pid is ours until joined, so
        killing it is safe), replace the dead, and kill the stuck ones at shutdown."""
        while True:
            with self._mutex:
                procs = dict(self._procs)
                stopping, deadline = self._stopping, self._stop_deadline
                missing = self._missing
            if stopping and not procs:
                return
            timeout = max(0.0, deadline - time.monotonic()) if stopping else None
            if missing and not stopping:
                timeout = _IDLE  # starting a worker failed: try again in a while
            sentinels = {p.sentinel: p for p in procs.values()}
            ready = multiprocessing.connection.wait([*sentinels, self._wake_r], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            for key in ready:
                proc = sentinels.get(key)
                if proc is not None:
                    self._reap(proc)
            self._replace()
            if stopping and time.monotonic() >= deadline:
                for proc in procs.values():  # told to stop long ago: stuck or stopped
                    if proc.exitcode is None:
                        proc.kill()

    def _reap(self, proc: Any) -> None:
        """A worker exited: fail its tasks; another is started by _replace (or, if it
        never got ready, and again and again, the pool breaks)."""
        proc.join()
        assert self._dir is not None
        marker = _worker.up_marker(self._dir, proc.pid)
        started = os.path.exists(marker)
        _payload.discard(marker)
        with self._mutex:
            self._procs.pop(proc.pid, None)
            failed = self._probe()
            if not self._stopping and self._broken is None:
                self._missing += 1
                if started:
                    self._unready = 0
                elif proc.exitcode == _worker.EXIT_INIT_FAILED:
                    failed += self._break("a worker's initializer raised: the pool cannot "
                                          "run tasks")
                else:  # killed while starting, or it cannot start: try a few times
                    self._unready += 1
                    if self._unready > _START_TRIES + self._max_workers:
                        failed += self._break(
                            f"worker processes fail to start (the last: exit code "
                            f"{proc.exitcode}): the pool cannot run tasks")
        self._finish_all(failed)

    def _replace(self) -> None:
        """Start the workers that are missing; a failure (no fds, no memory, initargs
        that no longer pickle) is tried again later, and breaks the pool when no
        worker is left to run the tasks."""
        failed: list[_Outcome] = []
        with self._mutex:
            while self._missing and not self._stopping and self._broken is None:
                try:
                    self._spawn()
                except Exception as exc:  # noqa: BLE001 - the pool says why, or retries
                    self._spawn_errors += 1
                    if not self._procs and self._spawn_errors >= _START_TRIES:
                        failed = self._break(f"cannot start a worker process ({exc!r}): "
                                             "the pool cannot run tasks")
                    break
                self._missing -= 1
                self._spawn_errors = 0
        self._finish_all(failed)

    def _break(self, why: str) -> list[_Outcome]:
        """The pool cannot run tasks (under _mutex): fail every task not done."""
        self._broken = why
        self._shutdown = True
        failed: list[_Outcome] = []
        for task in [*self._pending.values(), *self._backlog]:
            if not task.settled:
                task.settled = True
                if task.rid is not None and self._client is not None:
                    self._client.cancel(task.rid)
                failed.append((task, None, BrokenProcessPool(why)))
        self._pending.clear()
        self._backlog.clear()
        if self._client is not None:
            self._client._bell_ring()  # the collector sees it is over
        return failed

    def _stop_workers(self) -> None:
        """Everything is done: tell every worker to stop, let the watcher reap them (it
        kills those still there after a grace period), clean up."""
        client = self._client
        assert client is not None and self._watcher is not None and self._dir is not None
        with self._mutex:
            self._stopping = True
            self._stop_deadline = time.monotonic() + _STOP_GRACE
            count = len(self._procs)
        for _ in range(count):
            if client.send_wait(_STOP, _STOP_GRACE) is None:
                break
        os.write(self._wake_w, b"x")
        self._watcher.join()
        client.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _kill_workers(self) -> None:
        for proc in self._procs.values():
            proc.kill()
            proc.join()
        self._procs.clear()

    # ---- the futures' and the executor's calls

    def cancel(self, fut: PoolFuture) -> bool:
        task = fut._task
        if task is None or fut.done():
            return fut.cancelled()
        with self._mutex:
            if task.settled:
                return task.cancelled or fut.cancelled()
            if task.rid is not None:
                if not self._cancel_sent(task):
                    return False  # taken by a worker, or its reply is there
                if self._backlog:  # its slot is free: nobody else may free one soon
                    self._pump()
            task.settled = task.cancelled = True  # a backlogged one: dropped by the pump
        _cancelled(task)
        return True

    def _cancel_sent(self, task: _Task) -> bool:
        """Cancel a sent task's request unless a worker took it or its reply is there,
        and take it out of _pending (under _mutex)."""
        client, rid = self._client, task.rid
        assert client is not None and rid is not None
        if client._worker(rid) or not client.cancel(rid):
            return False
        task.settled = task.cancelled = True
        del self._pending[rid]
        return True

    def taken(self, fut: PoolFuture) -> bool:
        task = fut._task
        with self._mutex:
            if task is None or task.rid is None or task.settled or self._client is None:
                return False
            return self._client._worker(task.rid) != 0

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[_Task] = []
        with self._mutex:
            self._shutdown = True
            started = self._started
            if cancel_futures and started:
                assert self._client is not None
                for task in self._backlog:
                    if not task.settled:  # (a cancelled one waits there to be dropped)
                        task.settled = task.cancelled = True
                        cancelled.append(task)
                self._backlog.clear()
                # (a task some result() waits for too: it then sees it cancelled)
                cancelled += [task for task in list(self._pending.values())
                              if self._cancel_sent(task)]
            if started:
                assert self._client is not None
                self._client._bell_ring()  # the collector looks whether all is done
        for task in cancelled:
            _cancelled(task)
        # Not from a callback run by our own threads: the collector ends by joining the
        # watcher, so either joining would wait for itself.
        ours = (self._collector, self._watcher)
        if wait and started and self._collector is not None \
                and threading.current_thread() not in ours:
            self._collector.join()

    def abandon(self) -> None:
        """Shut down in the background, without taking _mutex: the executor was garbage
        collected, which may happen in any thread at any allocation, also in one of
        ours that holds the lock."""
        self._shutdown = True
        client = self._client
        if self._started and client is not None:
            try:
                client._bell_ring()  # the collector looks, and ends once all is done
            except ValueError:
                pass  # closed: over already

    @property
    def worker_pids(self) -> list[int]:
        with self._mutex:
            return list(self._procs)


def _cancelled(task: _Task) -> None:
    """Finish cancelling a task settled as cancelled (outside _mutex: callbacks run)."""
    _payload.discard(task.payload)
    Future.cancel(task.fut)
    task.fut.set_running_or_notify_cancel()  # wakes wait() and as_completed()

