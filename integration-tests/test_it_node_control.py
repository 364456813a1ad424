"""Node control against real dispynodes: cluster.set_node_cpus, dispy_send_file (the
client documentation's "Transferring Files") and cluster.resetup_node."""

from __future__ import annotations

import os

import dispy
from dispy_core.testing import wait_until


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def timed_sleep(seconds):
    import time

    start = time.time()
    time.sleep(seconds)
    return (start, time.time())


def overlaps(spans):
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


# -- cluster.set_node_cpus --------------------------------------------------------------
def test_set_node_cpus(start_node):
    node = start_node("127.0.0.1", "-c", "2")
    with dispy.JobCluster(timed_sleep, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0)() is not None  # the node is ready
        assert cluster.set_node_cpus(node.ip, 1) == 1
        assert cluster.status().nodes[0].cpus == 1
        jobs = [cluster.submit(0.4) for _ in range(4)]
        assert cluster.wait(timeout=20)
        spans = [j.result for j in jobs]
        assert all(j.status == dispy.DispyJob.Finished for j in jobs)
        assert not overlaps(spans), spans

        assert cluster.set_node_cpus(node.ip, 2) == 2
        jobs = [cluster.submit(0.6) for _ in range(4)]
        assert cluster.wait(timeout=20)
        assert overlaps([j.result for j in jobs])

        assert cluster.set_node_cpus(node.ip, -1) == 1  # all but one
        assert cluster.set_node_cpus(node.ip, 5) == 2  # at most the node's CPUs
        assert cluster.set_node_cpus(node.ip, -2) == -1
        assert cluster.set_node_cpus(node.ip, 0) == -1
        assert cluster.set_node_cpus("127.0.0.9", 1) == -1  # not in the cluster


# -- dispy_send_file ---------------------------------------------------------------------
def make_and_send(size):
    import os

    os.makedirs("out", exist_ok=True)
    with open("out/result.txt", "w") as fh:
        fh.write("x" * size)
    os.chmod("out/result.txt", 0o640)
    os.utime("out/result.txt", (1_000_000_000, 1_000_000_000))
    with open("abs.txt", "w") as fh:
        fh.write("abs")
    sent = dispy_send_file("out/result.txt")  # noqa: F821
    escaped = dispy_send_file(os.path.abspath("abs.txt"))  # noqa: F821
    missing = dispy_send_file("no/such/file")  # noqa: F821
    return (sent, escaped, missing)


def test_send_file_from_job(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dispy.JobCluster(make_and_send, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(100)
        assert job() == (0, 0, -1), job.exception
        # saved before the result was delivered
        saved = tmp_path / "out" / "result.txt"
        assert saved.read_text() == "x" * 100
        assert (os.stat(saved).st_mode & 0o777) == 0o640
        assert int(os.stat(saved).st_mtime) == 1_000_000_000
        # an absolute path is saved under its base name, in the client's cwd
        assert (tmp_path / "abs.txt").read_text() == "abs"


def test_send_file_over_max_file_size(start_node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    node = start_node("127.0.0.1", "--max_file_size", "1k")
    with dispy.JobCluster(make_and_send, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(2000)
        assert job()[0] == -1, job.exception
        assert not (tmp_path / "out" / "result.txt").exists()
        assert (tmp_path / "abs.txt").read_text() == "abs"  # small files still go
        job = cluster.submit(1000)
        assert job()[0] == 0
        assert (tmp_path / "out" / "result.txt").read_text() == "x" * 1000
    assert wait_until(lambda: "--max_file_size" in node.log, timeout=5), node.log
