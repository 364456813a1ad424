"""dispynetrelay: nodes on another network, behind a router that broadcasts don't cross.

Network namespaces this test creates: a router namespace with two bridges, one per
test-only subnet (198.18.20.0/24 and 198.18.21.0/24, a benchmarking range), that
forwards IP between them (ip_forward) and, as every router, no broadcast. The client
and dispyscheduler run in a namespace on the first subnet; three dispynodes (and a
late fourth) and dispynetrelay each in one of their own on the second. Every program
runs exactly as a user types it. Nothing here touches the host's own network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces",
    ),
]

pytest.importorskip("dispy_relay")  # the client-only suite has no relay

CLIENT_IP = "198.18.20.2"
RELAY_IP = "198.18.21.5"
NODE_IPS = ["198.18.21.11", "198.18.21.12", "198.18.21.13"]
LATE_IPS = ["198.18.21.14", "198.18.21.15"]
SECRET = "relay-test-secret"

# argv: nodes (JSON), secret, nodes to wait for before submitting, shared (0/1), then
# per phase a number of nodes to wait for (each phase after the first waits for a line
# on stdin first). Prints one JSON line per phase: the hosts that ran its jobs.
CLIENT = textwrap.dedent("""
    import json, sys, time, dispy

    def compute(n, seconds):
        import time
        time.sleep(seconds)
        return dispy_node_ip_addr

    nodes, secret, shared = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    phases = [int(n) for n in sys.argv[4:]]
    if shared:
        cluster = dispy.SharedJobCluster(compute, scheduler_node=%(client)r, secret=secret)
    else:
        cluster = dispy.JobCluster(compute, nodes=nodes, secret=secret)

    def nodes_ready(want, timeout):
        deadline = time.monotonic() + timeout
        while len(cluster.status().nodes) < want and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(cluster.status().nodes)

    for i, want in enumerate(phases):
        if i:
            sys.stdin.readline()  # the test changed the network: carry on
        if want == 0:  # no node should be found: wait()'s warning on its timeout says why
            job = cluster.submit(0, 0)
            ok = cluster.wait(timeout=6)
            print(json.dumps({"ok": ok, "hosts": []}), flush=True)
            cluster.close(timeout=1, terminate=True)  # the job can't run: don't wait for it
            sys.exit(0)
        ready = nodes_ready(want, 60)
        jobs = [cluster.submit(n, 1.0) for n in range(3 * want)]
        ok = cluster.wait(timeout=90)
        print(json.dumps({"ok": ok, "ready": ready, "hosts": sorted({j.result for j in jobs if j.result}),
                          "failed": [str(j.exception) for j in jobs if j.status != dispy.DispyJob.Finished]}),
              flush=True)
    cluster.close(timeout=10, terminate=True)
""") % {"client": CLIENT_IP}

# The relay is killed while these jobs run: argv as above; prints "running" once all
# nodes took jobs, then waits for a line (the relay was killed), then the jobs' hosts.
KILLED = textwrap.dedent("""
    import json, sys, time, dispy

    def compute(n):
        import time
        time.sleep(3)
        return dispy_node_ip_addr

    cluster = dispy.JobCluster(compute, nodes=[%(relay)r], secret=sys.argv[1])
    deadline = time.monotonic() + 60
    while len(cluster.status().nodes) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = [cluster.submit(n) for n in range(6)]
    while sum(j.status == dispy.DispyJob.Running for j in jobs) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    print("running", flush=True)
    sys.stdin.readline()  # the relay was killed
    ok = cluster.wait(timeout=90)
    print(json.dumps({"ok": ok, "hosts": sorted({j.result for j in jobs if j.result}),
                      "statuses": [j.status for j in jobs]}), flush=True)
    sys.stdin.readline()  # a relay runs again, and a fourth node
    deadline = time.monotonic() + 60
    while len(cluster.status().nodes) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = [cluster.submit(n) for n in range(8)]
    ok = cluster.wait(timeout=90)
    print(json.dumps({"ok": ok, "hosts": sorted({j.result for j in jobs if j.result})}), flush=True)
    cluster.close(timeout=10, terminate=True)
