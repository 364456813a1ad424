"""Node management against real dispynodes: cluster.deallocate_node, allocate_node,
close_node, discover_nodes and send_file (the client documentation's "Cluster" methods).

Every node is named explicitly (IP and port); nothing here broadcasts.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

import dispy
from dispy_core.testing import wait_until


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def where(seconds):
    import time

    time.sleep(seconds)
    return dispy_node_ip_addr  # noqa: F821


def comp_dirs(node):
    """The computation directories on a node (under its dest_path_prefix)."""
    return [e for e in os.listdir(node.dest_path_prefix) if not e.startswith(".")]


class Events:
    """cluster_status recorder: (status, node ip) of the node events."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def __call__(self, status, node, job):
        if job is None and node is not None:
            with self.lock:
                self.events.append((status, node.ip_addr))

    def has(self, status, ip):
        with self.lock:
            return (status, ip) in self.events

    def count(self, status, ip):
        with self.lock:
            return self.events.count((status, ip))


def ready(cluster, events, *ips, timeout=20.0):
    assert wait_until(lambda: all(events.has(dispy.DispyNode.Initialized, ip) for ip in ips), timeout), \
        f"nodes {ips} not ready: {events.events}"


# -- deallocate_node / allocate_node -------------------------------------------------------
def test_deallocate_and_allocate_node(start_node):
    a = start_node("127.0.0.2", "-c", "1")
    b = start_node("127.0.0.3", "-c", "1")
    events = Events()
    with dispy.JobCluster(where, nodes=nodes_of(a, b), cluster_status=events) as cluster:
        ready(cluster, events, a.ip, b.ip)
        assert cluster.deallocate_node(b.ip) == 0
        jobs = [cluster.submit(0.05) for _ in range(6)]
        assert cluster.wait(timeout=30)
        assert [j.result for j in jobs] == [a.ip] * 6
        # a job pinned to the deallocated node waits; the node keeps its setup
        pinned = cluster.submit_node(b.ip, 0)
        time.sleep(0.5)
        assert pinned.status == dispy.DispyJob.Created
        assert events.count(dispy.DispyNode.Closed, b.ip) == 0

        node_b = next(n for n in cluster.status().nodes if n.ip_addr == b.ip)
        assert cluster.allocate_node(node_b) == 0  # a DispyNode: resumes scheduling
        assert pinned() == b.ip
        jobs = [cluster.submit(0.3) for _ in range(6)]
        assert cluster.wait(timeout=30)
        assert {j.result for j in jobs} == {a.ip, b.ip}
        assert events.count(dispy.DispyNode.Initialized, b.ip) == 1  # not set up again

        assert cluster.deallocate_node("127.0.0.9") == -1  # not in the cluster
        assert cluster.allocate_node(b.ip) == 0  # already allocated: nothing to do


def test_deallocate_running_node_lets_jobs_finish(start_node):
    a = start_node("127.0.0.2", "-c", "1")
    b = start_node("127.0.0.3", "-c", "1")
    events = Events()
    with dispy.JobCluster(where, nodes=nodes_of(a, b), cluster_status=events) as cluster:
        ready(cluster, events, a.ip, b.ip)
        jobs = [cluster.submit(1.0) for _ in range(2)]  # one on each node
        assert wait_until(lambda: all(j.status == dispy.DispyJob.Running for j in jobs))
        on_b = next(j for j in jobs if j.host == b.ip)
        assert cluster.deallocate_node(b.ip) == 0
        later = [cluster.submit(0.05) for _ in range(4)]
        assert cluster.wait(timeout=30)
        assert on_b.status == dispy.DispyJob.Finished and on_b.result == b.ip
        assert [j.result for j in later] == [a.ip] * 4


def test_allocate_node_started_after_cluster(start_node):
    a = start_node("127.0.0.2", "-c", "1")
    events = Events()
    with dispy.JobCluster(where, nodes=nodes_of(a), cluster_status=events) as cluster:
        ready(cluster, events, a.ip)
        c = start_node("127.0.0.4", "-c", "1")
        assert cluster.allocate_node((c.ip, c.port)) == 0
        ready(cluster, events, c.ip)
        assert cluster.submit_node(c.ip, 0)() == c.ip
        jobs = [cluster.submit(0.3) for _ in range(6)]
        assert cluster.wait(timeout=30)
        assert {j.result for j in jobs} == {a.ip, c.ip}
        assert cluster.allocate_node(("bad host", "no port")) == -1


# -- close_node --------------------------------------------------------------------------
def test_close_node(start_node, tmp_path):
    a = start_node("127.0.0.2", "-c", "1")
    b = start_node("127.0.0.3", "-c", "1")
    events = Events()
    marker = tmp_path / "cleanup-ran"

    def cleanup(path, ip):
        with open(path, "a") as f:
            f.write(ip + "\n")

    nodes = [dispy.NodeAllocate(p.ip, port=p.port, setup_args=(str(marker), p.ip)) for p in (a, b)]
    with dispy.JobCluster(where, nodes=nodes, cluster_status=events, cleanup=cleanup) as cluster:
        ready(cluster, events, a.ip, b.ip)
        assert comp_dirs(b)
        jobs = [cluster.submit(1.0) for _ in range(2)]
        assert wait_until(lambda: all(j.status == dispy.DispyJob.Running for j in jobs))
        on_b = next(j for j in jobs if j.host == b.ip)
        time.sleep(0.3)  # the job has started there
        assert cluster.close_node(b.ip) == 0  # waits for the job running there
        assert on_b.status == dispy.DispyJob.Finished and on_b.result == b.ip
        assert wait_until(lambda: events.has(dispy.DispyNode.Closed, b.ip))
        assert marker.read_text().split() == [b.ip]  # cleanup ran there
        assert wait_until(lambda: not comp_dirs(b))  # and its files are gone
        later = [cluster.submit(0.05) for _ in range(4)]
        assert cluster.wait(timeout=30)
        assert [j.result for j in later] == [a.ip] * 4
        assert cluster.close_node(b.ip) == -1  # not serving any more

        # allocate_node sets it up again
        assert cluster.allocate_node(b.ip) == 0
        assert wait_until(lambda: events.count(dispy.DispyNode.Initialized, b.ip) == 2, 20)
        assert cluster.submit_node(b.ip, 0)() == b.ip


