"""Type stubs for ``reqrep._reqrep``, the CPython binding of the reqrep C core.

Conventions shared by every class below:

* Timeouts are seconds (``float``): ``None`` waits forever, ``0`` tries once,
  a negative or NaN value raises ``ValueError``. Waiting calls release the GIL
  and honour one deadline; a signal runs its Python handler, and an exception
  from the handler (``KeyboardInterrupt`` on Ctrl-C) comes out of the call.
* Ids are ints (``generation << 32 | slot index``). A stale id is rejected
  without side effects: ``reply`` -> ``False``, ``get``/``get_wait`` -> ``None``,
  ``cancel`` -> ``False``. An id that is negative or ``>= 2**64`` raises
  ``OverflowError``; a non-int raises ``TypeError``.
* Every object is a context manager; ``close()`` is idempotent and any other
  call on a closed object raises ``ValueError``.
"""

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Literal, TypeAlias, TypedDict, final, overload

from typing_extensions import Buffer, Self, TypeVar, disjoint_base

from reqrep._codecs import Codec as _Codec

_StrPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""A file-system path: ``str``, ``bytes`` or ``os.PathLike``."""

_StrIn: TypeAlias = bytes | str | Buffer
"""Str payload accepted by ``send``/``req``/``reply``: ``str`` travels as UTF-8
and arrives as ``str``; ``bytes`` and any other buffer arrive as ``bytes``."""

_StrOut: TypeAlias = bytes | str
"""Str payload returned by ``recv``/``get``/``req``: ``str`` if it was sent as ``str``."""

_T = TypeVar("_T", default=_StrOut)
"""What a Str channel carries, for type checkers only: ``bytes | str`` unless told
(``reqrep.Client[bytes]`` for a bytes-only program, ``reqrep.Server[dict[str, int]]``
or ``Server[Any]`` for a codec channel, which a ``codec=`` argument makes ``Any``).
Requests and replies take ``_T`` or any buffer."""

class _Stats(TypedDict):
    requests: int
    replies: int
    send_full: int
    recv_empty: int
    recoveries: int
    size: int
    capacity: int
    resp_slots: int
    resp_size: int
    slots_free: int
    slots_acquired: int
    slots_ready: int

class _StrStats(_Stats):
    arena_cap: int
    arena_used: int

class _Layout(TypedDict):
    """Where a channel's regions lie in its file (``_layout()``; for tools and tests)."""

    off_bells: int
    off_cells: int
    off_slots: int
    off_arena: int
    slot_stride: int
    total_size: int

_format: tuple[tuple[str, str, int, int], ...]
"""Private: the file format as the core describes it, as (group, name, value, size)
entries; ``reqrep._format`` builds on it."""

def _process_alive(pid: int, start_bits: int = 0, bits: int = 32, /) -> bool:
    """Private: the core's verdict on whether a process is alive."""

class ChannelFormatError(ValueError):
    """The file is not a valid channel (foreign, truncated, corrupt, other variant
    or format version). The message names the path and the reason."""

class WorkerDiedError(RuntimeError):
    """The worker process that took a request died before replying to it. Raised
    by ``req``/``get_wait`` within a bounded time; the request's slot is freed."""

    pid: int
    """The dead worker's process id."""
    id: int
    """The id of the request that will never be answered."""

@final
class View:
    """A reply or request read in place (``copy=False`` on ``get``/``get_wait``/``req``
    and on ``recv*``/``drain``): a read-only buffer over the bytes where they lie,
    pinned there (the reply's slot, the request's arena room) until ``release()``,
    the end of a ``with`` block, or garbage collection. ``memoryview(v)``,
    ``bytes(v)``, ``numpy.frombuffer(v)`` and anything else that takes a buffer read
    it without a copy; what they make keeps the View alive. The channel object
    stays open (mapped) while a View of it lives, even after ``close()``. A View
    belongs to the process that made it: a forked child's copy reads as released.
    If the process holding it dies, the slot or room comes back to the channel.
    Where the bytes cannot be pinned (a small request, all pins in use, a reply to
    another process's request) the View is of a copy."""

    @property
    def released(self) -> bool:
        """Whether the View was released (reading it then raises ``ValueError``)."""
    @property
    def is_text(self) -> bool:
        """Whether the reply was sent as ``str`` (its bytes are UTF-8)."""
    @property
    def id(self) -> int:
        """The id of the request this is the reply to."""
    def release(self) -> None:
        """Unpin the reply and free its slot; a second call does nothing.
        ``BufferError`` while a buffer made from it (a ``memoryview``, a NumPy
        array) is alive: release or drop those first."""
    def tobytes(self) -> bytes:
        """A copy of the reply as ``bytes``."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self:
        """The View itself; the end of the block releases it."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None:
        """Release the View (as ``release()``)."""

