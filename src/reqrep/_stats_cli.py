"""``python -m reqrep stats PATH [--json]``: look inside a live channel.

The report holds the channel's geometry, its counters (``stats()``), the
state of every response slot, the arena in use, and who is involved right now:
the client process that owns each busy slot, the worker that took its request,
the holder of the Str queue lock and the owners of the event-loop bells, each
with a verdict on whether that process is still alive.

The channel is opened with ``Client._open_existing`` / ``IntClient._open_existing``
(which validates the file and never creates, initialises or changes anything)
for the counters and the region offsets; the raw words that no API returns
(lock holder, slot owners and workers, bells) are read from a separate
read-only mapping of the same file. Nothing is written: the tool is safe to
run against a channel in production. The words are read without any lock, so
the report is a snapshot that may be slightly inconsistent while the channel
is busy.

Exit status: 0 on success, 2 when the file is missing, unreadable or not a
channel (with a one-line message on stderr).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from . import _format

VARIANT_STR = _format.VARIANTS["str"]
VARIANT_INT = _format.VARIANTS["int"]
_STATE_HELP = {
    "acquired": "awaiting a reply",
    "writing": "a worker is writing the reply",
    "ready": "replied, not collected yet",
    "reading": "the client is copying the reply out",
    "pinned": "collected as a View (copy=False), held until released",
    "cancelled": "cancelled while its reply was being written; the writer frees it",
}

EXIT_OK = 0
EXIT_ERROR = 2
HUMAN_SLOT_ROWS = 50  # busy slots listed in the human report (--json lists all)

# /proc/PID/fd/N (or /proc/self/fd/N): how a memfd channel, which has no path, is reached.


class StatsError(Exception):
    """A file that cannot be reported on; the message is the whole story."""


# ---------------------------------------------------------------- process liveness


class _Liveness:
    """Asks about each (pid, start time) once per report."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int, int], bool] = {}

    def __call__(self, pid: int, start_bits: int, bits: int) -> bool:
        key = (pid, start_bits, bits)
        if key not in self._seen:
            self._seen[key] = _format.process_alive(pid, start_bits, bits)
        return self._seen[key]

    def process(self, word: int) -> dict[str, Any]:
        """The process in a slot's owner word or worker record as a JSON object."""
        pid, start = _format.proc_of(word)
        return {"pid": pid, "alive": self(pid, start, _format.WORKER["start_bits"])}

    def identity(self, ident: int) -> dict[str, Any]:
        """An identity word (the lock's holder, a bell's owner) as a JSON object."""
        pid, start = _format.ident_of(ident)
        return {"pid": pid, "alive": self(pid, start, _format.IDENT["pid_bits"])}


# ---------------------------------------------------------------- reading the channel


@dataclass
class _Raw:
    """A read-only view of the channel file plus where its regions lie."""

    buf: mmap.mmap
    layout: dict[str, int]

    def header(self, field: str) -> int:
        return _format.HEADER.get(self.buf, 0, field)

    def codec(self) -> str | None:
        """The codec's name the header records, or None."""
        f = _format.HEADER.fields["codec"]
        name = bytes(self.buf[f.offset:f.offset + f.size]).split(b"\0", 1)[0]
        return name.decode("ascii", "replace") or None


def _open_readonly(path: str) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not block
    try:  # links are followed, as a Client follows them
        return os.open(path, flags)
    except FileNotFoundError as e:
        why = e.strerror or str(e)
        if os.path.islink(path):
            why = f"a symbolic link to {os.readlink(path)!r}, which does not exist"
        raise StatsError(f"{path}: {why}") from None
    except OSError as e:
        raise StatsError(f"{path}: {e.strerror or e}") from None


