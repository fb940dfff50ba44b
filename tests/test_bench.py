"""The benchmark suite runs, stays bounded and reports in the documented shape.

No timing is asserted: machines are noisy. Only the shape of the output, the
row selection, and that failing or hanging children end a run instead of
hanging it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from natsproc import need_nats

from reqrep.bench import core, peers, rows, runner, table
from reqrep.bench.transports import Op, ReqrepStr, Transport
from reqrep.bench.workloads import Timing, percentile

SUBPROCESS_TIMEOUT = 120
MPMC16_ROWS = ["mpmc16-reqrep-str", "mpmc16-reqrep-str-spin0", "mpmc16-reqrep-int",
               "mpmc16-reqrep-int-spin0", "mpmc16-mp-queue"]
ICEORYX2_ROWS = ["iceoryx2-poll", "iceoryx2-event", "64k-iceoryx2-poll", "64k-iceoryx2-event",
                 "1m-iceoryx2-poll", "1m-iceoryx2-event"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reqrep", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        cwd=cwd,
    )


def test_quick_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = run_cli(
        "bench", "--quick", "--json", str(out), "--rows", "pipe,reqrep-int", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {"reqrep", "machine", "settings", "rows"} <= doc.keys()
    assert doc["settings"]["mode"] == "quick"
    runs = doc["settings"]["runs"]
    assert [r["id"] for r in doc["rows"]] == ["reqrep-int", "pipe"]
    for row in doc["rows"]:
        assert {
            "id",
            "metric",
            "group",
            "label",
            "unit",
            "peer",
            "status",
            "median",
            "values",
            "ratio",
            "spread",
            "note",
        } <= row.keys()
        assert row["status"] == "ok", row
        assert row["unit"] == "rt/s"
        assert len(row["values"]) == runs
        assert all(v > 0 for v in row["values"])
        assert row["median"] > 0
        assert row["ratio"] > 0
    by_id = {r["id"]: r for r in doc["rows"]}
    assert by_id["pipe"]["peer"] is True and by_id["pipe"]["ratio"] == pytest.approx(1.0)
    assert by_id["reqrep-int"]["peer"] is False
    # the table goes to stdout, progress to stderr
    assert "reqrep Int" in proc.stdout and "os.pipe pair" in proc.stdout
    assert "reqrep-int" in proc.stderr


def test_unknown_row_is_an_error(tmp_path: Path) -> None:
    proc = run_cli("bench", "--quick", "--rows", "no-such-row", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no-such-row" in proc.stderr


def test_list_names_every_row(tmp_path: Path) -> None:
    proc = run_cli("bench", "--list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {c.id for c in rows.all_cases()} <= listed


def test_row_ids_unique_and_patterns() -> None:
    cases = rows.all_cases()
    assert len({c.id for c in cases}) == len(cases)
    assert [c.id for c in rows.select(cases, ["mpmc-*"])] == [
        "mpmc-reqrep-str",
        "mpmc-reqrep-str-spin0",
        "mpmc-mp-queue",
    ]
    assert [c.id for c in rows.select(cases, ["mpmc16-*"])] == MPMC16_ROWS
    assert [c.id for c in rows.select(cases, ["1m-*"])] == [
        "1m-reqrep-str", "1m-reqrep-zerocopy", "1m-pipe", "1m-socketpair", "1m-iceoryx2-poll",
        "1m-iceoryx2-event"]
    assert [c.id for c in rows.select(cases, ["*iceoryx2*"])] == ICEORYX2_ROWS
    for case in rows.select(cases, ["*iceoryx2*"]):
        assert case.requires == "iceoryx2" and case.peer
    with pytest.raises(ValueError):
        rows.select(cases, ["nothing-like-this"])


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7


def _children() -> set[int]:
    """This process's child processes (zombies included), from /proc."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with open(task / "children") as f:
            pids |= {int(p) for p in f.read().split()}
    return pids


def _line(id_: str, peer: bool, value: float, higher: bool = True) -> runner.Line:
    return runner.Line(id_, "m", "g", id_, "u", peer, higher, "ok", values=[value])


def test_ratios_against_the_fastest_peer() -> None:
    lines = [_line("ours", False, 300.0), _line("a", True, 100.0), _line("b", True, 150.0)]
    table.add_ratios(lines)
    assert [ln.ratio for ln in lines] == pytest.approx([2.0, 100 / 150, 1.0])
    lat = [_line("ours", False, 2.0, higher=False), _line("p", True, 4.0, higher=False)]
    table.add_ratios(lat)
    assert [ln.ratio for ln in lat] == pytest.approx([2.0, 1.0])


