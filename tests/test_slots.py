"""The response-slot protocol where a reply is being written (SPEC section 4): a writer
other than the dead process that took the request, cancel/close/req(timeout) against a
writer stopped in the middle of its reply, and batch receives that fail half-way.

A writer is caught in the middle of its reply by making the reply large (tens of MiB into
fresh shared pages) and stopping the process (SIGSTOP) as soon as the slot's state word
says "writing"."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Closer, id_index
from layout import ChannelMap
from procs import Child, fork_call

from reqrep import Client, Server, WorkerDiedError, _format

BIG = 48 << 20
SLOT_WRITING = _format.SLOT_STATES["writing"]


class StoppedWriter:
    """A forked process inside `server.reply(ident, BIG bytes)`, stopped with SIGSTOP while
    the slot says WRITING."""

    def __init__(self, child: Child) -> None:
        self.child = child

    def cont(self) -> Any:
        """Let it finish; the reply() call's result."""
        os.kill(self.child.pid, signal.SIGCONT)
        return self.child.result(timeout=60)

    def kill(self) -> None:
        self.child.kill()


def _slot_state(cm: ChannelMap, ident: int) -> int:
    return _format.ctl_state(_format.SLOT.get(cm.mm, cm.slot_off(id_index(ident)), "ctl"))


def stop_in_writing(cm: ChannelMap, pid: int, ident: int, timeout: float = 20.0) -> bool:
    """Stops `pid` as soon as request `ident`'s slot is WRITING; whether it was caught
    there (a writer that finished first is left running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _slot_state(cm, ident) == SLOT_WRITING:
            os.kill(pid, signal.SIGSTOP)
            # stopped: the state cannot move on unless the copy had ended before the stop
            time.sleep(0.05)
            return _slot_state(cm, ident) == SLOT_WRITING
    return False


@contextlib.contextmanager
def stopped_writer(server: Server, path: Path, ident: int) -> Iterator[StoppedWriter]:
    payload = b"\x5a" * BIG
    with ChannelMap.open(path) as cm:
        child = fork_call(lambda: server.reply(ident, payload), watchdog=90)
        try:
            if not stop_in_writing(cm, child.pid, ident):
                pytest.skip("the writer finished its reply before it could be stopped")
            yield StoppedWriter(child)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
            child.kill()


@pytest.fixture
def big_chan(tmp_path: Path, closer: Closer) -> tuple[Server, Client, Path]:
    path = tmp_path / "big.chan"
    server = closer(Server(path, req_cap=4, resp_slots=1, resp_size=BIG))
    return server, closer(Client(path)), path


def test_live_writer_keeps_the_slot_when_its_taker_died(big_chan: Any) -> None:
    """The worker that took the request handed its id to another process and died: the
    client must wait for the live writer, not free the slot under it."""
    server, client, path = big_chan
    ident = client.send(b"q")
    taker = fork_call(lambda: server.recv())
    assert taker.result() == (b"q", ident)  # taken, and its taker is dead now
    with stopped_writer(server, path, ident) as writer:
        # several worker checks (every 0.25 s): the dead taker is not the writer
        assert client.get_wait(ident, timeout=1.0) is None
        assert client.send(b"next") is None  # the only slot is still this request's
        st = server.stats()
        assert (st["slots_free"], st["slots_acquired"]) == (0, 1)
        assert writer.cont() is True
    reply = client.get_wait(ident, timeout=30)
    assert isinstance(reply, bytes) and len(reply) == BIG
    assert server.stats()["slots_free"] == 1


def test_writer_killed_mid_reply_is_reported(big_chan: Any) -> None:
    server, client, path = big_chan
    ident = client.send(b"q")
    assert server.recv() == (b"q", ident)
    with stopped_writer(server, path, ident) as writer:
        writer.kill()
        with pytest.raises(WorkerDiedError):
            client.get_wait(ident, timeout=30)
    assert server.stats()["slots_free"] == 1


def test_cancel_wins_over_a_reply_being_written(big_chan: Any) -> None:
    server, client, path = big_chan
    ident = client.send(b"q")
    assert server.recv() == (b"q", ident)
    with stopped_writer(server, path, ident) as writer:
        assert client.cancel(ident) is True
        assert client.get(ident) is None
        assert client.get_wait(ident, timeout=0.05) is None
        assert client.pending() == 0
        assert client.cancel(ident) is False
        assert writer.cont() is False  # the reply lost, and its writer freed the slot
    assert server.stats()["slots_free"] == 1
    assert client.get(ident) is None
    assert client.req(b"again", timeout=0) is None  # the slot is usable: no worker, though


def test_close_during_a_reply_being_written_frees_the_slot(big_chan: Any) -> None:
    server, client, path = big_chan
    ident = client.send(b"q")
    assert server.recv() == (b"q", ident)
    with stopped_writer(server, path, ident) as writer:
        client.close()
        assert writer.cont() is False
    st = server.stats()
    assert (st["slots_free"], st["slots_ready"]) == (1, 0)


def test_req_timeout_holds_against_a_writer_stopped_mid_reply(big_chan: Any) -> None:
    server, client, path = big_chan
    payload = b"\x5a" * BIG

    def serve_one() -> bool:
        _, rid = server.recv_wait(timeout=30)
        return server.reply(rid, payload)

    worker = fork_call(serve_one, watchdog=90)
    caught, done = threading.Event(), threading.Event()

    def stopper() -> None:
        with ChannelMap.open(path) as cm:
            # the request's id is not known here: its slot is the only one
            if stop_in_writing(cm, worker.pid, 0 << 32):
                caught.set()
            done.wait(15)  # a req that ignores its timeout returns only after this
            os.kill(worker.pid, signal.SIGCONT)

    t = threading.Thread(target=stopper, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        got = client.req(b"q", timeout=0.5)
        elapsed = time.monotonic() - t0
        if not caught.is_set() and got is not None:
            pytest.skip("the worker finished its reply before it could be stopped")
        assert got is None
        assert elapsed < 10, f"req(timeout=0.5) returned after {elapsed:.1f} s"
        assert client.pending() == 0
    finally:
        done.set()
        t.join(30)
        assert worker.result(timeout=60) is False
    assert server.stats()["slots_free"] == 1


def test_batch_receive_failing_half_way_keeps_the_rest_queued(closer: Closer) -> None:
    """A MemoryError while building the second entry: the first is returned, the second
    stays queued for the next call (nothing taken that is not returned)."""
    big = 96 << 20
    server = closer(Server(None, req_cap=4, resp_slots=4, arena=128 << 20))
    client = closer(server.client())
    first = client.send(b"small")
    second = client.send(b"\x01" * big)
    assert first is not None and second is not None

    def starved() -> Any:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + (32 << 20), hard))
        try:
            got = server.recv_multi(4)
            left = len(server)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        rest = server.recv_multi(4)
        return got, left, [(len(d), i) for d, i in rest]

    got, left, rest = fork_call(starved).result(timeout=60)
    assert got == [(b"small", first)]
    assert left == 1
    assert rest == [(big, second)]
