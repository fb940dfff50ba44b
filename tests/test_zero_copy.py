"""Zero-copy replies (SPEC section 9): ``get``/``get_wait``/``req(copy=False)`` return a
``reqrep.View`` pinned in its slot; ``Server.reply_buffer`` writes a reply in place.

Lifetimes (release, ``with``, garbage collection, double release, release after close),
what a View may outlive (its client object, ``close()``), NumPy on both, fork, and the
crash of a process holding either (the slot comes back, the client learns of a dead
worker). Every wait is bounded; the crash tests run the holder in a forked child.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procs import Shared, children, fork_call, sigkill

import reqrep

pytestmark = pytest.mark.timeout(120, method="thread")

WAIT = 30.0


def _pair(**geometry: Any) -> tuple[reqrep.Server, reqrep.Client]:
    server: reqrep.Server = reqrep.Server(None, **geometry)
    return server, server.client()


def _replied(server: reqrep.Server, client: reqrep.Client, reply: Any) -> int:
    """A request whose reply is there to collect: its id."""
    rid = client.send(b"request")
    assert rid is not None
    taken = server.recv()
    assert taken is not None
    assert server.reply(taken[1], reply)
    return rid


def _taken(server: reqrep.Server, client: reqrep.Client) -> tuple[int, int]:
    """A request sent and taken, not yet answered: (client's id, server's id)."""
    rid = client.send(b"request")
    assert rid is not None
    taken = server.recv()
    assert taken is not None
    return rid, taken[1]


# --------------------------------------------------------------------------- View


def test_view_reads_the_reply_in_place_and_frees_the_slot_on_release() -> None:
    server, client = _pair(resp_size=1 << 16)
    payload = bytes(range(256)) * 40
    rid = _replied(server, client, payload)
    view = client.get(rid, copy=False)
    assert isinstance(view, reqrep.View)
    assert len(view) == len(payload) and bytes(view) == payload
    assert view.tobytes() == payload and view.id == rid and not view.is_text
    assert not view.released and "10240 bytes" in repr(view)
    assert server.stats()["slots_free"] == server.stats()["resp_slots"] - 1
    mv = memoryview(view)
    assert mv.readonly
    with pytest.raises(TypeError):
        mv[0] = 1
    mv.release()
    view.release()
    assert view.released and "released" in repr(view)
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]
    view.release()  # a second release does nothing
    for op in (lambda: memoryview(view), view.tobytes, lambda: len(view)):
        with pytest.raises(ValueError, match="released"):
            op()


def test_a_pinned_reply_is_collected_once() -> None:
    server, client = _pair()
    rid = _replied(server, client, b"once")
    view = client.get(rid, copy=False)
    assert client.get(rid) is None
    assert client.get(rid, copy=False) is None
    assert client.get_wait(rid, 0.01) is None
    assert client.cancel(rid) is False
    assert bytes(view) == b"once"  # nothing above touched it
    view.release()
    assert client.get(rid) is None
    assert client.pending() == 0


def test_with_block_and_garbage_collection_release() -> None:
    server, client = _pair()
    free = server.stats()["resp_slots"]
    with client.get(_replied(server, client, b"a"), copy=False) as view:
        assert bytes(view) == b"a"
    assert view.released and server.stats()["slots_free"] == free
    view = client.get(_replied(server, client, b"b"), copy=False)
    del view
    gc.collect()
    assert server.stats()["slots_free"] == free


def test_text_replies_and_small_and_empty_ones() -> None:
    server, client = _pair()
    view = client.get(_replied(server, client, "h\u00e9llo"), copy=False)
    assert view.is_text and bytes(view).decode() == "h\u00e9llo"
    view.release()
    view = client.get(_replied(server, client, b""), copy=False)
    assert len(view) == 0 and bytes(view) == b""
    view.release()


def test_release_refused_while_a_buffer_made_from_it_lives() -> None:
    server, client = _pair(resp_size=1 << 16)
    data = np.arange(1000, dtype=np.int64)
    view = client.get(_replied(server, client, data.tobytes()), copy=False)
    arr = np.frombuffer(view, dtype=np.int64)
    assert (arr == data).all() and not arr.flags.writeable
    with pytest.raises(BufferError, match="release or drop them first"):
        view.release()
    assert not view.released and (arr == data).all()
    del arr
    view.release()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_an_array_keeps_its_view_and_slot_alive() -> None:
    server, client = _pair(resp_size=1 << 16)
    view = client.get(_replied(server, client, np.ones(100).tobytes()), copy=False)
    arr = np.frombuffer(view, dtype=np.float64)
    del view
    gc.collect()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"] - 1
    assert arr.sum() == 100
    del arr
    gc.collect()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_req_and_get_wait_with_copy_false() -> None:
    server, client = _pair()
    rid = client.send(b"x")
    assert rid is not None
    assert client.get_wait(rid, 0.01, copy=False) is None  # not replied yet: no View
    taken = server.recv()
    assert taken is not None
    server.reply(taken[1], b"late")
    with client.get_wait(rid, WAIT, copy=False) as view:
        assert bytes(view) == b"late"

    import threading

    def answer() -> None:
        got = server.recv_wait(WAIT)
        assert got is not None
        server.reply(got[1], got[0] + b"!")

    t = threading.Thread(target=answer)
    t.start()
    view = client.req(b"ask", WAIT, copy=False)
    t.join(WAIT)
    assert isinstance(view, reqrep.View) and bytes(view) == b"ask!"
    view.release()
    assert client.req(b"nobody answers", 0.05, copy=False) is None
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_an_error_reply_raises_and_frees_its_slot() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    server.reply_error(sid, KeyError("k"))
    with pytest.raises(reqrep.RemoteError, match="KeyError"):
        client.get(rid, copy=False)
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_int_channels_accept_copy_and_return_ints() -> None:
    server = reqrep.IntServer(None)
    client = server.client()
    rid = client.send(5)
    assert rid is not None
    taken = server.recv()
    assert taken is not None
    server.reply(taken[1], 10)
    assert client.get(rid, copy=False) == 10
    assert not hasattr(server, "reply_buffer")


def test_a_view_outlives_close_and_its_client_object() -> None:
    server, client = _pair()
    view = client.get(_replied(server, client, b"kept"), copy=False)
    client.close()
    assert client.closed
    with pytest.raises(ValueError, match="closed"):
        client.send(b"x")
    assert bytes(view) == b"kept"  # still mapped
    view.release()
    assert "closed" in repr(client)
    other = server.client()
    view = other.get(_replied(server, other, b"orphan"), copy=False)
    del other
    gc.collect()  # the client object is gone but for the View's reference
    assert bytes(view) == b"orphan"
    view.release()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_pickle_channel_reads_out_of_band_buffers_in_place() -> None:
    server = reqrep.Server(None, codec="pickle", resp_size=1 << 22)
    client = server.client()
    big = np.arange(100_000, dtype=np.int64)
    rid = client.send("give")
    assert rid is not None
    taken = server.recv()
    assert taken is not None
    server.reply(taken[1], {"array": big, "tag": "x"})
    got = client.get(rid, copy=False)
    assert got["tag"] == "x" and (got["array"] == big).all()
    assert not got["array"].flags.writeable  # read in place, from the slot
    assert server.stats()["slots_free"] == server.stats()["resp_slots"] - 1
    del got
    gc.collect()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]
    # in band (no buffers): the object is a copy, the slot is free at once
    rid = client.send("small")
    assert rid is not None
    taken = server.recv()
    assert taken is not None
    server.reply(taken[1], {"a": [1, 2]})
    assert client.get(rid, copy=False) == {"a": [1, 2]}
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_a_view_in_a_forked_child_reads_as_released_and_leaves_the_pin(tmp_path: Path) -> None:
    """The child's copy shows memory its parent may release at any time: it reads as
    released, and releasing it there leaves the parent's pin alone."""
    server, client = _pair()
    view = client.get(_replied(server, client, b"parent's"), copy=False)

    def child() -> tuple[bool, str, int]:
        try:
            bytes(view)
            raised = ""
        except ValueError as e:
            raised = str(e)
        released = view.released
        view.release()
        return released, raised, server.stats()["slots_free"]

    released, raised, free = fork_call(child).result(timeout=WAIT)
    assert released and "released" in raised
    assert free == server.stats()["resp_slots"] - 1
    assert server.stats()["slots_free"] == server.stats()["resp_slots"] - 1
    assert bytes(view) == b"parent's"
    view.release()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_nobody_else_collects_a_pinned_reply(tmp_path: Path) -> None:
    """A pinned slot is PINNED, not READING: another process (or a second look) holding
    the id finds it collected, and cannot free it under the View."""
    server, client = _pair()
    rid = _replied(server, client, b"only mine")
    view = client.get(rid, copy=False)

    def child() -> tuple[Any, Any, bool, int]:
        return (client.get(rid), client.get_wait(rid, 0.05, copy=False), client.cancel(rid),
                client._check(rid))

    got, got_view, cancelled, state = fork_call(child).result(timeout=WAIT)
    assert got is None and got_view is None and not cancelled and state == 2
    assert bytes(view) == b"only mine"
    assert server.stats()["slots_free"] == server.stats()["resp_slots"] - 1
    view.release()


