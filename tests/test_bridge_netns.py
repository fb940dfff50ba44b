"""The NATS bridge between two hosts: two network namespaces joined by a veth pair, with a
nats-server in each, the two joined as a cluster.

Host A has the clients and a ``bridge forward``; host B has the workers and a ``bridge
serve``. Each bridge talks only to its own host's nats-server (on its loopback), so every
request and reply crosses the cluster route over the veth pair. The workers tag their
replies with their network namespace, which proves where the answers came from.

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2, nats-server and nats-py;
skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from natsproc import NATS_SERVER, need_nats

import reqrep

pytestmark = pytest.mark.timeout(120, method="thread")

# The addresses live only inside this run's two namespaces, so parallel or leftover runs
# cannot collide on them; the namespace and interface names are unique per run instead.
IP_A, IP_B = "10.231.0.1", "10.231.0.2"
CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT = 4222, 6222, 8222
IP_TIMEOUT = 20.0  # one `ip` command
CLUSTER_TIMEOUT = 40.0  # both servers up and the route between them established
CLIENT_TIMEOUT = 70.0  # the whole client process on host A
STOP_TIMEOUT = 20.0  # a bridge's clean stop after SIGTERM
THREADS, PER_THREAD = 4, 10

# Polls the local nats-server's monitoring port until it has a route to the other one.
WAIT_ROUTE = """
import json, sys, time, urllib.request
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
last = None
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/routez", timeout=2) as r:
            last = json.load(r)
        if last.get("num_routes", 0) >= 1:
            sys.exit(0)
    except OSError as e:
        last = repr(e)
    time.sleep(0.1)
sys.exit(f"no cluster route in time; last /routez: {last}")
"""

# A worker of host B's channel: replies carry its network namespace and pid.
WORKER = """
import os, sys, reqrep
tag = f"{os.readlink('/proc/self/ns/net')} {os.getpid()} "
def handle(data):
    if data == b"boom":
        raise ValueError("boom on host B")
    return tag + data if isinstance(data, str) else tag.encode() + data
reqrep.Server(sys.argv[1]).serve(handle)
"""

# The clients of host A's channel: several threads, bytes and str, then an error; the
# results go to stdout as JSON.
CLIENT = """
import json, os, sys, threading, time
import reqrep
path, threads, per_thread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = reqrep.Client(path, wait=30)  # the forward bridge creates the channel
# The serve bridge's subscription may still be on its way over the route: until it
# arrives the forward bridge answers "no responders". Retry that, within a deadline.
deadline = time.monotonic() + 40
while True:
    try:
        first = client.req(b"first", 30)
        break
    except reqrep.RemoteError as e:
        if "NoResponders" not in e.type_name or time.monotonic() > deadline:
            raise
        time.sleep(0.2)
if first is None:
    sys.exit("the first request timed out")
replies, failures = [], []
def run(t):
    try:
        for j in range(per_thread):
            text = f"t{t}-r{j}"
            sent = text if j % 2 else text.encode()
            got = client.req(sent, 30)
            replies.append([type(sent).__name__, text, type(got).__name__,
                            got if isinstance(got, (str, type(None))) else got.decode()])
    except Exception as e:
        failures.append(repr(e))
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join(60)
try:
    client.req(b"boom", 30)
    error = None
except reqrep.RemoteError as e:
    error = [e.type_name, e.message]
print(json.dumps({"ns": os.readlink("/proc/self/ns/net"), "first": first.decode(),
                  "replies": replies, "failures": failures, "error": error,
                  "alive": [t.is_alive() for t in ts]}))
