"""The channel file format, as the C core describes it.

Every offset and constant here comes from ``reqrep._reqrep._format``, which the core builds
from the definitions it uses itself (``csrc/rr_format.c``): tools and tests that look inside
a channel file (``reqrep stats``, the fault tests) read the format from here and keep no
numbers of their own.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias

from . import _reqrep

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
WritableBuffer: TypeAlias = bytearray | memoryview | mmap.mmap

_CODES: dict[int, Literal["B", "H", "I", "Q"]] = {1: "B", 2: "H", 4: "I", 8: "Q"}


def get_uint(buf: Buffer, offset: int, size: int) -> int:
    """The little-endian unsigned integer of ``size`` bytes at ``offset``."""
    return int.from_bytes(memoryview(buf)[offset:offset + size], "little")


def put_uint(buf: WritableBuffer, offset: int, size: int, value: int) -> None:
    """Stores ``value`` (wrapped to ``size`` bytes) at ``offset`` in one native store:
    ``struct.pack_into`` zeroes its destination before writing, so a process reading the
    word, or one killed in between, could see 0."""
    value &= (1 << (8 * size)) - 1
    with memoryview(buf) as whole, whole[offset:offset + size] as part:
        with part.cast(_CODES[size]) as word:
            word[0] = value


@dataclass(frozen=True)
class Field:
    """One field of a shared struct: where it lies in the struct and how long it is."""

    offset: int
    size: int


class Struct:
    """The fields of one shared struct (the header, a cell, a slot, a bell)."""

    def __init__(self, name: str, fields: Mapping[str, Field]) -> None:
        self.name = name
        self.fields: Mapping[str, Field] = MappingProxyType(dict(fields))

    def __repr__(self) -> str:
        return f"<Struct {self.name}: {', '.join(self.fields)}>"

    def offset(self, field: str) -> int:
        """The offset of ``field`` from the start of the struct."""
        return self.fields[field].offset

    def get(self, buf: Buffer, base: int, field: str) -> int:
        """Reads ``field`` of the struct at ``base`` (an unsigned integer)."""
        f = self.fields[field]
        return get_uint(buf, base + f.offset, f.size)

    def put(self, buf: WritableBuffer, base: int, field: str, value: int) -> None:
        """Writes ``field`` of the struct at ``base`` (one native store)."""
        f = self.fields[field]
        put_uint(buf, base + f.offset, f.size, value)


def _load() -> tuple[dict[str, Struct], dict[str, Mapping[str, int]]]:
    fields: dict[str, dict[str, Field]] = {}
    consts: dict[str, dict[str, int]] = {}
    for group, name, value, size in _reqrep._format:
        if size:
            fields.setdefault(group, {})[name] = Field(value, size)
        else:
            consts.setdefault(group, {})[name] = value
    return ({g: Struct(g, f) for g, f in fields.items()},
            {g: MappingProxyType(c) for g, c in consts.items()})


_STRUCTS, _CONSTS = _load()

HEADER = _STRUCTS["header"]
STR_CELL = _STRUCTS["str_cell"]
INT_CELL = _STRUCTS["int_cell"]
SLOT = _STRUCTS["slot"]
BELL = _STRUCTS["bell"]
PIN = _STRUCTS["pin"]  # an arena pin; the header holds ARENA_PINS of them at "pin"
ARENA_PINS = _CONSTS["header"]["arena_pins"]

FILE = _CONSTS["file"]  # magic, version, sizes
VARIANTS = _CONSTS["variant"]  # "str" / "int" -> the header's variant
SLOT_STATES = _CONSTS["slot_state"]  # name -> the state in a slot's ctl word
TURN_STATES = _CONSTS["turn_state"]  # name -> the state in an Int cell's turn
CTL = _CONSTS["ctl"]
WORKER = _CONSTS["worker"]
OWNER = _CONSTS["owner"]
TURN = _CONSTS["turn"]
IDENT = _CONSTS["ident"]

VERSION = FILE["version"]
VARIANT_NAMES = {v: k for k, v in VARIANTS.items()}
SLOT_STATE_NAMES = {v: k for k, v in SLOT_STATES.items()}


# how many bytes from a file's start say its variant (variant_in)
VARIANT_HEAD = HEADER.fields["variant"].offset + HEADER.fields["variant"].size


def variant_in(head: bytes) -> str | None:
    """The variant ("str" or "int") a file starting with `head` (its first
    ``VARIANT_HEAD`` bytes) says it is, if any."""
    at = HEADER.fields["variant"]
    if len(head) < VARIANT_HEAD:
        return None
    return VARIANT_NAMES.get(get_uint(head, at.offset, at.size))


def _mask(bits: int) -> int:
    return (1 << bits) - 1


# ---- a slot's ctl word


def ctl_word(gen: int, state: int) -> int:
    """A slot's ctl word: generation, and in the futex half its low bits and the state."""
    gen &= 0xFFFFFFFF
    bits = CTL["state_bits"]
    low = (gen << bits | state) & 0xFFFFFFFF
    return gen << CTL["gen_shift"] | low


