"""Discovery options that send broadcasts or multicasts, inside network namespaces this
test creates: the client in one namespace and the node in another, joined by a veth
pair on test-only subnets (10.77.0.0/24, 10.78.0.0/24, fd77::/64). Covers IPv4 multicast
(ipv4_udp_multicast / --ipv4_udp_multicast), IPv6 multicast, ping_interval finding a node
started after the cluster, and --scheduler_node announcements reaching a client on
another subnet (which the client's broadcasts can't find), on dispy 4.x's client
``port`` and repeated every ``--ping_interval``. Nothing here touches the
host's own network namespace; the namespaces are deleted afterwards.
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

import pytest

from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces",
    ),
]

CLIENT = textwrap.dedent("""
    import json, sys, dispy
    def where(n):
        return dispy_node_ip_addr, n * n
    kwargs = json.loads(sys.argv[1])
    cluster = dispy.JobCluster(where, loglevel=dispy.logger.WARNING, **kwargs)
    jobs = [cluster.submit(i) for i in range(4)]
    ok = cluster.wait(timeout=float(sys.argv[2]))
    print(json.dumps({"ok": ok, "results": [j.result for j in jobs]}))
    cluster.close(timeout=float(sys.argv[3]), terminate=True)
""")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def pair() -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(client namespace command prefix, node namespace command prefix)."""
    a, b = f"dispy-na-{os.getpid()}", f"dispy-nb-{os.getpid()}"
    sh("ip", "netns", "add", a)
    try:
        sh("ip", "netns", "add", b)
        try:
            na, nb = ("ip", "netns", "exec", a), ("ip", "netns", "exec", b)
            sh(*na, "ip", "link", "set", "lo", "up")
            sh(*nb, "ip", "link", "set", "lo", "up")
            sh(*na, "ip", "link", "add", "dv0", "type", "veth", "peer", "name", "dv1", "netns", b)
            sh(*na, "ip", "addr", "add", "10.77.0.1/24", "dev", "dv0")
            sh(*na, "ip", "-6", "addr", "add", "fd77::1/64", "dev", "dv0", "nodad")
            sh(*nb, "ip", "addr", "add", "10.77.0.2/24", "dev", "dv1")
            sh(*nb, "ip", "addr", "add", "10.78.0.2/24", "dev", "dv1")  # the "other subnet"
            sh(*nb, "ip", "-6", "addr", "add", "fd77::2/64", "dev", "dv1", "nodad")
            sh(*na, "ip", "link", "set", "dv0", "up")
            sh(*nb, "ip", "link", "set", "dv1", "up")
            sh(*na, "ip", "route", "add", "default", "dev", "dv0")  # where 255.255.255.255 goes
            sh(*na, "ip", "route", "add", "10.78.0.0/24", "dev", "dv0")
            yield na, nb
        finally:
            subprocess.run(["ip", "netns", "del", b], capture_output=True)
    finally:
        subprocess.run(["ip", "netns", "del", a], capture_output=True)