def _open_channel(path: str, variant: str | None) -> Any:
    """A Client/IntClient on the channel (validated by the library); `variant` is what
    the file says it is, if anything (else both are tried)."""
    from reqrep import ChannelFormatError, Client, IntClient

    first, second = (IntClient, Client) if variant == "int" else (Client, IntClient)
    try:
        try:
            return first._open_existing(path)
        except ChannelFormatError:
            if variant is not None:
                raise
            return second._open_existing(path)
    except ChannelFormatError as e:
        msg = str(e)
        prefix = f"{path!r}: "  # the library names the path: say it once, unquoted
        raise StatsError(f"{path}: {msg.removeprefix(prefix)}") from None
    except OSError as e:
        raise StatsError(f"{path}: {e.strerror or e}") from None


def collect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole report for the channel at ``path`` as a JSON-ready dict.

    Raises :class:`StatsError` for a missing, unreadable or invalid file."""
    from reqrep import IntClient

    path = os.fspath(path)
    fd = _open_readonly(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StatsError(f"{path}: not a regular file")
        chan = _open_channel(path, _format.variant_in(os.pread(fd, _format.VARIANT_HEAD, 0)))
        try:
            stats = dict(chan.stats())
            layout = {k: int(v) for k, v in chan._layout().items()}
            variant = VARIANT_INT if isinstance(chan, IntClient) else VARIANT_STR
        finally:
            chan.close()
        st = os.fstat(fd)
        try:
            same = os.stat(path)
        except OSError:
            same = st
        if (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
            raise StatsError(f"{path}: the file was replaced while it was being read")
        if st.st_size != layout["total_size"]:
            raise StatsError(
                f"{path}: file is {st.st_size} bytes, the channel needs {layout['total_size']}"
            )
        with mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ) as buf:
            raw = _Raw(buf, layout)
            return _report(path, raw, variant, stats, st.st_size)
    finally:
        os.close(fd)


def _report(
    path: str, raw: _Raw, variant: int, stats: dict[str, int], file_size: int
) -> dict[str, Any]:
    layout = raw.layout
    alive = _Liveness()
    resp_slots, capacity = stats["resp_slots"], stats["capacity"]

    geometry: dict[str, Any] = {
        "capacity": capacity,
        "resp_slots": resp_slots,
        "resp_size": stats["resp_size"],
        "arena": stats.get("arena_cap", 0),
        "file_size": file_size,
        "slot_stride": layout["slot_stride"],
        "regions": {k: layout[k] for k in ("off_bells", "off_cells", "off_slots", "off_arena")},
    }

    head, tail = raw.header("head"), raw.header("tail")
    queue: dict[str, Any] = {"size": stats["size"], "capacity": capacity}
    if variant == VARIANT_STR:
        queue.update(head=head, tail=tail)
        queue.update(arena_used=stats["arena_used"], arena_cap=stats["arena_cap"])

    # -- the Str queue lock
    lock: dict[str, Any] | None = None
    if variant == VARIANT_STR:
        word = raw.header("lock")
        waiters = _format.IDENT["lock_waiters"]
        lock = {"held": word != 0, "waiters": bool(word & waiters)}
        if word != 0:
            lock["holder"] = alive.identity(word)

    # -- response slots
    counts = dict.fromkeys(_format.SLOT_STATES, 0)
    busy: list[dict[str, Any]] = []
    owner_left = 0  # free slots whose owner word is set: being acquired/released right now
    base, stride = layout["off_slots"], layout["slot_stride"]
    slot, gen_mask = _format.SLOT, (1 << _format.WORKER["gen_bits"]) - 1
    for idx in range(resp_slots):
        at = base + idx * stride
        ctl = slot.get(raw.buf, at, "ctl")
        state = _format.slot_state_name(_format.ctl_state(ctl))
        counts[state] = counts.get(state, 0) + 1
        owner = slot.get(raw.buf, at, "owner")
        if state == "free":
            owner_left += owner != 0
            continue
        gen = _format.ctl_gen(ctl)
        row: dict[str, Any] = {
            "index": idx,
            "id": gen << 32 | idx,
            "generation": gen,
            "state": state,
            "owner": alive.process(owner) if owner else None,
            "worker": None,
        }
        w = slot.get(raw.buf, at, "worker")
        if w and _format.worker_gen(w) == gen & gen_mask:  # this request's, not an older one
            row["worker"] = alive.process(w)
        busy.append(row)

    # -- event-loop bells
    bells: list[dict[str, Any]] = []
    nbells, off_bells = _format.FILE["bells"], layout["off_bells"]
    bell_size = _format.FILE["bell_size"]
    for i in range(nbells):
        owner = _format.BELL.get(raw.buf, off_bells + i * bell_size, "owner")
        if owner:
            bells.append({"index": i, **alive.identity(owner)})

    return {
        "path": path,
        "variant": _format.VARIANT_NAMES[variant],
        "format_version": raw.header("version"),
        "codec": raw.codec(),
        "geometry": geometry,
        "counters": stats,
        "queue": queue,
        "lock": lock,
        "slots": {
            "total": resp_slots,
            **counts,
            "free_with_owner": owner_left,
            "busy": busy,
        },
        "bells": {"total": nbells, "in_use": bells},
        "processes": _processes(lock, busy, bells),
    }


def _processes(
    lock: dict[str, Any] | None, busy: list[dict[str, Any]], bells: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every process named anywhere in the channel, with what it holds."""
    procs: dict[int, dict[str, Any]] = {}

    def entry(who: dict[str, Any]) -> dict[str, Any]:
        p = procs.setdefault(
            who["pid"],
            {"pid": who["pid"], "alive": who["alive"], "slots_owned": 0, "requests_taken": 0,
             "holds_lock": False, "bells": 0},
        )
        p["alive"] = p["alive"] or who["alive"]
        return p

    for row in busy:
        if row["owner"]:
            entry(row["owner"])["slots_owned"] += 1
        if row["worker"]:
            entry(row["worker"])["requests_taken"] += 1
    if lock and lock.get("holder"):
        entry(lock["holder"])["holds_lock"] = True
    for bell in bells:
        entry(bell)["bells"] += 1
    for p in procs.values():
        p["command"] = _command(p["pid"]) if p["alive"] else None
    return sorted(procs.values(), key=lambda p: p["pid"])


