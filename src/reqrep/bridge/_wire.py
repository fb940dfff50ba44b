"""The bridge's wire format (docs/bridge.md): how a channel's requests and replies
travel as NATS messages. No NATS here: both bridges and the tests use these functions.

A payload is the request's or reply's bytes as they are: UTF-8 for a ``str``, 8 bytes
little-endian (signed) for an Int channel's value, the encoded bytes on a codec channel.
Headers say what the bytes are when that is not the channel's default:

* ``Reqrep-Kind``: ``str`` for text on a Str channel (absent: ``bytes``); on a codec
  channel, the codec's name (absent: the channel's codec); ``int`` on an Int channel.
* ``Reqrep-Error``: the reply is an error; the value is its type name, the payload a
  reqrep error frame (``reqrep._remote``), or from a worker that is not reqrep's, the
  message as UTF-8 (or nothing).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from reqrep import _remote
from reqrep._remote import RemoteError

KIND = "Reqrep-Kind"
ERROR = "Reqrep-Error"

_INT = struct.Struct("<q")
# Header values are one line of printable ASCII: a type name is cut to this and cleaned.
_HEADER_MAX = 256
# The frame limit of an error the bridge writes itself (the reader cuts it to its room).
_ERROR_MAX = 64 * 1024


class WireError(ValueError):
    """A NATS message that does not fit the channel (wrong kind, bad length, bad UTF-8)."""


@dataclass(frozen=True)
class Channel:
    """What the bridge needs to know of a channel: its variant and codec."""

    is_int: bool
    codec: str | None  # None: bytes and str

    @property
    def default_kind(self) -> str:
        return "int" if self.is_int else self.codec or "bytes"


def encode(chan: Channel, value: Any) -> tuple[bytes, dict[str, str] | None]:
    """A request or reply taken from the channel, as a NATS payload and headers."""
    if chan.is_int:
        return _INT.pack(value), None
    if isinstance(value, str):
        return value.encode("utf-8"), {KIND: "str"}
    if chan.codec is not None:  # passthrough handles give the encoded bytes
        return bytes(value), {KIND: chan.codec}
    return bytes(value), None


def decode(chan: Channel, data: bytes, headers: dict[str, str] | None) -> Any:
    """The value to put into the channel for a NATS payload; WireError if it cannot be."""
    kind = (headers or {}).get(KIND) or chan.default_kind
    if chan.is_int:
        if kind != "int":
            raise WireError(f"an Int channel takes {KIND}: int, not {kind!r}")
        if len(data) != _INT.size:
            raise WireError(f"an Int channel's value is 8 bytes (little-endian), not {len(data)}")
        return _INT.unpack(data)[0]
    if kind == "str" and chan.codec is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError(f"{KIND}: str, but the payload is not UTF-8 ({e.reason})") from None
    if kind != chan.default_kind:
        have = f"codec {chan.codec!r}" if chan.codec else "no codec (bytes or str)"
        raise WireError(f"the channel has {have}; the message says {KIND}: {kind}")
    return data


def _header_value(text: str) -> str:
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:_HEADER_MAX])
    return clean or "Exception"


def encode_error(chan: Channel, exc: BaseException) -> tuple[bytes, dict[str, str]]:
    """An error reply: its frame (as a Str channel's reply_error writes it; a RemoteError
    from a passthrough handle keeps the frame it came with) and the type name header."""
    name = _remote._type_name(exc)
    payload = b"" if chan.is_int else _remote.encode(exc, _ERROR_MAX, chan.codec or "")
    return payload, {ERROR: _header_value(name)}


def decode_error(data: bytes, headers: dict[str, str]) -> RemoteError:
    """The RemoteError of an error reply: from its frame, or from the header and a plain
    message (a worker that is not reqrep's). It keeps a frame, so that reply_error
    passes it on unchanged."""
    if _remote.frame_parts(data) is not None:
        err = _remote.decode(data, None)
        assert isinstance(err, RemoteError)
        return err
    return RemoteError(headers.get(ERROR) or "Exception", data.decode("utf-8", "replace"))
