"""Blocking calls: timeouts, wake-ups from other threads, clear(), signals and Ctrl-C.

Only loose lower bounds on elapsed time are asserted; upper bounds are liveness checks with
generous margins (a call must come back well before its backstop timeout).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import (
    JOIN,
    LONG,
    Closer,
    IntServer,
    Server,
    ThreadCall,
    make_server,
    open_client,
    wait_until,
)
from procs import fork_call, wait_sleeping

pytestmark = pytest.mark.timeout(90, method="thread")

SPINS = [0, None]


def _pair(variant: str, closer: Closer, spin: int | None = None,
          **geometry: Any) -> tuple[Any, Any]:
    """A small anonymous channel and a client, both with `spin` (None: the default)."""
    geometry.setdefault("req_cap", 8)
    geometry.setdefault("resp_slots", 4)
    s = closer(make_server(variant, "anon", spin=spin, **geometry))
    c = closer(open_client(s, "anon"))
    if spin is not None:
        c.spin = spin
    return s, c


def _str(closer: Closer, spin: int | None = None, **geometry: Any) -> tuple[Any, Any]:
    return _pair("str", closer, spin, **geometry)


def _chan(variant: str, closer: Closer, spin: int | None = None, **geometry: Any) \
        -> tuple[Any, Any, Callable[[int], Any]]:
    s, c = _pair(variant, closer, spin, **geometry)
    return s, c, (lambda n: f"v{n}") if variant == "str" else (lambda n: n)


def _sleeping_main(timeout: float = 10.0) -> bool:
    """True once the main thread of this process is seen asleep (in a futex wait)."""
    return wait_sleeping(os.getpid(), timeout=timeout)


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("variant", ["str", "int"])
def test_recv_wait_timeout(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer)
    t0 = time.monotonic()
    assert s.recv_wait(timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.15
    if variant == "str":
        t0 = time.monotonic()
        assert s.recv_wait_multi(4, timeout=0.2) == []
        assert time.monotonic() - t0 >= 0.15


@pytest.mark.parametrize("variant", ["str", "int"])
def test_get_wait_timeout_keeps_request(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer)
    ident = c.send(v(1))
    t0 = time.monotonic()
    assert c.get_wait(ident, timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.15
    assert c.pending() == 1  # a get_wait timeout does not cancel
    _, rid = s.recv()
    assert s.reply(rid, v(2))
    assert c.get_wait(ident, timeout=0) == v(2)


@pytest.mark.parametrize("variant", ["str", "int"])
def test_send_wait_timeout_on_full_queue(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=2, resp_slots=8)
    assert c.send(v(1)) is not None and c.send(v(2)) is not None
    t0 = time.monotonic()
    assert c.send_wait(v(3), timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.15
    assert c.pending() == 2 and s.stats()["slots_free"] == 6


@pytest.mark.parametrize("variant", ["str", "int"])
def test_send_wait_timeout_no_free_slot(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=8, resp_slots=1)
    assert c.send(v(1)) is not None
    t0 = time.monotonic()
    assert c.send_wait(v(3), timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.15
    assert s.size() == 1


@pytest.mark.parametrize("variant", ["str", "int"])
def test_req_timeout(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer)
    t0 = time.monotonic()
    assert c.req(v(1), timeout=0.2) is None
    assert time.monotonic() - t0 >= 0.15
    assert c.pending() == 0
    assert s.stats()["slots_free"] == s.resp_slots


# --------------------------------------------------------------------------- wake-ups


@pytest.mark.parametrize("spin", SPINS)
@pytest.mark.parametrize("variant", ["str", "int"])
def test_recv_wait_woken_by_send(variant: str, spin: int | None, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin)
    waiter = ThreadCall(s.recv_wait, timeout=LONG)
    time.sleep(0.1)
    assert waiter.is_alive()
    ident = c.send(v(7))
    assert waiter.join() == (v(7), ident)
    assert waiter.finished_at is not None
    assert waiter.finished_at - waiter.started_at < LONG / 2


@pytest.mark.parametrize("spin", SPINS)
def test_recv_wait_multi_woken_by_send(spin: int | None, closer: Closer) -> None:
    s, c = _str(closer, spin)
    waiter = ThreadCall(s.recv_wait_multi, 4, timeout=LONG)
    time.sleep(0.1)
    ident = c.send(b"m")
    got = waiter.join()
    assert got[0] == (b"m", ident)


@pytest.mark.parametrize("spin", SPINS)
@pytest.mark.parametrize("variant", ["str", "int"])
def test_get_wait_woken_by_reply(variant: str, spin: int | None, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin)
    ident = c.send(v(1))
    waiter = ThreadCall(c.get_wait, ident, timeout=LONG)
    _, rid = s.recv_wait(timeout=LONG)
    time.sleep(0.1)
    assert s.reply(rid, v(2))
    assert waiter.join() == v(2)
    assert c.pending() == 0


@pytest.mark.parametrize("variant", ["str", "int"])
def test_send_wait_woken_by_recv(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=1, resp_slots=4)
    first = c.send(v(1))
    waiter = ThreadCall(c.send_wait, v(2), timeout=LONG)
    time.sleep(0.1)
    assert waiter.is_alive()
    assert s.recv() == (v(1), first)
    second = waiter.join()
    assert second is not None
    assert s.recv_wait(timeout=LONG) == (v(2), second)


@pytest.mark.parametrize("variant", ["str", "int"])
def test_send_wait_woken_by_freed_slot(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=8, resp_slots=1)
    first = c.send(v(1))
    waiter = ThreadCall(c.send_wait, v(2), timeout=LONG)
    time.sleep(0.1)
    assert waiter.is_alive()
    _, rid = s.recv()
    assert s.reply(rid, v(3))
    time.sleep(0.05)
    assert c.get(first) == v(3)  # collecting frees the only slot
    second = waiter.join()
    assert second is not None


@pytest.mark.parametrize("variant", ["str", "int"])
def test_send_wait_woken_by_cancel(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=8, resp_slots=1)
    first = c.send(v(1))
    waiter = ThreadCall(c.send_wait, v(2), timeout=LONG)
    time.sleep(0.1)
    assert c.cancel(first)
    assert waiter.join() is not None


@pytest.mark.parametrize("spin", SPINS)
@pytest.mark.parametrize("variant", ["str", "int"])
def test_req_served_by_worker_thread(variant: str, spin: int | None, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin)
    stop = threading.Event()

    def worker() -> int:
        n = 0
        while not stop.is_set():
            got = s.recv_wait(timeout=0.05)
            if got is not None:
                data, rid = got
                s.reply(rid, data * 2)
                n += 1
        return n

    w = ThreadCall(worker)
    try:
        for i in range(200):
            assert c.req(v(i), timeout=LONG) == v(i) * 2
    finally:
        stop.set()
        assert w.join() == 200


@pytest.mark.parametrize("variant", ["str", "int"])
def test_many_waiters_no_lost_wakeup(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin=0, req_cap=16, resp_slots=16)
    waiters = [ThreadCall(s.recv_wait, timeout=LONG) for _ in range(4)]
    time.sleep(0.2)
    ids = {c.send(v(i)): v(i) for i in range(4)}
    got = [w.join() for w in waiters]
    assert sorted(rid for _, rid in got) == sorted(ids)
    for data, rid in got:
        assert ids[rid] == data


@pytest.mark.parametrize("variant", ["str", "int"])
def test_repeated_sleep_wake_cycles(variant: str, closer: Closer) -> None:
    """Ping-pong between two threads with spinning off: every wake goes through the futex."""
    s, c, v = _chan(variant, closer, spin=0)

    def worker() -> int:
        for i in range(300):
            got = s.recv_wait(timeout=LONG)
            assert got is not None, f"worker starved at {i}"
            s.reply(got[1], got[0])
        return 300

    w = ThreadCall(worker)
    for i in range(300):
        assert c.req(v(i), timeout=LONG) == v(i)
    assert w.join() == 300


# --------------------------------------------------------------------------- clear() wakes


@pytest.mark.parametrize("variant", ["str", "int"])
def test_clear_wakes_get_wait(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer)
    ident = c.send(v(1))
    waiter = ThreadCall(c.get_wait, ident, timeout=LONG)
    time.sleep(0.1)
    s.clear()
    assert waiter.join() is None
    assert waiter.finished_at is not None
    assert waiter.finished_at - waiter.started_at < LONG / 2


@pytest.mark.parametrize("variant", ["str", "int"])
def test_clear_wakes_req(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer)
    waiter = ThreadCall(c.req, v(1), timeout=LONG)
    assert wait_until(lambda: s.size() == 1)
    time.sleep(0.05)
    s.clear()
    assert waiter.join() is None
    assert waiter.finished_at is not None
    assert waiter.finished_at - waiter.started_at < LONG / 2
    assert c.pending() == 0
    assert s.stats()["slots_free"] == s.resp_slots


@pytest.mark.parametrize("variant", ["str", "int"])
def test_clear_wakes_send_wait(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, req_cap=1, resp_slots=4)
    assert c.send(v(1)) is not None
    waiter = ThreadCall(c.send_wait, v(2), timeout=LONG)
    time.sleep(0.1)
    s.clear()
    ident = waiter.join()
    assert ident is not None
    assert s.recv() == (v(2), ident)


# --------------------------------------------------------------------------- signals


class Signaller:
    """A thread that sends `sig` to the main thread `count` times, each time once the main
    thread is seen asleep, then runs `then()`. The handler the test installed must stay in
    place until this thread is gone, so `stop()` is always called before restoring it."""

    def __init__(self, sig: int, count: int, then: Callable[[], Any] | None = None) -> None:
        self.sig = sig
        self._stop = threading.Event()
        main = threading.main_thread().ident
        assert main is not None and threading.current_thread() is threading.main_thread()

        def run() -> int:
            sent = 0
            for _ in range(count):
                if self._stop.is_set() or not _sleeping_main():
                    return sent
                if self._stop.is_set():
                    return sent
                signal.pthread_kill(main, sig)
                sent += 1
                time.sleep(0.05)
            if then is not None and not self._stop.is_set():
                then()
            return sent

        self.call = ThreadCall(run)

    def join(self) -> int:
        return int(self.call.join(JOIN))

    def stop(self) -> None:
        self._stop.set()
        self.call.thread.join(JOIN)


@contextlib.contextmanager
def handler(sig: int, fn: Callable[[int, Any], Any]) -> Iterator[list[Signaller]]:
    """Install a Python signal handler for the block; signallers registered in the yielded
    list are stopped before the old handler comes back."""
    old = signal.signal(sig, fn)
    senders: list[Signaller] = []
    try:
        yield senders
    finally:
        for sender in senders:
            sender.stop()
        if any(sender.call.is_alive() for sender in senders):
            signal.signal(sig, lambda *_: None)  # never let a late signal kill the run
        else:
            signal.signal(sig, old)


@pytest.mark.parametrize("variant", ["str", "int"])
def test_handler_that_returns_lets_recv_wait_go_on(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin=0)
    hits: list[int] = []
    sent: list[int] = []
    with handler(signal.SIGUSR1, lambda signum, frame: hits.append(signum)) as senders:
        sender = Signaller(signal.SIGUSR1, 3, then=lambda: sent.append(c.send(v(5))))
        senders.append(sender)
        got = s.recv_wait()  # no timeout: only the request ends this wait
        assert sender.join() == 3
    assert len(hits) == 3
    assert got == (v(5), sent[0])


@pytest.mark.parametrize("variant", ["str", "int"])
def test_handler_that_returns_keeps_the_deadline(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin=0)
    hits: list[int] = []
    with handler(signal.SIGUSR1, lambda signum, frame: hits.append(signum)) as senders:
        senders.append(Signaller(signal.SIGUSR1, 2))
        t0 = time.monotonic()
        got = s.recv_wait(timeout=1.0)
        elapsed = time.monotonic() - t0
        senders[0].stop()
    assert got is None
    assert elapsed >= 0.9, "a returning handler must not end the wait early"
    assert hits, "the handler never ran"


@pytest.mark.parametrize("variant", ["str", "int"])
def test_handler_that_returns_get_wait_goes_on(variant: str, closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin=0)
    ident = c.send(v(1))
    _, rid = s.recv()
    hits: list[int] = []
    with handler(signal.SIGUSR1, lambda signum, frame: hits.append(signum)) as senders:
        sender = Signaller(signal.SIGUSR1, 2, then=lambda: s.reply(rid, v(2)))
        senders.append(sender)
        got = c.get_wait(ident)
        assert sender.join() == 2
    assert got == v(2)
    assert len(hits) == 2


class Boom(Exception):
    pass


def _raise_boom(signum: int, frame: Any) -> None:
    raise Boom("from the handler")


BLOCKING_CALLS = ["recv_wait", "recv_wait_multi", "get_wait", "req", "send_wait"]
VARIANT_CALLS = [(v, n) for v in ("str", "int") for n in BLOCKING_CALLS
                 if not (v == "int" and n == "recv_wait_multi")]  # recv_wait_multi: Str only


def _blocking_call(name: str, variant: str, s: Any, c: Any, v: Callable[[int], Any],
                   timeout: float | None) -> Callable[[], Any]:
    """Prepare the channel so that `name` blocks, and return the blocking call."""
    if name == "recv_wait":
        return lambda: s.recv_wait(timeout=timeout)
    if name == "recv_wait_multi":
        return lambda: s.recv_wait_multi(4, timeout=timeout)
    if name == "get_wait":
        ident = c.send(v(1))
        return lambda: c.get_wait(ident, timeout=timeout)
    if name == "req":
        return lambda: c.req(v(1), timeout=timeout)
    if name == "send_wait":
        while c.send(v(0)) is not None:  # fill the queue
            pass
        return lambda: c.send_wait(v(1), timeout=timeout)
    raise AssertionError(name)


@pytest.mark.parametrize(("variant", "name"), VARIANT_CALLS)
def test_handler_exception_comes_out_of_the_call(variant: str, name: str,
                                                  closer: Closer) -> None:
    s, c, v = _chan(variant, closer, spin=0, req_cap=2, resp_slots=4)
    call = _blocking_call(name, variant, s, c, v, LONG)
    pending, size = c.pending(), s.size()
    with handler(signal.SIGUSR1, _raise_boom) as senders:
        senders.append(Signaller(signal.SIGUSR1, 1))
        t0 = time.monotonic()
        with pytest.raises(Boom):
            call()
        elapsed = time.monotonic() - t0
        senders[0].stop()
    assert elapsed < LONG / 2, "the handler's exception only came out at the timeout"
    # the interrupted call left nothing half done: no slot leaked, nothing taken
    st = s.stats()
    assert st["slots_free"] + st["slots_acquired"] + st["slots_ready"] == s.resp_slots
    if name == "req":  # like a timeout: the request is cancelled, its slot freed
        assert c.pending() == pending == 0
        assert st["slots_free"] == s.resp_slots
        assert st["size"] == size + 1
    else:
        assert c.pending() == pending
        assert st["slots_free"] == s.resp_slots - pending
        assert st["size"] == size


@pytest.mark.parametrize(("variant", "name"), VARIANT_CALLS)
def test_ctrl_c_in_child_without_timeout(variant: str, name: str, closer: Closer) -> None:
    """A child blocked with no timeout gets SIGINT: the call raises KeyboardInterrupt."""
    s, c, v = _chan(variant, closer, spin=0, req_cap=2, resp_slots=4)
    call = _blocking_call(name, variant, s, c, v, None)

    def child() -> str:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            call()
        except KeyboardInterrupt:
            return "KeyboardInterrupt"
        return "returned"

    kid = fork_call(child, watchdog=40)
    try:
        assert wait_sleeping(kid.pid), "the child never went to sleep in the call"
        os.kill(kid.pid, signal.SIGINT)
        assert kid.result(timeout=JOIN) == "KeyboardInterrupt"
    finally:
        kid.kill()


CTRL_C_SCRIPT = """
import sys, reqrep
cls = reqrep.Server if sys.argv[1] == "str" else reqrep.IntServer
s = cls(None, spin=0)
print("ready", flush=True)
s.recv_wait()
print("recv_wait returned", flush=True)
"""


@pytest.mark.parametrize("variant", ["str", "int"])
def test_ctrl_c_real_interpreter(variant: str) -> None:
    """A fresh interpreter blocked in recv_wait() dies of KeyboardInterrupt on SIGINT."""
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, variant],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        assert wait_sleeping(proc.pid), "the interpreter never went to sleep in recv_wait"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=JOIN)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err
    assert "recv_wait returned" not in out
    assert proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT, 1)


# --------------------------------------------------------------------------- close while waiting


def _close_while_waiting(variant: str, side: str) -> dict[str, str]:
    """Runs in a child: one thread waits on an object, the main thread closes that object,
    then the channel is poked so that the waiter can finish. Returns what each call did."""
    if variant == "str":
        s = Server(None, req_cap=4, resp_slots=2, resp_size=16)
        val: Any = b"x"
    else:
        s = IntServer(None, req_cap=4, resp_slots=2)
        val = 1
    other = s.client()
    out: dict[str, str] = {}
    if side == "server":
        target = s.client()  # keeps the mapping alive independently of the closed object
        waiter = ThreadCall(s.recv_wait, timeout=3)
    else:
        target = s.client()
        waiter = ThreadCall(target.req, val, timeout=3)
    time.sleep(0.2)
    try:
        (s if side == "server" else target).close()
        out["close"] = "ok"
    except Exception as e:  # noqa: BLE001 - any clean exception is acceptable here
        out["close"] = type(e).__name__
    if side == "server":
        other.send(val)
    else:
        got = s.recv_wait(timeout=3) if not s.closed else None
        if got is not None:
            s.reply(got[1], val)
    waiter.thread.join(10)
    out["waiter"] = ("alive" if waiter.is_alive()
                     else type(waiter.error).__name__ if waiter.error else repr(waiter.value))
    target.close()
    other.close()
    s.close()
    return out


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("variant", ["str", "int"])
def test_close_while_another_thread_waits_never_crashes(variant: str, side: str) -> None:
    kid = fork_call(lambda: _close_while_waiting(variant, side), watchdog=40)
    try:
        out = kid.result(timeout=JOIN * 2)
    finally:
        kid.kill()
    assert out["waiter"] != "alive", out
    assert out["waiter"] in ("None", "ValueError") or out["waiter"].startswith(("(", "b'", "1")), \
        out
