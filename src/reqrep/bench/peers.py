"""The peers: the same echo over other IPC mechanisms (standard library and extras).

Messages have a fixed size, so stream transports read exactly that many bytes
(no framing); message transports (``multiprocessing``, zmq, sysv_ipc,
faster-fifo) carry the payload as one message. Optional packages are imported
in the child processes only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import tempfile
from multiprocessing.connection import Connection
from typing import Any

from reqrep.bench.transports import BURST, ECHO_SIZE, Op, Transport

_MP = multiprocessing.get_context("fork")


def read_exact(fd: int, n: int) -> bytes:
    """``n`` bytes from a pipe or stream fd (a 12-byte message comes in one read)."""
    data = os.read(fd, n)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        if not data:
            raise EOFError("the other side closed")
        data = os.read(fd, n - got)
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a pipe write larger than its buffer may come back short)."""
    done = os.write(fd, data)
    while done < len(data):
        done += os.write(fd, data[done:])


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        if not data:
            raise EOFError("the other side closed")
        data = sock.recv(n - got)
        parts.append(data)
        got += len(data)
    return b"".join(parts)


# ---- standard library --------------------------------------------------------


class PipePair(Transport):
    """Two ``os.pipe()``: requests one way, responses the other."""

    def __init__(self, size: int = ECHO_SIZE) -> None:
        self.size = size
        self.fds: tuple[int, int, int, int] = (-1, -1, -1, -1)

    def open(self) -> None:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        self.fds = (req_r, req_w, resp_r, resp_w)

    def serve(self, worker: int) -> None:
        req_r, _, _, resp_w = self.fds
        n = self.size
        while True:
            write_all(resp_w, read_exact(req_r, n))

    def connect(self, client: int) -> Op:
        _, req_w, resp_r, _ = self.fds
        n = self.size
        write = os.write if n <= 4096 else write_all

        def op(msg: bytes) -> bytes:
            write(req_w, msg)
            return read_exact(resp_r, n)

        return op

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = (-1, -1, -1, -1)


class PipeBurst(PipePair):
    """Pipelined ``os.pipe`` pair: ``BURST`` writes, the worker reads what is there
    in one call and writes each reply, the client reads all the replies."""

    per_op = BURST

    def serve(self, worker: int) -> None:
        req_r, _, _, resp_w = self.fds
        n = self.size
        rest = b""
        while True:
            data = rest + os.read(req_r, n * BURST)
            whole = len(data) - len(data) % n
            for i in range(0, whole, n):
                os.write(resp_w, data[i : i + n])
            rest = data[whole:]

    def connect(self, client: int) -> Op:
        _, req_w, resp_r, _ = self.fds
        n = self.size
        burst = range(BURST)

        def op(msg: bytes) -> bytes:
            for _ in burst:
                os.write(req_w, msg)
            return read_exact(resp_r, n * BURST)[-n:]

        return op


def echo_forever(sock: socket.socket, n: int) -> None:
    """A worker's loop on a stream socket: send back every n bytes it reads."""
    sendall = sock.sendall
    while True:
        sendall(recv_exact(sock, n))


def stream_op(sock: socket.socket, n: int) -> Op:
    """A client's round trip on a stream socket: send, read the n-byte echo."""
    sendall = sock.sendall

    def op(msg: bytes) -> bytes:
        sendall(msg)
        return recv_exact(sock, n)

    return op


class SocketPair(Transport):
    """``socket.socketpair()`` (AF_UNIX stream)."""

    def __init__(self, size: int = ECHO_SIZE) -> None:
        self.size = size
        self.socks: tuple[socket.socket, socket.socket] | None = None

    def open(self) -> None:
        self.socks = socket.socketpair()

    def serve(self, worker: int) -> None:
        assert self.socks is not None
        echo_forever(self.socks[1], self.size)

    def connect(self, client: int) -> Op:
        assert self.socks is not None
        return stream_op(self.socks[0], self.size)

    def close(self) -> None:
        if self.socks is not None:
            for s in self.socks:
                s.close()
            self.socks = None


class TcpLoopback(Transport):
    """TCP over 127.0.0.1 with ``TCP_NODELAY``; the worker accepts one connection."""

    def __init__(self) -> None:
        self.listener: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)

    def serve(self, worker: int) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        echo_forever(conn, self.size)

    def connect(self, client: int) -> Op:
        assert self.listener is not None
        sock = socket.create_connection(self.listener.getsockname()[:2], timeout=10)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return stream_op(sock, self.size)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class MpPipe(Transport):
    """``multiprocessing.Pipe()`` (duplex), ``send_bytes``/``recv_bytes``."""

    def __init__(self) -> None:
        self.ends: tuple[Connection, Connection] | None = None

    def open(self) -> None:
        self.ends = _MP.Pipe()

    def serve(self, worker: int) -> None:
        assert self.ends is not None
        conn = self.ends[1]
        send, recv = conn.send_bytes, conn.recv_bytes
        while True:
            send(recv())

    def connect(self, client: int) -> Op:
        assert self.ends is not None
        conn = self.ends[0]
        send, recv = conn.send_bytes, conn.recv_bytes

        def op(msg: bytes) -> bytes:
            send(msg)
            reply: bytes = recv()
            return reply

        return op

    def close(self) -> None:
        if self.ends is not None:
            for end in self.ends:
                end.close()
            self.ends = None