def test_a_process_killed_holding_a_view_gives_its_slot_back(tmp_path: Path) -> None:
    path = tmp_path / "chan.rr"
    server = reqrep.Server(path, resp_slots=1)
    flag = Shared(1)

    def holder() -> None:
        client = reqrep.Client(path)
        rid = client.send(b"mine")
        assert rid is not None
        view = client.get_wait(rid, WAIT, copy=False)
        assert view is not None and bytes(view) == b"mine!"
        flag[0] = 1
        signal.pause()

    with children() as kids:
        kid = fork_call(holder)
        kids.append(kid)
        got = server.recv_wait(WAIT)
        assert got is not None
        server.reply(got[1], got[0] + b"!")
        assert flag.wait_for(0, 1)
        assert server.stats()["slots_free"] == 0
        sigkill(kid.pid)
        kid.kill()
        with reqrep.Client(path) as client:  # the one slot comes back to a sender
            assert client.send_wait(b"next", WAIT) is not None


# --------------------------------------------------------------------------- ReplyBuffer


def test_reply_buffer_commit_publishes_what_was_written() -> None:
    server, client = _pair(resp_size=1 << 20)
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 1 << 20)
    assert isinstance(buf, reqrep.ReplyBuffer) and len(buf) == 1 << 20 and buf.id == sid
    arr = np.frombuffer(buf, dtype=np.uint8)
    arr[:] = 7
    with pytest.raises(BufferError):
        buf.commit()  # the array still writes into the slot
    assert client.get(rid) is None  # nothing was published
    del arr
    assert buf.commit() is True and buf.done
    with client.get(rid, copy=False) as view:
        assert len(view) == 1 << 20 and bytes(memoryview(view)[:3]) == b"\x07\x07\x07"
    with pytest.raises(ValueError, match="already committed"):
        buf.commit()
    buf.abort()  # nothing to give back after a commit
    with pytest.raises(ValueError):
        memoryview(buf)


