"""reqrep.futures.ProcessPoolExecutor (SPEC §7) against real worker processes, started
with fork, spawn and forkserver: what users of concurrent.futures rely on, and what the
standard pool does not do (a dead worker fails only its own tasks and is replaced)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pool_tasks as t
import pytest
from helpers import LONG, wait_until

import reqrep
from reqrep.futures import ProcessPoolExecutor

METHODS = ["fork", "spawn", "forkserver"]
TESTS = Path(__file__).resolve().parent


def pool_dir(ex: ProcessPoolExecutor) -> str:
    """The pool's private directory (made on its first task)."""
    where = ex._pool._dir
    assert where is not None and os.path.isdir(where)
    return where


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool(method: str) -> Iterator[ProcessPoolExecutor]:
    ex = ProcessPoolExecutor(2, mp_context=method)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- what the standard pool does


def test_submit_result_args_kwargs(pool: ProcessPoolExecutor) -> None:
    assert pool.submit(t.square, 7).result(LONG) == 49
    assert pool.submit(t.add, 1, 2, z=3).result(LONG) == 6
    f = pool.submit(t.echo, {"a": [1, 2.5, None], "b": (b"x", "y")})
    assert f.result(LONG) == {"a": [1, 2.5, None], "b": (b"x", "y")}
    assert f.done() and not f.running() and not f.cancelled() and f.exception() is None


def test_workers_are_other_processes(pool: ProcessPoolExecutor) -> None:
    pids = {pool.submit(t.pid).result(LONG) for _ in range(20)}
    assert os.getpid() not in pids
    assert pids <= set(pool._worker_pids)


def test_map(pool: ProcessPoolExecutor) -> None:
    assert list(pool.map(t.square, range(100))) == [x * x for x in range(100)]
    assert list(pool.map(t.add, range(5), range(10, 15))) == [10, 12, 14, 16, 18]
    for chunksize in (2, 7, 1000):
        assert list(pool.map(t.square, range(50), chunksize=chunksize)) == [
            x * x for x in range(50)]
    assert list(pool.map(t.square, [])) == []
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(t.square, range(3), chunksize=0)


def test_map_raises_at_the_failing_item(pool: ProcessPoolExecutor) -> None:
    it = pool.map(t.fail, ["one"])
    with pytest.raises(ValueError, match="one"):
        next(it)


def test_map_timeout(pool: ProcessPoolExecutor) -> None:
    it = pool.map(t.sleep_then, [5.0], [1], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        next(it)


def test_exception_is_reraised_with_remote_traceback(pool: ProcessPoolExecutor) -> None:
    f = pool.submit(t.fail, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        f.result(LONG)
    cause = info.value.__cause__
    assert isinstance(cause, reqrep.RemoteError)
    assert cause.type_name == "ValueError"
    assert "pool_tasks.py" in cause.traceback and "in fail" in cause.traceback
    assert isinstance(f.exception(), ValueError)


def test_exception_that_does_not_pickle_arrives_as_remote_error(pool: ProcessPoolExecutor) -> None:
    with pytest.raises(reqrep.RemoteError) as info:
        pool.submit(t.fail_unpicklable).result(LONG)
    assert info.value.type_name == "pool_tasks.Unpicklable"
    assert info.value.message == "nope"


def test_result_that_does_not_pickle(pool: ProcessPoolExecutor) -> None:
    with pytest.raises(Exception, match="pickle|lambda"):
        pool.submit(t.unpicklable_result).result(LONG)
    assert pool.submit(t.square, 3).result(LONG) == 9  # the worker goes on


def test_function_that_does_not_pickle_fails_its_future(pool: ProcessPoolExecutor) -> None:
    f = pool.submit(lambda: 1)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        f.result(LONG)
    assert pool.submit(t.square, 4).result(LONG) == 16


def test_base_exceptions_of_the_task_reach_the_future(pool: ProcessPoolExecutor) -> None:
    with pytest.raises(KeyboardInterrupt):
        pool.submit(t.raise_keyboard_interrupt).result(LONG)
    assert pool.submit(t.square, 5).result(LONG) == 25


def test_as_completed_wait_and_callbacks(pool: ProcessPoolExecutor) -> None:
    fs = [pool.submit(t.square, i) for i in range(200)]
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=LONG)) == sorted(
        i * i for i in range(200))
    slow = pool.submit(t.sleep_then, 0.5, "slow")
    fast = pool.submit(t.square, 3)
    done, not_done = cf.wait([slow, fast], timeout=LONG, return_when=cf.FIRST_COMPLETED)
    assert fast in done
    done, not_done = cf.wait([slow, fast], timeout=LONG)
    assert not not_done
    got: list[Any] = []
    ev = threading.Event()

    def callback(f: cf.Future[Any]) -> None:
        got.append(f.result())
        # a callback may submit (it runs outside the pool's lock)
        got.append(pool.submit(t.square, 6).result(LONG))
        ev.set()

    pool.submit(t.square, 5).add_done_callback(callback)
    assert ev.wait(LONG)
    assert got == [25, 36]


