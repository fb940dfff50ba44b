"""Adversarial review reproducers (see the review report). Both FAIL on main."""

from __future__ import annotations

import threading
import time

import reqrep


def test_failed_sends_lock_a_slot_out_of_replies() -> None:
    """2^21 send() calls that find the queue full move a slot's generation half
    a record-window past its last take: the next request on that slot gets no
    taker record and its reply is refused, so req() never gets an answer."""
    s = reqrep.Server(None, req_cap=1, resp_slots=2, resp_size=64)
    c1, c2 = s.client(), s.client()
    try:
        a = c1.send(b"a")  # slot 0
        assert s.recv() is not None
        b = c2.send(b"b")  # slot 1 (slot 0 awaits its collection)
        assert s.recv() is not None
        assert s.reply(a, b"ra") and s.reply(b, b"rb")
        assert c1.get(a) == b"ra" and c2.get(b) == b"rb"
        fill = c2.send(b"fill")  # slot 1; the queue (capacity 1) is full
        assert fill is not None
        send = c1.send
        for _ in range(2**21 + 8):  # a client polling send() while workers are busy
            assert send(b"x") is None
        got = s.recv()
        assert got is not None and s.reply(got[1], b"rf")
        assert c2.get(fill) == b"rf"
        victim = c1.send(b"victim")  # slot 0 again
        assert victim is not None
        got = s.recv()
        assert got is not None and got[1] == victim
        assert s.reply(victim, b"ok"), "the reply to a live, taken request was refused"
        assert c1.get_wait(victim, timeout=2) == b"ok"
    finally:
        c1.close()
        c2.close()
        s.close()


def test_close_from_another_thread_ends_a_blocked_req() -> None:
    """SPEC 4: close() from another thread ends every call blocked on that
    object, each raising ValueError within 0.1 s."""
    s = reqrep.Server(None, req_cap=4, resp_slots=4, resp_size=64)
    c = s.client()
    out: dict[str, object] = {}

    def waiter() -> None:
        t0 = time.monotonic()
        try:
            out["result"] = c.req(b"x", timeout=5)
        except Exception as e:  # noqa: BLE001 - the type is the result
            out["result"] = type(e).__name__
        out["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.3)
    t_close = time.monotonic()
    c.close()
    th.join(10)
    assert not th.is_alive()
    assert out["result"] == "ValueError", out
    assert time.monotonic() - t_close < 2.0, out  # 0.1 s promised; generous slack
    s.close()