@final
class ReplyBuffer:
    """A reply written in place (``Server.reply_buffer``): a writable buffer of the
    size asked for, in the request's response slot. Fill it through
    ``memoryview(b)`` or anything that takes a writable buffer (``numpy.frombuffer``,
    ``readinto``), then ``commit()``: the client gets those bytes, copied only by
    the writer. ``abort()``, an exception out of a ``with`` block, or garbage
    collection without a commit publish nothing: the request is pending again,
    to be answered by ``reply``, ``reply_error`` or another buffer. A worker that
    dies holding one is a dead worker to its client (``WorkerDiedError``)."""

    @property
    def done(self) -> bool:
        """Whether it was committed or aborted."""
    @property
    def id(self) -> int:
        """The id of the request it answers."""
    def commit(self, nbytes: int | None = None) -> bool:
        """Publish the first ``nbytes`` bytes (all if ``None``) and wake the client:
        ``True``, or ``False`` if the request was cancelled or cleared meanwhile.
        ``BufferError`` while a buffer made from it is alive (nothing changes);
        ``ValueError`` after ``commit``/``abort``."""
    def abort(self) -> None:
        """Publish nothing and give the request back (pending again); nothing after
        ``commit``/``abort``. ``BufferError`` while a buffer made from it is alive."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> Self:
        """The buffer itself; the end of the block commits it, or aborts it if the
        block raised."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Literal[False]:
        """Commit (no exception) or abort (an exception, which goes on)."""