""") % {"relay": RELAY_IP}


def sh(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"


def wait_running(ns: tuple[str, ...], dev: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([*ns, "cat", f"/sys/class/net/{dev}/operstate"], capture_output=True, text=True)
        if out.stdout.strip() == "up":
            return
        time.sleep(0.05)
    raise AssertionError(f"{dev} never came up")


class Net:
    """The namespaces, by host address, as command prefixes."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.created: list[str] = []
        self.hosts: dict[str, tuple[str, ...]] = {}
        router = self._ns("r")
        self.router = router
        sh(*router, "ip", "link", "set", "lo", "up")
        sh(*router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for br, net in (("bra", "198.18.20"), ("brb", "198.18.21")):
            sh(*router, "ip", "link", "add", br, "type", "bridge", "forward_delay", "0", "stp_state", "0")
            sh(*router, "ip", "addr", "add", f"{net}.1/24", "dev", br)
            sh(*router, "ip", "link", "set", br, "up")
        for i, ip in enumerate([CLIENT_IP, RELAY_IP, *NODE_IPS, *LATE_IPS]):
            ns = self._ns(f"h{i}")
            bridge, gateway = ("bra", "198.18.20.1") if ip == CLIENT_IP else ("brb", "198.18.21.1")
            port = f"v{i}x{self.pid % 100000}"
            sh(*router, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", self.created[-1])
            sh(*router, "ip", "link", "set", port, "master", bridge)
            sh(*router, "ip", "link", "set", port, "up")
            sh(*ns, "ip", "link", "set", "lo", "up")
            sh(*ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(*ns, "ip", "link", "set", "eth0", "up")
            sh(*ns, "ip", "route", "add", "default", "via", gateway)
            self.hosts[ip] = ns
        for ns in self.hosts.values():
            wait_running(ns, "eth0")

    def _ns(self, tag: str) -> tuple[str, ...]:
        name = f"dispy-rl{tag}-{self.pid}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        return ("ip", "netns", "exec", name)

    def close(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.close()


class Daemon:
    """A daemon run in a namespace as a user types it, with its own TMPDIR."""

    def __init__(self, ns: tuple[str, ...], module: str, args: list[str], serving: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="dispy-rl-")
        self.log_path = Path(self.tmp, "log")
        env = dict(os.environ, TMPDIR=self.tmp)
        with open(self.log_path, "w") as log:
            python = node_python() if module == "dispy_node.cli" else sys.executable
            self.proc = subprocess.Popen([*ns, python, "-m", module, *args], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        assert self.proc.stdout is not None
        self.line = self.proc.stdout.readline()  # the "serving" line, once it listens
        assert serving in self.line, f"{self.line!r}\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()
            shutil.rmtree(daemon.tmp, ignore_errors=True)


def node(net: Net, daemons: list[Daemon], ip: str, *args: str) -> Daemon:
    d = Daemon(net.hosts[ip], "dispy_node.cli", ["-i", ip, "-c", "1", "--daemon", *args], f"at {ip}:9701")
    daemons.append(d)
    return d


def relay(net: Net, daemons: list[Daemon], *args: str) -> Daemon:
    d = Daemon(net.hosts[RELAY_IP], "dispy_relay.cli", ["-i", RELAY_IP, "--daemon", "--ping_interval", "2", *args],
               f"dispynetrelay serving clients at {RELAY_IP}:9701")
    daemons.append(d)
    return d


def logs(daemons: list[Daemon]) -> str:
    return "".join(f"\n--- {' '.join(d.proc.args[4:7])}\n{d.log()}" for d in daemons)  # type: ignore[index]


def client(net: Net, program: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*net.hosts[CLIENT_IP], sys.executable, "-c", program, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen[str], daemons: list[Daemon]) -> dict:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"client ended: {proc.stderr.read() if proc.stderr else ''}{logs(daemons)}")
    return json.loads(line)  # type: ignore[no-any-return]


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def test_jobcluster_and_sharedjobcluster_use_all_three_nodes_through_the_relay(net, daemons):
    nodes = [node(net, daemons, ip, "-s", SECRET) for ip in NODE_IPS]
    r = relay(net, daemons, "-s", SECRET)
    proc = client(net, CLIENT, json.dumps([RELAY_IP]), SECRET, "0", "3")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS, (got, finish(proc) + logs(daemons))
    finish(proc)
    # the relay found them by asking its network (no --scheduler_node on the nodes)
    assert all(f"node {ip}:9701" in r.log() and "found (discovery)" in r.log() for ip in NODE_IPS), r.log()
    assert all(n.proc.poll() is None for n in nodes)

    pytest.importorskip("dispy_scheduler")
    sched = Daemon(net.hosts[CLIENT_IP], "dispy_scheduler.cli",
                   ["-i", CLIENT_IP, "-n", RELAY_IP, "--node_secret", SECRET, "--cluster_secret", SECRET, "--daemon"],
                   "dispyscheduler serving clients")
    daemons.append(sched)
    proc = client(net, CLIENT, "null", SECRET, "1", "3")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS, (got, finish(proc) + logs(daemons))
    finish(proc)


def test_without_the_relay_no_node_is_found_and_the_warning_says_why(net, daemons):
    for ip in NODE_IPS:
        node(net, daemons, ip, "-s", SECRET)
    # the relay's address named (nothing listens there), and a wildcard of the other
    # network (the broadcast stays on the client's subnet); both at once
    named = client(net, CLIENT, json.dumps([RELAY_IP]), SECRET, "0", "0")
    wildcard = client(net, CLIENT, json.dumps(["198.18.21.*"]), SECRET, "0", "0")
    got = report(named, daemons)
    err = finish(named)
    assert not got["ok"]
    assert "no node serving computation compute" in err and f"{RELAY_IP}:9701: connection refused" in err, err
    got = report(wildcard, daemons)
    err = finish(wildcard)
    assert not got["ok"]
    assert "no node serving computation compute" in err and "no node answered discovery" in err, err


def test_a_node_started_later_is_used(net, daemons):
    node(net, daemons, NODE_IPS[0], "-s", SECRET)
    relay(net, daemons, "-s", SECRET, "--ping_interval", "600")  # the late node is known by its announcement
    proc = client(net, CLIENT, json.dumps([RELAY_IP]), SECRET, "0", "1", "2")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS[:1], (got, logs(daemons))
    late = node(net, daemons, LATE_IPS[0], "-s", SECRET, "--scheduler_node", RELAY_IP)
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == [NODE_IPS[0], LATE_IPS[0]], (got, logs(daemons))
    finish(proc)
    assert f"node {LATE_IPS[0]}:9701" in daemons[1].log() and "found (announced)" in daemons[1].log()
    assert late.proc.poll() is None


def test_a_wildcard_of_the_other_network_through_scheduler_node(net, daemons):
    for ip in NODE_IPS:
        node(net, daemons, ip, "-s", SECRET)
    relay(net, daemons, "-s", SECRET, "--scheduler_node", CLIENT_IP)
    proc = client(net, CLIENT, json.dumps(["198.18.21.*"]), SECRET, "0", "3")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS, (got, logs(daemons))
    finish(proc)

    # dispyscheduler discovering (no -n) on the client port the relay announces to
    pytest.importorskip("dispy_scheduler")
    sched = Daemon(net.hosts[CLIENT_IP], "dispy_scheduler.cli",
                   ["-i", CLIENT_IP, "--node_secret", SECRET, "--cluster_secret", SECRET, "--daemon"],
                   "dispyscheduler serving clients")
    daemons.append(sched)
    proc = client(net, CLIENT, "null", SECRET, "1", "3")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS, (got, finish(proc) + logs(daemons))
    finish(proc)


def test_a_wrong_secret_finds_nothing_and_says_why(net, daemons):
    for ip in NODE_IPS:
        node(net, daemons, ip, "-s", SECRET)
    r = relay(net, daemons, "-s", SECRET)
    # a node with another secret announcing itself: refused, said in the relay's log
    node(net, daemons, LATE_IPS[0], "-s", "another", "--scheduler_node", RELAY_IP)
    proc = client(net, CLIENT, json.dumps([RELAY_IP]), "wrong-secret", "0", "0")
    got = report(proc, daemons)
    err = finish(proc)
    assert not got["ok"]
    assert f"{RELAY_IP}:9701: authentication failed, the secrets differ" in err, err
    text = r.log()
    # the client checks the relay's proof first and hangs up: the relay can only tell
    # that the peer left during the handshake, and says what that means
    assert f"WARNING closed connection from {CLIENT_IP}:" in text and "another secret" in text, text
    assert f"ignoring datagram from {LATE_IPS[0]}: datagram not signed with this secret" in text, text
    assert LATE_IPS[0] not in text.replace(f"ignoring datagram from {LATE_IPS[0]}", ""), text


def test_the_relay_killed_mid_run_harms_no_job_and_a_restarted_one_is_used(net, daemons):
    for ip in NODE_IPS:
        node(net, daemons, ip, "-s", SECRET)
    r = relay(net, daemons, "-s", SECRET)
    proc = client(net, KILLED, SECRET)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "running", logs(daemons)
    r.stop(signal.SIGKILL)
    proc.stdin.write("killed\n")
    proc.stdin.flush()
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS, (got, logs(daemons))
    relay(net, daemons, "-s", SECRET)
    node(net, daemons, LATE_IPS[0], "-s", SECRET)  # found by the new relay's discovery request
    proc.stdin.write("again\n")
    proc.stdin.flush()
    got = report(proc, daemons)
    assert got["ok"] and LATE_IPS[0] in got["hosts"], (got, logs(daemons))
    finish(proc)


def test_the_relay_finds_multicasting_nodes_with_ipv4_udp_multicast(net, daemons):
    node(net, daemons, NODE_IPS[0], "-s", SECRET, "--ipv4_udp_multicast")
    r = relay(net, daemons, "-s", SECRET, "--ipv4_udp_multicast")
    proc = client(net, CLIENT, json.dumps([RELAY_IP]), SECRET, "0", "1")
    got = report(proc, daemons)
    assert got["ok"] and got["hosts"] == NODE_IPS[:1], (got, logs(daemons))
    finish(proc)
    assert "multicast 239.255.61.59" in r.log() and "found (discovery)" in r.log(), r.log()