def test_reply_buffer_commit_fewer_bytes_and_small_replies() -> None:
    server, client = _pair()
    for n, keep in ((100, 60), (10, 10), (5, 0)):
        rid, sid = _taken(server, client)
        with server.reply_buffer(sid, n) as buf:  # type: ignore[union-attr]
            with memoryview(buf) as mv:
                mv[:] = bytes(range(n))
            if keep != n:
                assert buf.commit(keep)
        assert client.get(rid) == bytes(range(keep))
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 4)
    assert buf is not None
    with pytest.raises(ValueError):
        buf.commit(5)
    with pytest.raises(ValueError, match="nbytes must be between 0 and 4"):
        buf.commit(-1)
    assert not buf.done
    buf.abort()


def test_abort_leaves_the_request_pending_for_any_replier(tmp_path: Path) -> None:
    path = tmp_path / "chan.rr"
    server = reqrep.Server(path)
    client = server.client()
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 8)
    assert buf is not None
    memoryview(buf)[:] = b"unwanted"
    buf.abort()
    assert buf.done and client.get(rid) is None
    # another process answers it after the abort
    kid = fork_call(lambda: reqrep.Server(path).reply(sid, b"from another"))
    assert kid.result(timeout=WAIT) is True
    assert client.get_wait(rid, WAIT) == b"from another"


