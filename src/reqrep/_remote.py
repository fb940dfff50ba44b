"""Errors that travel back (SPEC §7): how a handler's exception is written into a reply
and how a client turns that reply into an exception again.

The extension calls `encode`, `int_name` and `decode` when a server answers with
``reply_error`` and when a client collects a reply marked as an error.

A Str error reply is a frame: one byte (1), four little-endian u32 lengths (type name,
message, traceback, pickled exception), then those parts. A reply too small for the
frame holds only the type name, as an Int reply does (its first 32 bytes).
"""

from __future__ import annotations

import pickle
import struct
import traceback as tb

__all__ = ["RemoteError"]

_FRAME = struct.Struct("<BIIII")
_FRAME_KIND = 1
_INT_NAME_MAX = 32  # RR_SLOT_ERROR_MAX


class RemoteError(Exception):
    """A request's handler failed in the process that served it.

    ``type_name`` names the exception's class (``module.QualName``, or just the name for
    built-ins), ``message`` is its ``str()`` and ``traceback`` the formatted remote
    traceback (empty when it did not fit the reply, and on Int channels, whose replies
    carry only the type name). On a ``"pickle"`` channel the original exception is raised
    instead when it unpickles and is an ``Exception``, with a RemoteError as its
    ``__cause__`` (a CancelledError or KeyboardInterrupt stays a RemoteError).
    """

    def __init__(self, type_name: str, message: str = "", traceback: str = "") -> None:
        super().__init__(type_name, message, traceback)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        # The error reply as it came, kept by a passthrough handle (the NATS bridge) so
        # that reply_error passes it on unchanged, pickled original included.
        self._frame: bytes | None = None

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}" if self.message else self.type_name
        return f"{text}\n\nRemote traceback:\n{self.traceback}" if self.traceback else text


def _type_name(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return "Exception"
    name = getattr(exc, "type_name", None) if isinstance(exc, RemoteError) else None
    if isinstance(name, str):  # passed on: it names what failed over there
        return name
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _utf8_head(text: str, limit: int) -> bytes:
    """At most `limit` bytes of text's UTF-8, cut at a character boundary."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def _utf8_tail(text: str, limit: int) -> bytes:
    """At most `limit` bytes from the end of text's UTF-8 (a traceback ends with what matters)."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return data
    return data[len(data) - limit:].decode("utf-8", "ignore").encode("utf-8") if limit else b""


def _describe(exc: BaseException) -> tuple[str, str]:
    """The message and formatted traceback of exc; an exception whose __str__ (or a
    chained one's) fails still travels, described as unprintable."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - its own __str__ failed
        message = f"<unprintable {type(exc).__name__} object>"
    try:
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # noqa: BLE001 - as above, somewhere in the chain
        trace = ""
    return message, trace


def _relayed(exc: BaseException | str) -> tuple[bytes | None, str, str] | None:
    """A RemoteError passed on: the frame it came with (if any), its message and its
    traceback; None for anything else, a subclass that lacks them included."""
    if not isinstance(exc, RemoteError):
        return None
    message, trace = getattr(exc, "message", None), getattr(exc, "traceback", None)
    if not (isinstance(message, str) and isinstance(trace, str)):
        return None
    frame = getattr(exc, "_frame", None)
    return (frame if type(frame) is bytes else None), message, trace


def int_name(exc: BaseException | str) -> bytes:
    """The reply of an Int channel's ``reply_error``: the type name's first 32 bytes."""
    return _utf8_head(_type_name(exc), _INT_NAME_MAX)


def encode(exc: BaseException | str, limit: int, codec: str) -> bytes:
    """The reply of a Str channel's ``reply_error``, at most `limit` bytes: what does not
    fit is cut (the pickled exception first, then the traceback's start, the message's
    end, the type name's end)."""
    if not isinstance(exc, (BaseException, str)):
        raise TypeError(f"reply_error() needs an exception or a str, not {type(exc).__name__}")
    name = _type_name(exc)
    relayed = _relayed(exc)
    if relayed is not None:
        frame, message, trace = relayed
        if frame is not None and len(frame) <= limit:
            return frame
        pickled = b""
    elif isinstance(exc, str):
        message, trace, pickled = exc, "", b""
    else:
        message, trace = _describe(exc)
        pickled = b""
        if codec == "pickle":
            try:
                pickled = pickle.dumps(exc, protocol=5)
            except Exception:  # an exception that does not pickle travels as text only
                pickled = b""
    room = limit - _FRAME.size
    if room < 1:
        return _utf8_head(name, limit)
    name_b = _utf8_head(name, room)
    room -= len(name_b)
    message_b = _utf8_head(message, room)
    room -= len(message_b)
    if len(pickled) > room:
        pickled = b""
    room -= len(pickled)
    trace_b = _utf8_tail(trace, room)
    head = _FRAME.pack(_FRAME_KIND, len(name_b), len(message_b), len(trace_b), len(pickled))
    return b"".join((head, name_b, message_b, trace_b, pickled))


def _text(data: bytes | memoryview) -> str:
    return bytes(data).decode("utf-8", "replace")


def frame_parts(payload: bytes) -> list[bytes] | None:
    """The four parts of an error frame (type name, message, traceback, pickled
    exception), or None if `payload` is not one."""
    if len(payload) < _FRAME.size:
        return None
    kind, *lens = _FRAME.unpack_from(payload)
    if kind != _FRAME_KIND or _FRAME.size + sum(lens) != len(payload):
        return None
    parts, at = [], _FRAME.size
    for n in lens:
        parts.append(payload[at:at + n])
        at += n
    return parts


def decode(payload: bytes, codec: str | None) -> BaseException:
    """The exception a client raises for an error reply `payload`; `codec` None (a
    passthrough handle): a RemoteError that keeps the payload, nothing unpickled."""
    if codec is None:
        remote = decode(payload, "")
        assert isinstance(remote, RemoteError)
        remote._frame = bytes(payload)
        return remote
    parts = frame_parts(payload)
    if parts is None:  # an Int reply, or a frame that did not fit: the type name only
        return RemoteError(_text(payload))
    remote = RemoteError(_text(parts[0]), _text(parts[1]), _text(parts[2]))
    if parts[3] and codec == "pickle":
        try:
            original = pickle.loads(parts[3])
        except Exception:  # a class this process cannot import: the text is what we have
            return remote
        # Only an Exception: a CancelledError, KeyboardInterrupt or SystemExit raised by
        # get() would be taken for the caller's own control flow (an asyncio client
        # lost other replies to one), so those travel as the RemoteError.
        if isinstance(original, Exception):
            original.__cause__ = remote
            return original
    return remote