class _WorkerQuits(ReqrepStr):
    def serve(self, worker: int) -> None:
        return


class _WorkerHangs(peers.PipePair):
    def serve(self, worker: int) -> None:
        time.sleep(3600)


class _ClientRaises(peers.PipePair):
    def connect(self, client: int) -> Op:
        raise ValueError("broken on purpose")


@pytest.mark.parametrize(
    ("transport", "reason"),
    [
        (_WorkerQuits, "exited before the clients were done"),
        (_WorkerHangs, "timed out"),
        (_ClientRaises, "broken on purpose"),
    ],
)
def test_a_broken_row_fails_fast_and_leaves_no_process(
    transport: type[Transport], reason: str
) -> None:
    settings = runner.Settings("test", 2, Timing(0.01, 0.05), timeout=2.0)
    case = rows.Case("broken", "broken", transport, (rows.Metric("rt_per_s", "g", "rt/s"),))
    before = _children()
    start = time.monotonic()
    lines = runner.run_case(case, settings, lambda run, runs: None)
    assert time.monotonic() - start < 10
    assert lines[0].status == "failed"
    assert reason in lines[0].note
    assert _children() <= before  # every child was killed and reaped


def test_an_oversubscribed_run_that_hangs_ends_and_leaves_no_process() -> None:
    # the mpmc16 layout: 16 clients and 4 workers, every worker stuck
    settings = runner.Settings("test", 1, Timing(0.01, 0.05), timeout=2.0)
    case = rows.Case("broken", "broken", _WorkerHangs, (rows.Metric("rt_per_s", "g", "rt/s"),),
                     clients=rows.OVER_CLIENTS, workers=rows.OVER_WORKERS)
    before = _children()
    start = time.monotonic()
    lines = runner.run_case(case, settings, lambda run, runs: None)
    assert time.monotonic() - start < 10
    assert lines[0].status == "failed" and "timed out" in lines[0].note
    assert _children() <= before


def _json_rows(proc: subprocess.CompletedProcess[str], out: Path) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(out.read_text())["rows"]
    return found