def ctl_state(ctl: int) -> int:
    return ctl & _mask(CTL["state_bits"])


def ctl_gen(ctl: int) -> int:
    return ctl >> CTL["gen_shift"]


def slot_state_name(state: int) -> str:
    """The name of a slot state, or ``invalid(N)`` for a value the format does not have."""
    return SLOT_STATE_NAMES.get(state, f"invalid({state})")


# ---- process words: start time << pid bits | pid, under a generation


def proc_bits(pid: int, start: int) -> int:
    """A process as the low bits of a slot's owner word and worker record hold it."""
    pid_bits = WORKER["pid_bits"]
    return (start & _mask(WORKER["start_bits"])) << pid_bits | (pid & _mask(pid_bits))


def proc_of(word: int) -> tuple[int, int]:
    """(pid, start time bits) of an owner word or worker record."""
    pid_bits = WORKER["pid_bits"]
    return word & _mask(pid_bits), (word >> pid_bits) & _mask(WORKER["start_bits"])


def worker_word(gen: int, pid: int, start: int, writing: bool = False) -> int:
    """A slot's worker record: who took the request (or writes its reply, ``writing``)."""
    return ((gen & _mask(WORKER["gen_bits"])) << WORKER["gen_shift"]
            | int(writing) << WORKER["writing_shift"] | proc_bits(pid, start))


def worker_gen(word: int) -> int:
    return word >> WORKER["gen_shift"]


def worker_writing(word: int) -> bool:
    return bool(word >> WORKER["writing_shift"] & 1)


def owner_word(gen: int, pid: int, start: int) -> int:
    """A slot's owner word: the client that acquired it for generation ``gen``."""
    return (gen & _mask(OWNER["tag_bits"])) << OWNER["tag_shift"] | proc_bits(pid, start)


def owner_tag(word: int) -> int:
    return word >> OWNER["tag_shift"]


# ---- an Int cell's turn


def turn_word(lap: int, state: int, pid: int = 0, start: int = 0) -> int:
    """An Int cell's turn: lap, state and who is inside the cell (0: nobody)."""
    who_bits, pid_bits = TURN["who_bits"], WORKER["pid_bits"]
    who = (start & _mask(who_bits - pid_bits)) << pid_bits | pid if pid else 0
    return (lap & 0xFFFFFFFF) << TURN["lap_shift"] | state << who_bits | who


# ---- identity words (the Str lock's holder, a bell's owner)


def ident_word(pid: int, start: int) -> int:
    """A process identity: start time (low bits) << pid bits | pid."""
    bits = IDENT["pid_bits"]
    return (start & _mask(bits)) << bits | (pid & _mask(bits))


def ident_of(word: int) -> tuple[int, int]:
    """(pid, start time bits) of an identity word (the lock's waiters flag dropped)."""
    word &= ~IDENT["lock_waiters"]
    bits = IDENT["pid_bits"]
    return word & _mask(bits), word >> bits


def process_alive(pid: int, start_bits: int = 0, bits: int = 32) -> bool:
    """Whether process ``pid``, whose start time ends in ``start_bits`` (its low ``bits``
    bits; 0 = unknown), is alive: the core's own verdict (a pid reused by a newer
    process, a zombie or a kernel thread is not the old process)."""
    if not 0 < pid < IDENT["pid_limit"]:
        return False
    return _reqrep._process_alive(pid, start_bits & 0xFFFFFFFF, bits)
