"""Codecs (SPEC §7): what turns a channel's objects into bytes and back.

A channel records its codec's name in its header when it is created; every process
that opens it looks the name up here. ``"pickle"`` and ``"json"`` are built in; others
come from ``register_codec``. The extension calls ``lookup`` when it opens a channel
with a codec, then the codec's ``dumps`` for every payload it sends and ``loads`` for
every payload it receives.
"""

from __future__ import annotations

import json
import pickle
import struct
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Codec", "register_codec"]

_NAME_MAX = 31  # RR_CODEC_MAX - 1: the header's field keeps a NUL


@runtime_checkable
class Codec(Protocol):
    """What ``register_codec`` takes: a ``name`` and two functions.

    ``dumps(obj)`` returns the payload: a buffer (``bytes``, ``bytearray``,
    ``memoryview``, ...) or a sequence of buffers, which are written one after another
    straight into the channel. ``loads(view)`` gets a ``memoryview`` of the payload and
    returns the object; it may keep views of it. By default that is a read-write view of
    a private copy; with ``copy=False`` (SPEC section 9) it is a read-only view of the
    payload where it lies in the channel, which stays pinned there while any view of it
    lives.
    """

    name: str

    def dumps(self, obj: Any, /) -> Buffer | Sequence[Buffer]: ...

    def loads(self, view: memoryview, /) -> Any: ...


_ALIGN = 64  # out-of-band buffers start at this alignment within a pickle payload
_IN_BAND, _OUT_OF_BAND = 0, 1
_HEAD = struct.Struct("<BxxxIQ")  # kind, buffer count, stream length
_LEN = struct.Struct("<Q")
_PADDING = bytes(_ALIGN)


def _pad(n: int) -> int:
    return -n % _ALIGN


class PickleCodec:
    """Any picklable object, protocol 5. Buffers that pickle hands out of band (``bytes``
    of NumPy arrays, ``pickle.PickleBuffer``) are written straight into the channel and
    come back as views of the one copy a receiver makes, never as intermediate ``bytes``.

    Payload: a head (kind, buffer count, stream length), the buffers' lengths, padding to
    64 bytes, the pickle stream, then each buffer at a multiple of 64 bytes."""

    name = "pickle"

    def dumps(self, obj: Any, /) -> Sequence[Buffer]:
        buffers: list[pickle.PickleBuffer] = []
        stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if not buffers:
            return (_HEAD.pack(_IN_BAND, 0, len(stream)), stream)
        raws = []
        for buf in buffers:
            try:
                raws.append(buf.raw())
            except BufferError:  # not contiguous: pickle it in band instead
                return (_HEAD.pack(_IN_BAND, 0, len(stream := pickle.dumps(obj, protocol=5))),
                        stream)
        head = _HEAD.pack(_OUT_OF_BAND, len(raws), len(stream)) + b"".join(
            _LEN.pack(r.nbytes) for r in raws)
        parts: list[Buffer] = [head, _PADDING[:_pad(len(head))], stream]
        at = len(head) + _pad(len(head)) + len(stream)
        for raw in raws:
            parts.append(_PADDING[:_pad(at)])
            at += _pad(at)
            parts.append(raw)
            at += raw.nbytes
        return parts

    def loads(self, view: memoryview, /) -> Any:
        if view.nbytes < _HEAD.size:
            raise pickle.UnpicklingError("pickle payload shorter than its head")
        kind, count, stream_len = _HEAD.unpack_from(view)
        if kind == _IN_BAND:
            return pickle.loads(view[_HEAD.size:_HEAD.size + stream_len])
        if kind != _OUT_OF_BAND:
            raise pickle.UnpicklingError(f"unknown pickle payload kind {kind}")
        at = _HEAD.size + count * _LEN.size
        if at > view.nbytes:
            raise pickle.UnpicklingError("pickle payload shorter than its buffer table")
        lengths = [_LEN.unpack_from(view, _HEAD.size + i * _LEN.size)[0] for i in range(count)]
        at += _pad(at)
        stream = view[at:at + stream_len]
        at += stream_len
        buffers = []
        for n in lengths:
            at += _pad(at)
            if at + n > view.nbytes:
                raise pickle.UnpicklingError("pickle payload shorter than its buffers")
            buffers.append(view[at:at + n])
            at += n
        return pickle.loads(stream, buffers=buffers)


class JsonCodec:
    """JSON values, as UTF-8 (``json.dumps`` with compact separators)."""

    name = "json"

    def dumps(self, obj: Any, /) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, view: memoryview, /) -> Any:
        return json.loads(view.tobytes())


class Passthrough:
    """What a passthrough handle (``_passthrough()``, for the NATS bridge) uses in place of
    its channel's codec: it sends buffers already encoded and receives the encoded bytes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def dumps(self, obj: Buffer, /) -> Buffer:
        return obj

    def loads(self, view: memoryview, /) -> bytes:
        return view.tobytes()


_lock = threading.Lock()
_codecs: dict[str, Codec] = {}


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a codec's name is a str, not {type(name).__name__}")
    if not (0 < len(name) <= _NAME_MAX and name.isascii() and name.isprintable()
            and " " not in name):
        raise ValueError(f"a codec's name is 1 to {_NAME_MAX} printable ASCII characters "
                         f"without spaces, not {name!r}")
    return name


def register_codec(codec: Codec) -> None:
    """Make `codec` known in this process under ``codec.name``, so that channels created
    with it (``Server(..., codec=codec.name)``) can be opened here. Every process that
    opens such a channel must register the same codec first. Registering another object
    under a name already taken raises ``ValueError``; registering the same one again does
    nothing."""
    name = _check_name(getattr(codec, "name", None))
    if not (callable(getattr(codec, "dumps", None)) and callable(getattr(codec, "loads", None))):
        raise TypeError("a codec needs dumps(obj) and loads(memoryview) methods")
    with _lock:
        known = _codecs.get(name)
        if known is not None and known is not codec:
            raise ValueError(f"codec {name!r} is already registered")
        _codecs[name] = codec


class _Unregistered:
    """Stands for a codec this process has not registered: the channel opens (tools such
    as ``reqrep stats`` need no codec), and every payload it would encode or decode
    raises ValueError saying so."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _fail(self) -> ValueError:
        return ValueError(f"the channel's codec {self.name!r} is not registered in this "
                          "process: call reqrep.register_codec() with it first")

    def dumps(self, obj: Any, /) -> bytes:
        raise self._fail()

    def loads(self, view: memoryview, /) -> Any:
        raise self._fail()


def lookup(name: str) -> Codec:
    """The codec registered as `name` (the extension asks when it opens a channel)."""
    with _lock:
        codec = _codecs.get(name)
    return _Unregistered(name) if codec is None else codec


def name_of(codec: str | Codec) -> str:
    """The name to record for `codec` given to a Server: a registered name, or a codec
    object (registered on the way)."""
    if isinstance(codec, str):
        with _lock:
            if _check_name(codec) not in _codecs:
                raise ValueError(f"unknown codec {codec!r}: the built-in ones are 'pickle' "
                                 "and 'json'; register others with reqrep.register_codec()")
        return codec
    register_codec(codec)
    return codec.name


register_codec(PickleCodec())
register_codec(JsonCodec())