def test_oversubscribed_mpmc_rows_run(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    found = _json_rows(run_cli("bench", "--quick", "--json", str(out), "--rows", "mpmc16-*",
                               cwd=tmp_path), out)
    assert [r["id"] for r in found] == MPMC16_ROWS
    for row in found:
        assert row["status"] == "ok", row
        assert row["values"] and all(v > 0 for v in row["values"])
    assert not _procs_with(str(out))  # not one of the 20 forked children is left


def test_1mib_rows_run(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    found = _json_rows(run_cli("bench", "--quick", "--json", str(out), "--rows",
                               "1m-reqrep-str,1m-reqrep-zerocopy,1m-pipe,1m-socketpair",
                               cwd=tmp_path), out)
    assert [(r["id"], r["metric"]) for r in found] == [
        (cid, metric)
        for cid in ("1m-reqrep-str", "1m-reqrep-zerocopy", "1m-pipe", "1m-socketpair")
        for metric in ("rt_per_s", "mib_per_s")]
    for row in found:
        assert row["status"] == "ok", row
        assert row["median"] > 0
    by_key = {(r["id"], r["metric"]): r["median"] for r in found}
    # a MiB each way: the two metrics of a run are the same number
    assert by_key["1m-pipe", "mib_per_s"] == pytest.approx(by_key["1m-pipe", "rt_per_s"])


def _iox2_files() -> set[Path]:
    from reqrep.bench.iceoryx import RUN_PREFIX, SHM_DIR

    return {p for d in (SHM_DIR, tempfile.gettempdir()) for p in Path(d).glob(RUN_PREFIX + "*")}


def test_iceoryx2_rows_run_and_clean_up(tmp_path: Path) -> None:
    pytest.importorskip("iceoryx2")
    out = tmp_path / "out.json"
    files = _iox2_files()
    found = _json_rows(run_cli("bench", "--quick", "--json", str(out), "--rows", "*iceoryx2*",
                               cwd=tmp_path), out)
    assert list(dict.fromkeys(r["id"] for r in found)) == ICEORYX2_ROWS
    assert len(found) == 2 + 4 * 2  # the 64 KiB and 1 MiB rows have a MiB/s line too
    for row in found:
        assert row["status"] == "ok", row
        assert row["values"] and all(v > 0 for v in row["values"])
        assert row["peer"] is True and row["ratio"] > 0
    # nothing of the runs is left: no forked child, no shared memory, no run directory
    assert not _procs_with(str(out))
    assert _iox2_files() <= files


def test_a_failing_iceoryx2_row_cleans_up() -> None:
    pytest.importorskip("iceoryx2")
    from reqrep.bench.iceoryx import Iceoryx2Echo

    made: list[Iceoryx2Echo] = []

    class ServerFails(Iceoryx2Echo):
        def serve(self, worker: int) -> None:
            self._ports()  # its node and services make their files first
            raise RuntimeError("broken on purpose")

    def make() -> Iceoryx2Echo:
        made.append(ServerFails("event"))
        return made[-1]

    settings = runner.Settings("test", 1, Timing(0.01, 0.05), timeout=20.0)
    case = rows.Case("broken", "broken", make, (rows.Metric("rt_per_s", "g", "rt/s"),))
    before = _children()
    lines = runner.run_case(case, settings, lambda run, runs: None)
    assert lines[0].status == "failed"
    assert "broken on purpose" in lines[0].note
    assert _children() <= before
    assert made and made[0].root  # the run did make its directory
    assert made[0].leftovers() == []


def test_core_bench_builds_and_runs(tmp_path: Path) -> None:
    root = core.find_checkout()
    cc = core.find_compiler()
    if root is None or cc is None:
        pytest.skip("needs a source checkout and a C compiler")
    exe = core.build(root, cc, tmp_path)
    settings = runner.Settings("test", 1, Timing(0.01, 0.05), timeout=60.0)
    for test in ("floor", "int", "str", "int-single", "str-single"):
        assert core.run_test(exe, test, settings) > 0


def test_pool_rows_run(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = run_cli("bench", "--quick", "--json", str(out), "--rows",
                   "pool-submit-reqrep,pool-map-reqrep,pool-best-futures", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {r["id"]: r["status"] for r in doc["rows"]} == {
        "pool-submit-reqrep": "ok", "pool-map-reqrep": "ok", "pool-best-futures": "ok"}


def _procs_with(text: str) -> set[int]:
    """The processes whose command line holds `text`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.add(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return pids


def _nats_dirs() -> set[Path]:
    return {p for d in ("/dev/shm", tempfile.gettempdir())
            for p in Path(d).glob("reqrep-bench-nats-*")}


def test_nats_rows_run_and_clean_up(tmp_path: Path) -> None:
    need_nats()
    out = tmp_path / "out.json"
    dirs, servers = _nats_dirs(), _procs_with("reqrep-bench-nats-")
    proc = run_cli("bench", "--quick", "--json", str(out), "--rows", "nats-*", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    by_id = {r["id"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(by_id) == ["nats-py", "nats-bridge", "nats-bridge-2serve", "nats-bridge-busy",
                           "nats-bridge-2serve-busy"]
    for row in by_id.values():
        assert row["status"] == "ok", row
        assert row["values"] and all(v > 0 for v in row["values"])
        assert row["ratio"] > 0
    assert by_id["nats-py"]["ratio"] == pytest.approx(1.0)
    assert "the one-serve row" in by_id["nats-bridge-2serve"]["note"]
    assert "the one-serve row" in by_id["nats-bridge-2serve-busy"]["note"]
    # nothing of the run is left: no forked child (its command line names out.json),
    # no nats-server, no channel directory
    assert not _procs_with(str(out))
    assert _procs_with("reqrep-bench-nats-") <= servers
    assert _nats_dirs() <= dirs


def test_a_failing_nats_row_cleans_up() -> None:
    need_nats()
    from reqrep.bench import bridge

    class ServeFails(bridge.NatsRow):
        async def _bridge(self, role: str, index: int) -> None:
            raise RuntimeError("broken on purpose")

    settings = runner.Settings("test", 1, Timing(0.01, 0.05), timeout=20.0)
    case = rows.Case("broken", "broken", lambda: ServeFails("bridge"),
                     (rows.Metric("rt_per_s", "g", "rt/s"),), workload="aio_rate",
                     workers=len(bridge.LAYOUTS["bridge"]))
    before, dirs = _children(), _nats_dirs()
    lines = runner.run_case(case, settings, lambda run, runs: None)
    assert lines[0].status == "failed"
    assert "broken on purpose" in lines[0].note
    assert _children() <= before  # the nats-server too: it is this process's child
    assert _nats_dirs() <= dirs
