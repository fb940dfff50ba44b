"""Server.serve / IntServer.serve: the synchronous worker loop in C."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from helpers import ThreadCall
from procs import children, fork_call, wait_sleeping

import reqrep


def test_serve_answers_what_is_queued_and_returns_when_idle(str_server: Any) -> None:
    c = str_server.client()
    ids = [c.send(b"abc%d" % i) for i in range(5)] + [c.send("text")]
    assert str_server.serve(lambda d: d.upper(), timeout=0) == 6
    assert [c.get(i) for i in ids] == [b"ABC%d" % i for i in range(5)] + ["TEXT"]
    assert str_server.serve(lambda d: d, timeout=0) == 0  # nothing queued
    c.close()


def test_int_serve_max_requests(int_server: Any) -> None:
    c = int_server.client()
    ids = [c.send(i) for i in range(5)]
    assert int_server.serve(lambda v: v * 2, max_requests=3) == 3
    assert [c.get(i) for i in ids[:3]] == [0, 2, 4]
    assert int_server.size() == 2
    assert int_server.serve(lambda v: -v, max_requests=0) == 0
    assert int_server.serve(lambda v: -v, timeout=0.01, max_requests=2**40) == 2
    assert [c.get(i) for i in ids[3:]] == [-3, -4]
    c.close()


def test_serve_waits_for_requests_from_another_process(str_server: Any) -> None:
    def clients() -> list[Any]:
        with str_server.client() as c:
            return [c.req(b"%d" % i, timeout=30) for i in range(50)]

    with children() as kids:
        kid = fork_call(clients)
        kids.append(kid)
        assert str_server.serve(lambda d: d + b"!", timeout=5.0, max_requests=50) == 50
        assert kid.result() == [b"%d!" % i for i in range(50)]


def test_handler_errors_go_to_on_error(int_server: Any) -> None:
    c = int_server.client()
    ids = [c.send(v) for v in (4, 0, 2)]
    seen: list[tuple[type, int, int]] = []

    def on_error(exc: Exception, value: int, rid: int) -> int | None:
        seen.append((type(exc), value, rid))
        return None if value == 0 and len(seen) == 1 else -1

    assert int_server.serve(lambda v: 8 // v, on_error=on_error, timeout=0) == 3
    assert seen == [(ZeroDivisionError, 0, ids[1])]
    assert c.get(ids[0]) == 2 and c.get(ids[2]) == 4
    assert c.get(ids[1]) is None and c.cancel(ids[1])  # on_error said None: no reply
    c.close()


def test_a_refused_reply_goes_to_on_error(str_server: Any) -> None:
    c = str_server.client()
    big, wrong = c.send(b"big"), c.send(b"wrong")

    def handler(data: bytes) -> Any:
        return b"x" * (str_server.resp_size + 1) if data == b"big" else 12

    def on_error(exc: Exception, data: bytes, rid: int) -> bytes:
        return type(exc).__name__.encode()

    assert str_server.serve(handler, on_error=on_error, timeout=0) == 2
    assert c.get(big) == b"ValueError" and c.get(wrong) == b"TypeError"
    c.close()


def test_without_on_error_the_error_is_the_reply(str_server: Any) -> None:
    """SPEC §7: a handler that raises answers its request with the error and serving
    goes on (before §7 the exception came out of serve and the request stayed open)."""
    c = str_server.client()
    first, second = c.send(b"a"), c.send(b"b")

    def handler(data: bytes) -> bytes:
        if data == b"a":
            raise KeyError(data)
        return data.upper()

    assert str_server.serve(handler, timeout=0) == 2
    with pytest.raises(reqrep.RemoteError) as info:
        c.get(first)
    assert info.value.type_name == "KeyError" and info.value.message == "b'a'"
    assert "in handler" in info.value.traceback
    assert c.get(second) == b"B"

    def on_error(exc: Exception, data: bytes, rid: int) -> bytes:
        raise RuntimeError("on_error failed") from exc

    c.send(b"a")
    with pytest.raises(RuntimeError, match="on_error failed"):
        str_server.serve(handler, on_error=on_error, timeout=0)
    c.close()


def test_base_exceptions_are_not_given_to_on_error(int_server: Any) -> None:
    c = int_server.client()
    c.send(1)

    def handler(value: int) -> int:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        int_server.serve(handler, on_error=lambda e, v, i: 0, timeout=0)
    c.close()


def test_close_from_another_thread_stops_serve(int_server: Any) -> None:
    call = ThreadCall(int_server.serve, lambda v: v)
    time.sleep(0.2)
    assert call.is_alive()
    int_server.close()
    assert call.join(10.0) == 0
    assert int_server.closed


def test_close_from_the_handler_stops_serve_after_its_reply(str_server: Any) -> None:
    c = str_server.client()
    ids = [c.send(b"1"), c.send(b"2")]

    def handler(data: bytes) -> bytes:
        str_server.close()
        return data + data

    assert str_server.serve(handler) == 1
    assert c.get(ids[0]) == b"11"
    c.close()


def test_serve_on_a_closed_server(int_server: Any) -> None:
    int_server.close()
    with pytest.raises(ValueError, match="closed"):
        int_server.serve(lambda v: v)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [
        ((), {}, TypeError),
        ((1,), {}, TypeError),
        ((abs,), {"on_error": 3}, TypeError),
        ((abs, None), {}, TypeError),  # the options are keyword-only
        ((abs,), {"timeout": -1}, ValueError),
        ((abs,), {"timeout": "1"}, TypeError),
        ((abs,), {"max_requests": -1}, ValueError),
        ((abs,), {"max_requests": 2**63}, ValueError),
        ((abs,), {"max_requests": 1.5}, TypeError),
        ((abs,), {"bogus": 1}, TypeError),
    ],
)
def test_bad_arguments(int_server: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                       exc: type[Exception]) -> None:
    c = int_server.client()
    rid = c.send(5)
    with pytest.raises(exc):
        int_server.serve(*args, **kwargs)
    assert int_server.size() == 1  # nothing taken
    assert int_server.serve(abs, timeout=0) == 1 and c.get(rid) == 5
    c.close()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals go to the main thread")
def test_ctrl_c_interrupts_a_waiting_serve(tmp_path: Any) -> None:
    """SIGINT while serve sleeps for a request raises KeyboardInterrupt out of serve."""

    def child() -> str:
        with reqrep.IntServer(None) as s:
            try:
                s.serve(lambda v: v)
            except KeyboardInterrupt:
                return "interrupted"
            return "returned"

    with children() as kids:
        kid = fork_call(child, watchdog=60)
        kids.append(kid)
        assert wait_sleeping(kid.pid)
        os.kill(kid.pid, signal.SIGINT)
        assert kid.result(timeout=30) == "interrupted"
