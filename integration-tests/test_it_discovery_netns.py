"""UDP broadcast discovery, inside a network namespace this test creates.

Broadcasting is only allowed where the test owns the whole network: a fresh namespace
with a veth pair on a test-only subnet (10.231.7.0/24). The node serves 10.231.7.2; a
client inside the same namespace finds it with ``nodes=None`` and with a wildcard, and
runs jobs on it. Nothing here touches the host's own network namespace.
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

import pytest

from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create a network namespace",
    ),
]

CLIENT = textwrap.dedent("""
    import json, sys, dispy
    def where(n):
        return dispy_node_ip_addr, n * n
    nodes = json.loads(sys.argv[1])
    cluster = dispy.JobCluster(where, nodes=nodes, loglevel=dispy.logger.WARNING)
    jobs = [cluster.submit(i) for i in range(6)]
    ok = cluster.wait(timeout=30)
    print(json.dumps({"ok": ok, "results": [j.result for j in jobs]}))
    cluster.close(timeout=10, terminate=True)
""")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns():
    name = f"dispy-it-{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        ns = ("ip", "netns", "exec", name)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "link", "add", "dv0", "type", "veth", "peer", "name", "dv1")
        sh(*ns, "ip", "addr", "add", "10.231.7.1/24", "dev", "dv0")
        sh(*ns, "ip", "addr", "add", "10.231.7.2/24", "dev", "dv1")
        sh(*ns, "ip", "link", "set", "dv0", "up")
        sh(*ns, "ip", "link", "set", "dv1", "up")
        sh(*ns, "ip", "route", "add", "default", "dev", "dv0")  # where 255.255.255.255 goes
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def ns_node(netns):
    prefix = tempfile.mkdtemp(prefix="dispy-netns-node-")
    proc = subprocess.Popen([*netns, node_python(), "-m", "dispy_node.cli", "-i", "10.231.7.2",
                             "--daemon", "--dest_path_prefix", prefix, "-c", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving 2 CPUs at 10.231.7.2:9701" in line, line
        yield netns
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.mark.parametrize("nodes", [None, ["10.231.7.*"]])
def test_broadcast_discovery_finds_the_node(ns_node, nodes):
    t0 = time.monotonic()
    out = subprocess.run([*ns_node, sys.executable, "-c", CLIENT, json.dumps(nodes)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"], out.stderr
    assert report["results"] == [["10.231.7.2", i * i] for i in range(6)]
    assert time.monotonic() - t0 < 30
