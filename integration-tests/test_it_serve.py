"""dispynode --serve against a real JobCluster: the node quits by itself, exit status 0,
after the client's computation closes."""

from __future__ import annotations

import dispy
from dispy_core.testing import NodeProcess, wait_until


def triple(x):
    return 3 * x


def test_serve_1_node_quits_after_one_jobcluster():
    with NodeProcess("127.0.0.5", "-c", "2", "--serve", "1") as node:
        with dispy.JobCluster(triple, nodes=[dispy.NodeAllocate(node.ip, port=node.port)]) as cluster:
            jobs = [cluster.submit(i) for i in range(4)]
            assert [job() for job in jobs] == [0, 3, 6, 9]
            assert node.alive()
        assert node.proc.wait(15) == 0, node.log
        assert wait_until(lambda: "(--serve 1); quitting" in node.log, 10), node.log


def twice(x):
    return 2 * x


def test_an_idle_cluster_is_not_taken_for_a_zombie(start_node):
    # --zombie_interval 0.02 min = 1.2 s: the node pings the silent client, which
    # answers, so its computation survives an idle spell several times that long.
    import time

    proc = start_node("127.0.0.7", "--zombie_interval", "0.02")
    with dispy.JobCluster(twice, nodes=[dispy.NodeAllocate(proc.ip, port=proc.port)]) as cluster:
        assert cluster.submit(1)() == 2
        time.sleep(4)
        job = cluster.submit(2)
        assert job() == 4, job.exception
    assert "zombie_interval" not in proc.log