class Node:
    def __init__(self, ns: tuple[str, ...], *args: str) -> None:
        self.prefix = tempfile.mkdtemp(prefix="dispy-netns-node-")
        self.proc = subprocess.Popen([*ns, node_python(), "-m", "dispy_node.cli", "--daemon", "-c", "2",
                                      "--dest_path_prefix", self.prefix, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        self.line = self.proc.stdout.readline()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.prefix, ignore_errors=True)


def client(ns: tuple[str, ...], kwargs: dict, timeout: float = 20,
           close_timeout: float = 10) -> subprocess.Popen[str]:
    return subprocess.Popen([*ns, sys.executable, "-c", CLIENT, json.dumps(kwargs), str(timeout),
                             str(close_timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    result["stderr"] = err
    return result


@pytest.mark.parametrize(("node_args", "kwargs", "ip"), [
    (["-i", "10.77.0.2", "--ipv4_udp_multicast"],
     {"nodes": ["10.77.0.*"], "host": "10.77.0.1", "ipv4_udp_multicast": True}, "10.77.0.2"),
    (["-i", "fd77::2"], {"nodes": ["fd77::*"], "host": "fd77::1"}, "fd77::2"),
], ids=["ipv4-multicast", "ipv6-multicast"])
def test_multicast_discovery(pair, node_args, kwargs, ip) -> None:
    na, nb = pair
    node = Node(nb, *node_args)
    try:
        assert f"at {ip}:9701" in node.line, node.line
        t0 = time.monotonic()
        r = report(client(na, kwargs))
        assert r["ok"], r["stderr"]
        assert r["results"] == [[ip, i * i] for i in range(4)]
        assert time.monotonic() - t0 < 20
    finally:
        node.stop()


def test_multicast_node_still_answers_broadcasts(pair) -> None:
    na, nb = pair
    node = Node(nb, "-i", "10.77.0.2", "--ipv4_udp_multicast")
    try:
        # a node that only joined the group still gets broadcasts (its socket is on the
        # wildcard address): both kinds of client find it
        r = report(client(na, {"nodes": ["10.77.0.*"], "host": "10.77.0.1"}, timeout=10))
        assert r["ok"], r["stderr"]
    finally:
        node.stop()


def test_ping_interval_finds_a_node_started_later(pair) -> None:
    na, nb = pair
    proc = client(na, {"nodes": ["10.77.0.*"], "host": "10.77.0.1", "ping_interval": 1}, timeout=20)
    time.sleep(4.5)  # past the first request and its two resends
    node = Node(nb, "-i", "10.77.0.2")
    try:
        r = report(proc)
        assert r["ok"], r["stderr"]
        assert r["results"] == [["10.77.0.2", i * i] for i in range(4)]
    finally:
        node.stop()


def test_without_ping_interval_a_later_node_is_missed(pair) -> None:
    na, nb = pair
    # (its jobs never run: closing waits out its timeout, which need not be long)
    proc = client(na, {"nodes": ["10.77.0.*"], "host": "10.77.0.1"}, timeout=6, close_timeout=1)
    time.sleep(4.5)
    node = Node(nb, "-i", "10.77.0.2")
    try:
        assert not report(proc)["ok"]
    finally:
        node.stop()


def test_scheduler_node_announcement_reaches_a_client_on_another_subnet(pair) -> None:
    na, nb = pair
    # The node serves 10.78.0.2 only: the client's broadcasts (from 10.77.0.1) are not
    # from a network it serves, so it never answers them; its announcement does the job.
    proc = client(na, {"nodes": ["10.78.0.*"], "host": "10.77.0.1"}, timeout=15)
    time.sleep(1.0)  # the client listens on its port 9700
    node = Node(nb, "-i", "10.78.0.2", "--scheduler_node", "10.77.0.1")
    try:
        r = report(proc)
        assert r["ok"], r["stderr"]
        assert r["results"] == [["10.78.0.2", i * i] for i in range(4)]
    finally:
        node.stop()


def test_dispy4_port_is_where_announcements_arrive(pair) -> None:
    na, nb = pair
    # dispy 4.x's JobCluster(port=): the client's own port, where a node started with
    # --scheduler_node/--scheduler_port announces itself (a client on another subnet)
    proc = client(na, {"nodes": ["10.78.0.*"], "host": "10.77.0.1", "port": 9850}, timeout=15)
    time.sleep(1.0)  # the client listens on its port 9850
    node = Node(nb, "-i", "10.78.0.2", "--scheduler_node", "10.77.0.1", "--scheduler_port", "9850")
    try:
        r = report(proc)
        assert r["ok"], r["stderr"]
        assert r["results"] == [["10.78.0.2", i * i] for i in range(4)]
    finally:
        node.stop()


def test_node_ping_interval_repeats_announcements(pair) -> None:
    na, nb = pair
    # The node announces at start (and 1.5 s later), then every --ping_interval seconds
    # (30 by default): a client started after the first two hears the next one.
    node = Node(nb, "-i", "10.78.0.2", "--scheduler_node", "10.77.0.1", "--ping_interval", "10")
    try:
        assert "at 10.78.0.2:" in node.line, node.line
        time.sleep(3.0)  # past the start-up announcements
        r = report(client(na, {"nodes": ["10.78.0.*"], "host": "10.77.0.1"}, timeout=25))
        assert r["ok"], r["stderr"]
        assert r["results"] == [["10.78.0.2", i * i] for i in range(4)]
    finally:
        node.stop()
