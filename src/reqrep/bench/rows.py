"""The catalogue of benchmark rows (SPEC section 6), in table order.

A *case* is one thing that runs (in fresh processes, several times); it yields
one or more *metrics*, and each metric is a line of the table in its group. The
ratio column compares a line with the fastest peer (non-reqrep) line of the
same group.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import partial

from reqrep.bench import peers
from reqrep.bench.transports import (
    BURST,
    ECHO_SIZE,
    ReqrepInt,
    ReqrepSingle,
    ReqrepStr,
    ReqrepStrBurst,
    Transport,
)
from reqrep.bench.zerocopy import ReqrepZeroCopy

BIG = 64 * 1024
ZEROCOPY_LABEL = "reqrep Str, zero-copy (recv/req copy=False, reply_buffer)"
MIB = 1024 * 1024
# The oversubscribed MPMC layout: many more processes than a small machine has CPUs.
OVER_CLIENTS = 16
OVER_WORKERS = 4

# Group names, in table order.
ECHO = "1:1 echo, 12 B (1 client : 1 worker process)"
SINGLE = "single-process echo (send, recv, reply, get)"
BATCH = f"batch receive ({BURST} pipelined requests)"
BIG_RT = "64 KiB echo (1 client : 1 worker)"
BIG_BW = "64 KiB echo, throughput"
MIB_RT = "1 MiB echo (1 client : 1 worker)"
MIB_BW = "1 MiB echo, throughput"
MPMC = "MPMC (4 client : 2 worker processes)"
MPMC16 = f"MPMC oversubscribed ({OVER_CLIENTS} client : {OVER_WORKERS} worker processes)"
P50 = "1:1 latency, p50"
P99 = "1:1 latency, p99"
ASYNCIO = "asyncio client, 12 B (1 client process : 1 worker process)"
LOADED = "1:1 echo with 1 extra busy process"
OBJ_SMALL = "pickled objects: a small dict (1 client : 1 worker)"
OBJ_ARRAY = "pickled objects: a 1 MiB NumPy array (1 client : 1 worker)"
POOL_SUBMIT = "process pool, tiny tasks: submit and wait, one at a time (tasks/s)"
POOL_MAP = "process pool, tiny tasks: map(chunksize=1) (tasks/s)"
POOL_BEST = "process pool, tiny tasks: map at the standard pool's best chunksize (tasks/s)"
NATS = "NATS request/reply, 12 B, 64 in flight (1 requester process, a local nats-server)"


# How to install an optional package that the [bench] extra does not bring.
INSTALL = {"iceoryx2": "pip install iceoryx2"}


@dataclass(frozen=True)
class Metric:
    """One line of the table produced by a case."""

    key: str
    group: str
    unit: str
    higher_is_better: bool = True
    suffix: str = ""


@dataclass(frozen=True)
class Case:
    """One benchmark: a transport, a process layout and a client workload."""

    id: str
    label: str
    make: Callable[[], Transport]
    metrics: tuple[Metric, ...]
    peer: bool = True
    workload: str = "rate"
    clients: int = 1
    workers: int = 1
    loaded: bool = False
    requires: str | None = None
    check: Callable[[], str | None] | None = None  # says what else is missing, if anything

    def missing(self) -> str | None:
        """Why the case cannot run here (a missing optional package or program), or None."""
        for name in (self.requires or "").split(","):  # "a,b": needs both
            if name and importlib.util.find_spec(name) is None:
                how = INSTALL.get(name, "pip install 'reqrep[bench]'")
                return f"{name} not installed ({how})"
        return self.check() if self.check is not None else None


def _rate(group: str) -> tuple[Metric, ...]:
    return (Metric("rt_per_s", group, "rt/s"),)


def _echo_cases(group: str, prefix: str, *, loaded: bool = False) -> list[Case]:
    """The 1:1 echo rows; ``loaded`` gives the subset re-run next to a busy process."""
    m = _rate(group)
    rows = [
        Case(f"{prefix}reqrep-str", "reqrep Str", ReqrepStr, m, peer=False),
        Case(f"{prefix}reqrep-int", "reqrep Int", ReqrepInt, m, peer=False),
        Case(
            f"{prefix}reqrep-str-spin0", "reqrep Str, spin=0", lambda: ReqrepStr(0), m, peer=False
        ),
        Case(
            f"{prefix}reqrep-int-spin0", "reqrep Int, spin=0", lambda: ReqrepInt(0), m, peer=False
        ),
        Case(f"{prefix}pipe", "os.pipe pair", peers.PipePair, m),
        Case(f"{prefix}socketpair", "socket.socketpair", peers.SocketPair, m),
        Case(f"{prefix}mp-pipe", "multiprocessing.Pipe", peers.MpPipe, m),
        Case(f"{prefix}mp-queue", "multiprocessing.Queue pair", peers.MpQueues, m),
        Case(f"{prefix}tcp", "TCP loopback (127.0.0.1)", peers.TcpLoopback, m),
        Case(f"{prefix}zmq", "pyzmq REQ/REP over ipc://", peers.ZmqReqRep, m, requires="zmq"),
        Case(f"{prefix}sysv", "sysv_ipc message queues", peers.SysvQueues, m, requires="sysv_ipc"),
        Case(
            f"{prefix}faster-fifo",
            "faster-fifo queue pair",
            peers.FasterFifoQueues,
            m,
            requires="faster_fifo",
        ),
        *_iceoryx2_cases(prefix, m),
    ]
    if loaded:
        keep = {"reqrep-str", "reqrep-int", "reqrep-str-spin0", "reqrep-int-spin0", "pipe"}
        rows = [replace(c, loaded=True) for c in rows if c.id.removeprefix(prefix) in keep]
    return rows


def _iceoryx2_cases(
    prefix: str, metrics: tuple[Metric, ...], size: int = ECHO_SIZE
) -> list[Case]:
    """iceoryx2 request-response in both its modes (see ``bench.iceoryx``): busy-polling,
    its fastest while each side has a CPU, and sleeping on event listeners; both write
    their payloads into loaned shared-memory slices (its zero-copy API)."""
    from reqrep.bench.iceoryx import Iceoryx2Echo

    labels = {
        "poll": "iceoryx2 request-response, busy-poll (loaned slices)",
        "event": "iceoryx2 request-response, event listeners (loaned slices)",
    }
    return [
        Case(f"{prefix}iceoryx2-{mode}", label, partial(Iceoryx2Echo, mode, size), metrics,
             requires="iceoryx2")
        for mode, label in labels.items()
    ]


def _single_cases() -> list[Case]:
    m = _rate(SINGLE)
    return [
        Case(
            "single-reqrep-str", "reqrep Str", lambda: ReqrepSingle("str"), m, peer=False, workers=0
        ),
        Case(
            "single-reqrep-int", "reqrep Int", lambda: ReqrepSingle("int"), m, peer=False, workers=0
        ),
        Case("single-pipe", "os.pipe pair", peers.PipeSingle, m, workers=0),
        Case("single-socketpair", "socket.socketpair", peers.SocketPairSingle, m, workers=0),
    ]


def _batch_cases() -> list[Case]:
    m = _rate(BATCH)
    return [
        Case(
            "batch-reqrep-str-multi",
            "reqrep Str, worker recv_wait_multi",
            lambda: ReqrepStrBurst(multi=True),
            m,
            peer=False,
        ),
        Case(
            "batch-reqrep-str",
            "reqrep Str, worker recv_wait",
            lambda: ReqrepStrBurst(multi=False),
            m,
            peer=False,
        ),
        Case("batch-pipe", "os.pipe pair", peers.PipeBurst, m),
    ]


def _large_cases(prefix: str, size: int, rt_group: str, bw_group: str) -> list[Case]:
    """A large echo (64 KiB, 1 MiB each way): reqrep copying and zero-copy (SPEC §9)
    among the peers, in round trips/s and MiB/s."""
    m = (
        Metric("rt_per_s", rt_group, "rt/s"),
        Metric("mib_per_s", bw_group, "MiB/s"),
    )
    return [
        Case(f"{prefix}reqrep-str", "reqrep Str", lambda: ReqrepStr(size=size), m, peer=False),
        Case(f"{prefix}reqrep-zerocopy", ZEROCOPY_LABEL, lambda: ReqrepZeroCopy(size=size), m,
             peer=False),
        Case(f"{prefix}pipe", "os.pipe pair", lambda: peers.PipePair(size), m),
        Case(f"{prefix}socketpair", "socket.socketpair", lambda: peers.SocketPair(size), m),
        *_iceoryx2_cases(prefix, m, size),
    ]


def _mpmc_cases() -> list[Case]:
    m = _rate(MPMC)
    return [
        Case("mpmc-reqrep-str", "reqrep Str", ReqrepStr, m, peer=False, clients=4, workers=2),
        Case(
            "mpmc-reqrep-str-spin0",
            "reqrep Str, spin=0",
            lambda: ReqrepStr(0),
            m,
            peer=False,
            clients=4,
            workers=2,
        ),
        Case(
            "mpmc-mp-queue",
            "multiprocessing.Queue, reply queue per client",
            lambda: peers.MpQueues(clients=4),
            m,
            clients=4,
            workers=2,
        ),
    ]


def _mpmc16_cases() -> list[Case]:
    """16 clients and 4 workers on one channel, far more processes than a small machine
    has CPUs (this project's has 2): a waiter that spins holds a CPU another process
    needs, so these rows show what spinning costs or gains once the machine is
    oversubscribed, against ``spin=0`` (sleep at once) and a ``multiprocessing.Queue``
    pair."""
    m = _rate(MPMC16)

    def case(cid: str, label: str, make: Callable[[], Transport], peer: bool = False) -> Case:
        return Case(f"mpmc16-{cid}", label, make, m, peer=peer, clients=OVER_CLIENTS,
                    workers=OVER_WORKERS)

    return [
        case("reqrep-str", "reqrep Str", ReqrepStr),
        case("reqrep-str-spin0", "reqrep Str, spin=0", lambda: ReqrepStr(0)),
        case("reqrep-int", "reqrep Int", ReqrepInt),
        case("reqrep-int-spin0", "reqrep Int, spin=0", lambda: ReqrepInt(0)),
        case("mp-queue", "multiprocessing.Queue, reply queue per client",
             lambda: peers.MpQueues(clients=OVER_CLIENTS), peer=True),
    ]


def _latency_cases() -> list[Case]:
    m = (
        Metric("p50_us", P50, "us", higher_is_better=False, suffix=" p50"),
        Metric("p99_us", P99, "us", higher_is_better=False, suffix=" p99"),
    )
    return [
        Case("latency-reqrep-str", "reqrep Str", ReqrepStr, m, peer=False, workload="latency"),
        Case("latency-reqrep-int", "reqrep Int", ReqrepInt, m, peer=False, workload="latency"),
        Case("latency-pipe", "os.pipe pair", peers.PipePair, m, workload="latency"),
    ]


def asyncio_cases() -> list[Case]:
    """An asyncio client with ``aio.INFLIGHT`` requests in flight against one worker."""
    from reqrep.bench import aio

    m = _rate(ASYNCIO)
    label = f"{aio.INFLIGHT} in flight"
    return [
        Case("aio-reqrep", f"reqrep.aio AsyncClient, {label}", aio.ReqrepAio, m, peer=False,
             workload="aio_rate"),
        Case("aio-unix-streams", f"asyncio Unix-socket streams, {label}", aio.AioUnixStreams, m,
             workload="aio_rate"),
    ]


def _object_cases() -> list[Case]:
    """reqrep's pickle codec against the peers that pickle for you."""
    from reqrep.bench import objects

    rows = []
    for group, kind, extra in ((OBJ_SMALL, "small", ""), (OBJ_ARRAY, "array", "numpy")):
        m = _rate(group)
        zmq_label = "pyzmq send_pyobj" if kind == "small" else "pyzmq, zero-copy frames"
        rows += [
            Case(f"obj-{kind}-reqrep", 'reqrep Str, codec="pickle"',
                 partial(objects.ReqrepPickle, kind), m, peer=False, requires=extra or None),
            Case(f"obj-{kind}-mp-queue", "multiprocessing.Queue pair",
                 partial(objects.MpQueuePickle, kind), m, requires=extra or None),
            Case(f"obj-{kind}-zmq", zmq_label, partial(objects.ZmqPickle, kind), m,
                 requires=f"zmq,{extra}" if extra else "zmq"),
        ]
    return rows


def _pool_cases() -> list[Case]:
    """reqrep.futures against the standard pools (each with 2 workers, started by fork)."""
    from reqrep.bench import pools

    peers_ = (("futures", "concurrent.futures.ProcessPoolExecutor", None),
              ("mp", "multiprocessing.Pool", None),
              ("loky", "loky reusable executor", "loky"))
    rows = []
    for group, mode in ((POOL_SUBMIT, "submit"), (POOL_MAP, "map"), (POOL_BEST, "best")):
        m = _rate(group)
        how = f", chunksize={pools.BEST_CHUNKSIZE}" if mode == "best" else ""
        rows.append(Case(f"pool-{mode}-reqrep", f"reqrep.futures.ProcessPoolExecutor{how}",
                         partial(pools.PoolTransport, "reqrep", mode), m, peer=False,
                         workers=0, workload="coarse_rate"))
        for kind, label, needs in peers_:
            if mode == "submit" and kind == "mp":
                label = "multiprocessing.Pool.apply"
            rows.append(Case(f"pool-{mode}-{kind}", label + how,
                             partial(pools.PoolTransport, kind, mode), m, workers=0,
                             workload="coarse_rate", requires=needs))
    return rows


def _nats_case(cid: str, label: str, layout: str, *, peer: bool = False) -> Case:
    from reqrep.bench import bridge

    return Case(cid, label, partial(bridge.NatsRow, layout), _rate(NATS), peer=peer,
                workload="aio_rate", workers=len(bridge.LAYOUTS[layout]), check=bridge.missing)


def _nats_cases() -> list[Case]:
    """The NATS bridge against plain nats-py request/reply with as many in flight."""
    return [
        _nats_case("nats-py", "nats-py request/reply, 1 responder process", "nats-py",
                   peer=True),
        _nats_case("nats-bridge", "reqrep.aio client, forward + serve bridge, 1 worker",
                   "bridge"),
        _nats_case("nats-bridge-2serve", "the same with 2 serve bridges, a worker each",
                   "bridge-2serve"),
        _nats_case("nats-bridge-busy", "forward + serve, 1 worker busy 1 ms a request",
                   "bridge-busy"),
        _nats_case("nats-bridge-2serve-busy", "the same with 2 serve bridges, a worker each",
                   "bridge-2serve-busy"),
    ]


def all_cases() -> list[Case]:
    """Every row, in table order."""
    return [
        *_echo_cases(ECHO, ""),
        *_single_cases(),
        *_batch_cases(),
        *_large_cases("64k-", BIG, BIG_RT, BIG_BW),
        *_large_cases("1m-", MIB, MIB_RT, MIB_BW),
        *_mpmc_cases(),
        *_mpmc16_cases(),
        *_latency_cases(),
        *asyncio_cases(),
        *_object_cases(),
        *_pool_cases(),
        *_nats_cases(),
        *_echo_cases(LOADED, "loaded-", loaded=True),
    ]


def select(cases: Iterable[Case], patterns: list[str] | None) -> list[Case]:
    """The cases whose id matches one of ``patterns`` (shell-style, e.g. ``mpmc-*``).

    ``None`` or an empty list selects everything. A pattern that matches nothing
    raises ``ValueError``.
    """
    cases = list(cases)
    if not patterns:
        return cases
    chosen: set[str] = set()
    for pat in patterns:
        hit = {c.id for c in cases if fnmatchcase(c.id, pat)}
        if not hit:
            raise ValueError(f"no row matches {pat!r} (see --list)")
        chosen |= hit
    return [c for c in cases if c.id in chosen]