def test_result_timeout_then_result(pool: ProcessPoolExecutor) -> None:
    f = pool.submit(t.sleep_then, 0.5, "late")
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.01)
    assert f.result(LONG) == "late"


def test_many_more_tasks_than_the_channel_holds(pool: ProcessPoolExecutor) -> None:
    fs = [pool.submit(t.add, i, 1) for i in range(3000)]
    assert [f.result(LONG) for f in fs] == [i + 1 for i in range(3000)]


def test_threads_submit_and_wait_at_once(pool: ProcessPoolExecutor) -> None:
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for i in range(200):
                assert pool.submit(t.add, i, k).result(LONG) == i + k
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(LONG)
    assert not errors and not any(th.is_alive() for th in threads)


def test_initializer_runs_in_every_worker(method: str) -> None:
    with ProcessPoolExecutor(2, mp_context=method, initializer=t.init,
                             initargs=("ready",)) as ex:
        assert {tuple(ex.submit(t.initialized).result(LONG)) for _ in range(10)} == {("ready",)}


def test_failing_initializer_breaks_the_pool(method: str) -> None:
    ex = ProcessPoolExecutor(1, mp_context=method, initializer=t.init_fail)
    f = ex.submit(t.square, 2)
    with pytest.raises(BrokenProcessPool, match="initializer"):
        f.result(LONG)
    with pytest.raises(BrokenProcessPool):
        ex.submit(t.square, 2)
    ex.shutdown()


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        ProcessPoolExecutor(0)
    with pytest.raises(TypeError, match="max_workers"):
        ProcessPoolExecutor("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(ValueError, match="fork"):
        ProcessPoolExecutor(1, mp_context="fork", max_tasks_per_child=3)
    with pytest.raises(TypeError, match="initializer"):
        ProcessPoolExecutor(1, initializer=3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- payloads of any size


@pytest.mark.parametrize("size", [0, 1000, 40_000, 70_000, 5_000_000])
def test_payloads_of_any_size(pool: ProcessPoolExecutor, size: int) -> None:
    data = t.make_bytes(size)
    assert pool.submit(t.nbytes, data).result(LONG) == size
    assert pool.submit(t.make_bytes, size).result(LONG) == data
    assert pool.submit(t.echo, data).result(LONG) == data


def test_spill_files_are_removed(pool: ProcessPoolExecutor) -> None:
    big = b"z" * 3_000_000
    fs = [pool.submit(t.echo, big) for _ in range(6)]
    assert all(f.result(LONG) == big for f in fs)
    spill_dir = pool._pool._dir
    assert spill_dir is not None
    assert wait_until(lambda: not [n for n in os.listdir(spill_dir) if n.startswith("spill-")])
    pool.shutdown()
    assert not os.path.exists(spill_dir)


# ---------------------------------------------------------------- a dead worker


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_dead_worker_fails_only_its_task_and_is_replaced(method: str, how: str,
                                                          tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=method) as ex:
        go = str(tmp_path / "go")
        survivor = ex.submit(t.wait_for_file, go)  # holds one worker
        before = set(ex._worker_pids)
        assert wait_until(survivor.running, LONG)
        victim = ex.submit(t.exit_now if how == "exit" else t.kill_self)
        with pytest.raises(reqrep.WorkerDiedError):
            victim.result(LONG)
        Path(go).touch()
        assert survivor.result(LONG) in before
        assert wait_until(lambda: len(ex._worker_pids) == 2, LONG)
        after = set(ex._worker_pids)
        assert len(after - before) == 1
        assert list(ex.map(t.square, range(20))) == [x * x for x in range(20)]


def test_worker_killed_from_outside_while_nobody_waits(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2) as ex:
        mark = str(tmp_path / "pid")
        f = ex.submit(t.announce_then_block, mark)
        assert wait_until(lambda: os.path.exists(mark), LONG)
        done = threading.Event()
        f.add_done_callback(lambda _: done.set())
        os.kill(int(Path(mark).read_text()), signal.SIGKILL)
        assert done.wait(LONG)  # the watcher failed it: nobody called result()
        assert isinstance(f.exception(), reqrep.WorkerDiedError)
        assert ex.submit(t.square, 9).result(LONG) == 81


def test_max_tasks_per_child(method: str) -> None:
    if method == "fork":
        pytest.skip("max_tasks_per_child needs spawn or forkserver, as in the standard pool")
    with ProcessPoolExecutor(1, mp_context=method, max_tasks_per_child=3) as ex:
        pids = [ex.submit(t.pid).result(LONG) for _ in range(9)]
    assert [len(set(pids[i:i + 3])) for i in (0, 3, 6)] == [1, 1, 1]
    assert len(set(pids)) == 3


def test_max_tasks_per_child_defaults_to_spawn() -> None:
    with ProcessPoolExecutor(1, max_tasks_per_child=2) as ex:
        assert ex._pool._ctx.get_start_method() == "spawn"
        assert len({ex.submit(t.pid).result(LONG) for _ in range(4)}) == 2


# ---------------------------------------------------------------- cancel


def test_cancel_a_queued_task_cancels_its_request(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as ex:
        go = str(tmp_path / "go")
        blocker = ex.submit(t.wait_for_file, go)
        assert wait_until(blocker.running, LONG)
        marker = str(tmp_path / "ran")
        queued = ex.submit(t.touch_after, marker, 0)
        assert not queued.running()
        assert queued.cancel() and queued.cancelled() and queued.done()
        assert queued.cancel()  # again: still cancelled
        with pytest.raises(cf.CancelledError):
            queued.result()
        assert not blocker.cancel()  # running
        Path(go).touch()
        blocker.result(LONG)
        assert ex.submit(t.square, 2).result(LONG) == 4  # the worker went past it
        assert not os.path.exists(marker)
        done, _ = cf.wait([queued, blocker], timeout=LONG)
        assert queued in done


def test_cancel_a_backlogged_task(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as ex:
        go = str(tmp_path / "go")
        ex.submit(t.wait_for_file, go)
        fs = [ex.submit(t.square, i) for i in range(1000)]  # beyond the channel: backlog
        assert fs[-1].cancel()
        assert fs[500].cancel()
        Path(go).touch()
        assert [f.result(LONG) for i, f in enumerate(fs) if i not in (500, 999)] == [
            i * i for i in range(1000) if i not in (500, 999)]
        assert list(cf.as_completed([fs[500], fs[999]], timeout=LONG))


def test_finished_task_cannot_be_cancelled(pool: ProcessPoolExecutor) -> None:
    f = pool.submit(t.square, 3)
    assert f.result(LONG) == 9
    assert not f.cancel() and not f.cancelled()


# ---------------------------------------------------------------- shutdown


def test_shutdown_waits_for_tasks_and_cleans_up(method: str) -> None:
    ex = ProcessPoolExecutor(2, mp_context=method)
    fs = [ex.submit(t.sleep_then, 0.05, i) for i in range(10)]
    pids, where = ex._worker_pids, pool_dir(ex)
    ex.shutdown(wait=True)
    assert [f.result(0) for f in fs] == list(range(10))
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(where)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(t.square, 1)
    ex.shutdown()  # idempotent


def test_shutdown_cancel_futures(tmp_path: Path) -> None:
    ex = ProcessPoolExecutor(1)
    go = str(tmp_path / "go")
    blocker = ex.submit(t.wait_for_file, go)
    assert wait_until(blocker.running, LONG)
    queued = [ex.submit(t.square, i) for i in range(300)]
    threading.Timer(0.3, lambda: Path(go).touch()).start()
    ex.shutdown(wait=True, cancel_futures=True)
    assert blocker.result(0) > 0
    assert all(f.cancelled() for f in queued)


def test_shutdown_without_wait_finishes_in_the_background() -> None:
    ex = ProcessPoolExecutor(2)
    fs = [ex.submit(t.sleep_then, 0.2, i) for i in range(4)]
    pids, where = ex._worker_pids, pool_dir(ex)
    ex.shutdown(wait=False)
    assert [f.result(LONG) for f in fs] == list(range(4))
    assert wait_until(lambda: not any(alive(p) for p in pids), LONG)
    assert wait_until(lambda: not os.path.exists(where), LONG)


def test_shutdown_before_any_task() -> None:
    ex = ProcessPoolExecutor(2)
    ex.shutdown()
    with ProcessPoolExecutor(2) as ex2:
        pass
    assert ex._pool._dir is None and ex2._pool._dir is None  # nothing was made


def test_dropped_pool_stops_its_workers() -> None:
    ex = ProcessPoolExecutor(2)
    assert ex.submit(t.square, 2).result(LONG) == 4
    pids, where = ex._worker_pids, pool_dir(ex)
    del ex
    gc.collect()
    assert wait_until(lambda: not any(alive(p) for p in pids), LONG)
    assert wait_until(lambda: not os.path.exists(where), LONG)


def run_script(body: str, timeout: float = LONG) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_interpreter_exit_finishes_tasks_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_script(f"""
        from reqrep.futures import ProcessPoolExecutor
        import pool_tasks as t
        ex = ProcessPoolExecutor(2)
        for i in range(3):
            ex.submit(t.touch_after, {str(out)!r} + str(i), 0.2)
        print(ex._pool._dir)
        """)
    assert r.returncode == 0, r.stderr
    assert all((tmp_path / f"out{i}").exists() for i in range(3))
    assert not os.path.exists(r.stdout.strip())


_POOL_PROCESS = """
import sys, time
from reqrep.futures import ProcessPoolExecutor
import pool_tasks as t
ex = ProcessPoolExecutor(2)
ex.submit(t.square, 2).result()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(map(str, ex._worker_pids)) + "\\n" + ex._pool._dir)
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def start_pool_process(tmp_path: Path, **popen: Any) -> tuple[subprocess.Popen[bytes],
                                                               list[int], str]:
    """A process with a pool of 2 workers that then sleeps: it, its workers' pids and its
    pool's directory."""
    mark = tmp_path / "pool"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    proc = subprocess.Popen([sys.executable, "-c", _POOL_PROCESS, str(mark)], env=env, **popen)
    if not wait_until(mark.exists, LONG):
        proc.kill()
        proc.wait()
        raise AssertionError("the pool process did not start")
    first, where = mark.read_text().split("\n")
    return proc, [int(p) for p in first.split()], where


def test_workers_leave_when_the_pool_process_is_killed(tmp_path: Path) -> None:
    proc, pids, where = start_pool_process(tmp_path)
    try:
        proc.kill()
        proc.wait(LONG)
        assert wait_until(lambda: not any(alive(p) for p in pids), LONG)
        assert wait_until(lambda: not os.path.exists(where), LONG)
    finally:
        proc.kill()
        proc.wait()


def test_speed_is_not_asserted_but_submit_and_wait_works_in_a_loop(
        pool: ProcessPoolExecutor) -> None:
    # Many round trips through result()'s own collection, none lost.
    assert sum(pool.submit(t.add, i, 1).result(LONG) for i in range(2000)) == sum(
        range(1, 2001))
    time.sleep(0.05)  # the collector goes back to its bell
    assert pool.submit(t.square, 11).result(LONG) == 121


# ---------------------------------------------------------------- found in review


def test_cancelling_sent_tasks_lets_the_backlog_in(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as ex:
        go = str(tmp_path / "go")
        blocker = ex.submit(t.wait_for_file, go)
        assert wait_until(blocker.running, LONG)
        fs = [ex.submit(t.square, i) for i in range(400)]  # the channel holds fewer
        waiting = len(ex._pool._backlog)
        assert waiting > 0
        sent = [f for f in fs if f._task is not None and f._task.rid is not None]
        assert all(f.cancel() for f in sent)
        # the freed slots took the backlog in at once, not at the next reply
        assert len(ex._pool._backlog) < waiting
        Path(go).touch()
        assert [f.result(LONG) for f in fs if not f.cancelled()] == [
            i * i for i, f in enumerate(fs) if not f.cancelled()]


def test_shutdown_cancel_futures_after_cancelled_backlog(tmp_path: Path) -> None:
    ex = ProcessPoolExecutor(1)
    go = str(tmp_path / "go")
    blocker = ex.submit(t.wait_for_file, go)
    fs = [ex.submit(t.square, i) for i in range(400)]
    assert fs[-1].cancel()  # backlogged, dropped lazily
    threading.Timer(0.3, lambda: Path(go).touch()).start()
    ex.shutdown(wait=True, cancel_futures=True)  # no "Future in unexpected state"
    assert blocker.done() and fs[-1].cancelled()


class _SlowAfterTimeout:
    """The pool's own client, but a get_wait that timed out returns 50 ms late: the
    thread is descheduled right there (helper-21's forced interleaving)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_wait(self, rid: int, timeout: float | None = None) -> Any:
        reply = self._real.get_wait(rid, timeout)
        if reply is None:
            time.sleep(0.05)
        return reply


def test_a_result_timeout_does_not_swallow_a_reply_that_arrives_meanwhile() -> None:
    """result(timeout) gives up just as the reply lands, and the collector spent that
    reply's bell while the task was still held: the timed-out caller collects it, or
    nobody would (wait(), callbacks and shutdown would wait forever)."""
    with ProcessPoolExecutor(1) as ex:
        assert ex.submit(t.square, 1).result(LONG) == 1
        pool = ex._pool
        pool._client = _SlowAfterTimeout(pool._client)
        f = ex.submit(t.sleep_then, 0.02, "late")
        with contextlib.suppress(cf.TimeoutError):  # (now it takes what came meanwhile)
            f.result(timeout=0.01)
        done, _ = cf.wait([f], timeout=LONG)
        assert f in done and f.result() == "late"


def test_shutdown_from_a_callback_of_a_dead_workers_task(tmp_path: Path) -> None:
    ex = ProcessPoolExecutor(1)
    mark = str(tmp_path / "pid")
    f = ex.submit(t.announce_then_block, mark)
    assert wait_until(lambda: os.path.exists(mark), LONG)
    done = threading.Event()

    def callback(_: Any) -> None:
        ex.shutdown(wait=True)  # runs in the pool's watcher thread: must not wait on itself
        done.set()

    f.add_done_callback(callback)
    os.kill(int(Path(mark).read_text()), signal.SIGKILL)
    assert done.wait(LONG)
    assert isinstance(f.exception(), reqrep.WorkerDiedError)


def test_a_callback_may_wait_for_a_backlogged_task(tmp_path: Path) -> None:
    """A done-callback (run by the pool's collector thread) that waits for a task still
    in the backlog: the waiting thread collects replies itself, so the backlog moves."""
    with ProcessPoolExecutor(1) as ex:
        go = str(tmp_path / "go")
        first = ex.submit(t.wait_for_file, go)
        fs = [ex.submit(t.square, i) for i in range(400)]
        assert fs[-1]._task is not None and fs[-1]._task.rid is None  # backlogged
        got: list[int] = []
        done = threading.Event()

        def callback(_: Any) -> None:
            got.append(fs[-1].result(LONG))
            done.set()

        first.add_done_callback(callback)
        Path(go).touch()
        assert done.wait(LONG)
        assert got == [399 * 399]


def test_sigterm_to_the_process_group_leaves_nothing_behind(tmp_path: Path) -> None:
    """A service manager stops the pool's process and its workers with one SIGTERM to the
    group: the workers outlive the pool's process, remove its directory and leave."""
    proc, pids, where = start_pool_process(tmp_path, start_new_session=True)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(LONG)
        assert wait_until(lambda: not any(alive(p) for p in pids), LONG)
        assert wait_until(lambda: not os.path.exists(where), LONG)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- found in review (helper-20)


def test_result_without_timeout_never_times_out(tmp_path: Path) -> None:
    """A future the collector has taken but not finished yet (its result is slow to
    unpickle) while other futures complete: result() waits, it never raises TimeoutError
    (the futures share one condition, whose wake-ups are not about them)."""
    with ProcessPoolExecutor(2) as ex:
        assert ex.submit(t.square, 1).result(LONG) == 1
        slow = ex.submit(t.slow_to_unpickle, 1.0, "slow")
        time.sleep(0.4)  # its reply is in: the collector unpickles it for 1 s
        others = threading.Thread(
            target=lambda: [ex.submit(t.square, i).result(LONG) for i in range(20)])
        others.start()
        assert slow.result() == "slow"
        others.join(LONG)


def test_bound_builtin_methods_are_pickled_with_their_state() -> None:
    with ProcessPoolExecutor(1) as ex:
        items = [1]
        assert ex.submit(items.copy).result(LONG) == [1]
        items.append(2)
        assert ex.submit(items.copy).result(LONG) == [1, 2]
        assert ex.submit(len, "abc").result(LONG) == 3  # a module's function, by name


def test_two_threads_cancelling_one_future_both_get_true(tmp_path: Path) -> None:
    with ProcessPoolExecutor(1) as ex:
        go = str(tmp_path / "go")
        ex.submit(t.wait_for_file, go)
        for _ in range(20):
            fs = [ex.submit(t.square, i) for i in range(30)]
            results: list[list[bool]] = [[], []]
            barrier = threading.Barrier(2)

            def cancel_all(k: int, fs: list[Any] = fs, barrier: threading.Barrier = barrier,
                           results: list[list[bool]] = results) -> None:
                barrier.wait()
                results[k] = [f.cancel() for f in fs]

            threads = [threading.Thread(target=cancel_all, args=(k,)) for k in (0, 1)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(LONG)
            assert all(results[0]) and all(results[1])
        Path(go).touch()


def test_shutdown_cancel_futures_cancels_a_task_someone_waits_for(tmp_path: Path) -> None:
    ex = ProcessPoolExecutor(1)
    go = str(tmp_path / "go")
    blocker = ex.submit(t.wait_for_file, go)
    assert wait_until(blocker.running, LONG)
    queued = ex.submit(t.square, 7)
    outcome: list[Any] = []

    def wait_for_it() -> None:
        try:
            outcome.append(queued.result(LONG))
        except cf.CancelledError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.2)  # the waiter holds the task in result()
    threading.Timer(0.3, lambda: Path(go).touch()).start()
    ex.shutdown(wait=True, cancel_futures=True)
    waiter.join(LONG)
    assert queued.cancelled() and isinstance(outcome[0], cf.CancelledError)


def test_a_worker_killed_while_starting_is_replaced() -> None:
    with ProcessPoolExecutor(2, mp_context="spawn") as ex:
        fs = [ex.submit(t.sleep_then, 0.3, i) for i in range(4)]
        os.kill(ex._worker_pids[0], signal.SIGKILL)  # before it is ready
        assert [f.result(LONG) for f in fs] == [0, 1, 2, 3]
        assert ex.submit(t.square, 3).result(LONG) == 9
        assert wait_until(lambda: len(ex._worker_pids) == 2, LONG)


def test_a_dropped_executor_whose_callback_holds_it_shuts_down() -> None:
    ex = ProcessPoolExecutor(1)
    f = ex.submit(t.square, 2)
    f.add_done_callback(lambda _, ex=ex: None)  # the callback keeps the executor
    assert f.result(LONG) == 4
    pids, where = ex._worker_pids, pool_dir(ex)
    del ex, f
    gc.collect()
    assert wait_until(lambda: not any(alive(p) for p in pids), LONG)
    assert wait_until(lambda: not os.path.exists(where), LONG)
