"""Networking options end to end on loopback, with nodes named explicitly (nothing
broadcasts): IPv6 nodes, --ext_ip_addr, host lists and dispy_port."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile

import dispy
from dispy_core.testing import node_python, wait_until


def where(n):
    return dispy_node_ip_addr, n * 2  # noqa: F821 - set by dispynode


def run_jobs(cluster: dispy.JobCluster, n: int = 4) -> list:
    jobs = [cluster.submit(i) for i in range(n)]
    assert cluster.wait(timeout=30)
    return jobs


def test_ipv6_node(start_node) -> None:
    node = start_node("::1", "-c", "2")
    for spec in (["::1"], [f"[::1]:{node.port}"], [("::1", node.port)]):
        nodes = spec if spec != ["::1"] else [dispy.NodeAllocate("::1", node.port)]
        cluster = dispy.JobCluster(where, nodes=nodes, host="::1", loglevel=dispy.logger.WARNING)
        try:
            jobs = run_jobs(cluster)
            assert [j.result for j in jobs] == [("::1", i * 2) for i in range(4)]
            assert {j.host for j in jobs} == {"::1"} and {j.ip_addr for j in jobs} == {"::1"}
            assert [n.ip_addr for n in cluster.status().nodes] == ["::1"]
        finally:
            cluster.close(timeout=10, terminate=True)


def test_multi_homed_host_picks_the_nodes_family(start_node) -> None:
    v4 = start_node("127.0.0.1", "-c", "1")
    v6 = start_node("::1", "-c", "1")
    cluster = dispy.JobCluster(where, nodes=[f"127.0.0.1:{v4.port}", f"[::1]:{v6.port}"],
                               host=["::1", "127.0.0.1"], loglevel=dispy.logger.WARNING)
    try:
        assert wait_until(lambda: len(cluster.status().nodes) == 2, timeout=20)
        assert sorted(n.ip_addr for n in cluster.status().nodes) == ["127.0.0.1", "::1"]
        jobs = run_jobs(cluster, 8)
        assert {j.result[1] for j in jobs} == {i * 2 for i in range(8)}
    finally:
        cluster.close(timeout=10, terminate=True)


def test_ext_ip_addr_is_the_nodes_address_for_the_client(start_node) -> None:
    # The node serves 127.0.0.2 and announces 127.0.0.3 (as behind a NAT gateway): the
    # client reaches it at 127.0.0.2 and knows it as 127.0.0.3.
    node = start_node("127.0.0.2", "-c", "1", "--ext_ip_addr", "127.0.0.3")
    cluster = dispy.JobCluster(where, nodes=[f"127.0.0.2:{node.port}"], loglevel=dispy.logger.WARNING)
    try:
        jobs = run_jobs(cluster, 2)
        assert [n.ip_addr for n in cluster.status().nodes] == ["127.0.0.3"]
        assert {j.host for j in jobs} == {"127.0.0.3"}
        assert [j.result for j in jobs] == [("127.0.0.2", 0), ("127.0.0.2", 2)]  # the job's own view
    finally:
        cluster.close(timeout=10, terminate=True)


def _free_base() -> int:
    """A base port whose node port (base + 1) is free on 127.0.0.1."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise RuntimeError("no free port")


def test_dispy_port_shifts_node_and_client_ports() -> None:
    base = _free_base()
    prefix = tempfile.mkdtemp(prefix="dispy-it-port-")
    proc = subprocess.Popen([node_python(), "-m", "dispy_node.cli", "-i", "127.0.0.1", "--dispy_port", str(base),
                             "--daemon", "-c", "1", "--dest_path_prefix", prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"at 127.0.0.1:{base + 1}" in line, line
        cluster = dispy.JobCluster(where, nodes=["127.0.0.1"], dispy_port=base, loglevel=dispy.logger.WARNING)
        try:
            jobs = run_jobs(cluster, 2)
            assert cluster._runtime is not None and cluster._runtime.client_port == base
            assert [j.result for j in jobs] == [("127.0.0.1", 0), ("127.0.0.1", 2)]
        finally:
            cluster.close(timeout=10, terminate=True)
    finally:
        proc.terminate()
        proc.wait(15)