def test_close_node_terminate_pending(start_node):
    a = start_node("127.0.0.2", "-c", "1")
    b = start_node("127.0.0.3", "-c", "1")
    events = Events()
    with dispy.JobCluster(where, nodes=nodes_of(a, b), cluster_status=events) as cluster:
        ready(cluster, events, a.ip, b.ip)
        job = cluster.submit_node(b.ip, 60)
        assert wait_until(lambda: job.status == dispy.DispyJob.Running)
        time.sleep(0.5)
        start = time.monotonic()
        assert cluster.close_node(b.ip, terminate_pending=True) == 0
        assert time.monotonic() - start < 15
        job()
        assert job.status in (dispy.DispyJob.Terminated, dispy.DispyJob.Abandoned)
        assert wait_until(lambda: events.has(dispy.DispyNode.Closed, b.ip))
        assert wait_until(lambda: not comp_dirs(b))
        assert cluster.submit(0)() == a.ip


# -- discover_nodes ----------------------------------------------------------------------
def test_discover_explicit_nodes(start_node):
    a = start_node("127.0.0.2", "-c", "1")
    events = Events()
    with dispy.JobCluster(where, nodes=nodes_of(a), cluster_status=events) as cluster:
        ready(cluster, events, a.ip)
        c = start_node("127.0.0.4", "-c", "1")
        d = start_node("127.0.0.5", "-c", "1")
        assert cluster.discover_nodes([dispy.NodeAllocate(c.ip, port=c.port), (d.ip, d.port)]) is None
        ready(cluster, events, c.ip, d.ip)
        jobs = [cluster.submit(0.3) for _ in range(9)]
        assert cluster.wait(timeout=30)
        assert {j.result for j in jobs} == {a.ip, c.ip, d.ip}


# -- send_file ---------------------------------------------------------------------------
def read_file(name):
    with open(name) as f:
        return f.read()


def test_send_file(start_node, tmp_path, caplog):
    a = start_node("127.0.0.2", "-c", "1", "--max_file_size", "1000")
    events = Events()
    small = tmp_path / "data.txt"
    small.write_text("hello from the client")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    with dispy.JobCluster(read_file, nodes=nodes_of(a), cluster_status=events) as cluster:
        ready(cluster, events, a.ip)
        assert cluster.send_file(str(small), a.ip) == 0
        job = cluster.submit("data.txt")
        assert job() == "hello from the client", job.exception
        small.write_text("replaced")  # sending again replaces it
        assert cluster.send_file(small, a.ip) == 0
        assert cluster.submit("data.txt")() == "replaced"

        with caplog.at_level(logging.ERROR, logger="dispy"):
            assert cluster.send_file(str(big), a.ip) == -1
        assert "max_file_size" in caplog.text
        job = cluster.submit("big.bin")
        job()
        assert job.status == dispy.DispyJob.Terminated  # it was not saved
        assert "FileNotFoundError" in (job.exception or "")

        assert cluster.send_file(str(tmp_path / "missing"), a.ip) == -1
        assert cluster.send_file(str(small), "127.0.0.9") == -1
        assert cluster.send_file(str(small), a.ip, relay=True) == 0  # no effect with JobCluster
        with pytest.raises(dispy.ConfigError, match="relay"):
            cluster.send_file(str(small), a.ip, relay="yes")
        # the node keeps serving
        assert cluster.submit("data.txt")() == "replaced"


def setup_data(value, marker):
    global data, cleanup_marker
    data, cleanup_marker = value, marker
    return 0


def cleanup_data(value, marker):
    with open(marker, "a") as f:
        f.write(f"cleanup {value}\n")


def read_data(pause):
    import time

    time.sleep(pause)
    return data  # noqa: F821 - a global of setup_data


class Generations(dispy.NodeAllocate):
    """Gives setup new arguments each time the node is allocated."""

    def __init__(self, host, port, marker):
        super().__init__(host, port=port)
        self.generation = 0
        self.marker = marker

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        self.generation += 1
        self.setup_args = (f"generation {self.generation}", self.marker)
        return cpus


def test_resetup_node_runs_cleanup_then_setup_with_new_allocate_values(start_node, tmp_path):
    node = start_node("127.0.0.2", "-c", "1")
    events = Events()
    marker = str(tmp_path / "cleanups")
    spec = Generations(node.ip, node.port, marker)
    with dispy.JobCluster(read_data, nodes=[spec], setup=setup_data, cleanup=cleanup_data,
                          cluster_status=events) as cluster:
        assert cluster.submit(0)() == "generation 1"
        running = cluster.submit(0.5)
        assert wait_until(lambda: running.status == dispy.DispyJob.Running)
        assert cluster.resetup_node(node.ip) == 0  # the running job finishes first
        assert running.status == dispy.DispyJob.Finished and running.result == "generation 1"
        with open(marker) as f:
            assert f.read() == "cleanup generation 1\n"
        assert cluster.submit(0)() == "generation 2"
        assert wait_until(lambda: events.count(dispy.DispyNode.Initialized, node.ip) == 2)  # (callbacks run apart)
        assert cluster.resetup_node("127.0.0.9") == -1  # not a node of this cluster
