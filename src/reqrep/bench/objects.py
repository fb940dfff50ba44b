"""Rows that move Python objects rather than bytes (SPEC §6): reqrep's ``"pickle"`` codec
against the peers that pickle for you. Two payloads: a small dict, and a 1 MiB NumPy
array (which pickle protocol 5 hands out of band). Every worker gets the object and
sends it back: it unpickles and pickles again, whatever the transport."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import tempfile
from typing import Any

import reqrep
from reqrep.bench.transports import Op, Transport, _echo

_MP = multiprocessing.get_context("fork")
ARRAY_BYTES = 1 << 20


def small_object() -> dict[str, Any]:
    """A request as many services carry one: a few keys, a short list."""
    return {"id": 12345, "op": "add", "args": [1, 2, 3], "ok": True, "tag": "reqrep"}


def array_object() -> Any:
    """A 1 MiB float64 array."""
    import numpy as np

    return np.arange(ARRAY_BYTES // 8, dtype=np.float64)


def _payload(kind: str) -> Any:
    return array_object() if kind == "array" else small_object()


class ReqrepPickle(Transport):
    """A Str channel with ``codec="pickle"`` (anonymous, shared by fork): ``client.req``
    with the object; the worker is ``server.serve`` (the C loop) echoing it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server: Any = None

    def payload(self) -> Any:
        return _payload(self.kind)

    def open(self) -> None:
        size = 2 * ARRAY_BYTES if self.kind == "array" else 4096
        self.server = reqrep.Server(None, req_cap=64, resp_slots=16, resp_size=size,
                                    arena=4 * size, codec="pickle")

    def serve(self, worker: int) -> None:
        self.server.serve(_echo)

    def connect(self, client: int) -> Op:
        op: Op = self.server.client().req
        return op

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class MpQueuePickle(Transport):
    """A ``multiprocessing.Queue`` pair, which pickles what it carries."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.queues: tuple[Any, Any] | None = None

    def payload(self) -> Any:
        return _payload(self.kind)

    def open(self) -> None:
        self.queues = (_MP.Queue(), _MP.Queue())

    def serve(self, worker: int) -> None:
        assert self.queues is not None
        get, put = self.queues[0].get, self.queues[1].put
        while True:
            put(get())

    def connect(self, client: int) -> Op:
        assert self.queues is not None
        put, get = self.queues[0].put, self.queues[1].get

        def op(obj: Any) -> Any:
            put(obj)
            return get()

        return op

    def close(self) -> None:
        for q in self.queues or ():
            q.close()
            q.cancel_join_thread()
        self.queues = None


def _zmq_send(sock: Any, obj: Any) -> None:
    """Protocol-5 pickle, its out-of-band buffers as zero-copy frames."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    sock.send_multipart([head, *(b.raw() for b in buffers)], copy=False)


def _zmq_recv(sock: Any) -> Any:
    frames = sock.recv_multipart(copy=False)
    return pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])


class ZmqPickle(Transport):
    """pyzmq REQ/REP over ``ipc://``: ``send_pyobj`` for the small object; for the array,
    protocol-5 pickles with the buffers as zero-copy frames (pyzmq's fastest way)."""

    requires = "zmq"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmpdir: str | None = None

    def payload(self) -> Any:
        return _payload(self.kind)

    def _endpoint(self) -> str:
        assert self.tmpdir is not None
        return f"ipc://{self.tmpdir}/objects.sock"

    def open(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="reqrep-bench-")

    def serve(self, worker: int) -> None:
        import zmq

        sock = zmq.Context().socket(zmq.REP)
        sock.bind(self._endpoint())
        if self.kind == "array":
            while True:
                _zmq_send(sock, _zmq_recv(sock))
        while True:
            sock.send_pyobj(sock.recv_pyobj())

    def connect(self, client: int) -> Op:
        import zmq

        sock = zmq.Context().socket(zmq.REQ)
        sock.connect(self._endpoint())

        def op(obj: Any) -> Any:
            if self.kind == "array":
                _zmq_send(sock, obj)
                return _zmq_recv(sock)
            sock.send_pyobj(obj)
            return sock.recv_pyobj()

        return op

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