def test_an_exception_in_the_with_block_aborts_then_reply_works() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    with pytest.raises(KeyError):
        with server.reply_buffer(sid, 3) as buf:  # type: ignore[union-attr]
            memoryview(buf)[:] = b"bad"
            raise KeyError("handler failed")
    assert client.get(rid) is None
    assert server.reply_error(sid, KeyError("handler failed"))
    with pytest.raises(reqrep.RemoteError, match="KeyError"):
        client.get(rid)


def test_garbage_collection_aborts_an_uncommitted_buffer() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 3)
    del buf
    gc.collect()
    assert client.get(rid) is None
    assert server.reply(sid, b"ok") and client.get(rid) == b"ok"


def test_reply_buffer_for_stale_or_cancelled_requests() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    assert server.reply(sid, b"done")
    assert server.reply_buffer(sid, 3) is None  # answered already
    assert client.get(rid) == b"done"
    assert server.reply_buffer(sid, 3) is None  # recycled
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 3)
    assert buf is not None
    assert client.cancel(rid)  # while the worker writes
    with pytest.raises(RuntimeError, match="open ReplyBuffer"):  # one claim at a time
        server.reply_buffer(sid, 3)
    with pytest.raises(RuntimeError, match="open ReplyBuffer"):
        server.reply(sid, b"x")
    assert buf.commit() is False
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 3)
    assert buf is not None
    assert client.cancel(rid)
    buf.abort()  # the cancelled request's slot is freed by the abort
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_reply_buffer_bad_arguments_change_nothing() -> None:
    server, client = _pair(resp_size=4096)
    rid, sid = _taken(server, client)
    with pytest.raises(ValueError, match="4097 bytes exceeds resp_size .4096."):
        server.reply_buffer(sid, 4097)
    with pytest.raises(ValueError, match="nbytes must be between 0 and"):
        server.reply_buffer(sid, -1)
    with pytest.raises(TypeError):
        server.reply_buffer(sid, "3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        server.reply_buffer(sid)  # type: ignore[call-arg]
    coded = reqrep.Server(None, codec="pickle")
    with pytest.raises(TypeError, match="codec 'pickle'"):
        coded.reply_buffer(sid, 3)
    assert server.reply(sid, b"fine") and client.get(rid) == b"fine"


def test_a_buffer_keeps_the_channel_open_and_refuses_a_forked_child() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    buf = server.reply_buffer(sid, 2)
    assert buf is not None

    def child() -> str:
        try:
            buf.commit()
        except ValueError as e:
            return str(e)
        return "committed"

    assert "another process" in fork_call(child).result(timeout=WAIT)
    server.close()
    memoryview(buf)[:] = b"ok"
    assert buf.commit()
    assert client.get(rid) == b"ok"


def test_a_worker_killed_holding_a_buffer_is_a_dead_worker(tmp_path: Path) -> None:
    path = tmp_path / "chan.rr"
    server = reqrep.Server(path, resp_slots=2)
    client = reqrep.Client(path)
    flag = Shared(1)

    def worker() -> None:
        s = reqrep.Server(path)
        got = s.recv_wait(WAIT)
        assert got is not None
        buf = s.reply_buffer(got[1], 16)
        assert buf is not None
        flag[0] = 1
        signal.pause()

    with children() as kids:
        kid = fork_call(worker)
        kids.append(kid)
        rid = client.send(b"work")
        assert rid is not None
        assert flag.wait_for(0, 1)
        sigkill(kid.pid)
        kid.kill()
        with pytest.raises(reqrep.WorkerDiedError) as info:
            client.get_wait(rid, WAIT)
        assert info.value.pid == kid.pid
    assert server.stats()["slots_free"] == 2


def test_view_and_buffer_types_are_not_made_directly_nor_pickled() -> None:
    for cls in (reqrep.View, reqrep.ReplyBuffer):
        with pytest.raises(TypeError):
            cls()
    server, client = _pair()
    view = client.get(_replied(server, client, b"x"), copy=False)
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(view)
    view.release()
    assert os.getpid() > 0


# --------------------------------------------------------------------------- request Views

BIG = 3000  # over the 32 bytes a request cell holds: such a request lies in the arena


def test_recv_copy_false_pins_the_request_in_the_arena() -> None:
    server, client = _pair(arena=8192, req_cap=16)
    payload = bytes(range(256)) * 11 + b"tail"
    rid = client.send(payload)
    assert rid is not None
    got = server.recv(copy=False)
    assert got is not None
    view, sid = got
    assert isinstance(view, reqrep.View) and view.id == sid and bytes(view) == payload
    assert server.stats()["arena_used"] >= len(payload)  # pinned, though taken
    assert client.send(b"y" * BIG) is not None  # room after it
    assert client.send(b"z" * BIG) is None  # not over it: the arena is a ring
    assert bytes(view) == payload
    view.release()
    assert client.send(b"z" * BIG) is None  # the "y" request still holds its room...
    taken = server.recv()
    assert taken is not None and taken[0] == b"y" * BIG
    assert client.send(b"z" * BIG) is not None  # ...until it is taken
    for v, _ in server.drain(copy=False):
        v.release()
    assert server.stats()["arena_used"] == 0


def test_recv_variants_with_copy_false_and_small_requests() -> None:
    server, client = _pair(arena=1 << 16)
    for data in (b"small", "t\u00e9xt" * 20, b"x" * BIG):
        assert client.send(data) is not None
    views = server.recv_multi(2, copy=False) + server.recv_wait_multi(5, WAIT, copy=False)
    assert [bytes(v) for v, _ in views] == [b"small", ("t\u00e9xt" * 20).encode(), b"x" * BIG]
    assert [v.is_text for v, _ in views] == [False, True, False]
    for v, _ in views:
        v.release()
    assert client.send(b"w" * BIG) is not None
    got = server.recv_wait(WAIT, copy=False)
    assert got is not None and bytes(got[0]) == b"w" * BIG
    del got
    gc.collect()
    assert server.stats()["arena_used"] == 0
    assert server.recv(copy=False) is None and server.recv_wait(0.01, copy=False) is None


def test_a_request_view_answers_through_a_reply_buffer() -> None:
    server, client = _pair(arena=1 << 21, resp_size=1 << 20)
    data = np.random.default_rng(1).integers(0, 255, 1 << 20, dtype=np.uint8)
    rid = client.send(data)
    assert rid is not None
    got = server.recv(copy=False)
    assert got is not None
    with got[0] as request, server.reply_buffer(got[1], len(request)) as reply:  # type: ignore[union-attr]
        np.frombuffer(reply, dtype=np.uint8)[:] = np.frombuffer(request, dtype=np.uint8)
    with client.get_wait(rid, WAIT, copy=False) as answer:  # type: ignore[union-attr]
        assert (np.frombuffer(answer, dtype=np.uint8) == data).all()


def test_more_pinned_requests_than_pins_are_views_of_copies() -> None:
    server, client = _pair(arena=1 << 20, req_cap=64)
    pins = reqrep._format.ARENA_PINS
    for _ in range(pins + 4):
        assert client.send(b"p" * BIG) is not None
    views = server.drain(copy=False)
    assert len(views) == pins + 4 and all(bytes(v) == b"p" * BIG for v, _ in views)
    for v, _ in views:
        v.release()
    assert server.stats()["arena_used"] == 0


def test_pickle_requests_read_in_place() -> None:
    server = reqrep.Server(None, codec="pickle", arena=1 << 22, resp_size=1 << 12)
    client = server.client()
    big = np.arange(50_000, dtype=np.float64)
    assert client.send({"x": big}) is not None
    got = server.recv(copy=False)
    assert got is not None
    obj, _ = got
    assert (obj["x"] == big).all() and not obj["x"].flags.writeable
    assert server.stats()["arena_used"] > 0
    del obj, got
    gc.collect()
    assert server.stats()["arena_used"] == 0


def test_a_forked_childs_release_leaves_the_parents_request_pin(tmp_path: Path) -> None:
    server, client = _pair(arena=8192, req_cap=16)
    assert client.send(b"a" * BIG) is not None
    got = server.recv(copy=False)
    assert got is not None
    view = got[0]

    def child() -> tuple[bool, int]:
        released = view.released
        view.release()
        return released, int(server.stats()["arena_used"])

    assert fork_call(child).result(timeout=WAIT) == (True, server.stats()["arena_used"])
    assert server.stats()["arena_used"] >= BIG
    view.release()
    assert server.stats()["arena_used"] == 0


def test_a_worker_killed_holding_a_request_view_gives_the_room_back(tmp_path: Path) -> None:
    path = tmp_path / "chan.rr"
    server = reqrep.Server(path, arena=8192, req_cap=16)
    client = reqrep.Client(path)
    flag = Shared(1)

    def worker() -> None:
        s = reqrep.Server(path)
        got = s.recv_wait(WAIT, copy=False)
        assert got is not None
        flag[0] = 1
        signal.pause()

    with children() as kids:
        kid = fork_call(worker)
        kids.append(kid)
        assert client.send(b"a" * 5000) is not None
        assert flag.wait_for(0, 1)
        assert client.send(b"b" * 5000) is None  # the pinned request holds the room
        sigkill(kid.pid)
        kid.kill()
        # a sender short of room takes the dead worker's pin back
        assert client.send_wait(b"b" * 5000, WAIT) is not None
    assert server.stats()["recoveries"] >= 1


def test_a_pin_count_left_high_by_a_dead_process_does_not_stop_sends(tmp_path: Path) -> None:
    """A receiver killed between giving a pin back and lowering the header's count leaves
    the count above the live pins: senders look at the pins themselves, find none, and
    use the whole arena again."""
    from layout import ChannelMap

    from reqrep import _format

    path = tmp_path / "chan.rr"
    server = reqrep.Server(path, arena=8192, req_cap=16)
    client = reqrep.Client(path)
    with ChannelMap.open(path) as cm:
        _format.HEADER.put(cm.mm, 0, "pins", 1)
    for size in (1, 100, 5000, 8000):
        assert client.send(b"s" * size) is not None, size
        got = server.recv()
        assert got is not None and len(got[0]) == size


def test_a_reply_not_of_this_process_comes_as_a_view_of_a_copy(tmp_path: Path) -> None:
    """Only the process that sent a request pins its reply (the sweep judges a pinned slot
    by that process); another process holding the id gets a View of a copy."""
    server, client = _pair()
    rid = _replied(server, client, b"copied")

    def child() -> tuple[bytes, bool, int]:
        view = client.get(rid, copy=False)
        assert view is not None
        free = server.stats()["slots_free"]  # collected and freed: a copy
        return bytes(view), view.released, free

    data, released, free = fork_call(child).result(timeout=WAIT)
    assert data == b"copied" and not released and free == server.stats()["resp_slots"]
    assert client.get(rid) is None


def test_a_codec_that_fails_on_a_view_does_not_keep_the_pin() -> None:
    server = reqrep.Server(None, codec="pickle", arena=8192, req_cap=16)
    client = server.client()
    client._passthrough()  # sends bytes as they are: here, not a pickle frame
    assert client.send(b"\x00" * 3000) is not None
    with pytest.raises(Exception) as info:
        server.recv(copy=False)
    assert info.value is not None
    assert server.stats()["arena_used"] == 0  # the failure's frames hold no View


def test_views_and_buffers_in_reference_cycles_are_collected(tmp_path: Path) -> None:
    """A View or ReplyBuffer kept by its own channel object (an attribute of a subclass)
    is a cycle: the collector frees it, and with it the pin or the claim."""

    class KeepingClient(reqrep.Client):
        last: Any = None

    class KeepingServer(reqrep.Server):
        buf: Any = None

    path = tmp_path / "chan.rr"
    server = reqrep.Server(path)
    client = KeepingClient(path)
    rid = _replied(server, client, b"kept")
    client.last = client.get(rid, copy=False)
    del client
    gc.collect()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]
    other = reqrep.Client(path)
    rid, sid = _taken(server, other)
    keeper = KeepingServer(path)
    keeper.buf = keeper.reply_buffer(sid, 4)
    del keeper
    gc.collect()  # the buffer is aborted: the request can be answered again
    assert server.reply(sid, b"late") and other.get(rid) == b"late"