"""


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res


class Hosts:
    """Two network namespaces joined by a veth pair, and the processes run in them."""

    def __init__(self, tmp_path: Path) -> None:
        # ≤ 15 characters with the "a"/"b" suffix: the limit of an interface name.
        base = f"rr{os.getpid()}{secrets.token_hex(2)}"
        self.ns_a, self.ns_b = f"{base}-A", f"{base}-B"
        self.veth_a, self.veth_b = f"{base}a", f"{base}b"
        self.tmp_path = tmp_path
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def setup(self) -> None:
        run_ip("netns", "add", self.ns_b)
        try:
            run_ip("link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
        except RuntimeError as e:
            pytest.skip(f"cannot create a veth pair: {e}")
        for ns, veth, addr in ((self.ns_a, self.veth_a, IP_A), (self.ns_b, self.veth_b, IP_B)):
            run_ip("link", "set", veth, "netns", ns)
            run_ip("-n", ns, "addr", "add", f"{addr}/24", "dev", veth)
            run_ip("-n", ns, "link", "set", veth, "up")
            run_ip("-n", ns, "link", "set", "lo", "up")  # the bridges reach NATS on it

    def ino(self, ns: str) -> int:
        """The inode of a namespace, as /proc/PID/ns/net shows it inside ("net:[N]")."""
        return os.stat(f"/run/netns/{ns}").st_ino

    def start(self, name: str, ns: str, *argv: str) -> subprocess.Popen[bytes]:
        """Run argv in ns (`ip netns exec` execs it: the Popen is the process), its
        output to a log file for the failure messages."""
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        self.procs.append((name, p))
        return p

    def logs(self) -> str:
        out = []
        for name, p in self.procs:
            text = (self.tmp_path / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name} (exit {p.poll()}):\n{text[-3000:]}")
        return "\n".join(out)

    def teardown(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.kill()
        for _, p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable: go on
                p.wait(timeout=10)
        # Each step on its own, so that one failing still leaves the others done.
        for ns in (self.ns_a, self.ns_b):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                run_ip("netns", "del", ns, check=False)
        # Only left in the root namespace when setup failed before moving it.
        if os.path.exists(f"/sys/class/net/{self.veth_a}"):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                run_ip("link", "del", self.veth_a, check=False)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    need_nats()
    h = Hosts(tmp_path)
    # A real attempt tells whether this process may make namespaces.
    try:
        run_ip("netns", "add", h.ns_a)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot create a network namespace (needs root and iproute2): {e}")
    try:
        h.setup()
        yield h
    finally:
        h.teardown()


def nats_conf(path: Path, name: str, own: str, other: str) -> Path:
    path.write_text(
        f"server_name: {name}\n"
        f"listen: 127.0.0.1:{CLIENT_PORT}\n"
        f"http: 127.0.0.1:{MONITOR_PORT}\n"
        f"cluster {{\n  name: rr\n  listen: {own}:{CLUSTER_PORT}\n"
        f"  routes: [nats-route://{other}:{CLUSTER_PORT}]\n}}\n")
    return path


def ns_id(link: str) -> int:
    m = re.fullmatch(r"net:\[(\d+)\]", link)
    assert m, link
    return int(m.group(1))


def test_clients_on_host_a_get_answers_from_workers_on_host_b(hosts: Hosts,
                                                              tmp_path: Path) -> None:
    nats_server = NATS_SERVER
    assert nats_server is not None
    py = sys.executable
    path_a, path_b = tmp_path / "a.rr", tmp_path / "b.rr"
    subject = f"reqrep.netns.{secrets.token_hex(4)}"
    url = f"nats://127.0.0.1:{CLIENT_PORT}"  # each host's own server
    ns_a, ns_b = hosts.ns_a, hosts.ns_b

    for ns, name, own, other in ((ns_a, "a", IP_A, IP_B), (ns_b, "b", IP_B, IP_A)):
        conf = nats_conf(tmp_path / f"nats-{name}.conf", name, own, other)
        hosts.start(f"nats-{name}", ns, nats_server, "-c", str(conf))
    waits = [hosts.start(f"route-{ns}", ns, py, "-c", WAIT_ROUTE, str(MONITOR_PORT),
                         str(CLUSTER_TIMEOUT)) for ns in (ns_a, ns_b)]
    for w in waits:
        try:
            w.wait(timeout=CLUSTER_TIMEOUT + 20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the route wait did not end\n{hosts.logs()}")
        assert w.returncode == 0, f"the NATS cluster did not form\n{hosts.logs()}"

    # Host B: two workers, then the serve bridge once their channel exists.
    workers = [hosts.start(f"worker-{i}", ns_b, py, "-c", WORKER, str(path_b))
               for i in range(2)]
    try:
        reqrep.Client(str(path_b), wait=30).close()  # bounded wait for the channel
    except (OSError, ValueError) as e:
        pytest.fail(f"host B's channel never appeared: {e}\n{hosts.logs()}")
    serve = hosts.start("serve", ns_b, py, "-m", "reqrep", "bridge", "serve", str(path_b),
                        "--nats", url, "--subject", subject)
    # Host A: the forward bridge creates its channel; the clients wait for it.
    forward = hosts.start("forward", ns_a, py, "-m", "reqrep", "bridge", "forward",
                          str(path_a), "--nats", url, "--subject", subject, "--timeout", "20")

    try:
        res = subprocess.run(
            ["ip", "netns", "exec", ns_a, py, "-c", CLIENT, str(path_a), str(THREADS),
             str(PER_THREAD)],
            capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the clients on host A did not finish\n{hosts.logs()}")
    assert res.returncode == 0, f"clients failed:\n{res.stderr}\n{hosts.logs()}"
    out: dict[str, Any] = json.loads(res.stdout)

    ino_b = hosts.ino(ns_b)
    assert ns_id(out["ns"]) == hosts.ino(ns_a) != ino_b  # the clients ran on host A
    pids = {str(w.pid) for w in workers}

    def check(text: str, reply: str) -> None:
        ns, pid, echoed = reply.split(" ", 2)
        assert (ns_id(ns), pid, echoed) in {(ino_b, p, text) for p in pids}, reply

    check("first", out["first"])
    assert out["failures"] == [], f"{out['failures']}\n{hosts.logs()}"
    assert out["alive"] == [False] * THREADS
    assert len(out["replies"]) == THREADS * PER_THREAD
    for sent_kind, text, got_kind, reply in out["replies"]:
        assert got_kind == sent_kind  # str stays str, bytes stay bytes, over NATS
        check(text, reply)
    assert out["error"] == ["ValueError", "boom on host B"]  # a worker's error travels back

    # SIGTERM stops each bridge cleanly (exit 0).
    for name, bridge in (("forward", forward), ("serve", serve)):
        assert bridge.poll() is None, f"{name} bridge died\n{hosts.logs()}"
        bridge.send_signal(signal.SIGTERM)
    for name, bridge in (("forward", forward), ("serve", serve)):
        try:
            code = bridge.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the {name} bridge did not stop on SIGTERM\n{hosts.logs()}")
        assert code == 0, f"{name} bridge exited {code}\n{hosts.logs()}"
