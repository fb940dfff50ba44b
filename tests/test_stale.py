"""Stale ids and ABA (SPEC section 4): a stale id never sees or touches another request."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import Closer, id_gen, id_index, make_server, open_client

VARIANTS = ["str", "int"]


def _chan(variant: str, closer: Closer, resp_slots: int = 1, req_cap: int = 16) -> tuple[Any, Any]:
    s = closer(make_server(variant, "anon", req_cap=req_cap, resp_slots=resp_slots))
    return s, closer(open_client(s, "anon"))


def _v(variant: str, n: int) -> Any:
    """A payload of the channel's variant, distinct per n."""
    return n if variant == "int" else f"payload-{n}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_reply_after_cancel(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    data, rid = s.recv()
    assert rid == ident
    assert c.cancel(ident) is True
    assert s.reply(rid, _v(variant, 2)) is False
    assert c.get(ident) is None
    assert s.stats()["slots_free"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_before_recv_then_worker_gets_stale_id(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    assert c.cancel(ident) is True
    assert c.pending() == 0
    got = s.recv()
    assert got == (_v(variant, 1), ident)
    assert s.reply(ident, _v(variant, 2)) is False
    assert s.stats()["replies"] == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_get_after_cancel(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    assert c.cancel(ident) is True
    assert c.get(ident) is None
    assert c.get_wait(ident, timeout=0) is None
    assert c.get_wait(ident, timeout=0.01) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_twice(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    assert c.cancel(ident) is True
    assert c.cancel(ident) is False
    assert s.stats()["slots_free"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_double_reply(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    _, rid = s.recv()
    assert s.reply(rid, _v(variant, 10)) is True
    assert s.reply(rid, _v(variant, 11)) is False
    assert c.get(ident) == _v(variant, 10)
    assert s.reply(rid, _v(variant, 12)) is False  # collected: stale
    assert s.stats()["replies"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_reply_after_clear(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer, resp_slots=2)
    a = c.send(_v(variant, 1))
    b = c.send(_v(variant, 2))
    _, ra = s.recv()
    s.clear()
    assert s.reply(ra, _v(variant, 3)) is False
    assert s.reply(b, _v(variant, 4)) is False
    assert c.get(a) is None and c.get(b) is None
    assert c.cancel(a) is False and c.cancel(b) is False
    st = s.stats()
    assert (st["slots_free"], st["slots_acquired"], st["slots_ready"]) == (2, 0, 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cleared_ready_response_is_gone(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    _, rid = s.recv()
    assert s.reply(rid, _v(variant, 2))
    s.clear()
    assert c.get(ident) is None
    n = c.send(_v(variant, 5))
    assert n is not None and n != ident
    assert c.get(ident) is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_cancel_after_reply_keeps_response(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer)
    ident = c.send(_v(variant, 1))
    _, rid = s.recv()
    assert s.reply(rid, _v(variant, 2)) is True
    assert c.cancel(ident) is False
    assert c.pending() == 1
    assert c.get(ident) == _v(variant, 2)
    assert c.pending() == 0
    assert c.cancel(ident) is False
    assert s.stats()["slots_free"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_recycled_slot_old_id_is_stale(variant: str, closer: Closer) -> None:
    """resp_slots=1 forces the new request into the very same slot index."""
    s, c = _chan(variant, closer, resp_slots=1)
    old = c.send(_v(variant, 1))
    assert c.cancel(old) is True
    new = c.send(_v(variant, 2))
    assert new is not None
    assert id_index(new) == id_index(old) == 0
    assert id_gen(new) != id_gen(old)
    assert new != old

    # the old id neither sees nor touches the new request
    assert c.get(old) is None
    assert c.cancel(old) is False
    assert c.get(new) is None  # still pending
    assert s.stats()["slots_acquired"] == 1
    assert s.recv() == (_v(variant, 1), old)  # the cancelled request is still delivered...
    assert s.reply(old, _v(variant, 66)) is False  # ...but its reply is refused
    assert c.get(new) is None
    assert s.stats()["slots_ready"] == 0
    assert s.recv() == (_v(variant, 2), new)
    assert s.reply(old, _v(variant, 67)) is False
    assert s.reply(new, _v(variant, 3)) is True
    assert c.cancel(old) is False
    assert c.get(old) is None  # the new response is not visible through the old id
    assert c.get(new) == _v(variant, 3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_recycled_after_get_and_after_clear(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer, resp_slots=1)
    seen: list[int] = []
    for round_ in range(50):
        ident = c.send(_v(variant, round_))
        assert ident is not None and id_index(ident) == 0
        assert ident not in seen, "an id must never be reissued"
        for old in seen[-5:]:
            assert c.get(old) is None
            assert s.reply(old, _v(variant, -1)) is False
            assert c.cancel(old) is False
        seen.append(ident)
        data, rid = s.recv()
        assert (data, rid) == (_v(variant, round_), ident)
        how = round_ % 3
        if how == 0:
            assert s.reply(rid, _v(variant, round_ + 1000))
            assert c.get(ident) == _v(variant, round_ + 1000)
        elif how == 1:
            assert c.cancel(ident)
        else:
            s.clear()
        assert s.stats()["slots_free"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_old_id_cannot_cancel_new_replied_request(variant: str, closer: Closer) -> None:
    s, c = _chan(variant, closer, resp_slots=1)
    old = c.send(_v(variant, 1))
    _, _ = s.recv()
    assert s.reply(old, _v(variant, 2))
    assert c.get(old) == _v(variant, 2)
    new = c.send(_v(variant, 3))
    _, rid = s.recv()
    assert rid == new
    assert s.reply(new, _v(variant, 4))
    assert c.cancel(old) is False
    assert c.get(old) is None
    assert s.stats()["slots_ready"] == 1
    assert c.get(new) == _v(variant, 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_ids_from_other_channel_are_stale(variant: str, closer: Closer) -> None:
    s1, c1 = _chan(variant, closer, resp_slots=2)
    s2, c2 = _chan(variant, closer, resp_slots=2)
    for i in range(3):  # move channel 1's generations ahead of channel 2's
        assert c1.cancel(c1.send(_v(variant, i)))
    a = c1.send(_v(variant, 1))
    b = c2.send(_v(variant, 2))
    s2.recv()
    if a == b:
        pytest.skip("both channels issued the same id; nothing to tell apart")
    assert s2.reply(a, _v(variant, 3)) is False
    assert c2.cancel(a) is False
    assert s2.stats()["slots_acquired"] == 1