def test_an_abort_gives_the_request_back_to_its_taker(tmp_path: Path) -> None:
    """A process that claims a request's reply and aborts leaves the request as it was:
    the worker that took it may still answer, and it is the one whose death counts."""
    path = tmp_path / "chan.rr"
    server = reqrep.Server(path)
    client = reqrep.Client(path)
    rid, sid = _taken(server, client)  # taken by this process

    def helper() -> bool:
        buf = reqrep.Server(path).reply_buffer(sid, 4)
        assert buf is not None
        buf.abort()
        return True

    assert fork_call(helper).result(timeout=WAIT)  # the helper has exited since
    assert client.get_wait(rid, 0.2) is None  # no WorkerDiedError: the taker lives
    assert server.reply(sid, b"mine") and client.get(rid) == b"mine"


def test_close_with_a_live_view_cancels_what_the_client_had_pending() -> None:
    server, client = _pair(resp_slots=4)
    view = client.get(_replied(server, client, b"held"), copy=False)
    for _ in range(3):
        assert client.send(b"pending") is not None
    assert server.stats()["slots_free"] == 0
    client.close()
    assert server.stats()["slots_free"] == 3  # the pending ones, at once
    assert bytes(view) == b"held"
    view.release()
    assert server.stats()["slots_free"] == 4


