"""Hypothesis state machines: one server + one client in one process against a pure-Python
model of the channel (FIFO queue, response slots, generations, cancel/reply/get/clear, full
queue and no free slot, the stats counters)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import IntServer, Server, id_gen, id_index
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

pytestmark = pytest.mark.timeout(600, method="thread")

SETTINGS = settings(max_examples=80, stateful_step_count=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

RESP_SIZE = 48
ARENA = 4096

str_payloads = st.one_of(
    st.binary(max_size=RESP_SIZE),
    st.text(max_size=RESP_SIZE // 4),
)
int_payloads = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@dataclass
class Model:
    """What the channel must look like from outside."""

    capacity: int
    resp_slots: int
    queue: deque[tuple[Any, int | None]] = field(default_factory=deque)
    # live ids: "acquired" (awaiting a reply) or ("ready", response)
    live: dict[int, Any] = field(default_factory=dict)
    issued: list[int] = field(default_factory=list)
    requests: int = 0
    replies: int = 0

    @property
    def ready(self) -> int:
        return sum(1 for s in self.live.values() if s != "acquired")

    @property
    def acquired(self) -> int:
        return sum(1 for s in self.live.values() if s == "acquired")


class ChannelMachine(RuleBasedStateMachine):
    """Rules shared by both variants; subclasses set up the channel and payloads."""

    variant = "?"

    def __init__(self) -> None:
        super().__init__()
        self.server: Any = None
        self.client: Any = None
        self.model: Model = Model(1, 1)
        self.received: list[int] = []  # ids the worker has taken from the queue
        self.stats0: dict[str, int] = {}

    # -- helpers -------------------------------------------------------------------------

    def open(self, server: Any) -> None:
        self.server = server
        self.client = server.client()
        self.model = Model(server.capacity, server.resp_slots)
        self.stats0 = server.stats()

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.close()

    def stale_ids(self) -> st.SearchStrategy[int]:
        """Ids that are not live: old ones, out-of-range indexes, forged generations."""
        old = [i for i in self.model.issued if i not in self.model.live]
        forged = st.one_of(
            st.integers(self.model.resp_slots, 2**32 - 1),  # index out of range, gen 0
            st.builds(lambda g, i: (g << 32) | i, st.integers(0, 2**32 - 1),
                      st.integers(self.model.resp_slots, 2**32 - 1)),
            st.just(2**64 - 1),
        )
        strategies: list[st.SearchStrategy[int]] = [forged]
        if old:
            strategies.append(st.sampled_from(old))
        return st.one_of(*strategies)

    def pick_id(self, data: st.DataObject, pool: list[int]) -> int:
        """A live-ish id from `pool` most of the time, a stale one sometimes."""
        candidates = [i for i in pool if i in self.model.live]
        if candidates and data.draw(st.integers(0, 3), label="fresh?") != 0:
            return data.draw(st.sampled_from(candidates), label="id")
        return data.draw(self.stale_ids(), label="stale id")

    def check_item(self, got: Any, expected: tuple[Any, int | None]) -> None:
        assert isinstance(got, tuple) and len(got) == 2
        data, ident = got
        if expected[1] is None:  # sent by a req() that timed out: its id was never seen
            assert ident not in self.model.live and ident not in self.model.issued
            assert id_index(ident) < self.model.resp_slots
            self.model.issued.append(ident)
        else:
            assert ident == expected[1]
        assert type(data) is type(expected[0]), (data, expected[0])
        assert data == expected[0]
        self.received.append(ident)

    def take(self, n: int | None) -> list[tuple[Any, int | None]]:
        q = self.model.queue
        k = len(q) if n is None else min(n, len(q))
        return [q.popleft() for _ in range(k)]

    # -- client side ---------------------------------------------------------------------

    def do_send(self, payload: Any) -> None:
        m = self.model
        full = len(m.queue) >= m.capacity or len(m.live) >= m.resp_slots
        ident = self.client.send(payload)
        if full:
            assert ident is None, "send must refuse when the queue is full or no slot is free"
            return
        assert ident is not None, "send refused although the queue and a slot were free"
        assert isinstance(ident, int) and 0 <= ident < 2**64
        assert id_index(ident) < m.resp_slots
        assert ident not in m.issued, "an id was issued twice"
        assert id_index(ident) not in {id_index(i) for i in m.live}, "slot index in use twice"
        m.issued.append(ident)
        m.live[ident] = "acquired"
        m.queue.append((payload, ident))
        m.requests += 1

    def do_req_zero(self, payload: Any) -> None:
        """req() with timeout 0 sends, finds no reply, cancels and returns None; the request
        stays queued under an id nobody holds."""
        m = self.model
        full = len(m.queue) >= m.capacity or len(m.live) >= m.resp_slots
        assert self.client.req(payload, timeout=0) is None
        if not full:
            m.queue.append((payload, None))
            m.requests += 1

    @rule()
    def reopen_client(self) -> None:
        """Closing a client cancels everything it has pending (replied or not)."""
        self.client.close()
        self.model.live.clear()
        self.client = self.server.client()
        assert self.client.pending() == 0

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        ident = self.pick_id(data, self.model.issued)
        got = self.client.get(ident)
        self.expect_get(ident, got)

    @rule(data=st.data())
    def get_wait_zero(self, data: st.DataObject) -> None:
        ident = self.pick_id(data, self.model.issued)
        got = self.client.get_wait(ident, timeout=0)
        self.expect_get(ident, got)

    def expect_get(self, ident: int, got: Any) -> None:
        state = self.model.live.get(ident)
        if state is None or state == "acquired":
            assert got is None
            return
        want = state[1]
        assert type(got) is type(want) and got == want
        del self.model.live[ident]

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ident = self.pick_id(data, self.model.issued)
        state = self.model.live.get(ident)
        got = self.client.cancel(ident)
        if state == "acquired":
            assert got is True
            del self.model.live[ident]
        else:
            assert got is False  # stale, or the reply is there (get drains it)

    # -- server side ---------------------------------------------------------------------

    @rule()
    def recv(self) -> None:
        got = self.server.recv()
        if not self.model.queue:
            assert got is None
            return
        self.check_item(got, self.model.queue.popleft())

    @rule()
    def recv_wait_zero(self) -> None:
        got = self.server.recv_wait(timeout=0)
        if not self.model.queue:
            assert got is None
            return
        self.check_item(got, self.model.queue.popleft())

    def do_reply(self, ident: int, payload: Any) -> None:
        state = self.model.live.get(ident)
        ok = self.server.reply(ident, payload)
        if state == "acquired":
            assert ok is True
            self.model.live[ident] = ("ready", payload)
            self.model.replies += 1
        else:
            assert ok is False

    @rule()
    def clear(self) -> None:
        self.server.clear()
        self.model.queue.clear()
        self.model.live.clear()

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def sizes_match(self) -> None:
        if self.server is None:
            return
        n = len(self.model.queue)
        assert self.server.size() == n == len(self.server) == self.client.size()
        assert self.server.is_empty() is (n == 0)

    @invariant()
    def stats_match(self) -> None:
        if self.server is None:
            return
        m = self.model
        st_ = self.client.stats()
        assert st_["size"] == len(m.queue)
        assert st_["capacity"] == m.capacity and st_["resp_slots"] == m.resp_slots
        assert st_["slots_acquired"] == m.acquired
        assert st_["slots_ready"] == m.ready
        assert st_["slots_free"] == m.resp_slots - len(m.live)
        assert st_["requests"] - self.stats0["requests"] == m.requests
        assert st_["replies"] - self.stats0["replies"] == m.replies
        assert st_["recoveries"] == 0

    @invariant()
    def pending_matches(self) -> None:
        if self.client is None:
            return
        assert self.client.pending() == len(self.model.live)

    @invariant()
    def ids_well_formed(self) -> None:
        for ident in self.model.live:
            assert id_gen(ident) < 2**32


class StrChannel(ChannelMachine):
    variant = "str"

    @initialize(req_cap=st.sampled_from([1, 2, 4, 8]), resp_slots=st.integers(1, 5))
    def setup(self, req_cap: int, resp_slots: int) -> None:
        self.open(Server(None, req_cap=req_cap, resp_slots=resp_slots, resp_size=RESP_SIZE,
                         arena=ARENA))

    @rule(payload=str_payloads)
    def send(self, payload: Any) -> None:
        self.do_send(payload)

    @rule(payload=str_payloads)
    def send_wait_zero(self, payload: Any) -> None:
        m = self.model
        full = len(m.queue) >= m.capacity or len(m.live) >= m.resp_slots
        ident = self.client.send_wait(payload, timeout=0)
        if full:
            assert ident is None
            return
        assert ident is not None and ident not in m.issued
        m.issued.append(ident)
        m.live[ident] = "acquired"
        m.queue.append((payload, ident))
        m.requests += 1

    @rule(payload=str_payloads)
    def req_zero(self, payload: Any) -> None:
        self.do_req_zero(payload)

    @rule(size=st.integers(ARENA + 1, ARENA * 4))
    def send_too_big(self, size: int) -> None:
        try:
            self.client.send(b"x" * size)
        except ValueError:
            return
        raise AssertionError("a request larger than the arena was accepted")

    @rule(n=st.integers(0, 5))
    def recv_multi(self, n: int) -> None:
        got = self.server.recv_multi(n)
        want = self.take(n)
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            self.check_item(g, w)

    @rule(n=st.integers(0, 5))
    def recv_wait_multi_zero(self, n: int) -> None:
        got = self.server.recv_wait_multi(n, timeout=0)
        want = self.take(n)
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            self.check_item(g, w)

    @rule(n=st.one_of(st.none(), st.integers(0, 5)))
    def drain(self, n: int | None) -> None:
        got = self.server.drain(n)
        want = self.take(n)
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            self.check_item(g, w)

    @rule(data=st.data(), payload=str_payloads)
    def reply(self, data: st.DataObject, payload: Any) -> None:
        self.do_reply(self.pick_id(data, self.received), payload)

    @precondition(lambda self: any(self.model.live.get(i) == "acquired" for i in self.received))
    @rule(data=st.data(), extra=st.integers(1, 100))
    def reply_too_big(self, data: st.DataObject, extra: int) -> None:
        ids = [i for i in self.received if self.model.live.get(i) == "acquired"]
        ident = data.draw(st.sampled_from(ids))
        try:
            self.server.reply(ident, b"r" * (RESP_SIZE + extra))
        except ValueError:
            return  # nothing changed: the model stays as it is
        raise AssertionError("a response larger than resp_size was accepted")


class IntChannel(ChannelMachine):
    variant = "int"

    @initialize(req_cap=st.sampled_from([1, 2, 4, 8]), resp_slots=st.integers(1, 5))
    def setup(self, req_cap: int, resp_slots: int) -> None:
        self.open(IntServer(None, req_cap=req_cap, resp_slots=resp_slots))

    @rule(payload=int_payloads)
    def send(self, payload: int) -> None:
        self.do_send(payload)

    @rule(payload=int_payloads)
    def req_zero(self, payload: int) -> None:
        self.do_req_zero(payload)

    @rule(payload=st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1)))
    def send_overflow(self, payload: int) -> None:
        try:
            self.client.send(payload)
        except OverflowError:
            return
        raise AssertionError("an out-of-range int was accepted")

    @rule(data=st.data(), payload=int_payloads)
    def reply(self, data: st.DataObject, payload: int) -> None:
        self.do_reply(self.pick_id(data, self.received), payload)


StrChannel.TestCase.settings = SETTINGS
IntChannel.TestCase.settings = SETTINGS
TestStrChannel = StrChannel.TestCase
TestIntChannel = IntChannel.TestCase