@disjoint_base
class Server(Generic[_T]):
    """The worker side of a Str channel (``bytes``/``str`` requests and responses).

    ``Server(path, ...)`` creates the channel file, or opens it if it already
    holds a channel. A geometry argument not given (``None``) takes the default
    for a new channel (``req_cap`` 1024, ``resp_slots`` 64, ``resp_size`` 4096,
    ``arena`` ``max(req_cap * 256, 4096)``) and the file's for an existing one;
    one given that differs from the existing file's raises ``ValueError`` naming
    both. ``mode`` (permission bits, ``0`` to ``0o777``) is set, exactly, on a
    file this call creates; by default it is ``0o600`` less the umask. The
    space is reserved at creation (``OSError`` ``ENOSPC`` if it does not fit).
    ``Server(None, ...)`` makes an anonymous shared mapping inherited by
    ``fork()``. Geometry limits (``ValueError`` otherwise): ``1 <= req_cap <= 2**24``
    (rounded up to a power of two), ``1 <= resp_slots <= 2**20``,
    ``1 <= resp_size <= 2**30``, ``4096 <= arena <= 2**40``.

    ``codec`` (a registered name such as ``"pickle"`` or ``"json"``, or a codec
    object, registered on the way) is recorded in a new channel's header: then
    payloads are any objects the codec takes, and every handle on the channel
    uses it. Asking an existing channel for another codec raises ``ValueError``.
    """

    @overload
    def __new__(
        cls,
        path: _StrPath | None,
        req_cap: int | None = None,
        resp_slots: int | None = None,
        resp_size: int | None = None,
        arena: int | None = None,
        *,
        spin: int | None = None,
        mode: int | None = None,
        codec: None = None,
    ) -> Server[_T]: ...
    @overload
    def __new__(
        cls,
        path: _StrPath | None,
        req_cap: int | None = None,
        resp_slots: int | None = None,
        resp_size: int | None = None,
        arena: int | None = None,
        *,
        spin: int | None = None,
        mode: int | None = None,
        codec: str | _Codec,
    ) -> Server[Any]: ...
    @overload
    @classmethod
    def new_memfd(
        cls,
        name: str,
        req_cap: int = 1024,
        resp_slots: int = 64,
        resp_size: int = 4096,
        arena: int | None = None,
        *,
        spin: int | None = None,
        codec: None = None,
    ) -> Server[_T]:
        """Create a channel in a new memfd (see ``memfd``); pass the fd to other
        processes (fork, ``SCM_RIGHTS``) and open it there with ``from_fd``."""
    @overload
    @classmethod
    def new_memfd(
        cls,
        name: str,
        req_cap: int = 1024,
        resp_slots: int = 64,
        resp_size: int = 4096,
        arena: int | None = None,
        *,
        spin: int | None = None,
        codec: str | _Codec,
    ) -> Server[Any]: ...
    @classmethod
    def from_fd(cls, fd: int, *, spin: int | None = None) -> Self:
        """Open the channel held by a memfd or file descriptor. The fd is
        duplicated: the caller keeps (and still owns) its own. A memfd not
        sealed against shrinking is sealed (``F_SEAL_SHRINK | F_SEAL_GROW |
        F_SEAL_SEAL``), or refused with ``ChannelFormatError`` if it does not
        allow sealing: a peer can never shrink it under the mapping."""
    def client(self) -> Client[_T]:
        """A ``Client`` on the same mapping (works for anonymous channels too)."""
    @overload
    def recv(self, *, copy: Literal[True] = True) -> tuple[_T, int] | None:
        """Take one request without waiting: ``(data, id)``, or ``None`` when the
        queue is empty. ``copy=False``: ``data`` is a ``View`` of the request where
        it lies in the arena, pinned there until released (a request of up to 32
        bytes, or one taken while 16 others are pinned, is a View of a copy); on a
        codec channel, the object its codec reads from that View. The arena is a
        ring: a pinned request holds back the room of every later one, so release
        Views soon. A worker that dies holding one gives its room back."""
    @overload
    def recv(self, *, copy: Literal[False]) -> tuple[View, int] | None: ...
    @overload
    def recv_wait(
        self, timeout: float | None = None, *, copy: Literal[True] = True
    ) -> tuple[_T, int] | None:
        """Take one request, waiting for it: ``(data, id)``, or ``None`` on timeout.
        ``copy=False``: as in ``recv``."""
    @overload
    def recv_wait(
        self, timeout: float | None = None, *, copy: Literal[False]
    ) -> tuple[View, int] | None: ...
    @overload
    def recv_multi(self, n: int, *, copy: Literal[True] = True) -> list[tuple[_T, int]]:
        """Take up to ``n`` queued requests under one lock acquisition, without
        waiting (``[]`` when empty or ``n == 0``; ``n < 0`` raises ``ValueError``).
        ``copy=False``: as in ``recv``."""
    @overload
    def recv_multi(self, n: int, *, copy: Literal[False]) -> list[tuple[View, int]]: ...
    @overload
    def recv_wait_multi(
        self, n: int, timeout: float | None = None, *, copy: Literal[True] = True
    ) -> list[tuple[_T, int]]:
        """Wait for at least one request, then take up to ``n`` like ``recv_multi``;
        ``[]`` on timeout. ``copy=False``: as in ``recv``."""
    @overload
    def recv_wait_multi(
        self, n: int, timeout: float | None = None, *, copy: Literal[False]
    ) -> list[tuple[View, int]]: ...
    @overload
    def drain(self, max: int | None = None, *, copy: Literal[True] = True) -> list[tuple[_T, int]]:
        """Take every queued request (at most ``max``), without waiting.
        ``copy=False``: as in ``recv``."""
    @overload
    def drain(self, max: int | None = None, *, copy: Literal[False]) -> list[tuple[View, int]]: ...
    def reply(self, id: int, data: _T | Buffer) -> bool:
        """Write the response for request ``id`` and wake its client. ``True`` on
        success; ``False`` when the request was cancelled, recycled or cleared,
        or another process is answering it right now. A response larger than
        ``resp_size`` bytes raises ``ValueError`` and changes nothing;
        ``RuntimeError`` while this process has a ``ReplyBuffer`` open for it."""
    def reply_buffer(self, id: int, nbytes: int) -> ReplyBuffer | None:
        """A writable buffer of ``nbytes`` bytes in the response slot of request
        ``id``, to write the reply in place and ``commit()`` (see ``ReplyBuffer``);
        ``None`` when the request was cancelled, recycled or cleared, or another
        process is answering it right now (``RuntimeError`` if this one is).
        Replies of ``bytes``, on channels without a codec (``TypeError``
        otherwise); more than ``resp_size`` bytes raise ``ValueError``, changing
        nothing."""
    def reply_error(self, id: int, exc: BaseException | str) -> bool:
        """Answer request ``id`` with an error: its client's ``get``/``get_wait``/``req``
        raise ``reqrep.RemoteError`` (type name, message and traceback, cut to
        ``resp_size`` bytes: the traceback first). ``exc`` is an exception or a
        ``str`` (type name ``Exception``). Returns as ``reply``."""
    def serve(
        self,
        handler: Callable[[_T], _T | Buffer],
        *,
        on_error: Callable[[Exception, _T, int], _T | Buffer | None] | None = None,
        timeout: float | None = None,
        max_requests: int | None = None,
    ) -> int:
        """The worker loop, in C: take each request, reply ``handler(data)``.

        Returns how many requests it took, once ``timeout`` seconds pass
        without one (``None``: never; ``0``: when the queue is empty), once it
        has taken ``max_requests``, or once the server is closed (from the
        handler or another thread: within 0.1 s). When the handler raises an
        ``Exception`` or its reply is refused (wrong type, too large),
        ``on_error(exc, data, id)`` answers instead if given (``None``: no
        reply); without it, the request is answered with the exception
        (``reply_error``) and serving goes on. When ``on_error`` raises, the
        exception comes out of ``serve`` and that request stays unanswered.
        ``KeyboardInterrupt`` and other non-``Exception`` errors always stop it."""
    def clear(self) -> None:
        """Drop every queued request, free every response slot and wake all waiters."""
    def sync(self) -> None:
        """``msync`` the mapping to its file: its contents reach the disk (for a
        file on a disk-backed file system; a no-op in effect on ``/dev/shm``).
        ``OSError`` if the kernel refuses; nothing to do for anonymous and memfd
        channels."""
    def unlink(self) -> None:
        """Remove the channel file (the channel lives on while mapped); does
        nothing for anonymous and memfd channels."""
    def size(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def __len__(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def is_empty(self) -> bool:
        """``True`` if no request is queued now (``size() == 0``): a snapshot,
        read without the queue lock. ``ValueError`` if closed."""
    def stats(self) -> _StrStats:
        """Counters and geometry as a dict (see the API reference for the keys)."""
    def close(self) -> None:
        """Unmap this handle. Idempotent. Calls waiting on it in other threads end
        (they raise ``ValueError``; ``serve`` returns), and the mapping goes once
        they have left. A client's requests still pending are cancelled (their
        slots freed). The channel lives on for the other handles and processes."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> Self:
        """``with channel:`` returns the object itself; ``ValueError`` if it is closed."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``with channel:`` closes the object (``close()``), whatever the
        exception; it never suppresses one."""
    @property
    def capacity(self) -> int:
        """Request queue capacity (``req_cap`` rounded up to a power of two)."""
    @property
    def resp_slots(self) -> int:
        """Number of response slots (the most requests in flight at once)."""
    @property
    def resp_size(self) -> int:
        """Largest response, in bytes."""
    @property
    def path(self) -> str | None:
        """The channel file's path, or ``None`` for anonymous and memfd channels."""
    @property
    def memfd(self) -> int:
        """The memfd's file descriptor, or ``-1`` if the channel is not a memfd."""
    @property
    def codec(self) -> str | None:
        """The channel's codec's name, or ``None`` (``bytes`` and ``str``)."""
    @property
    def spin(self) -> int:
        """Microseconds to spin before sleeping in a wait (``0`` = never spin,
        at most 10_000_000); setting ``None`` restores the default (50)."""
    @spin.setter
    def spin(self, value: int | None) -> None: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling: a file-backed channel re-opens by path in the receiving process
        (``FileNotFoundError`` there if the file is gone; never creates one); a memfd
        channel travels as a file descriptor (multiprocessing's fd passing); an
        anonymous channel raises ``pickle.PicklingError`` (it only travels by fork)."""
    @classmethod
    def _open_existing(cls, path: _StrPath, *, spin: int | None = None) -> Self:
        """Private: open an existing channel file, never creating or initialising one."""
    def _passthrough(self) -> None:
        """Private (``reqrep.bridge``): from now on this handle moves payloads as they are:
        what it sends is already encoded for the channel's codec, what it receives is the
        encoded bytes, and an error reply raises a ``RemoteError`` that keeps its bytes, so
        that ``reply_error`` with it passes it on unchanged."""
    def _layout(self) -> _Layout:
        """Private: the offsets of the channel's regions in its file."""
    def eventfd(self) -> int:
        """The request eventfd of this object, created on first call (non-blocking,
        close-on-exec, closed with the object). Signalled by ``notify()`` and by
        clients' ``send_notify``/``send_wait_notify`` when they share it."""
    def eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` (e.g. one inherited from the parent) as the request eventfd;
        the caller keeps ownership of it. ``-1`` unsets."""
    def eventfd_consume(self) -> int:
        """Read and reset the request eventfd: the number of signals since the
        last call (``0`` if none, or if there is no eventfd)."""
    def notify(self) -> bool:
        """Signal the request eventfd; ``False`` if there is none."""
    def fileno(self) -> int:
        """The request eventfd, or ``-1`` if none was created or set."""
    def reply_eventfd(self) -> int:
        """The reply eventfd of this object, created on first call. ``reply`` signals
        it by itself for requests whose client waits in an event loop."""
    def reply_eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` as the reply eventfd (the caller keeps ownership); ``-1`` unsets."""
    def reply_eventfd_consume(self) -> int:
        """Read and reset the reply eventfd: the number of signals since the last call."""
    def reply_notify(self) -> bool:
        """Signal the reply eventfd; ``False`` if there is none."""
    def reply_fileno(self) -> int:
        """The reply eventfd's file descriptor, or ``-1`` if there is none (see
        ``reply_eventfd``). Never creates one; for ``select``/``add_reader``."""
    def _wait_request(self, timeout: float | None = None) -> bool:
        """Private: wait until a request is queued without taking it."""
    def _wake_request(self) -> None:
        """Private (``reqrep.aio``): wake every receiver asleep on the queue."""
    def _live(self, id: int, /) -> bool:
        """Private (``reqrep.futures``): whether request ``id`` still awaits its reply
        (not cancelled, cleared or recycled)."""
    def _test_hold_lock(self) -> None:
        """Private, testing only: take the queue lock and keep it (then kill the process)."""

@disjoint_base
class Client(Generic[_T]):
    """The requesting side of a Str channel.

    ``Client(path)`` opens an existing channel (``FileNotFoundError`` if the file
    does not exist, ``ChannelFormatError`` if it is not a Str channel). With
    ``wait`` (seconds) it waits, polling, for a channel that does not exist yet
    or is still being created, and raises those errors only when the time is up;
    ``None`` does not wait. Closing a client cancels the requests it still has
    pending. A client uses the channel's codec; ``codec`` given and not the
    channel's raises ``ValueError``.
    """

    @overload
    def __new__(
        cls,
        path: _StrPath,
        *,
        spin: int | None = None,
        wait: float | None = None,
        codec: None = None,
    ) -> Client[_T]: ...
    @overload
    def __new__(
        cls,
        path: _StrPath,
        *,
        spin: int | None = None,
        wait: float | None = None,
        codec: str | _Codec,
    ) -> Client[Any]: ...
    @classmethod
    def from_fd(cls, fd: int, *, spin: int | None = None) -> Self:
        """Open the channel held by a memfd or file descriptor (the fd is duplicated;
        a memfd is sealed or refused as by ``Server.from_fd``)."""
    @overload
    def req(
        self, data: _T | Buffer, timeout: float | None = None, *, copy: Literal[True] = True
    ) -> _T | None:
        """Send a request and wait for its response. One deadline covers waiting
        for a free slot and queue space and waiting for the reply. ``None`` on
        timeout (the request is then cancelled and its slot freed) and when the
        request was dropped by ``clear()``. ``WorkerDiedError`` if the
        worker that took it died before replying. ``copy=False``: the reply as a
        ``View`` pinned in its slot, read without a copy (on a codec channel: the
        object its codec reads from that View, a pickle's out-of-band buffers
        included, which keep the slot until they are gone)."""
    @overload
    def req(
        self, data: _T | Buffer, timeout: float | None = None, *, copy: Literal[False]
    ) -> View | None: ...
    def send(self, data: _T | Buffer, /) -> int | None:
        """Send a request without waiting: its id, or ``None`` when no response
        slot is free or the queue (or arena) is full. A request larger than the
        arena raises ``ValueError``."""
    def send_wait(self, data: _T | Buffer, timeout: float | None = None) -> int | None:
        """Send a request, waiting for a free slot and queue space: its id, or
        ``None`` on timeout."""
    @overload
    def get(self, id: int, /, *, copy: Literal[True] = True) -> _T | None:
        """Collect the response to ``id`` if it is there (the slot is then freed);
        ``None`` while not ready or when ``id`` is stale. ``copy=False``: a
        ``View`` pinned in the slot instead of a copy (see ``req``)."""
    @overload
    def get(self, id: int, /, *, copy: Literal[False]) -> View | None: ...
    @overload
    def get_wait(
        self, id: int, timeout: float | None = None, *, copy: Literal[True] = True
    ) -> _T | None:
        """Wait for and collect the response to ``id``; ``None`` on timeout or
        when ``id`` is stale; ``WorkerDiedError`` if its worker died.
        ``copy=False``: a ``View`` pinned in the slot instead of a copy (see
        ``req``)."""
    @overload
    def get_wait(
        self, id: int, timeout: float | None = None, *, copy: Literal[False]
    ) -> View | None: ...
    def cancel(self, id: int, /) -> bool:
        """Abandon a pending request and free its slot: ``True``. ``False`` for a
        stale id and when the reply already arrived (collect it with ``get``)."""
    def pending(self) -> int:
        """Requests sent through this object and not yet collected (replied but
        not yet collected included)."""
    def size(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def __len__(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def is_empty(self) -> bool:
        """``True`` if no request is queued now (``size() == 0``): a snapshot,
        read without the queue lock. ``ValueError`` if closed."""
    def stats(self) -> _StrStats:
        """Counters and geometry as a dict (see the API reference for the keys)."""
    def close(self) -> None:
        """Cancel this client's pending requests and unmap it (idempotent)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> Self:
        """``with channel:`` returns the object itself; ``ValueError`` if it is closed."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``with channel:`` closes the object (``close()``), whatever the
        exception; it never suppresses one."""
    @property
    def capacity(self) -> int:
        """Request queue capacity (a power of two)."""
    @property
    def resp_slots(self) -> int:
        """Number of response slots (the most requests in flight at once)."""
    @property
    def resp_size(self) -> int:
        """Largest response, in bytes."""
    @property
    def path(self) -> str | None:
        """The channel file's path, or ``None`` for anonymous and memfd channels."""
    @property
    def memfd(self) -> int:
        """The memfd's file descriptor, or ``-1`` if the channel is not a memfd."""
    @property
    def codec(self) -> str | None:
        """The channel's codec's name, or ``None`` (``bytes`` and ``str``)."""
    @property
    def spin(self) -> int:
        """Microseconds to spin before sleeping in a wait (``0`` = never spin,
        at most 10_000_000); setting ``None`` restores the default (50)."""
    @spin.setter
    def spin(self, value: int | None) -> None: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling: a file-backed channel re-opens by path in the receiving process
        (``FileNotFoundError`` there if the file is gone; never creates one); a memfd
        channel travels as a file descriptor (multiprocessing's fd passing); an
        anonymous channel raises ``pickle.PicklingError`` (it only travels by fork)."""
    @classmethod
    def _open_existing(cls, path: _StrPath, *, spin: int | None = None) -> Self:
        """Private: open an existing channel file, never creating or initialising one."""
    def _passthrough(self) -> None:
        """Private (``reqrep.bridge``): from now on this handle moves payloads as they are:
        what it sends is already encoded for the channel's codec, what it receives is the
        encoded bytes, and an error reply raises a ``RemoteError`` that keeps its bytes, so
        that ``reply_error`` with it passes it on unchanged."""
    def _layout(self) -> _Layout:
        """Private: the offsets of the channel's regions in its file."""
    def send_notify(self, data: _T | Buffer, /) -> int | None:
        """``send(data)``, then signal the request eventfd (if any) when it was sent."""
    def send_wait_notify(self, data: _T | Buffer, timeout: float | None = None) -> int | None:
        """``send_wait(data, timeout)``, then signal the request eventfd (if any)
        when it was sent."""
    def eventfd(self) -> int:
        """The **reply** eventfd of this client, created on first call (non-blocking,
        close-on-exec, closed with the object)."""
    def eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` as the reply eventfd (the caller keeps ownership); ``-1`` unsets."""
    def eventfd_consume(self) -> int:
        """Read and reset the reply eventfd: the number of signals since the last call."""
    def fileno(self) -> int:
        """The reply eventfd's file descriptor, or ``-1`` if there is none (see
        ``reply_eventfd``). Never creates one; for ``select``/``add_reader``."""
    def notify(self) -> bool:
        """Signal the **request** eventfd; ``False`` if there is none."""
    def req_eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` (e.g. the server's ``eventfd()``, inherited or passed over a Unix
        socket) as the request eventfd; the caller keeps ownership. ``-1`` unsets."""
    def req_fileno(self) -> int:
        """The request eventfd's file descriptor, or ``-1`` if there is none. Never
        creates one; for ``select``/``add_reader``."""
    def _check(self, id: int, /) -> int: ...
    def _worker(self, id: int, /) -> int:
        """Private (``reqrep.futures``): the pid of the worker that took request ``id``,
        0 while it is queued."""
    def _bell_claim(self) -> int:
        """Private (``reqrep.aio``): make replies to this client's requests ring a bell."""
    def _bell_release(self) -> None:
        """Private (``reqrep.aio``): give the bell back."""
    def _bell_ring(self) -> None:
        """Private (``reqrep.aio``): ring this client's bell."""
    def _bell_wait(self, seen: int, timeout: float | None = None) -> int:
        """Private (``reqrep.aio``): wait until the bell's count differs from ``seen``."""

@disjoint_base
class IntServer:
    """The worker side of an Int channel (one signed 64-bit int per request and
    per response; lock-free request queue).

    ``IntServer(path, ...)`` creates or opens the channel file; ``IntServer(None, ...)``
    makes an anonymous shared mapping inherited by ``fork()``. Geometry and
    ``mode`` as for ``Server`` (defaults ``req_cap`` 1024, ``resp_slots`` 64). Limits:
    ``1 <= req_cap <= 2**24`` (rounded up to a power of two), ``1 <= resp_slots <= 2**20``.
    """

    def __new__(
        cls,
        path: _StrPath | None,
        req_cap: int | None = None,
        resp_slots: int | None = None,
        *,
        spin: int | None = None,
        mode: int | None = None,
    ) -> Self: ...
    @classmethod
    def new_memfd(
        cls,
        name: str,
        req_cap: int = 1024,
        resp_slots: int = 64,
        *,
        spin: int | None = None,
    ) -> Self:
        """Create an Int channel in a new memfd (see ``memfd``)."""
    @classmethod
    def from_fd(cls, fd: int, *, spin: int | None = None) -> Self:
        """Open the channel held by a memfd or file descriptor (the fd is duplicated;
        a memfd is sealed or refused as by ``Server.from_fd``)."""
    def client(self) -> IntClient:
        """An ``IntClient`` on the same mapping (works for anonymous channels too)."""
    def recv(self, *, copy: bool = True) -> tuple[int, int] | None:
        """Take one request without waiting: ``(value, id)``, or ``None`` when empty
        (``copy`` is accepted for symmetry with ``Server``: an int is a value)."""
    def recv_wait(
        self, timeout: float | None = None, *, copy: bool = True
    ) -> tuple[int, int] | None:
        """Take one request, waiting for it: ``(value, id)``, or ``None`` on timeout."""
    def reply(self, id: int, data: int) -> bool:
        """Write the response for request ``id`` and wake its client. ``False``
        when the request was cancelled, recycled or cleared. ``data`` outside the
        int64 range raises ``OverflowError``."""
    def reply_error(self, id: int, exc: BaseException | str) -> bool:
        """Answer request ``id`` with an error: its client's ``get``/``get_wait``/``req``
        raise ``reqrep.RemoteError`` carrying the type name (its first 32 bytes;
        an Int reply has no room for more). Returns as ``reply``."""
    def serve(
        self,
        handler: Callable[[int], int],
        *,
        on_error: Callable[[Exception, int, int], int | None] | None = None,
        timeout: float | None = None,
        max_requests: int | None = None,
    ) -> int:
        """The worker loop, in C: take each request, reply ``handler(value)``;
        as ``Server.serve``."""
    def clear(self) -> None:
        """Drop every queued request, free every response slot and wake all waiters."""
    def sync(self) -> None:
        """``msync`` the mapping to its file: its contents reach the disk (for a
        file on a disk-backed file system; a no-op in effect on ``/dev/shm``).
        ``OSError`` if the kernel refuses; nothing to do for anonymous and memfd
        channels."""
    def unlink(self) -> None:
        """Remove the channel file; does nothing for anonymous and memfd channels."""
    def size(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def __len__(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def is_empty(self) -> bool:
        """``True`` if no request is queued now (``size() == 0``): a snapshot,
        read without the queue lock. ``ValueError`` if closed."""
    def stats(self) -> _Stats:
        """Counters and geometry as a dict (see the API reference for the keys)."""
    def close(self) -> None:
        """Unmap this handle. Idempotent. Calls waiting on it in other threads end
        (they raise ``ValueError``; ``serve`` returns), and the mapping goes once
        they have left. A client's requests still pending are cancelled (their
        slots freed). The channel lives on for the other handles and processes."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> Self:
        """``with channel:`` returns the object itself; ``ValueError`` if it is closed."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``with channel:`` closes the object (``close()``), whatever the
        exception; it never suppresses one."""
    @property
    def capacity(self) -> int:
        """Request queue capacity (``req_cap`` rounded up to a power of two)."""
    @property
    def resp_slots(self) -> int:
        """Number of response slots (the most requests in flight at once)."""
    @property
    def resp_size(self) -> int:
        """Always ``0`` for Int channels."""
    @property
    def path(self) -> str | None:
        """The channel file's path, or ``None`` for anonymous and memfd channels."""
    @property
    def memfd(self) -> int:
        """The memfd's file descriptor, or ``-1`` if the channel is not a memfd."""
    @property
    def codec(self) -> str | None:
        """The channel's codec's name, or ``None`` (``bytes`` and ``str``)."""
    @property
    def spin(self) -> int:
        """Microseconds to spin before sleeping in a wait (``0`` = never spin,
        at most 10_000_000); setting ``None`` restores the default (50)."""
    @spin.setter
    def spin(self, value: int | None) -> None: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling: a file-backed channel re-opens by path in the receiving process
        (``FileNotFoundError`` there if the file is gone; never creates one); a memfd
        channel travels as a file descriptor (multiprocessing's fd passing); an
        anonymous channel raises ``pickle.PicklingError`` (it only travels by fork)."""
    @classmethod
    def _open_existing(cls, path: _StrPath, *, spin: int | None = None) -> Self:
        """Private: open an existing channel file, never creating or initialising one."""
    def _passthrough(self) -> None:
        """Private (``reqrep.bridge``): from now on this handle moves payloads as they are:
        what it sends is already encoded for the channel's codec, what it receives is the
        encoded bytes, and an error reply raises a ``RemoteError`` that keeps its bytes, so
        that ``reply_error`` with it passes it on unchanged."""
    def _layout(self) -> _Layout:
        """Private: the offsets of the channel's regions in its file."""
    def eventfd(self) -> int:
        """The request eventfd of this object, created on first call (non-blocking,
        close-on-exec, closed with the object). Signalled by ``notify()`` and by
        clients' ``send_notify``/``send_wait_notify`` when they share it."""
    def eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` (e.g. one inherited from the parent) as the request eventfd;
        the caller keeps ownership of it. ``-1`` unsets."""
    def eventfd_consume(self) -> int:
        """Read and reset the request eventfd: the number of signals since the
        last call (``0`` if none, or if there is no eventfd)."""
    def notify(self) -> bool:
        """Signal the request eventfd; ``False`` if there is none."""
    def fileno(self) -> int:
        """The request eventfd, or ``-1`` if none was created or set."""
    def reply_eventfd(self) -> int:
        """The reply eventfd of this object, created on first call. ``reply`` signals
        it by itself for requests whose client waits in an event loop."""
    def reply_eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` as the reply eventfd (the caller keeps ownership); ``-1`` unsets."""
    def reply_eventfd_consume(self) -> int:
        """Read and reset the reply eventfd: the number of signals since the last call."""
    def reply_notify(self) -> bool:
        """Signal the reply eventfd; ``False`` if there is none."""
    def reply_fileno(self) -> int:
        """The reply eventfd's file descriptor, or ``-1`` if there is none (see
        ``reply_eventfd``). Never creates one; for ``select``/``add_reader``."""
    def _wait_request(self, timeout: float | None = None) -> bool:
        """Private: wait until a request is queued without taking it."""
    def _wake_request(self) -> None:
        """Private (``reqrep.aio``): wake every receiver asleep on the queue."""
    def _live(self, id: int, /) -> bool:
        """Private (``reqrep.futures``): whether request ``id`` still awaits its reply
        (not cancelled, cleared or recycled)."""

@disjoint_base
class IntClient:
    """The requesting side of an Int channel.

    ``IntClient(path)`` opens an existing channel (``FileNotFoundError`` if the
    file does not exist, ``ChannelFormatError`` if it is not an Int channel);
    ``wait`` as for ``Client``. Values outside the signed 64-bit range raise
    ``OverflowError``.
    """

    def __new__(
        cls, path: _StrPath, *, spin: int | None = None, wait: float | None = None
    ) -> Self: ...
    @classmethod
    def from_fd(cls, fd: int, *, spin: int | None = None) -> Self:
        """Open the channel held by a memfd or file descriptor (the fd is duplicated;
        a memfd is sealed or refused as by ``Server.from_fd``)."""
    def req(self, data: int, timeout: float | None = None, *, copy: bool = True) -> int | None:
        """Send a request and wait for its response under one deadline; ``None``
        on timeout (the request is then cancelled) or after ``clear()``;
        ``WorkerDiedError`` if the worker that took it died before replying.
        ``copy`` is accepted for symmetry with ``Client``: an int is a value."""
    def send(self, data: int, /) -> int | None:
        """Send without waiting: the request id, or ``None`` when no slot is free
        or the queue is full."""
    def send_wait(self, data: int, timeout: float | None = None) -> int | None:
        """Send, waiting for a free slot and queue space: the id, or ``None`` on timeout."""
    def get(self, id: int, /, *, copy: bool = True) -> int | None:
        """Collect the response to ``id`` if it is there; ``None`` while not ready
        or when ``id`` is stale (``copy``: as in ``req``)."""
    def get_wait(
        self, id: int, timeout: float | None = None, *, copy: bool = True
    ) -> int | None:
        """Wait for and collect the response to ``id``; ``None`` on timeout or
        when ``id`` is stale; ``WorkerDiedError`` if its worker died."""
    def cancel(self, id: int, /) -> bool:
        """Abandon a pending request: ``True``; ``False`` for a stale id and when
        the reply already arrived (collect it with ``get``)."""
    def pending(self) -> int:
        """Requests sent through this object and not yet collected."""
    def size(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def __len__(self) -> int:
        """How many requests are queued now (sent and not yet taken by a worker):
        a snapshot, read without the queue lock. ``ValueError`` if closed."""
    def is_empty(self) -> bool:
        """``True`` if no request is queued now (``size() == 0``): a snapshot,
        read without the queue lock. ``ValueError`` if closed."""
    def stats(self) -> _Stats:
        """Counters and geometry as a dict (see the API reference for the keys)."""
    def close(self) -> None:
        """Cancel this client's pending requests and unmap it (idempotent)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> Self:
        """``with channel:`` returns the object itself; ``ValueError`` if it is closed."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``with channel:`` closes the object (``close()``), whatever the
        exception; it never suppresses one."""
    @property
    def capacity(self) -> int:
        """Request queue capacity (a power of two)."""
    @property
    def resp_slots(self) -> int:
        """Number of response slots (the most requests in flight at once)."""
    @property
    def resp_size(self) -> int:
        """Always ``0`` for Int channels."""
    @property
    def path(self) -> str | None:
        """The channel file's path, or ``None`` for anonymous and memfd channels."""
    @property
    def memfd(self) -> int:
        """The memfd's file descriptor, or ``-1`` if the channel is not a memfd."""
    @property
    def codec(self) -> str | None:
        """The channel's codec's name, or ``None`` (``bytes`` and ``str``)."""
    @property
    def spin(self) -> int:
        """Microseconds to spin before sleeping in a wait (``0`` = never spin,
        at most 10_000_000); setting ``None`` restores the default (50)."""
    @spin.setter
    def spin(self, value: int | None) -> None: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickling: a file-backed channel re-opens by path in the receiving process
        (``FileNotFoundError`` there if the file is gone; never creates one); a memfd
        channel travels as a file descriptor (multiprocessing's fd passing); an
        anonymous channel raises ``pickle.PicklingError`` (it only travels by fork)."""
    @classmethod
    def _open_existing(cls, path: _StrPath, *, spin: int | None = None) -> Self:
        """Private: open an existing channel file, never creating or initialising one."""
    def _passthrough(self) -> None:
        """Private (``reqrep.bridge``): from now on this handle moves payloads as they are:
        what it sends is already encoded for the channel's codec, what it receives is the
        encoded bytes, and an error reply raises a ``RemoteError`` that keeps its bytes, so
        that ``reply_error`` with it passes it on unchanged."""
    def _layout(self) -> _Layout:
        """Private: the offsets of the channel's regions in its file."""
    def send_notify(self, data: int, /) -> int | None:
        """``send(data)``, then signal the request eventfd (if any) when it was sent."""
    def send_wait_notify(self, data: int, timeout: float | None = None) -> int | None:
        """``send_wait(data, timeout)``, then signal the request eventfd (if any)
        when it was sent."""
    def eventfd(self) -> int:
        """The **reply** eventfd of this client, created on first call (non-blocking,
        close-on-exec, closed with the object)."""
    def eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` as the reply eventfd (the caller keeps ownership); ``-1`` unsets."""
    def eventfd_consume(self) -> int:
        """Read and reset the reply eventfd: the number of signals since the last call."""
    def fileno(self) -> int:
        """The reply eventfd's file descriptor, or ``-1`` if there is none (see
        ``reply_eventfd``). Never creates one; for ``select``/``add_reader``."""
    def notify(self) -> bool:
        """Signal the **request** eventfd; ``False`` if there is none."""
    def req_eventfd_set(self, fd: int, /) -> None:
        """Use ``fd`` (e.g. the server's ``eventfd()``, inherited or passed over a Unix
        socket) as the request eventfd; the caller keeps ownership. ``-1`` unsets."""
    def req_fileno(self) -> int:
        """The request eventfd's file descriptor, or ``-1`` if there is none. Never
        creates one; for ``select``/``add_reader``."""
    def _check(self, id: int, /) -> int: ...
    def _worker(self, id: int, /) -> int:
        """Private (``reqrep.futures``): the pid of the worker that took request ``id``,
        0 while it is queued."""
    def _bell_claim(self) -> int:
        """Private (``reqrep.aio``): make replies to this client's requests ring a bell."""
    def _bell_release(self) -> None:
        """Private (``reqrep.aio``): give the bell back."""
    def _bell_ring(self) -> None:
        """Private (``reqrep.aio``): ring this client's bell."""
    def _bell_wait(self, seen: int, timeout: float | None = None) -> int:
        """Private (``reqrep.aio``): wait until the bell's count differs from ``seen``."""
