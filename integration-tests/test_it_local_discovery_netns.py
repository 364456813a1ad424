"""The documentation's first program on one machine: ``dispynode`` started with no
options, then ``JobCluster(compute)`` with no ``nodes``, both in a network namespace this
test creates, so that the discovery never touches the host's own network:

* a namespace with only ``lo`` up (an offline laptop);
* a namespace with one veth pair, 198.18.8.1/24 on one end (a benchmarking range that
  stays inside the namespace) and no route out (a LAN without a default route), where
  255.255.255.255 can't be sent to at all. The node runs with no options, with
  ``-i 198.18.8.1`` and with ``-i 127.0.0.1``.

In each the client must find the node (it asks the node port at its own host's
addresses, besides broadcasting) and run jobs there. Also: two nodes sharing the port on
one host are both found, a wildcard only finds the local nodes whose address fits it,
and dispyscheduler and ``SharedJobCluster(compute)`` with no options find their way too.
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
        reason="needs root and iproute2 to create a network namespace",
    ),
]

LAN = "198.18.8.1"

# The canonical program, as the documentation has a user write it (no nodes given). It
# waits for EXPECT nodes (argv[2]) before submitting, so that a test can see which
# nodes discovery found; with EXPECT 0 it just runs the jobs.
CLIENT = textwrap.dedent("""
    import json, sys, time, dispy

    def compute(n):
        return dispy_node_ip_addr, n * n

    nodes = json.loads(sys.argv[1])
    expect = int(sys.argv[2])
    if nodes is None:
        cluster = dispy.JobCluster(compute)
    else:
        cluster = dispy.JobCluster(compute, nodes=nodes)
    deadline = time.monotonic() + 60
    while len(cluster.status().nodes) < expect and time.monotonic() < deadline:
        time.sleep(0.1)
    found = sorted(n.ip_addr for n in cluster.status().nodes)
    jobs = [cluster.submit(i) for i in range(6)]
    ok = cluster.wait(timeout=60)
    print(json.dumps({"ok": ok, "found": found, "results": [j.result for j in jobs]}))
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


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def wait_up(ns: tuple[str, ...], dev: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([*ns, "cat", f"/sys/class/net/{dev}/operstate"], capture_output=True, text=True)
        if out.stdout.strip() == "up":
            return
        time.sleep(0.05)
    raise AssertionError(f"{dev} never came up")


def make_netns(tag: str, veth: bool) -> tuple[str, tuple[str, ...]]:
    name = f"dispy-ld{tag}-{os.getpid()}"
    sh("ip", "netns", "add", name)
    ns = ("ip", "netns", "exec", name)
    try:
        sh(*ns, "ip", "link", "set", "lo", "up")
        if veth:
            sh(*ns, "ip", "link", "add", "dv0", "type", "veth", "peer", "name", "dv1")
            sh(*ns, "ip", "addr", "add", f"{LAN}/24", "dev", "dv0")
            sh(*ns, "ip", "link", "set", "dv0", "up")
            sh(*ns, "ip", "link", "set", "dv1", "up")  # and no route out: no default route
            # The kernel reports the carrier (what "up" means to psutil, which picks the
            # default address) a moment after the link is set up: a dispynode started
            # before then would serve 127.0.0.1 instead of the LAN address.
            for dev in ("dv0", "dv1"):
                wait_up(ns, dev)
    except BaseException:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        raise
    return name, ns


@pytest.fixture
def lo_only() -> Iterator[tuple[str, ...]]:
    name, ns = make_netns("lo", veth=False)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def lan() -> Iterator[tuple[str, ...]]:
    name, ns = make_netns("lan", veth=True)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Daemon:
    """A daemon run in a namespace exactly as a user types it, with its own TMPDIR (its
    default working directories go there) so parallel test runs don't share them."""

    def __init__(self, ns: tuple[str, ...], module: str, args: list[str], serving: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix="dispy-ld-")
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


def start_node(daemons: list[Daemon], ns: tuple[str, ...], *args: str) -> Daemon:
    daemon = Daemon(ns, "dispy_node.cli", list(args), "dispynode")
    daemons.append(daemon)
    return daemon


def run_client(ns: tuple[str, ...], nodes: list[str] | None = None, expect: int = 0) -> dict:
    out = subprocess.run([*ns, sys.executable, "-c", CLIENT, json.dumps(nodes), str(expect)],
                         capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"], out.stderr
    report["stderr"] = out.stderr
    return report


@pytest.mark.parametrize("args", [(), ("-i", "127.0.0.1")], ids=["no-options", "i-loopback"])
def test_offline_machine(lo_only, daemons, args):
    node = start_node(daemons, lo_only, *args)
    assert "serving" in node.line and "at 127.0.0.1:9701" in node.line
    if not args:
        assert "no -i given: serving 127.0.0.1 (no interface but loopback" in node.log()
    report = run_client(lo_only)
    assert report["results"] == [["127.0.0.1", i * i] for i in range(6)]


@pytest.mark.parametrize(("args", "address"), [
    ((), LAN),
    (("-i", LAN), LAN),
    (("-i", "127.0.0.1"), "127.0.0.1"),
], ids=["no-options", "i-lan", "i-loopback"])
def test_lan_without_default_route(lan, daemons, args, address):
    node = start_node(daemons, lan, *args)
    assert f"at {address}:9701" in node.line
    if not args:  # the node says which address it chose, and why
        assert f"no -i given: serving {LAN} (no default route" in node.log()
    report = run_client(lan)
    assert report["results"] == [[address, i * i] for i in range(6)]


def test_two_nodes_sharing_the_port_are_both_found(lan, daemons):
    # Unicast to a port that two sockets on the wildcard address share reaches only one
    # of them: each node also listens on its own address, where it is asked directly.
    start_node(daemons, lan, "-i", "127.0.0.1", "-c", "1")
    start_node(daemons, lan, "-i", LAN, "-c", "1")
    report = run_client(lan, expect=2)
    assert report["found"] == sorted(["127.0.0.1", LAN])
    assert sorted(r[1] for r in report["results"]) == sorted(i * i for i in range(6))


def test_a_wildcard_only_finds_the_local_nodes_that_fit_it(lan, daemons):
    start_node(daemons, lan, "-i", "127.0.0.1", "-c", "1")
    start_node(daemons, lan, "-i", LAN, "-c", "1")
    report = run_client(lan, ["198.18.8.*"], expect=1)
    assert report["found"] == [LAN]
    assert report["results"] == [[LAN, i * i] for i in range(6)]


def test_dispyscheduler_and_shared_cluster_with_no_options(lan, daemons):
    pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
    start_node(daemons, lan)
    scheduler = Daemon(lan, "dispy_scheduler.cli", [], "dispyscheduler serving clients")
    daemons.append(scheduler)
    assert f"at {LAN}:" in scheduler.line
    assert f"no -i given: serving {LAN} (no default route" in scheduler.log()
    out = subprocess.run([*lan, sys.executable, "-c", SHARED_CLIENT], capture_output=True, text=True,
                         timeout=170)
    assert out.returncode == 0, out.stderr + scheduler.log()
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"], out.stderr + scheduler.log()
    assert report["results"] == [[LAN, i * i] for i in range(6)]


def test_a_node_serving_several_local_addresses_is_used_once(lan, daemons):
    # The client asks 127.0.0.1 and 198.18.8.1; the node answers at both: one node,
    # one computation there (the replies carry the node's id), and no warning about
    # the node refusing the same computation a second time at its other address.
    node = start_node(daemons, lan, "-i", "127.0.0.1", "-i", LAN)
    report = run_client(lan, expect=1)
    assert len(report["found"]) == 1
    assert "refused" not in report["stderr"] and "can't use node" not in report["stderr"], report["stderr"]
    assert sorted(r[1] for r in report["results"]) == sorted(i * i for i in range(6))
    assert node.log().count("setting up in") == 1, node.log()
