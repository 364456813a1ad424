"""dispynetrelay on loopback addresses (from which it sends no discovery request: the
nodes announce themselves with ``dispynode --scheduler_node RELAY``), named by a
JobCluster like a node, and by dispyscheduler with -n: the client uses every node the
relay tells of, one that starts later, and a restarted relay. Across a router:
test_it_relay_netns.py."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("dispy_relay")  # the client-only suite has no relay

import dispy
from dispy_core.testing import RelayProcess, SchedulerProcess, unused_port, wait_until

RELAY = "127.0.0.40"
SECRET = "loop-secret"


def where(n):
    import time
    time.sleep(0.3)
    return dispy_node_ip_addr  # noqa: F821


@pytest.fixture
def announce_port():
    return unused_port(RELAY)


@pytest.fixture
def relay(announce_port):
    with RelayProcess(RELAY, "-s", SECRET, "--scheduler_port", str(announce_port)) as r:
        yield r


def announcing(start_node, ip, port):
    return start_node(ip, "-c", "1", "-s", SECRET, "--scheduler_node", RELAY, "--scheduler_port", str(port))


def hosts(cluster, n):
    jobs = [cluster.submit(i) for i in range(n)]
    assert cluster.wait(timeout=60)
    return {job.result for job in jobs}


def test_jobcluster_naming_the_relay_uses_its_nodes_and_one_started_later(relay, announce_port, start_node):
    announcing(start_node, "127.0.0.41", announce_port)
    announcing(start_node, "127.0.0.42", announce_port)
    assert wait_until(lambda: relay.log.count("found (announced)") == 2, 30), relay.log
    cluster = dispy.JobCluster(where, nodes=[relay.addr], secret=SECRET, host="127.0.0.1",
                               loglevel=logging.WARNING)
    try:
        assert wait_until(lambda: len(cluster.status().nodes) == 2, 30)
        assert hosts(cluster, 6) == {"127.0.0.41", "127.0.0.42"}
        announcing(start_node, "127.0.0.43", announce_port)  # told at once, over the open connection
        assert wait_until(lambda: len(cluster.status().nodes) == 3, 30), relay.log
        assert hosts(cluster, 9) == {"127.0.0.41", "127.0.0.42", "127.0.0.43"}
    finally:
        cluster.close(timeout=10, terminate=True)


def test_a_restarted_relay_is_used_again(announce_port, start_node):
    first = RelayProcess(RELAY, "-s", SECRET, "--scheduler_port", str(announce_port))
    port = first.port
    announcing(start_node, "127.0.0.44", announce_port)
    assert wait_until(lambda: "found (announced)" in first.log, 30), first.log
    cluster = dispy.JobCluster(where, nodes=[first.addr], secret=SECRET, host="127.0.0.1",
                               loglevel=logging.WARNING)
    try:
        assert hosts(cluster, 2) == {"127.0.0.44"}
        first.stop()
        running = [cluster.submit(i) for i in range(4)]  # jobs don't pass through the relay
        second = RelayProcess(RELAY, "-s", SECRET, "--scheduler_port", str(announce_port),
                              "--relay_port", str(port))
        try:
            announcing(start_node, "127.0.0.45", announce_port)  # only the new relay hears it
            assert wait_until(lambda: len(cluster.status().nodes) == 2, 30), second.log
            assert cluster.wait(timeout=60) and {j.result for j in running} <= {"127.0.0.44", "127.0.0.45"}
            assert "client 127.0.0.1" in second.log and "asked" in second.log
        finally:
            second.stop()
    finally:
        cluster.close(timeout=10, terminate=True)
        first.stop()


def test_dispyscheduler_naming_the_relay_serves_sharedjobclusters_on_its_nodes(relay, announce_port, start_node):
    pytest.importorskip("dispy_scheduler")
    announcing(start_node, "127.0.0.46", announce_port)
    announcing(start_node, "127.0.0.47", announce_port)
    assert wait_until(lambda: relay.log.count("found (announced)") == 2, 30), relay.log
    with SchedulerProcess("127.0.0.1", [relay.addr], "--node_secret", SECRET) as sched:
        cluster = dispy.SharedJobCluster(where, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.1",
                                         loglevel=logging.WARNING)
        try:
            assert wait_until(lambda: "joined the pool" in sched.log and sched.log.count("joined the pool") == 2,
                              30), sched.log
            assert hosts(cluster, 8) == {"127.0.0.46", "127.0.0.47"}
        finally:
            cluster.close(timeout=10, terminate=True)
