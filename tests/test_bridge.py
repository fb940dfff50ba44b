"""The NATS bridge (SPEC §8) against a real nats-server: round trips of every channel
kind through a forward and a serve bridge, errors that travel, faults (a killed
bridge, no responders, no answer in time, a NATS restart), load sharing, a clean stop
on SIGTERM, callers and workers that are plain nats-py, and the CLI's exit codes.

Security (credentials, TLS) is in test_bridge_security.py; two hosts in
test_bridge_netns.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from natsproc import Procs, run_python

import reqrep

pytestmark = pytest.mark.timeout(180, method="thread")


def _bridged(procs: Procs, tmp_path: Path, handler: str, *, subject: str = "svc",
             make: str = "Server", args: str = "", forward_args: tuple[str, ...] = (),
             setup: str = "") -> Path:
    """Workers on host B's channel, a serve bridge on it, a forward bridge on host A's
    channel: the path clients of host A use."""
    url = procs.servers[0].url if procs.servers else procs.nats().url
    b, a = tmp_path / f"b-{subject}.rr", tmp_path / f"a-{subject}.rr"
    procs.worker(b, handler, make=make, args=args, setup=setup)
    procs.bridge("serve", b, url, subject)
    procs.bridge("forward", a, url, subject, *forward_args)
    return a


def test_str_bytes_and_text_keep_their_kind(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "data[::-1]")
    with reqrep.Client(a) as c:
        assert c.req(b"hello", 30) == b"olleh"
        assert c.req("h\u00e9llo \U0001f600", 30) == "\U0001f600 oll\u00e9h"
        assert c.req(b"", 30) == b""
        big = bytes(range(256)) * 15  # under the default resp_size (4096)
        assert c.req(big, 30) == big[::-1]


def test_int_channel(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "data * 2 if data != 7 else 1 // 0", make="IntServer",
                 forward_args=("--int",))
    with reqrep.IntClient(a) as c:
        for v in (0, 1, -5, 2**61, -(2**62)):
            assert c.req(v, 30) == v * 2
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(7, 30)
        assert info.value.type_name == "ZeroDivisionError"


def test_pickle_channel_objects_and_original_exception(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "{'got': data} if data != 'boom' else {}['missing']",
                 args=", codec='pickle'", forward_args=("--codec", "pickle"))
    with reqrep.Client(a, codec="pickle") as c:
        assert c.req({"x": [1, 2.5, None]}, 30) == {"got": {"x": [1, 2.5, None]}}
        with pytest.raises(KeyError) as info:
            c.req("boom", 30)
        # the original exception, with the remote traceback as its cause
        assert isinstance(info.value.__cause__, reqrep.RemoteError)
        assert "missing" in info.value.__cause__.traceback


def test_json_channel(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "[data, len(data)]", args=", codec='json'",
                 forward_args=("--codec", "json"))
    with reqrep.Client(a, codec="json") as c:
        assert c.req({"k": "v\u00e9"}, 30) == [{"k": "v\u00e9"}, 1]


def test_codec_mismatch_is_an_error_not_garbage(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "data", args=", codec='json'",
                 forward_args=("--codec", "pickle"))
    with reqrep.Client(a, codec="pickle") as c, pytest.raises(reqrep.RemoteError) as info:
        c.req({"x": 1}, 30)
    assert "WireError" in info.value.type_name
    assert "codec 'json'" in info.value.message


def test_worker_error_travels_with_its_traceback(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "b'%d' % int(data)")
    with reqrep.Client(a) as c:
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(b"not a number", 30)
        assert info.value.type_name == "ValueError"
        assert "invalid literal" in info.value.message
        assert 'File "<string>", line 5, in <lambda>' in info.value.traceback  # the worker's
        assert c.req(b"12", 30) == b"12"  # and the worker goes on


def test_what_does_not_fit_is_an_error_reply(procs: Procs, tmp_path: Path) -> None:
    procs.nats("max_payload: 2000")
    a = _bridged(procs, tmp_path, "data * 2")
    with reqrep.Client(a) as c:
        assert c.req(b"x" * 900, 30) == b"x" * 1800
        with pytest.raises(reqrep.RemoteError) as info:  # the reply is too large for NATS
            c.req(b"x" * 1500, 30)
        assert info.value.type_name == "nats.errors.MaxPayloadError"
        with pytest.raises(reqrep.RemoteError) as info:  # the request is
            c.req(b"x" * 2500, 30)
        assert info.value.type_name == "nats.errors.MaxPayloadError"
        assert c.req(b"fine", 30) == b"finefine"


def test_no_responders_is_a_remote_error_at_once(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    a = tmp_path / "a.rr"
    procs.bridge("forward", a, url, "nobody", "--timeout", "60")
    with reqrep.Client(a) as c:
        t0 = time.monotonic()
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(b"anyone?", 60)
        assert info.value.type_name == "nats.errors.NoRespondersError"
        assert time.monotonic() - t0 < 50  # not the timeout: NATS says so at once


def test_no_answer_in_time_is_a_remote_error(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "time.sleep(30) or data", forward_args=("--timeout", "1"))
    with reqrep.Client(a) as c, pytest.raises(reqrep.RemoteError) as info:
        c.req(b"slow", 60)
    assert info.value.type_name == "nats.errors.TimeoutError"


def test_a_local_reply_too_slow_for_the_serve_bridge(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "time.sleep(3) or data")
    procs.bridge("serve", b, url, "svc", "--timeout", "0.5")
    procs.bridge("forward", a, url, "svc", "--timeout", "60")
    with reqrep.Client(a) as c:
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(b"slow", 60)
        assert info.value.type_name == "TimeoutError"
        assert "no reply from the channel's workers in 0.5 s" in info.value.message


def test_killed_forward_bridge_is_a_dead_worker(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "time.sleep(60) or data")
    procs.bridge("serve", b, url, "svc")
    fwd = procs.bridge("forward", a, url, "svc", "--timeout", "120")
    with reqrep.Client(a) as c:
        rid = c.send(b"held")
        assert rid is not None
        deadline = time.monotonic() + 30
        while c._worker(rid) != fwd.pid:  # the bridge is its worker of record
            assert time.monotonic() < deadline, "the forward bridge never took the request"
            time.sleep(0.02)
        fwd.signal(signal.SIGKILL)
        with pytest.raises(reqrep.WorkerDiedError) as info:
            c.get_wait(rid, 60)
        assert info.value.pid == fwd.pid


def test_stats_names_the_bridge_as_worker_of_record(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "time.sleep(60) or data")
    serve = procs.bridge("serve", b, url, "svc")
    fwd = procs.bridge("forward", a, url, "svc", "--timeout", "120")

    def row_of(path: Path, pid: int) -> str:
        out = subprocess.run([sys.executable, "-m", "reqrep", "stats", str(path)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return next(line for line in out.splitlines() if line.strip().startswith(f"{pid} "))

    with reqrep.Client(a) as c:
        rid = c.send(b"held")
        assert rid is not None
        deadline = time.monotonic() + 30
        while c._worker(rid) != fwd.pid:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # host A: the forward bridge took the request; host B: the serve bridge owns
        # the slot of the request it passed on
        assert "reqrep bridge forward" in row_of(a, fwd.pid)
        row = row_of(b, serve.pid)
        assert "reqrep bridge serve" in row and row.split()[2] == "1", row
        c.cancel(rid)


def test_nats_restart_reconnects_and_goes_on(procs: Procs, tmp_path: Path) -> None:
    a = _bridged(procs, tmp_path, "data + b'!'")
    server = procs.servers[0]
    with reqrep.Client(a) as c:
        assert c.req(b"before", 30) == b"before!"
        server.stop()
        server.start()
        deadline = time.monotonic() + 60
        while True:  # until both bridges are back (a request in the outage may fail)
            try:
                if c.req(b"after", 5) == b"after!":
                    break
            except reqrep.RemoteError:
                pass
            assert time.monotonic() < deadline, "the bridges did not come back"
            time.sleep(0.2)
        for i in range(20):
            assert c.req(b"%d" % i, 30) == b"%d!" % i
    assert "reconnected to NATS" in procs.procs[1].log()
    assert "reconnected to NATS" in procs.procs[2].log()


def test_two_serve_bridges_share_the_load(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    for side in ("b1", "b2"):
        path = tmp_path / f"{side}.rr"
        procs.worker(path, f"b'{side}'")
        procs.bridge("serve", path, url, "svc")
    a = tmp_path / "a.rr"
    procs.bridge("forward", a, url, "svc")
    with reqrep.Client(a) as c:
        seen = {c.req(b"who", 30) for _ in range(200)}
    assert seen == {b"b1", b"b2"}


def test_sigterm_stops_taking_and_finishes_in_flight(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    took = "(sys.stderr.write('took\\n') and None) or time.sleep(1) or data"
    workers = procs.worker(b, took, count=2)
    serve = procs.bridge("serve", b, url, "svc")
    fwd = procs.bridge("forward", a, url, "svc", "--timeout", "60")
    with reqrep.Client(a) as c:
        ids = [c.send(b"job %d" % i) for i in range(4)]
        deadline = time.monotonic() + 30
        while sum(w.log().count("took") for w in workers) < 2:  # both workers busy
            assert time.monotonic() < deadline
            time.sleep(0.02)
        serve.signal(signal.SIGTERM)
        fwd.signal(signal.SIGTERM)
        got = [c.get_wait(rid, 60) for rid in ids if rid is not None]
        assert fwd.wait(60) == 0, fwd.log()
        assert serve.wait(60) == 0, serve.log()
    # what the bridges had taken was answered, not dropped
    assert got == [b"job %d" % i for i in range(4)]
    assert "stopping" in serve.log() and "stopped" in serve.log()


def test_serve_waits_for_the_workers_to_make_the_channel(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    serve = procs.bridge("serve", b, url, "svc", "--wait", "60", connected=False)
    time.sleep(0.5)  # the bridge is waiting for b.rr (no timing is asserted)
    procs.worker(b, "data * 2", make="IntServer")
    serve.wait_log("taking requests")
    procs.bridge("forward", a, url, "svc", "--int")
    with reqrep.IntClient(a) as c:
        assert c.req(21, 30) == 42


def test_a_plain_nats_py_caller(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b = tmp_path / "b.rr"
    procs.worker(b, "data.upper() if data != b'boom' else 1 // 0")
    procs.bridge("serve", b, url, "svc")
    out = run_python(f"""
        import asyncio, sys, nats
        async def main():
            nc = await nats.connect({url!r})
            r = await nc.request("svc", b"hello", timeout=30)
            print(r.data, r.headers)
            r = await nc.request("svc", "caf\\u00e9".encode(), timeout=30,
                                 headers={{"Reqrep-Kind": "str"}})
            print(r.data.decode(), r.headers)
            r = await nc.request("svc", b"boom", timeout=30)
            print(r.headers["Reqrep-Error"])
            r = await nc.request("svc", b"\\xff", timeout=30, headers={{"Reqrep-Kind": "str"}})
            print(r.headers["Reqrep-Error"])
            await nc.close()
            print("reqrep" in sys.modules)
        asyncio.run(main())
        """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "b'HELLO' None"
    assert lines[1] == "CAF\u00c9 {'Reqrep-Kind': 'str'}"
    assert lines[2] == "ZeroDivisionError"
    assert lines[3] == "reqrep.bridge._wire.WireError"
    assert lines[4] == "False"  # no reqrep in that process


def test_a_plain_nats_py_worker(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    worker = procs.start([sys.executable, "-c", f"""
import asyncio, sys, nats
async def main():
    nc = await nats.connect({url!r})
    async def answer(msg):
        if msg.data == b"bad":
            await nc.publish(msg.reply, b"no such thing",
                             headers={{"Reqrep-Error": "LookupError"}})
        else:
            await msg.respond(msg.data * 2)
    await nc.subscribe("svc", queue="reqrep", cb=answer)
    await nc.flush()
    sys.stderr.write("ready\\n"); sys.stderr.flush()
    await asyncio.Future()
