"""Codecs (SPEC §7): codec= recorded in the channel's header, "pickle" (with out-of-band
buffers), "json", custom codecs, sizes, and codecs through every call, across processes
(fork and spawn), pickled handles, asyncio and the stats CLI."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import fork_call

import reqrep
from reqrep import _codecs
from reqrep.aio import AsyncClient

LONG = 30.0


@dataclass
class Point:
    x: int
    y: list[str]


class Rot13:
    """A custom codec: str payloads, rotated. Registered at import (spawned children too)."""

    name = "rot13-test"

    def dumps(self, obj: Any, /) -> bytes:
        if not isinstance(obj, str):
            raise TypeError("rot13 takes str")
        return obj.translate(_ROT).encode()

    def loads(self, view: memoryview, /) -> Any:
        text = view.tobytes().decode()
        if text == "poison":
            raise ValueError("cannot decode poison")
        return text.translate(_ROT)


_ROT = str.maketrans("abcdefghijklmnopqrstuvwxyz", "nopqrstuvwxyzabcdefghijklm")
ROT13 = Rot13()
reqrep.register_codec(ROT13)


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def _free(s: Any) -> bool:
    st_ = s.stats()
    return bool(st_["slots_free"] == s.resp_slots and s.size() == 0)


@pytest.mark.parametrize("kind", ["file", "anon", "memfd"])
def test_pickle_round_trip_through_every_call(kind: str, tmp_path: Path) -> None:
    geometry = {"resp_size": 4096, "codec": "pickle"}
    if kind == "file":
        s = reqrep.Server(tmp_path / "c", **geometry)
        c = reqrep.Client(tmp_path / "c")
    elif kind == "anon":
        s = reqrep.Server(None, **geometry)
        c = s.client()
    else:
        s = reqrep.Server.new_memfd("codec", **geometry)
        c = reqrep.Client.from_fd(s.memfd)
    with s, c:
        assert s.codec == c.codec == "pickle"
        values: list[Any] = [{"a": 1}, [1, 2.5, None], Point(3, ["x"]), "text", b"bytes", (), 7]
        ids = [c.send(v) for v in values]
        taken = s.recv_multi(3) + [s.recv(), s.recv_wait(LONG)] + s.drain()
        assert [d for d, _ in taken] == values
        for data, rid in taken:
            assert s.reply(rid, {"echo": data})
        assert [c.get_wait(i, LONG) for i in ids] == [{"echo": v} for v in values]
        fork_call(lambda: s.serve(lambda d: [d, d], max_requests=1, timeout=LONG))
        assert c.req(Point(1, []), timeout=LONG) == [Point(1, []), Point(1, [])]
        assert _free(s)


def test_json_codec_and_what_it_refuses() -> None:
    with reqrep.Server(None, codec="json", resp_size=256) as s, s.client() as c:
        rid = c.send({"k": [1, "two", None, True]})
        data, taken = s.recv()
        assert data == {"k": [1, "two", None, True]}
        s.reply(taken, "ünïcode")
        assert c.get_wait(rid, LONG) == "ünïcode"
        with pytest.raises(TypeError):
            c.send({1, 2})  # a set is not JSON: nothing sent
        with pytest.raises(TypeError):
            c.req(object(), timeout=0)
        rid = c.send(1)
        _, taken = s.recv()
        with pytest.raises(TypeError):
            s.reply(taken, {1, 2})  # nothing written: the request is still open
        assert s.reply(taken, 2) and c.get_wait(rid, LONG) == 2
        assert _free(s)


def test_the_header_records_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with reqrep.Server(path, codec="pickle") as s:
        with reqrep.Server(path) as again, reqrep.Client(path) as c:  # not asked: the file's
            assert again.codec == c.codec == "pickle"
        with reqrep.Client(path, codec="pickle") as c:
            assert c.codec == "pickle"
        with pytest.raises(ValueError, match="has codec 'pickle', asked for 'json'"):
            reqrep.Client(path, codec="json")
        with pytest.raises(ValueError, match="has codec 'pickle', asked for 'json'"):
            reqrep.Server(path, codec="json")
        assert s.stats()["slots_free"] == s.resp_slots
    raw = tmp_path / "raw"
    with reqrep.Server(raw) as s:
        assert s.codec is None
        with pytest.raises(ValueError, match="has no codec, asked for 'pickle'"):
            reqrep.Client(raw, codec="pickle")


def test_int_channels_have_no_codec(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        reqrep.IntServer(None, codec="pickle")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        reqrep.IntServer.new_memfd("x", codec="pickle")  # type: ignore[call-arg]
    with reqrep.IntServer(tmp_path / "i") as s:
        assert s.codec is None
        with pytest.raises(TypeError):
            reqrep.IntClient(tmp_path / "i", codec="pickle")  # type: ignore[call-arg]


@pytest.mark.parametrize(("codec", "error"), [
    ("nope", ValueError), ("has space", ValueError), ("x" * 32, ValueError), ("", ValueError),
    (3, TypeError), (object(), TypeError)])
def test_bad_codecs_change_nothing(codec: Any, error: type, tmp_path: Path) -> None:
    with pytest.raises(error):
        reqrep.Server(tmp_path / "c", codec=codec)
    assert not (tmp_path / "c").exists()


def test_register_codec_rules() -> None:
    reqrep.register_codec(ROT13)  # the same object again: nothing happens

    class Other(Rot13):
        pass

    with pytest.raises(ValueError, match="already registered"):
        reqrep.register_codec(Other())

    class NoLoads:
        name = "noloads"

        def dumps(self, obj: Any) -> bytes:
            return b""

    with pytest.raises(TypeError, match="loads"):
        reqrep.register_codec(NoLoads())  # type: ignore[arg-type]
    assert isinstance(ROT13, reqrep.Codec)


def test_a_codec_object_given_to_a_server_is_registered() -> None:
    class Upper:
        name = "upper-test"

        def dumps(self, obj: Any) -> bytes:
            return str(obj).upper().encode()

        def loads(self, view: memoryview) -> Any:
            return view.tobytes().decode()

    with reqrep.Server(None, codec=Upper()) as s, s.client() as c:
        assert s.codec == "upper-test"
        rid = c.send("abc")
        data, taken = s.recv()
        assert data == "ABC"
        s.reply(taken, "ok")
        assert c.get_wait(rid, LONG) == "OK"


def _spawned_rot13_worker(path: str) -> None:
    with reqrep.Server(path) as s:  # the codec comes from the header; this module registered it
        s.serve(lambda text: text + "!", max_requests=2, timeout=LONG)


def test_custom_codec_in_a_spawned_worker(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ctx = multiprocessing.get_context("spawn")
    with reqrep.Server(path, codec="rot13-test") as s, reqrep.Client(path) as c:
        proc = ctx.Process(target=_spawned_rot13_worker, args=(str(path),))
        proc.start()
        try:
            assert c.req("hello", timeout=LONG) == "hello!"
            # a request its worker cannot decode is answered with the error; serving goes on
            with pytest.raises(reqrep.RemoteError) as info:
                c.req("cbvfba", timeout=LONG)  # rot13 of "poison"
            assert info.value.type_name == "ValueError"
            assert "cannot decode poison" in info.value.message
        finally:
            proc.join(LONG)
            if proc.exitcode is None:
                proc.kill()
        assert proc.exitcode == 0
        assert _free(s)


def test_recv_of_an_undecodable_request() -> None:
    with reqrep.Server(None, codec="rot13-test") as s, s.client() as c:
        bad, good = c.send("cbvfba"), c.send("fine")
        # a batch keeps what decodes; what does not is answered with its error
        assert s.recv_multi(8) == [("fine", good)]
        with pytest.raises(reqrep.RemoteError, match="cannot decode poison"):
            c.get_wait(bad, LONG)
        bad = c.send("cbvfba")
        with pytest.raises(ValueError, match="cannot decode poison"):
            s.recv()
        with pytest.raises(reqrep.RemoteError):
            c.get_wait(bad, LONG)
        s.reply(good, "ok")
        assert c.get_wait(good, LONG) == "ok"
        assert _free(s)


def test_an_unregistered_codec_opens_and_fails_on_use(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with reqrep.Server(path, codec="rot13-test"):
        code = (
            "import reqrep, sys\n"
            f"c = reqrep.Client({str(path)!r})\n"
            "print(c.codec)\n"
            "try:\n"
            "    c.send('x')\n"
            "except ValueError as e:\n"
            "    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=LONG, check=True).stdout
        assert out.splitlines()[0] == "rot13-test"
        assert "'rot13-test' is not registered in this process" in out


def test_sizes_name_both_and_change_nothing() -> None:
    with reqrep.Server(None, codec="pickle", resp_size=128, arena=4096) as s, s.client() as c:
        with pytest.raises(ValueError, match=r"request of \d+ bytes \(encoded\) exceeds the "
                                             r"arena \(4096 bytes\)"):
            c.send(b"x" * 5000)
        assert s.size() == 0 and c.pending() == 0
        rid = c.send("small")
        _, taken = s.recv()
        with pytest.raises(ValueError, match=r"response of \d+ bytes \(encoded\) exceeds "
                                             r"resp_size \(128\)"):
            s.reply(taken, "y" * 500)
        assert s.reply(taken, "fits")
        assert c.get_wait(rid, LONG) == "fits"
        assert _free(s)


def test_errors_re_raise_the_original_on_pickle_channels() -> None:
    with reqrep.Server(None, codec="pickle", resp_size=8192) as s, s.client() as c:
        rid = c.send("q")
        s.serve(lambda d: {}[d], timeout=0)
        with pytest.raises(KeyError) as info:
            c.get_wait(rid, LONG)
        cause = info.value.__cause__
        assert isinstance(cause, reqrep.RemoteError)
        assert cause.type_name == "KeyError" and "<lambda>" in cause.traceback
        # an exception that does not pickle travels as a RemoteError
        rid = c.send("q")
        taken = s.recv()[1]
        s.reply_error(taken, Unpicklable("boom"))
        with pytest.raises(reqrep.RemoteError) as remote:
            c.get_wait(rid, LONG)
        assert remote.value.type_name == "test_codecs.Unpicklable"
        assert remote.value.message == "boom"


def _spawned_pickle_worker(server: reqrep.Server) -> None:
    server.serve(lambda d: {"got": d}, max_requests=1, timeout=LONG)


def test_pickled_handles_keep_their_codec(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with reqrep.Server(tmp_path / "c", codec="pickle") as s, s.client() as c:
        back = pickle.loads(pickle.dumps(c))
        assert back.codec == "pickle"
        back.close()
        proc = ctx.Process(target=_spawned_pickle_worker, args=(s,))
        proc.start()
        try:
            assert c.req([1, 2], timeout=LONG) == {"got": [1, 2]}
        finally:
            proc.join(LONG)
            if proc.exitcode is None:
                proc.kill()
        assert proc.exitcode == 0


def test_aio_with_a_codec() -> None:
    with reqrep.Server(None, codec="pickle") as s, s.client() as c:
        kid = fork_call(lambda: s.serve(lambda d: sorted(d), max_requests=2, timeout=LONG))

        async def main() -> list[Any]:
            async with AsyncClient(c) as ac:
                return list(await asyncio.gather(ac.req({3, 1, 2}, timeout=LONG),
                                                 ac.req({"b", "a"}, timeout=LONG)))

        assert asyncio.run(asyncio.wait_for(main(), LONG)) == [[1, 2, 3], ["a", "b"]]
        assert kid.result(timeout=LONG) == 2


def test_stats_cli_names_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "c"
    with reqrep.Server(path, codec="json"):
        run = [sys.executable, "-m", "reqrep", "stats", str(path)]
        rep = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True,
                                        timeout=LONG, check=True).stdout)
        assert rep["codec"] == "json"
        text = subprocess.run(run, capture_output=True, text=True, timeout=LONG,
                              check=True).stdout
        assert "codec" in text and "json" in text


def test_numpy_arrays_travel_out_of_band() -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(10 * 2**20 // 8, dtype=np.float64)  # 10 MiB
    pieces = _codecs.PickleCodec().dumps(arr)
    # the array's own memory is a piece: written straight into the channel, no bytes made
    assert any(isinstance(p, memoryview) and p.obj is not None and np.shares_memory(
        np.asarray(p), arr) for p in pieces)
    size = 12 * 2**20
    with reqrep.Server(None, codec="pickle", resp_size=size, arena=size) as s, \
            s.client() as c:
        rid = c.send(arr)
        data, taken = s.recv()
        assert isinstance(data, np.ndarray) and np.array_equal(data, arr)
        assert not data.flags.owndata and data.flags.writeable  # a view of the one copy
        data *= 2
        s.reply(taken, data)
        back = c.get_wait(rid, LONG)
        assert np.array_equal(back, arr * 2) and back.dtype == np.float64
        assert _free(s)


def test_pickle_buffers_out_of_band() -> None:
    big = bytearray(b"z" * 100_000)
    with reqrep.Server(None, codec="pickle", resp_size=200_000, arena=400_000) as s, \
            s.client() as c:
        rid = c.send(pickle.PickleBuffer(big))
        data, taken = s.recv()
        assert bytes(data) == bytes(big)
        s.reply(taken, {"n": len(data)})
        assert c.get_wait(rid, LONG) == {"n": 100_000}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(_json_values)
def test_codecs_round_trip_values(value: Any) -> None:
    for codec in ("pickle", "json"):
        with reqrep.Server(None, codec=codec, resp_size=8192) as s, s.client() as c:
            rid = c.send(value)
            data, taken = s.recv()
            assert data == value
            s.reply(taken, data)
            assert c.get_wait(rid, LONG) == value


def test_pickle_codec_refuses_a_truncated_frame() -> None:
    codec = _codecs.PickleCodec()
    whole = b"".join(bytes(p) for p in codec.dumps(pickle.PickleBuffer(bytearray(b"q" * 300))))
    for cut in (0, 5, 16, 40, len(whole) - 1):
        with pytest.raises(pickle.UnpicklingError):
            codec.loads(memoryview(bytearray(whole[:cut])))


class Pieces:
    """A codec whose dumps returns pieces (a list, a tuple) or, for "bad", no buffer."""

    name = "pieces-test"

    def dumps(self, obj: Any, /) -> Any:
        if obj == "bad":
            return 42
        data = obj.encode()
        return [data[:2], memoryview(data[2:5])] if len(obj) % 2 else (data[:1], data[1:])

    def loads(self, view: memoryview, /) -> Any:
        return view.tobytes().decode()


def test_a_codec_may_return_pieces() -> None:
    with reqrep.Server(None, codec=Pieces()) as s, s.client() as c:
        for text in ("abcde", "abcd", "", "x"):
            rid = c.send(text)
            data, taken = s.recv()
            expect = text if len(text) % 2 == 0 else text[:5]
            assert data == expect
            s.reply(taken, data)
            assert c.get_wait(rid, LONG) == (expect if len(expect) % 2 == 0 else expect[:5])
        with pytest.raises(TypeError, match="buffer or a list or tuple of buffers"):
            c.send("bad")
        assert _free(s)
