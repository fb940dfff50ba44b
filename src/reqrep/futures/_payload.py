"""How a pool's tasks and results travel: pickled (by reference, as the standard pool
does), inline in the channel when they fit, else through a spill file.

A payload is ``bytes`` (the pickle itself) or ``str`` (the path of a spill file in the
pool's private directory, holding the pickle). The channel keeps ``bytes`` and ``str``
apart, so no tag is needed. Whoever reads a spill file removes it; what a dead reader
left behind goes with the directory at shutdown.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Any

from reqrep._remote import RemoteError

__all__ = ["decode_error", "discard", "dump", "encode_error", "load", "spill"]


def dump(obj: Any, spill_dir: str, limit: int) -> bytes | str:
    """``obj`` pickled, inline if at most ``limit`` bytes, else written to a spill file."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data if len(data) <= limit else spill(data, spill_dir)


def spill(data: bytes, spill_dir: str) -> str:
    """``data`` written to a new spill file; its path."""
    fd, path = tempfile.mkstemp(dir=spill_dir, prefix="spill-")
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
    except BaseException:
        discard(path)
        raise
    return path


def load(payload: bytes | str) -> Any:
    """The object a payload holds; a spill file is removed once read."""
    if isinstance(payload, str):
        try:
            with open(payload, "rb") as f:
                data = f.read()
        finally:
            discard(payload)
        return pickle.loads(data)
    return pickle.loads(payload)


def discard(payload: bytes | str | None) -> None:
    """Remove a payload's spill file, if it has one that is still there."""
    if isinstance(payload, str):
        try:
            os.unlink(payload)
        except FileNotFoundError:
            pass


def encode_error(exc: BaseException, traceback_text: str) -> tuple[Any, ...]:
    """A task's exception as it travels: the exception pickled on its own (it may not
    unpickle in the pool's process) with its type name, message and traceback as text."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a __str__ that fails must not lose the error
        message = f"<unprintable {cls.__name__}>"
    try:
        pickled: bytes | None = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - sent as text only
        pickled = None
    return (False, pickled, name, message, traceback_text)


def decode_error(pickled: bytes | None, name: str, message: str,
                 traceback_text: str) -> BaseException:
    """The original exception with a RemoteError (the remote traceback) as its cause, or
    the RemoteError alone when the exception does not unpickle here."""
    cause = RemoteError(name, message, traceback_text)
    if pickled is None:
        return cause
    try:
        exc = pickle.loads(pickled)
    except Exception:  # noqa: BLE001 - its class is unknown here, or its state is odd
        return cause
    if not isinstance(exc, BaseException):
        return cause
    exc.__cause__ = cause
    return exc