asyncio.run(main())
"""], "plain-worker")
    worker.wait_log("ready")
    a = tmp_path / "a.rr"
    procs.bridge("forward", a, url, "svc")
    with reqrep.Client(a) as c:
        assert c.req(b"ab", 30) == b"abab"
        with pytest.raises(reqrep.RemoteError) as info:
            c.req(b"bad", 30)
        assert info.value.type_name == "LookupError"
        assert info.value.message == "no such thing"


def test_stats_flag_prints_a_rate(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    b = tmp_path / "b.rr"
    procs.worker(b, "data")
    serve = procs.bridge("serve", b, url, "svc", "--stats", "0.2")
    a = tmp_path / "a.rr"
    procs.bridge("forward", a, url, "svc")
    with reqrep.Client(a) as c:
        for _ in range(50):
            c.req(b"x", 30)
    serve.wait_log("50 answered")
    assert "req/s" in serve.log()


def test_in_process_coroutines_and_many_in_flight(procs: Procs, tmp_path: Path) -> None:
    """The coroutines, in one event loop with an AsyncClient: 500 requests, 64 at once."""
    import asyncio

    from reqrep.aio import AsyncClient
    from reqrep.bridge import Connection, forward, serve

    url = procs.nats().url
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "data + b'.'", count=2)

    async def main() -> list[bytes | str | None]:
        stop, serving = asyncio.Event(), asyncio.Event()
        conn = Connection(url)
        bridges = [asyncio.create_task(serve(b, "svc", connection=conn, stop=stop,
                                             ready=serving)),
                   asyncio.create_task(forward(a, "svc", connection=conn, stop=stop))]
        # The subscription first: a request before it is answered "no responders".
        await asyncio.wait_for(serving.wait(), 30)
        deadline = time.monotonic() + 30
        while not a.exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        with reqrep.Client(a) as c:
            async with AsyncClient(c) as ac:
                while await ac.req(b"warm", 5) is None:
                    pass
                answers = await asyncio.gather(*(ac.req(b"%d" % i, 60) for i in range(500)))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*bridges), 60)
        return answers

    answers = asyncio.run(main())
    assert answers == [b"%d." % i for i in range(500)]


def test_cli_exit_codes(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reqrep", "bridge", *argv],
                              capture_output=True, text=True, timeout=90)

    r = run("serve", str(tmp_path / "missing.rr"), "--nats", url, "--subject", "s")
    assert r.returncode == 66 and "cannot open the channel" in r.stderr
    dead = f"nats://127.0.0.1:{procs.servers[0].port + 1}"
    r = run("forward", str(tmp_path / "a.rr"), "--nats", dead, "--subject", "s")
    assert r.returncode == 69 and "cannot connect to NATS" in r.stderr
    r = run("forward", str(tmp_path / "a.rr"), "--nats", "nats://u:secret@127.0.0.1:1",
            "--subject", "s")
    assert r.returncode != 0 and "NATS_USER" in r.stderr
    r = run("forward", str(tmp_path / "a.rr"), "--subject", "s", "--inflight", "0")
    assert r.returncode == 2
    r = run("serve", str(tmp_path / "a.rr"), "--subject", "a b")
    assert r.returncode == 2 and "not a NATS subject" in r.stderr
    r = run("serve", str(tmp_path / "a.rr"), "--subject", "s", "--queue", "")
    assert r.returncode == 2 and "not a NATS queue group" in r.stderr
    r = run("forward", str(tmp_path / "a.rr"), "--nats", url, "--subject", "s",
            "--creds", str(tmp_path / "none.creds"))
    assert r.returncode == 78 and "credentials file" in r.stderr


def test_a_signal_while_starting_stops_at_once(procs: Procs, tmp_path: Path) -> None:
    url = procs.nats().url
    serve = procs.bridge("serve", tmp_path / "later.rr", url, "svc", "--wait", "600",
                         connected=False)
    time.sleep(1)  # it waits for the channel (no timing is asserted)
    serve.signal(signal.SIGTERM)
    assert serve.wait(60) == 0, serve.log()


def test_a_message_nats_py_cannot_parse_does_not_deafen_the_bridge(
        procs: Procs, tmp_path: Path) -> None:
    """One message whose status line is not UTF-8 stops nats-py's reader for good
    (and silently); the bridge sees it and reconnects."""
    import socket

    a = _bridged(procs, tmp_path, "data + b'!'")
    server = procs.servers[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.recv(4096)  # INFO
        header = b"NATS/1.0 \xff\xfe\r\n\r\n"
        s.sendall(b'CONNECT {"verbose":false,"headers":true}\r\n'
                  + b"HPUB svc _INBOX.poison %d %d\r\n" % (len(header), len(header) + 1)
                  + header + b"p\r\nPING\r\n")
        assert b"PONG" in s.recv(4096)
    serve = procs.procs[1]
    serve.wait_log("NATS reader stopped")
    serve.wait_log("reconnected to NATS")
    with reqrep.Client(a) as c:
        deadline = time.monotonic() + 60
        while True:
            try:
                if c.req(b"again", 5) == b"again!":
                    break
            except reqrep.RemoteError:
                pass
            assert time.monotonic() < deadline, serve.log()


def test_wire_format_rejects_what_does_not_fit() -> None:
    from reqrep.bridge import WireError
    from reqrep.bridge._wire import Channel, decode, encode

    int_chan, str_chan, json_chan = Channel(True, None), Channel(False, None), \
        Channel(False, "json")
    assert encode(int_chan, -2) == ((-2).to_bytes(8, "little", signed=True), None)
    assert decode(int_chan, (-2).to_bytes(8, "little", signed=True), None) == -2
    for bad in (b"", b"1234567", b"123456789"):
        with pytest.raises(WireError, match="8 bytes"):
            decode(int_chan, bad, None)
    with pytest.raises(WireError, match="Int channel"):
        decode(int_chan, bytes(8), {"Reqrep-Kind": "str"})
    with pytest.raises(WireError, match="not UTF-8"):
        decode(str_chan, b"\xff", {"Reqrep-Kind": "str"})
    with pytest.raises(WireError, match="not UTF-8"):  # a surrogate is not text either
        decode(str_chan, b"\xed\xa0\x80", {"Reqrep-Kind": "str"})
    with pytest.raises(WireError, match="no codec"):
        decode(str_chan, b"{}", {"Reqrep-Kind": "json"})
    assert decode(json_chan, b"{}", None) == b"{}"
    assert decode(json_chan, b"{}", {"Reqrep-Kind": "json"}) == b"{}"
    with pytest.raises(WireError, match="codec 'json'"):
        decode(json_chan, b"{}", {"Reqrep-Kind": "str"})


def test_bad_arguments_change_nothing(tmp_path: Path) -> None:
    import asyncio

    from reqrep.bridge import forward, serve

    for bad in ({"subject": ""}, {"subject": "a b"}, {"subject": "a..b"}, {"inflight": 0},
                {"timeout": 0}, {"inflight": True}):
        kwargs = {"subject": "s", **bad}
        with pytest.raises(ValueError):
            asyncio.run(forward(tmp_path / "x.rr", **kwargs))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            asyncio.run(serve(tmp_path / "x.rr", **kwargs))  # type: ignore[arg-type]
    assert not (tmp_path / "x.rr").exists()