COMMAND_MAX = 60  # characters of a command line in the human report


def _command(pid: int) -> str | None:
    """The command line of a live process (a bridge shows as ``reqrep bridge forward
    ...``), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return None
    words = [a.decode("utf-8", "replace") for a in argv if a]
    # python -m reqrep ... reads better as what it runs
    if len(words) >= 3 and words[1] == "-m":
        words = words[2:]
    return " ".join(words) or None


# ---------------------------------------------------------------- the human report


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def _who(who: dict[str, Any] | None, none: str = "-") -> str:
    if not who:
        return none
    return f"{who['pid']} ({'alive' if who['alive'] else 'DEAD'})"


def render(rep: dict[str, Any], out: TextIO) -> None:
    """Writes the report as aligned text."""
    g, c, q, s = rep["geometry"], rep["counters"], rep["queue"], rep["slots"]
    is_str = rep["variant"] == "str"
    lines: list[str] = []
    add = lines.append

    def field(name: str, value: object) -> None:
        add(f"  {name:<16}{value}")

    add(f"reqrep channel {rep['path']}")
    field("variant", f"{'Str' if is_str else 'Int'} (format version {rep['format_version']})")
    if is_str:
        field("codec", rep["codec"] or "none (bytes and str)")
    field("capacity", f"{g['capacity']:,} request cells")
    if is_str:
        field("resp_slots", f"{g['resp_slots']:,} x {g['resp_size']:,} bytes")
        field("arena", _size(g["arena"]))
    else:
        field("resp_slots", f"{g['resp_slots']:,}")
    field("file size", _size(g["file_size"]))

    add("")
    add("counters")
    for key in ("requests", "replies", "send_full", "recv_empty", "recoveries"):
        field(key, f"{c[key]:,}")

    add("")
    add("queue")
    field("queued", f"{q['size']:,} of {q['capacity']:,}")
    if is_str:
        used, cap = q["arena_used"], q["arena_cap"]
        field("arena in use", f"{used:,} of {cap:,} bytes ({100.0 * used / cap:.1f}%)")
        lock = rep["lock"]
        if not lock["held"]:
            text = "free"
        else:
            text = f"held by pid {_who(lock['holder'])}"
            if not lock["holder"]["alive"]:
                text += ": the next process that needs it takes it over"
        if lock["waiters"]:
            text += ", waiters flagged"
        field("lock", text)
    else:
        field("lock", "none (lock-free queue)")

    add("")
    parts = [f"{s['free']:,} free"]
    for state in _STATE_HELP:
        if s.get(state):
            parts.append(f"{s[state]:,} {_STATE_HELP[state]}")
    for state, n in s.items():
        if state.startswith("invalid") and n:
            parts.append(f"{n} in an invalid state")
    add(f"slots ({s['total']:,}): " + ", ".join(parts))
    if s["free_with_owner"]:
        field("note", f"{s['free_with_owner']} free slot(s) still name an owner "
              "(being acquired or released right now)")
    busy = s["busy"]
    if busy:
        add(f"  {'slot':>7}  {'id':<18}  {'state':<9}  {'owner (client)':<18}  worker")
        for row in busy[:HUMAN_SLOT_ROWS]:
            worker = _who(row["worker"], "not taken yet" if row["state"] == "acquired" else "-")
            add(
                f"  {row['index']:>7}  {row['id']:#018x}  {row['state']:<9}  "
                f"{_who(row['owner']):<18}  {worker}"
            )
        if len(busy) > HUMAN_SLOT_ROWS:
            add(f"  ... and {len(busy) - HUMAN_SLOT_ROWS:,} more (--json lists them all)")

    bells = rep["bells"]
    add("")
    add(f"event-loop bells: {len(bells['in_use'])} of {bells['total']} in use")
    for bell in bells["in_use"]:
        field(f"bell {bell['index']}", f"owner {_who(bell)}")

    procs = rep["processes"]
    add("")
    if procs:
        add("processes named in the channel")
        add(f"  {'pid':>8}  {'state':<6}  {'slots owned':>11}  {'requests taken':>14}  "
            f"{'lock':<4}  {'bells':<5}  command")
        for p in procs:
            command = p["command"] or "-"
            if len(command) > COMMAND_MAX:
                command = command[:COMMAND_MAX - 3] + "..."
            add(
                f"  {p['pid']:>8}  {'alive' if p['alive'] else 'DEAD':<6}  "
                f"{p['slots_owned']:>11}  {p['requests_taken']:>14}  "
                f"{'yes' if p['holds_lock'] else '-':<4}  {p['bells'] or '-'!s:<5}  {command}"
            )
        if any(not p["alive"] for p in procs):
            add("  (a dead process's slots, lock and bells are recovered by the next process "
                "that needs them)")
    else:
        add("processes named in the channel: none")
    out.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- the subcommand


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declares ``stats PATH [--json]`` on the ``reqrep`` command line."""
    p = subparsers.add_parser(
        "stats",
        help="show a channel's geometry, counters, slot states and live owners",
        description=(
            "Report on the channel in PATH without changing it: geometry, counters, "
            "queue and arena use, the Str queue lock holder, every busy response slot "
            "with its owner (client) and the worker that took its request, and the "
            "event-loop bells in use; each process is checked for being alive. "
            "A memfd channel can be reached as /proc/PID/fd/N."
        ),
    )
    p.add_argument("path", metavar="PATH", help="the channel file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs ``stats``; returns the exit status."""
    try:
        rep = collect(args.path)
    except StatsError as e:
        sys.stderr.write(f"reqrep stats: {e}\n")
        return EXIT_ERROR
    if args.json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(rep, sys.stdout)
    return EXIT_OK