class MpQueues(Transport):
    """``multiprocessing.Queue``: one request queue, one reply queue per client.

    With one client it is the plain queue pair; with several, a request carries
    its client's index and the worker routes the reply to that client's queue.
    """

    def __init__(self, clients: int = 1) -> None:
        self.clients = clients
        self.requests: Any = None
        self.replies: list[Any] = []

    def open(self) -> None:
        self.requests = _MP.Queue()
        self.replies = [_MP.Queue() for _ in range(self.clients)]

    def serve(self, worker: int) -> None:
        get = self.requests.get
        if self.clients == 1:
            put = self.replies[0].put
            while True:
                put(get())
        puts = [q.put for q in self.replies]
        while True:
            idx, data = get()
            puts[idx](data)

    def connect(self, client: int) -> Op:
        if self.clients > 1:
            return _RoutedOp(self.requests, self.replies[client], client)
        put = self.requests.put
        get = self.replies[client].get

        def op(msg: bytes) -> bytes:
            put(msg)
            return get()  # type: ignore[no-any-return]

        return op

    def close(self) -> None:
        for q in [self.requests, *self.replies]:
            if q is not None:
                q.close()
                q.cancel_join_thread()
        self.requests = None
        self.replies = []


class _RoutedOp:
    """A client's op on the request queue that several clients share: the request
    carries the client's index, the reply comes on the client's own queue.

    ``finish()`` (the runner calls it once the workload is done) flushes the queue and
    joins its feeder thread. That thread takes the queue's write lock, shared by every
    client, for each request it writes, and releases it only after writing, by which
    time the worker may have answered already: a client that exited at once could leave
    the lock taken forever and every other client's requests stuck (seen with 16 clients:
    the run hung until its timeout).
    """

    def __init__(self, requests: Any, replies: Any, client: int) -> None:
        self.requests = requests
        self.put = requests.put
        self.get = replies.get
        self.client = client

    def __call__(self, msg: bytes) -> bytes:
        self.put((self.client, msg))
        return self.get()  # type: ignore[no-any-return]

    def finish(self) -> None:
        self.requests.close()
        self.requests.join_thread()


# ---- peers from the [bench] extra --------------------------------------------


class ZmqReqRep(Transport):
    """pyzmq REQ/REP over ``ipc://`` (contexts are made after the fork)."""

    requires = "zmq"

    def __init__(self) -> None:
        self.tmpdir: str | None = None

    def _endpoint(self) -> str:
        assert self.tmpdir is not None
        return f"ipc://{self.tmpdir}/echo.sock"

    def open(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="reqrep-bench-")

    def serve(self, worker: int) -> None:
        import zmq

        sock = zmq.Context().socket(zmq.REP)
        sock.bind(self._endpoint())
        send, recv = sock.send, sock.recv
        while True:
            send(recv())

    def connect(self, client: int) -> Op:
        import zmq

        sock = zmq.Context().socket(zmq.REQ)
        sock.connect(self._endpoint())
        send, recv = sock.send, sock.recv

        def op(msg: bytes) -> bytes:
            send(msg)
            reply: bytes = recv()
            return reply

        return op

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


class SysvQueues(Transport):
    """Two System V message queues (``sysv_ipc``), removed after the run."""

    requires = "sysv_ipc"

    def __init__(self) -> None:
        self.queues: list[Any] = []

    def open(self) -> None:
        import sysv_ipc  # type: ignore[import-not-found, unused-ignore]

        self.queues = [sysv_ipc.MessageQueue(None, sysv_ipc.IPC_CREX) for _ in range(2)]

    def serve(self, worker: int) -> None:
        receive, send = self.queues[0].receive, self.queues[1].send
        while True:
            send(receive()[0])

    def connect(self, client: int) -> Op:
        send, receive = self.queues[0].send, self.queues[1].receive

        def op(msg: bytes) -> bytes:
            send(msg)
            return receive()[0]  # type: ignore[no-any-return]

        return op

    def close(self) -> None:
        for q in self.queues:
            with contextlib.suppress(Exception):
                q.remove()
        self.queues = []


class FasterFifoQueues(Transport):
    """Two ``faster_fifo.Queue`` (one each way)."""

    requires = "faster_fifo"

    def __init__(self) -> None:
        self.queues: list[Any] = []

    def open(self) -> None:
        import faster_fifo  # type: ignore[import-not-found, unused-ignore]

        self.queues = [faster_fifo.Queue() for _ in range(2)]

    def serve(self, worker: int) -> None:
        get, put = self.queues[0].get, self.queues[1].put
        while True:
            put(get(timeout=3600.0))

    def connect(self, client: int) -> Op:
        put, get = self.queues[0].put, self.queues[1].get

        def op(msg: bytes) -> bytes:
            put(msg)
            return get(timeout=3600.0)  # type: ignore[no-any-return]

        return op

    def close(self) -> None:
        for q in self.queues:
            with contextlib.suppress(Exception):
                q.close()
        self.queues = []


# ---- single process -----------------------------------------------------------


class PipeSingle(Transport):
    """One process: write the request, read it, write the reply, read it."""

    def connect(self, client: int) -> Op:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        n = self.size
        read, write = os.read, os.write

        def op(msg: bytes) -> bytes:
            write(req_w, msg)
            write(resp_w, read(req_r, n))
            return read(resp_r, n)

        return op


class SocketPairSingle(Transport):
    """One process: the same over one ``socketpair``, both ends."""

    def connect(self, client: int) -> Op:
        a, b = socket.socketpair()
        n = self.size

        def op(msg: bytes) -> bytes:
            a.sendall(msg)
            b.sendall(b.recv(n))
            return a.recv(n)

        return op
