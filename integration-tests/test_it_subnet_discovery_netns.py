"""Discovery across an isolated LAN: two machines on one subnet and no default route.

Two network namespaces this test creates stand for two machines, joined by a veth pair
on a test-only subnet (198.18.9.0/24, a benchmarking range), with no default route in
either: a common cluster network, where 255.255.255.255 can't be sent at all. The client
(or dispyscheduler) runs in one, ``dispynode`` in the other, each exactly as a user
types it. Discovery must reach the node through the directed broadcast of the client's
network (198.18.9.255), or through the multicast group sent out of the client's
interface with ``ipv4_udp_multicast``. Nothing here touches the host's own network.
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

CLIENT_IP = "198.18.9.1"
NODE_IP = "198.18.9.2"

# The canonical program; argv: nodes (JSON, null for none), ipv4_udp_multicast (0/1).
CLIENT = textwrap.dedent("""
    import json, sys, dispy

    def compute(n):
        return dispy_node_ip_addr, n * n

    nodes = json.loads(sys.argv[1])
    kwargs = {"ipv4_udp_multicast": True} if sys.argv[2] == "1" else {}
    if nodes is None:
        cluster = dispy.JobCluster(compute, **kwargs)
    else:
        cluster = dispy.JobCluster(compute, nodes=nodes, **kwargs)
    jobs = [cluster.submit(i) for i in range(6)]
    ok = cluster.wait(timeout=60)
    print(json.dumps({"ok": ok, "results": [j.result for j in jobs]}))
    cluster.close(timeout=10, terminate=True)
""")

SHARED_CLIENT = textwrap.dedent("""
    import json, dispy

    def compute(n):
        return dispy_node_ip_addr, n * n

    cluster = dispy.SharedJobCluster(compute)
    jobs = [cluster.submit(i) for i in range(6)]
    ok = cluster.wait(timeout=60)
    print(json.dumps({"ok": ok, "results": [j.result for j in jobs]}))
    cluster.close(timeout=10, terminate=True)
""")

# A wildcard that fits none of the client's networks: the request can only try
# 255.255.255.255, which has no route here.
STRANDED_CLIENT = textwrap.dedent("""
    import json, dispy

    def compute(n):
        return n

    cluster = dispy.JobCluster(compute, nodes=["10.77.*"])
    job = cluster.submit(1)
    ok = cluster.wait(timeout=12)
    print(json.dumps({"ok": not ok, "results": []}))
    cluster.close(timeout=5, terminate=True)
""")

EXPECTED = [[NODE_IP, i * i] for i in range(6)]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def wait_running(ns: tuple[str, ...], dev: str) -> None:
    """Until ``dev`` is operationally up: the kernel says so a moment after both ends of
    the pair are set up, and a daemon started before would not count the interface."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([*ns, "cat", f"/sys/class/net/{dev}/operstate"], capture_output=True, text=True)
        if out.stdout.strip() == "up":
            return
        time.sleep(0.05)
    raise AssertionError(f"{dev} never came up")


@pytest.fixture
def lan() -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(client namespace, node namespace) as command prefixes: one veth pair between
    them, an address each on 198.18.9.0/24, and no route but that subnet's."""
    names = [f"dispy-sb{tag}-{os.getpid()}" for tag in ("c", "n")]
    created: list[str] = []
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            created.append(name)
        client, node = (("ip", "netns", "exec", name) for name in names)
        sh(*client, "ip", "link", "add", "sb0", "type", "veth", "peer", "name", "sb1", "netns", names[1])
        for ns, dev, ip in ((client, "sb0", CLIENT_IP), (node, "sb1", NODE_IP)):
            sh(*ns, "ip", "link", "set", "lo", "up")
            sh(*ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
            sh(*ns, "ip", "link", "set", dev, "up")
        for ns, dev in ((client, "sb0"), (node, "sb1")):
            wait_running(ns, dev)
        yield client, node
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Daemon:
    """A daemon run in a namespace as a user types it, with its own TMPDIR (its default
    working directories go there) so parallel test runs don't share them."""

    def __init__(self, ns: tuple[str, ...], module: str, args: list[str], serving: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="dispy-sb-")
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()


def start(daemons: list[Daemon], ns: tuple[str, ...], module: str, args: list[str], serving: str) -> Daemon:
    daemon = Daemon(ns, module, args, serving)
    daemons.append(daemon)
    return daemon


def run(ns: tuple[str, ...], program: str, *args: str, logs: str = "") -> dict:
    out = subprocess.run([*ns, sys.executable, "-c", program, *args], capture_output=True, text=True,
                         timeout=170)
    assert out.returncode == 0, out.stderr + logs
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"], out.stderr + logs
    report["stderr"] = out.stderr
    return report


@pytest.mark.parametrize("node_args", [[], ["-i", NODE_IP]], ids=["node-no-options", "node-i"])
@pytest.mark.parametrize("nodes", [None, ["198.18.9.*"]], ids=["no-nodes", "wildcard"])
def test_client_finds_a_node_on_another_machine_of_its_lan(lan, daemons, node_args, nodes):
    client_ns, node_ns = lan
    node = start(daemons, node_ns, "dispy_node.cli", node_args, f"at {NODE_IP}:9701")
    report = run(client_ns, CLIENT, json.dumps(nodes), "0", logs=node.log())
    assert report["results"] == EXPECTED
    # 255.255.255.255 has no route, the directed broadcast went: nothing to tell the user
    assert "could not leave this host" not in report["stderr"], report["stderr"]


def test_a_client_without_psutil_finds_it_too(lan, daemons):
    # psutil is not a dependency of dispy-client: the networks come from ioctl then
    client_ns, node_ns = lan
    node = start(daemons, node_ns, "dispy_node.cli", [], f"at {NODE_IP}:9701")
    program = "import sys\nsys.modules['psutil'] = None  # import psutil: ImportError\n" + CLIENT
    report = run(client_ns, program, "null", "0", logs=node.log())
    assert report["results"] == EXPECTED


def test_multicast_discovery_without_a_default_route(lan, daemons):
    client_ns, node_ns = lan
    node = start(daemons, node_ns, "dispy_node.cli", ["--ipv4_udp_multicast"], f"at {NODE_IP}:9701")
    report = run(client_ns, CLIENT, "null", "1", logs=node.log())
    assert report["results"] == EXPECTED


def test_dispyscheduler_without_n_finds_a_node_on_another_machine(lan, daemons):
    pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
    client_ns, node_ns = lan
    node = start(daemons, node_ns, "dispy_node.cli", [], f"at {NODE_IP}:9701")
    scheduler = start(daemons, client_ns, "dispy_scheduler.cli", [], "dispyscheduler serving clients")
    assert f"at {CLIENT_IP}:" in scheduler.line
    report = run(client_ns, SHARED_CLIENT, logs=scheduler.log() + node.log())
    assert report["results"] == EXPECTED


def test_a_request_that_can_leave_the_host_nowhere_is_explained(lan, daemons):
    client_ns, node_ns = lan
    start(daemons, node_ns, "dispy_node.cli", [], f"at {NODE_IP}:9701")  # there, but 10.77.* doesn't fit
    report = run(client_ns, STRANDED_CLIENT)
    # the warning that no node serves the computation says why
    assert ("no node answered discovery: the request could not leave this host (broadcast from 0.0.0.0: "
            "Network is unreachable)" in report["stderr"]), report["stderr"]