def test_with_blocks_that_raise_keep_their_exception() -> None:
    server, client = _pair()
    rid, sid = _taken(server, client)
    with pytest.raises(KeyError):
        with server.reply_buffer(sid, 4) as buf:  # type: ignore[union-attr]
            m = memoryview(buf)
            raise KeyError("mine")
    m.release()
    del buf, m
    gc.collect()  # aborted when dropped
    assert server.reply(sid, b"ok") and client.get(rid) == b"ok"
    view = client.get(_replied(server, client, b"v"), copy=False)
    with pytest.raises(KeyError):
        with view:
            m = memoryview(view)
            raise KeyError("mine")
    del m, view
    gc.collect()
    assert server.stats()["slots_free"] == server.stats()["resp_slots"]


def test_copy_takes_only_bools_and_passthrough_handles_write_in_place(tmp_path: Path) -> None:
    server, client = _pair()
    rid = _replied(server, client, b"x")
    for bad in (None, 0, "no"):
        with pytest.raises(TypeError, match="copy must be True or False"):
            client.get(rid, copy=bad)  # type: ignore[call-overload]
    assert client.get(rid, copy=True) == b"x"
    # a passthrough handle (a bridge's) writes a codec channel's frames as they are
    path = tmp_path / "coded.rr"
    coded = reqrep.Server(path, codec="pickle")
    asker = reqrep.Client(path)
    rid = asker.send({"a": 1})
    assert rid is not None
    raw = reqrep.Server(path)
    raw._passthrough()
    got = raw.recv()
    assert got is not None
    from reqrep import _codecs

    frame = b"".join(bytes(part) for part in _codecs.lookup("pickle").dumps("answer"))
    with raw.reply_buffer(got[1], len(frame)) as buf:  # type: ignore[union-attr]
        memoryview(buf)[:] = frame
    assert asker.get(rid) == "answer"
    coded.close()
