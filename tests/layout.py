"""The channel file as the tests see it: a mapping to forge shared words in, the header's
geometry, and process words with a real process's start time.

Every offset, size and constant comes from ``reqrep._format`` (the core's own description
of its file); tests read and write single fields through it directly
(``_format.SLOT.put(cm.mm, cm.slot_off(i), "ctl", _format.ctl_word(gen, state))``).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import proc_start_time

from reqrep import _format

# The header's geometry: what a creator writes before it publishes the magic, and what an
# opener validates. (The bell region's offset came later and is not among them.)
GEOMETRY: tuple[str, ...] = (
    "magic", "version", "variant", "total_size", "req_cap", "resp_slots", "resp_size",
    "slot_stride", "arena_cap", "off_cells", "off_slots", "off_arena")

_STRUCT_CODE = {4: "I", 8: "Q"}

# name -> (offset, struct code), for code that packs the words itself (a subprocess).
GEOM_FIELDS: dict[str, tuple[int, str]] = {
    k: (_format.HEADER.offset(k), _STRUCT_CODE[_format.HEADER.fields[k].size])
    for k in GEOMETRY}


def read_geometry(data: _format.Buffer) -> dict[str, int]:
    """The header's geometry fields."""
    return {k: _format.HEADER.get(data, 0, k) for k in GEOMETRY}


def write_geometry(buf: _format.WritableBuffer, name: str, value: int) -> None:
    """Stores `value` (wrapped to the field's size) in geometry field `name`."""
    _format.HEADER.put(buf, 0, name, value)


def channel_bytes(tmp: Path, cls: type, name: str = "model", **geometry: Any) -> bytes:
    """The bytes of a freshly created channel file."""
    p = tmp / f"{name}-{cls.__name__}.rr"
    with cls(p, **geometry):
        pass
    data = p.read_bytes()
    p.unlink()
    return data


@dataclass
class ChannelMap:
    """A read/write mapping of a channel file, for forging shared words behind the library's
    back. Offsets of slots and cells come from the header."""

    path: Path
    mm: mmap.mmap
    geom: dict[str, int]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ChannelMap:
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        return cls(Path(path), mm, read_geometry(mm))

    def close(self) -> None:
        self.mm.close()

    def __enter__(self) -> ChannelMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def slot_off(self, index: int) -> int:
        """Where slot `index` starts."""
        return self.geom["off_slots"] + index * self.geom["slot_stride"]

    def cell_off(self, pos: int) -> int:
        """Where the queue cell of position `pos` (head, tail, ...) starts."""
        cap = self.geom["req_cap"]
        return self.geom["off_cells"] + (pos & (cap - 1)) * _format.FILE["cell_size"]

    @property
    def lock(self) -> int:
        """The Str queue lock word: the holder's identity, or 0."""
        return _format.HEADER.get(self.mm, 0, "lock")

    @lock.setter
    def lock(self, value: int) -> None:
        _format.HEADER.put(self.mm, 0, "lock", value)

    @property
    def lock_pid(self) -> int:
        """The pid the lock word names (0: free)."""
        return _format.ident_of(self.lock)[0]

    @property
    def head(self) -> int:
        """The queue's head (the next position to take)."""
        return _format.HEADER.get(self.mm, 0, "head")

    @head.setter
    def head(self, value: int) -> None:
        _format.HEADER.put(self.mm, 0, "head", value)

    @property
    def tail(self) -> int:
        """The queue's tail (the next position to fill)."""
        return _format.HEADER.get(self.mm, 0, "tail")

    @tail.setter
    def tail(self, value: int) -> None:
        _format.HEADER.put(self.mm, 0, "tail", value)


# --------------------------------------------------------------------------- process words


def ident_word(pid: int, start: int | None = None) -> int:
    """The identity the library stores for a process (the lock's holder, a bell's owner),
    with its real start time unless `start` is given."""
    return _format.ident_word(pid, proc_start_time(pid) if start is None else start)


def owner_word(gen: int, pid: int, start: int | None = None) -> int:
    """A slot's owner word: the client `pid` acquired it for generation `gen` (with its real
    start time unless `start` is given)."""
    return _format.owner_word(gen, pid, proc_start_time(pid) if start is None else start)
