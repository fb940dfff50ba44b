"""Errors travel back (SPEC §7): reply_error, RemoteError, and serve answering a raising
handler with its error. Real processes (fork and spawn), real channels."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import fork_call

import reqrep
from reqrep import _remote
from reqrep.aio import AsyncClient

LONG = 30.0


class AVeryLongExceptionNameThatDoesNotFitInAnIntReply(Exception):
    pass


class Ünïcödé(Exception):
    pass


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - the exception with its traceback
        return caught


def _ask_error(server: Any, client: Any, payload: Any, exc: Any) -> BaseException:
    """Sends one request, answers it with reply_error(exc), returns what the client raised."""
    rid = client.send(payload)
    _data, taken = server.recv()
    assert taken == rid
    assert server.reply_error(rid, exc) is True
    with pytest.raises(reqrep.RemoteError) as info:
        client.get_wait(rid, LONG)
    assert client.pending() == 0
    return info.value


def test_reply_error_str_channel() -> None:
    with reqrep.Server(None, resp_size=4096) as s, s.client() as c:
        err = _ask_error(s, c, b"q", _raise(ZeroDivisionError("division by zero")))
        assert isinstance(err, reqrep.RemoteError)
        assert err.type_name == "ZeroDivisionError"
        assert err.message == "division by zero"
        assert "Traceback (most recent call last)" in err.traceback
        assert "in _raise" in err.traceback
        assert "ZeroDivisionError: division by zero" in str(err)
        # qualified names for what is not a builtin
        err = _ask_error(s, c, b"q", AVeryLongExceptionNameThatDoesNotFitInAnIntReply("x"))
        assert err.type_name == (
            "test_remote_errors.AVeryLongExceptionNameThatDoesNotFitInAnIntReply")
        # a str is an Exception's message
        err = _ask_error(s, c, "q", "it went wrong")
        assert (err.type_name, err.message, err.traceback) == ("Exception", "it went wrong", "")
        # every slot is free again and the channel works on
        assert s.stats()["slots_free"] == s.resp_slots
        rid = c.send(b"x")
        s.reply(s.recv()[1], b"y")
        assert c.get_wait(rid, LONG) == b"y"


def test_req_raises_remote_error_in_a_real_worker_process(tmp_path: Path) -> None:
    path = tmp_path / "chan"
    with reqrep.Server(path) as s, reqrep.Client(path) as c:

        def worker() -> int:
            with reqrep.Server(path) as ws:
                return ws.serve(lambda data: {b"ok": b"fine"}[data], max_requests=3,
                                timeout=LONG)

        kid = fork_call(worker)
        assert c.req(b"ok", timeout=LONG) == b"fine"
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(b"missing", timeout=LONG)
        assert info.value.type_name == "KeyError" and info.value.message == "b'missing'"
        assert "<lambda>" in info.value.traceback
        assert c.req(b"ok", timeout=LONG) == b"fine"  # the worker went on serving
        assert kid.result(timeout=LONG) == 3
        assert s.size() == 0


def _spawned_worker(path: str) -> None:
    with reqrep.IntServer(path) as s:
        s.serve(lambda v: 100 // v, max_requests=3, timeout=LONG)


def test_int_serve_in_a_spawned_process(tmp_path: Path) -> None:
    path = tmp_path / "chan"
    ctx = multiprocessing.get_context("spawn")
    with reqrep.IntServer(path) as s, reqrep.IntClient(path) as c:
        proc = ctx.Process(target=_spawned_worker, args=(str(path),))
        proc.start()
        try:
            assert c.req(4, timeout=LONG) == 25
            with pytest.raises(reqrep.RemoteError) as info:
                c.req(0, timeout=LONG)
            assert info.value.type_name == "ZeroDivisionError"
            assert info.value.message == "" and info.value.traceback == ""
            assert c.req(-50, timeout=LONG) == -2
        finally:
            proc.join(LONG)
            if proc.exitcode is None:
                proc.kill()
        assert proc.exitcode == 0
        assert s.stats()["slots_free"] == s.resp_slots


def test_int_error_carries_the_type_name_first_32_bytes() -> None:
    with reqrep.IntServer(None, resp_slots=1) as s, s.client() as c:
        err = _ask_error(s, c, 1, AVeryLongExceptionNameThatDoesNotFitInAnIntReply())
        full = "test_remote_errors.AVeryLongExceptionNameThatDoesNotFitInAnIntReply"
        assert err.type_name == full[:32]
        # cut at a character boundary
        err = _ask_error(s, c, 2, Ünïcödé())
        assert err.type_name == "test_remote_errors.Ünïcödé"[: len(err.type_name)]
        assert len(err.type_name.encode()) <= 32 and "\ufffd" not in err.type_name
        # the slot's next reply is a value again
        rid = c.send(3)
        s.reply(s.recv()[1], 33)
        assert c.get_wait(rid, LONG) == 33


@pytest.mark.parametrize("resp_size", [1, 8, 21, 40, 120])
def test_small_resp_size_cuts_the_error_to_fit(resp_size: int) -> None:
    exc = _raise(ValueError("m" * 50))
    with reqrep.Server(None, resp_size=resp_size) as s, s.client() as c:
        err = _ask_error(s, c, b"q", exc)
        assert isinstance(err, reqrep.RemoteError)
        assert "ValueError".startswith(err.type_name) and err.type_name
        assert ("m" * 50).startswith(err.message)
        assert "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).endswith(
            err.traceback)


def test_a_long_traceback_keeps_its_end() -> None:
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise RuntimeError("at the bottom")

    try:
        deep(200)
    except RuntimeError as e:
        exc = e
    with reqrep.Server(None, resp_size=1024) as s, s.client() as c:
        err = _ask_error(s, c, b"q", exc)
        assert err.message == "at the bottom"
        assert err.traceback.endswith("RuntimeError: at the bottom\n")
        assert len(err.traceback.encode()) <= 1024


@pytest.mark.parametrize("cls", [reqrep.Server, reqrep.IntServer])
def test_reply_error_bad_arguments_change_nothing(cls: type) -> None:
    with cls(None) as s, s.client() as c:
        payload: Any = 1 if cls is reqrep.IntServer else b"q"
        rid = c.send(payload)
        _data, taken = s.recv()
        for bad in (None, 3, b"bytes", ValueError):
            with pytest.raises(TypeError, match="exception or a str"):
                s.reply_error(taken, bad)
        with pytest.raises(TypeError):
            s.reply_error(taken)  # type: ignore[call-arg]
        with pytest.raises(OverflowError):
            s.reply_error(-1, ValueError())
        assert c.get(rid) is None  # still unanswered
        assert s.reply(taken, payload) is True
        assert c.get_wait(rid, LONG) == payload
        # a stale id: False, as reply
        assert s.reply_error(taken, ValueError()) is False


def test_reply_error_after_cancel_is_false() -> None:
    with reqrep.Server(None) as s, s.client() as c:
        rid = c.send(b"q")
        _data, taken = s.recv()
        assert c.cancel(rid)
        assert s.reply_error(taken, KeyError("late")) is False
        assert s.stats()["slots_free"] == s.resp_slots


def test_remote_error_pickles() -> None:
    err = reqrep.RemoteError("KeyError", "'k'", "Traceback ...")
    back = pickle.loads(pickle.dumps(err))
    assert (back.type_name, back.message, back.traceback) == ("KeyError", "'k'", "Traceback ...")
    assert isinstance(back, Exception)


def test_aio_client_raises_remote_error() -> None:
    with reqrep.Server(None) as s, s.client() as c:

        def worker() -> int:
            return s.serve(lambda data: data if data != b"bad" else 1 / 0, max_requests=2,
                           timeout=LONG)

        kid = fork_call(worker)

        async def main() -> None:
            async with AsyncClient(c) as ac:
                assert await ac.req(b"good", timeout=LONG) == b"good"
                with pytest.raises(reqrep.RemoteError) as info:
                    await ac.req(b"bad", timeout=LONG)
                assert info.value.type_name == "ZeroDivisionError"

        asyncio.run(asyncio.wait_for(main(), LONG))
        assert kid.result(timeout=LONG) == 2


def test_aio_error_replies_fail_only_their_own_requests() -> None:
    """Error replies collected in one pass with other replies: each request gets its
    own answer (an error reply used to fail every request in flight)."""
    with reqrep.Server(None) as s, s.client() as c:
        def worker() -> int:
            return s.serve(lambda data: data if int(data) % 3 else 1 / 0, max_requests=300,
                           timeout=LONG)

        kid = fork_call(worker)

        async def main() -> None:
            async with AsyncClient(c) as ac:
                got = await asyncio.gather(*(ac.req(b"%d" % i, timeout=LONG)
                                             for i in range(300)), return_exceptions=True)
            for i, answer in enumerate(got):
                if i % 3:
                    assert answer == b"%d" % i, (i, answer)
                else:
                    assert isinstance(answer, reqrep.RemoteError), (i, answer)

        asyncio.run(asyncio.wait_for(main(), LONG))
        assert kid.result(timeout=LONG) == 300


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_error_payload_decodes_to_an_exception(payload: bytes) -> None:
    """An error reply's bytes come from shared memory: whatever they are, decoding gives
    an exception and nothing else happens."""
    assert isinstance(_remote.decode(payload, ""), reqrep.RemoteError)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100), st.integers(min_value=1, max_value=300))
def test_encode_fits_and_round_trips(message: str, limit: int) -> None:
    frame = _remote.encode(ValueError(message), limit, "")
    assert len(frame) <= limit
    err = _remote.decode(frame, "")
    assert isinstance(err, reqrep.RemoteError)
    assert "ValueError".startswith(err.type_name)
    if limit >= 300:
        assert err.message == message



class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words")


def test_an_unprintable_exception_still_travels() -> None:
    with reqrep.Server(None, resp_size=1024) as s, s.client() as c:
        rid = c.send(b"q")

        def handler(data: bytes) -> bytes:
            raise _Unprintable()

        assert s.serve(handler, timeout=0) == 1
        with pytest.raises(reqrep.RemoteError) as info:
            c.get_wait(rid, LONG)
        assert info.value.type_name == "test_remote_errors._Unprintable"
        assert info.value.message == "<unprintable _Unprintable object>"


# ---- passthrough handles (the NATS bridge): payloads and errors as they are


def test_passthrough_moves_encoded_payloads_and_error_frames(tmp_path: Path) -> None:
    path = tmp_path / "p.rr"
    with reqrep.Server(path, codec="pickle") as server, reqrep.Client(path) as client, \
            reqrep.Server(path) as relay, reqrep.Client(path) as raw:
        relay._passthrough()
        raw._passthrough()
        assert relay.codec == raw.codec == "pickle"
        # a relay takes the encoded request and hands back an encoded reply
        rid = client.send({"a": 1})
        data, got = relay.recv()  # type: ignore[misc]
        assert isinstance(data, bytes)
        assert reqrep._codecs.PickleCodec().loads(memoryview(data)) == {"a": 1}
        relay.reply(got, b"".join(bytes(p) for p in reqrep._codecs.PickleCodec().dumps([2])))
        assert client.get_wait(rid, LONG) == [2]
        # an error reply reaches a passthrough client as a RemoteError with its frame,
        # nothing unpickled; passed on by reply_error, the original comes back
        rid = raw.send(data)
        _, got = server.recv()  # type: ignore[misc]
        server.reply_error(got, KeyError("gone"))
        with pytest.raises(reqrep.RemoteError) as info:
            raw.get_wait(rid, LONG)
        relayed = info.value
        assert relayed.type_name == "KeyError" and relayed._frame
        rid = client.send(0)
        _, got = relay.recv()  # type: ignore[misc]
        relay.reply_error(got, relayed)
        with pytest.raises(KeyError) as original:
            client.get_wait(rid, LONG)
        assert isinstance(original.value.__cause__, reqrep.RemoteError)


def test_a_remote_error_passed_on_keeps_its_name() -> None:
    err = reqrep.RemoteError("pkg.Boom", "it broke", "Traceback...\n")
    with reqrep.Server(None) as s, s.client() as c:
        assert isinstance(_ask_error(s, c, b"x", err), reqrep.RemoteError)
    frame = _remote.encode(err, 4096, "")
    again = _remote.decode(frame, "")
    assert isinstance(again, reqrep.RemoteError)
    assert (again.type_name, again.message, again.traceback) == (
        "pkg.Boom", "it broke", "Traceback...\n")
    assert _remote.int_name(err) == b"pkg.Boom"
    assert _remote.frame_parts(b"not a frame") is None


def test_passthrough_on_an_int_channel_keeps_the_name() -> None:
    with reqrep.IntServer(None) as s, s.client() as c:
        c._passthrough()
        rid = c.send(5)
        _, got = s.recv()  # type: ignore[misc]
        s.reply_error(got, ValueError("x"))
        with pytest.raises(reqrep.RemoteError) as info:
            c.get_wait(rid, LONG)
        assert info.value.type_name == "ValueError" and info.value._frame == b"ValueError"


def test_passthrough_on_a_closed_handle_raises() -> None:
    s = reqrep.Server(None)
    s.close()
    with pytest.raises(ValueError):
        s._passthrough()


def test_a_pickled_cancellation_travels_as_a_remote_error() -> None:
    """A CancelledError (what aio.serve answers a handler cancelled at stop with) comes
    back as a RemoteError, not as the caller's own cancellation: an AsyncClient that
    met one lost the other replies of the same pass (helper-28)."""
    with reqrep.Server(None, codec="pickle") as s, s.client() as c:
        rid = c.send(1)
        _, got = s.recv()  # type: ignore[misc]
        s.reply_error(got, asyncio.CancelledError())
        with pytest.raises(reqrep.RemoteError) as info:
            c.get_wait(rid, LONG)
        assert info.value.type_name == "asyncio.exceptions.CancelledError"

        async def main() -> None:
            async with AsyncClient(c) as ac:
                first, second = ac.submit("a", LONG), ac.submit("b", LONG)
                for _ in range(2):
                    data, rid = s.recv_wait(LONG)  # type: ignore[misc]
                    if data == "a":
                        s.reply_error(rid, asyncio.CancelledError())
                    else:
                        s.reply(rid, "reply-b")
                assert await asyncio.wait_for(second, LONG) == "reply-b"
                with pytest.raises(reqrep.RemoteError):
                    await asyncio.wait_for(first, LONG)

        asyncio.run(asyncio.wait_for(main(), LONG))
