"""The transport interface of the benchmark rows, and the reqrep transports.

A transport is one way of echoing a payload between a client and a worker. Its
life in one run of a row:

* ``open()`` in the parent, before any fork (creates the channel, pipes, queues);
* ``serve(worker)`` in each worker process: echo forever (the parent kills it);
* ``connect(client)`` in each client process: returns the *op*, a callable that
  sends its argument and returns the echoed response (a batch op does ``per_op``
  round trips and returns the last response);
* ``close()`` in the parent once the children are gone.

Single-process transports (``workers = 0`` rows) do everything inside the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reqrep

Op = Callable[..., Any]  # an aio transport's op is its zero-argument starter

ECHO_SIZE = 12
BURST = 64


def make_payload(size: int) -> bytes:
    """A deterministic payload of ``size`` bytes."""
    pattern = b"reqrep-bench"
    return (pattern * (size // len(pattern) + 1))[:size]


class Transport:
    """Base class: a 12-byte ``bytes`` echo, one round trip per op."""

    size: int = ECHO_SIZE
    per_op: int = 1

    def payload(self) -> Any:
        return make_payload(self.size)

    def open(self) -> None:
        """In the parent, before forking."""

    def serve(self, worker: int) -> None:
        """In a worker process: echo until killed."""
        raise NotImplementedError

    def connect(self, client: int) -> Op:
        """In a client process: the op that does ``per_op`` round trips."""
        raise NotImplementedError

    def close(self) -> None:
        """In the parent, after the run."""


# ---- reqrep ----------------------------------------------------------------


def _echo(data: Any) -> Any:
    """The workers' handler: the reply is the request."""
    return data


class _Reqrep(Transport):
    """What the reqrep transports share: an anonymous channel made in ``open``
    (inherited by fork), a worker that echoes, clients from ``server.client()``."""

    server: Any = None

    def __init__(self, spin: int | None = None) -> None:
        self.spin = spin

    def _server(self) -> Any:
        assert self.server is not None, "open() first"
        return self.server

    def serve(self, worker: int) -> None:
        self._server().serve(_echo)  # the worker loop in C, a Python handler per request

    def connect(self, client: int) -> Op:
        c = self._server().client()
        if self.spin is not None:
            c.spin = self.spin
        op: Op = c.req
        return op

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class ReqrepStr(_Reqrep):
    """``Server``/``Client`` on an anonymous channel shared by fork; ``client.req``."""

    def __init__(self, spin: int | None = None, size: int = ECHO_SIZE) -> None:
        super().__init__(spin)
        self.size = size

    def open(self) -> None:
        resp_size = max(4096, self.size)
        arena = max(64 * 1024, 16 * self.size)
        self.server = reqrep.Server(
            None, req_cap=1024, resp_slots=64, resp_size=resp_size, arena=arena, spin=self.spin
        )


class ReqrepInt(_Reqrep):
    """``IntServer``/``IntClient``: one int64 per request and response."""

    def payload(self) -> Any:
        return 0x0123456789AB  # 12 bytes' worth of meaning, one int64 on the wire

    def open(self) -> None:
        self.server = reqrep.IntServer(None, req_cap=1024, resp_slots=64, spin=self.spin)


class ReqrepStrBurst(ReqrepStr):
    """Pipelined Str: the client sends ``BURST`` requests, then collects the replies.

    The worker takes them with ``recv_wait_multi`` (one lock acquisition for many)
    when ``multi`` is true, else one ``recv_wait`` at a time.
    """

    per_op = BURST

    def __init__(self, multi: bool, spin: int | None = None) -> None:
        super().__init__(spin)
        self.multi = multi

    def serve(self, worker: int) -> None:
        srv = self._server()
        reply = srv.reply
        if not self.multi:
            recv_wait = srv.recv_wait
            while True:
                msg = recv_wait()
                if msg is not None:
                    reply(msg[1], msg[0])
        recv_wait_multi = srv.recv_wait_multi
        while True:
            for data, rid in recv_wait_multi(BURST):
                reply(rid, data)

    def connect(self, client: int) -> Op:
        c = self._server().client()
        send_wait = c.send_wait
        get_wait = c.get_wait
        burst = range(BURST)

        def op(msg: Any) -> Any:
            ids = [send_wait(msg) for _ in burst]
            out = None
            for rid in ids:
                if rid is None:  # only on a timeout, and there is none
                    raise RuntimeError("send_wait gave up")
                out = get_wait(rid)
            return out

        return op


class ReqrepSingle(Transport):
    """One process: ``send`` → ``recv`` → ``reply`` → ``get`` (no worker process)."""

    def __init__(self, variant: str) -> None:
        self.variant = variant

    def payload(self) -> Any:
        return 0x0123456789AB if self.variant == "int" else make_payload(ECHO_SIZE)

    def connect(self, client: int) -> Op:
        return _single(reqrep.IntServer(None) if self.variant == "int" else reqrep.Server(None))


def _single(server: Any) -> Op:
    """send, recv, reply, get in this one process, on ``server``'s channel."""
    c = server.client()
    send, recv, reply, get = c.send, server.recv, server.reply, c.get

    def op(msg: Any) -> Any:
        rid = send(msg)
        got = recv()
        if rid is None or got is None:
            raise RuntimeError("the queue was full or empty")
        reply(got[1], got[0])
        return get(rid)

    return op
