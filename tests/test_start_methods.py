"""SPEC §7's codecs and travelling errors with workers started by spawn and forkserver
(and fork): the handle travels as a Process argument, the codec comes from the channel's
header (a custom one registered when the child imports this module), and errors come
back from the C ``serve``, from ``reply_error`` and from ``reqrep.aio.serve``."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import reqrep
from reqrep.aio import serve as aio_serve

LONG = 30.0
METHODS = ["spawn", "forkserver", "fork"]


class Reverse:
    """A custom codec (str, reversed on the wire), registered at import: a spawned or
    forkserver child registers it when it unpickles the target and imports us."""

    name = "reverse-start-methods"

    def dumps(self, obj: Any, /) -> bytes:
        return str(obj)[::-1].encode()

    def loads(self, view: memoryview, /) -> Any:
        return view.tobytes().decode()[::-1]


reqrep.register_codec(Reverse())


class Refused(Exception):
    """An exception of this module's own: it unpickles in the client."""


def handler(data: Any) -> Any:
    if data == "raise":
        raise Refused("refused by the worker")
    if data == "keyerror":
        return {}["missing"]
    return {"echo": data}


def serve_c(server: reqrep.Server, n: int) -> None:
    server.serve(handler, max_requests=n, timeout=LONG)


def serve_reply_error(server: reqrep.Server | reqrep.IntServer, n: int) -> None:
    for _ in range(n):
        msg = server.recv_wait(LONG)
        assert msg is not None
        server.reply_error(msg[1], Refused(f"no to {msg[0]!r}"))


def serve_aio(server: reqrep.Server, n: int) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        seen = 0

        def counted(data: Any) -> Any:
            nonlocal seen
            seen += 1
            if seen >= n:
                stop.set()  # finish what is in flight, then return
            return handler(data)

        await aio_serve(server, counted, stop=stop, drain_timeout=LONG)

    asyncio.run(main())


def serve_echo(server: reqrep.Server, n: int) -> None:
    server.serve(lambda d: d, max_requests=n, timeout=LONG)


@contextmanager
def worker(method: str, target: Any, server: Any, n: int) -> Iterator[None]:
    proc = multiprocessing.get_context(method).Process(target=target, args=(server, n))
    proc.start()
    try:
        yield
    finally:
        proc.join(LONG)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    assert proc.exitcode == 0


@pytest.mark.parametrize("method", METHODS)
def test_pickle_codec_and_errors_from_serve(method: str, tmp_path: Any) -> None:
    with reqrep.Server(tmp_path / "c", codec="pickle", resp_size=8192) as s, s.client() as c:
        with worker(method, serve_c, s, 3):
            assert c.req((1, "two", [3.0]), timeout=LONG) == {"echo": (1, "two", [3.0])}
            with pytest.raises(Refused, match="refused by the worker") as info:
                c.req("raise", timeout=LONG)
            cause = info.value.__cause__
            assert isinstance(cause, reqrep.RemoteError)
            assert cause.type_name == "test_start_methods.Refused"
            assert "in handler" in cause.traceback
            with pytest.raises(KeyError):
                c.req("keyerror", timeout=LONG)


@pytest.mark.parametrize("method", METHODS)
def test_numpy_array_out_of_band(method: str, tmp_path: Any) -> None:
    np = pytest.importorskip("numpy")
    size = 1 << 20
    with reqrep.Server(tmp_path / "c", codec="pickle", resp_size=2 * size,
                       arena=4 * size) as s, s.client() as c:
        with worker(method, serve_echo, s, 1):
            a = np.arange(size // 8, dtype=np.float64).reshape(256, -1)
            back = c.req(a, timeout=LONG)
            assert back.dtype == a.dtype and back.shape == a.shape
            assert (back == a).all()


@pytest.mark.parametrize("method", METHODS)
def test_json_and_custom_codecs(method: str, tmp_path: Any) -> None:
    with reqrep.Server(tmp_path / "j", codec="json") as s, s.client() as c:
        with worker(method, serve_echo, s, 1):
            assert c.req({"a": [1, None, "x"]}, timeout=LONG) == {"a": [1, None, "x"]}
    with reqrep.Server(tmp_path / "r", codec="reverse-start-methods") as s, s.client() as c:
        with worker(method, serve_echo, s, 1):
            assert c.req("hello", timeout=LONG) == "hello"


@pytest.mark.parametrize("method", METHODS)
def test_reply_error_str_and_int(method: str, tmp_path: Any) -> None:
    with reqrep.Server(tmp_path / "s") as s, s.client() as c:
        with worker(method, serve_reply_error, s, 1):
            with pytest.raises(reqrep.RemoteError) as info:
                c.req(b"q", timeout=LONG)
            assert info.value.type_name == "test_start_methods.Refused"
            assert info.value.message == "no to b'q'"
            assert "Refused" in str(info.value)
    with reqrep.IntServer(tmp_path / "i") as s, s.client() as c:
        with worker(method, serve_reply_error, s, 1):
            with pytest.raises(reqrep.RemoteError) as ierr:
                c.req(7, timeout=LONG)
            assert ierr.value.type_name == "test_start_methods.Refused"[:32]


@pytest.mark.parametrize("method", METHODS)
def test_aio_serve_answers_errors(method: str, tmp_path: Any) -> None:
    with reqrep.Server(tmp_path / "c", codec="pickle", resp_size=8192) as s, s.client() as c:
        with worker(method, serve_aio, s, 2):
            with pytest.raises(Refused) as info:
                c.req("raise", timeout=LONG)
            assert isinstance(info.value.__cause__, reqrep.RemoteError)
            assert c.req("fine", timeout=LONG) == {"echo": "fine"}
