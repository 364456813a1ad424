"""Documented names that dispy programs use, through the public API with real daemons on
127.0.0.x: dispy 4.x's ``JobCluster(port=, node_port=)`` and ``SharedJobCluster(port=,
scheduler_port=)``, the ``dispy.config`` ports (``ClientPort``, ``NodePort``,
``SharedSchedulerPort`` following ``DispyPort`` or assigned), ``SharedSchedulerClientPort``
and ``MaxFileSize``, ``poll_interval``, ``dispynode --host`` and ``dispyscheduler --host
/ --ext_host / --node``. Every node is named explicitly: nothing here broadcasts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import dispy
from dispy import config
from dispy_core.errors import ConfigError
from dispy_core.testing import NodeProcess, unused_port, wait_until

Finished = dispy.DispyJob.Finished


def where(n):
    return dispy_node_ip_addr, n * n  # noqa: F821


def send(size):
    name = "out-%d.bin" % size
    with open(name, "wb") as fh:
        fh.write(b"x" * size)
    return dispy_send_file(name)  # noqa: F821


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # recover files, files sent by jobs


@pytest.fixture
def config_restored() -> Iterator[None]:
    """Undo what a test assigns in dispy.config (the module is process-wide)."""
    before = dict(vars(config))
    yield
    for name in ("ClientPort", "NodePort", "SharedSchedulerPort"):
        if name not in before:
            vars(config).pop(name, None)
    for name in ("DispyPort", "MaxFileSize", "SharedSchedulerClientPort"):
        setattr(config, name, before[name])


def run_jobs(cluster, n: int = 4) -> list:
    jobs = [cluster.submit(i) for i in range(n)]
    assert cluster.wait(timeout=60), "jobs did not finish"
    assert [j.status for j in jobs] == [Finished] * n, [j.exception for j in jobs]
    return [tuple(j.result) for j in jobs]


# -- JobCluster(port=, node_port=) and dispy.config's ports -----------------------------
def test_node_port_is_the_port_nodes_are_contacted_on(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "2")
    # dispy 4.x: node_port is where the nodes listen (no port in `nodes`)
    cluster = dispy.JobCluster(where, nodes=["127.0.0.1"], host="127.0.0.1", node_port=node.port,
                               loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster) == [("127.0.0.1", i * i) for i in range(4)]
        assert cluster.status().nodes[0].ip_addr == "127.0.0.1"
        # nodes added later take it too
        assert cluster.allocate_node("127.0.0.1") == 0
    finally:
        cluster.close(timeout=10, terminate=True)


def test_port_and_node_port_are_checked() -> None:
    with pytest.raises(ConfigError, match="node_port"):
        dispy.JobCluster(where, nodes=["127.0.0.1"], node_port="9701")
    with pytest.raises(ConfigError, match="port"):
        dispy.JobCluster(where, nodes=["127.0.0.1"], port=70000)


def test_config_ports_follow_dispy_port(config_restored) -> None:
    assert (config.ClientPort, config.NodePort, config.SharedSchedulerPort) == (9700, 9701, 9702)
    config.DispyPort = 9100
    assert (config.ClientPort, config.NodePort, config.SharedSchedulerPort) == (9100, 9101, 9102)
    assert "NodePort" in dir(config)


def test_assigned_config_node_port_is_the_one_contacted(start_node, config_restored) -> None:
    node = start_node("127.0.0.1", "-c", "2")
    config.NodePort = node.port  # assigned: honoured, whatever DispyPort is
    cluster = dispy.JobCluster(where, nodes=["127.0.0.1"], host="127.0.0.1", loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster, 2) == [("127.0.0.1", 0), ("127.0.0.1", 1)]
    finally:
        cluster.close(timeout=10, terminate=True)


def test_config_dispy_port_moves_node_port(config_restored) -> None:
    port = unused_port()
    with NodeProcess("127.0.0.1", "-c", "1", port=port):
        config.DispyPort = port - 1  # NodePort follows it
        cluster = dispy.JobCluster(where, nodes=["127.0.0.1"], host="127.0.0.1", loglevel=logging.WARNING)
        try:
            assert run_jobs(cluster, 2) == [("127.0.0.1", 0), ("127.0.0.1", 1)]
        finally:
            cluster.close(timeout=10, terminate=True)


# -- MaxFileSize: what the client takes from its jobs ----------------------------------
def test_max_file_size_limits_files_jobs_send(start_node, config_restored, tmp_path) -> None:
    node = start_node("127.0.0.1", "-c", "2")
    config.MaxFileSize = 1000
    cluster = dispy.JobCluster(send, nodes=[node.addr], host="127.0.0.1", loglevel=logging.WARNING)
    try:
        small, big = cluster.submit(500), cluster.submit(5000)
        assert cluster.wait(timeout=60)
        assert small.result == 0 and small.status == Finished
        assert big.result == -1 and big.status == Finished  # refused before it was sent
        assert (tmp_path / "out-500.bin").stat().st_size == 500
        assert not (tmp_path / "out-5000.bin").exists()
        # the node's log says whose limit it was
        assert wait_until(lambda: "dispy.config.MaxFileSize" in node.log), node.log
    finally:
        cluster.close(timeout=10, terminate=True)


def test_max_file_size_of_a_shared_cluster_reaches_its_nodes(scheduler, config_restored, tmp_path) -> None:
    config.MaxFileSize = 1000
    cluster = dispy.SharedJobCluster(send, scheduler_node=f"127.0.0.1:{scheduler.port}", host="127.0.0.1",
                                     loglevel=logging.WARNING)
    try:
        small, big = cluster.submit(500), cluster.submit(5000)
        assert cluster.wait(timeout=60)
        assert (small.result, big.result) == (0, -1)
        assert (tmp_path / "out-500.bin").stat().st_size == 500
        assert not (tmp_path / "out-5000.bin").exists()
    finally:
        cluster.close(timeout=10, terminate=True)


# -- poll_interval ---------------------------------------------------------------------
def test_poll_interval_is_checked_and_needs_no_polling(start_node, caplog) -> None:
    node = start_node("127.0.0.1", "-c", "2")
    with pytest.raises(ConfigError, match="poll_interval"):
        dispy.JobCluster(where, nodes=[node.addr], poll_interval=1)
    with pytest.raises(ConfigError, match="poll_interval"):
        dispy.JobCluster(where, nodes=[node.addr], poll_interval=5000)
    caplog.set_level(logging.INFO, logger="dispy")
    cluster = dispy.JobCluster(where, nodes=[node.addr], host="127.0.0.1", poll_interval=10)
    try:
        assert run_jobs(cluster, 2) == [("127.0.0.1", 0), ("127.0.0.1", 1)]
    finally:
        cluster.close(timeout=10, terminate=True)
    assert "no polling is needed" in caplog.text


# -- dispynode --host ------------------------------------------------------------------
def test_dispynode_host_is_ip_addr(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "2", "--host", "127.0.0.3")
    # start_node returns at the first "serving" line; the second address's comes after it
    assert wait_until(lambda: "127.0.0.3:" in node.log), node.log
    cluster = dispy.JobCluster(where, nodes=[f"127.0.0.3:{node.port}"], host="127.0.0.1",
                               loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster, 2) == [("127.0.0.3", 0), ("127.0.0.3", 1)]
    finally:
        cluster.close(timeout=10, terminate=True)


# -- SharedJobCluster(port=, scheduler_port=), SharedSchedulerClientPort -----------------
def connected_from(local_port: int, remote_port: int) -> bool:
    """Whether this process has a TCP connection from local_port to remote_port (/proc/net/tcp)."""
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    return any(int(r[1].split(":")[1], 16) == local_port and int(r[2].split(":")[1], 16) == remote_port
               and r[3] == "01" for r in rows)


@pytest.fixture
def scheduler(start_node) -> Iterator:
    pytest.importorskip("dispy_scheduler")
    from dispy_core.testing import SchedulerProcess

    node = start_node("127.0.0.1", "-c", "2")
    # dispy's names of -i, --ext_ip_addr and -n (it serves 127.0.0.1 and, by --host, 127.0.0.2)
    with SchedulerProcess("127.0.0.1", [], "--host", "127.0.0.2", "--ext_host", "127.0.0.1",
                          "--node", node.addr) as s:
        yield s


def test_shared_cluster_port_is_its_client_port(scheduler) -> None:
    port = unused_port()
    # the documentation's SSH section: port=2345, ext_host=127.0.0.1
    cluster = dispy.SharedJobCluster(where, scheduler_node="127.0.0.2", scheduler_port=scheduler.port,
                                     host="127.0.0.1", port=port, ext_host="127.0.0.1", poll_interval=10,
                                     loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster, 2) == [("127.0.0.1", 0), ("127.0.0.1", 1)]
        assert connected_from(port, scheduler.port)
    finally:
        cluster.close(timeout=10, terminate=True)
    with pytest.raises(ConfigError, match="client_port or its old name port"):
        dispy.SharedJobCluster(where, scheduler_node="127.0.0.1", port=port, client_port=port)


def test_shared_scheduler_client_port_is_the_default(scheduler, config_restored) -> None:
    port = unused_port()
    config.SharedSchedulerClientPort = port
    cluster = dispy.SharedJobCluster(where, scheduler_node=f"127.0.0.1:{scheduler.port}", host="127.0.0.1",
                                     loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster, 1) == [("127.0.0.1", 0)]
        assert connected_from(port, scheduler.port)
    finally:
        cluster.close(timeout=10, terminate=True)


def test_assigned_shared_scheduler_port_is_the_scheduler_contacted(scheduler, config_restored) -> None:
    config.SharedSchedulerPort = scheduler.port
    cluster = dispy.SharedJobCluster(where, scheduler_node="127.0.0.1", host="127.0.0.1",
                                     loglevel=logging.WARNING)
    try:
        assert run_jobs(cluster, 1) == [("127.0.0.1", 0)]
    finally:
        cluster.close(timeout=10, terminate=True)



# -- node_jobs(node, from_node=True) asks the node -------------------------------------
def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def check_node_jobs_from_node(cluster, ip: str) -> None:
    jobs = [cluster.submit(120) for _ in range(3)]
    # one CPU: the node runs one job; the client keeps more in flight there (pipelined),
    # which its own records count as Running
    assert wait_until(lambda: cluster.node_jobs(ip, from_node=True), timeout=30)
    running = cluster.node_jobs(ip, from_node=True)
    assert running == [jobs[0]]
    assert running[0] is jobs[0]  # the cluster's own DispyJob objects
    assert len(cluster.node_jobs(ip)) >= 2 and cluster.node_jobs(ip)[0] is jobs[0]
    for job in jobs:
        cluster.cancel(job)
    assert cluster.wait(timeout=60)
    assert cluster.node_jobs(ip, from_node=True) == []


def test_node_jobs_from_node_asks_the_node(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "1")
    cluster = dispy.JobCluster(nap, nodes=[node.addr], host="127.0.0.1", loglevel=logging.WARNING)
    try:
        check_node_jobs_from_node(cluster, "127.0.0.1")
    finally:
        cluster.close(timeout=10, terminate=True)


def test_shared_node_jobs_from_node_asks_the_node_through_the_scheduler(start_node) -> None:
    pytest.importorskip("dispy_scheduler")
    from dispy_core.testing import SchedulerProcess

    node = start_node("127.0.0.1", "-c", "1")
    with SchedulerProcess("127.0.0.1", [node.addr]) as sched:
        cluster = dispy.SharedJobCluster(nap, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.1",
                                         loglevel=logging.WARNING)
        try:
            check_node_jobs_from_node(cluster, "127.0.0.1")
        finally:
            cluster.close(timeout=10, terminate=True)


# -- dispynode --msg_timeout: socket I/O with clients -----------------------------------
FROZEN_CLIENT = """
import logging, sys, time, dispy
def big(seconds, started):
    import time
    open(started, "w").close()  # the node has the job: the test may freeze the client now
    time.sleep(seconds)
    return b"x" * (64 << 20)
if sys.argv[2] == "shared":
    cluster = dispy.SharedJobCluster(big, scheduler_node=sys.argv[1], host="127.0.0.1", loglevel=logging.WARNING)
else:
    cluster = dispy.JobCluster(big, nodes=[sys.argv[1]], host="127.0.0.1", loglevel=logging.WARNING)
job = cluster.submit(5.0, sys.argv[3])  # the test freezes this client meanwhile
while job.status != dispy.DispyJob.Running:
    time.sleep(0.02)
print("running", flush=True)
result = job()
print("done", job.status, len(result) if result else None, flush=True)
cluster.close()
"""


def test_msg_timeout_closes_a_connection_whose_client_takes_nothing(start_node, tmp_path) -> None:
    node = start_node("127.0.0.1", "-c", "1", "--msg_timeout", "2")
    frozen_client_gets_its_result(node, node.addr, "job", tmp_path)


def test_scheduler_msg_timeout_closes_a_connection_whose_client_takes_nothing(start_node, tmp_path) -> None:
    pytest.importorskip("dispy_scheduler")
    from dispy_core.testing import SchedulerProcess

    node = start_node("127.0.0.1", "-c", "1")
    with SchedulerProcess("127.0.0.1", [node.addr], "--msg_timeout", "2") as sched:
        frozen_client_gets_its_result(sched, sched.addr, "shared", tmp_path)


def frozen_client_gets_its_result(daemon, addr: str, kind: str, tmp_path) -> None:
    """A client frozen (SIGSTOP) while a 64 MiB result is on its way: the daemon closes
    its connection after --msg_timeout; thawed, the client resumes and gets the result."""
    import signal
    import subprocess
    import sys

    started = tmp_path / "job-started"
    client = subprocess.Popen([sys.executable, "-c", FROZEN_CLIENT, addr, kind, str(started)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "running"
        # Not before the job runs on the node: "running" is the client's word once it has
        # handed the job to its sending thread, which a loaded machine may not have run yet
        # (frozen then, the client would never send the job, and nothing would stall).
        assert wait_until(started.exists, 30), daemon.log
        client.send_signal(signal.SIGSTOP)  # it reads nothing any more: the 64 MiB result stalls
        try:
            assert wait_until(lambda: "(--msg_timeout)" in daemon.log, timeout=60), daemon.log
        finally:
            client.send_signal(signal.SIGCONT)
        # the result was kept: the client, back, resumes and gets it
        out, err = client.communicate(timeout=120)
        assert out.split() == ["done", str(Finished), str(64 << 20)], err
        assert client.returncode == 0, err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


# -- dispy 4.x's submit_job_id, submit_job_id_node, shutdown ---------------------------
def test_submit_job_id_and_shutdown(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "2")
    cluster = dispy.JobCluster(where, nodes=[node.addr], host="127.0.0.1", loglevel=logging.WARNING)
    try:
        a = cluster.submit_job_id("first", 3)
        assert cluster.wait(timeout=30)  # the node is set up: submit_job_id_node can name it
        b = cluster.submit_job_id_node(("second", 2), "127.0.0.1", 4)
        assert (a.id, a()) == ("first", ("127.0.0.1", 9))
        assert (b.id, b()) == (("second", 2), ("127.0.0.1", 16))
        assert cluster.submit_job_id_node("x", "127.0.0.9", 1) is None  # not a node of the cluster
    finally:
        cluster.shutdown()
    assert cluster.submit(1) is None  # closed


def test_shutdown_does_not_wait_for_jobs(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "1")
    cluster = dispy.JobCluster(nap, nodes=[node.addr], host="127.0.0.1", loglevel=logging.WARNING)
    job = cluster.submit(600)
    assert wait_until(lambda: job.status == dispy.DispyJob.Running, timeout=30)
    cluster.shutdown()  # terminates it (close() would wait the 600 s)
    assert job.status in (dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated)


def test_resetup_node_terminate_pending(start_node) -> None:
    node = start_node("127.0.0.1", "-c", "1")
    cluster = dispy.JobCluster(nap, nodes=[node.addr], host="127.0.0.1", loglevel=logging.WARNING)
    try:
        job = cluster.submit(600)
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, timeout=30)
        # dispy 4.x's terminate_pending: the running job is terminated, not waited for
        assert cluster.resetup_node("127.0.0.1", terminate_pending=True) == 0
        assert job.finish.wait(30) and job.status in (dispy.DispyJob.Terminated, dispy.DispyJob.Cancelled)
        again = cluster.submit(0)  # set up again: jobs run there
        assert again(timeout=60) == 0
    finally:
        cluster.close(timeout=10, terminate=True)


def test_node_ping_interval_without_scheduler_node_says_it_does_nothing(start_node) -> None:
    # the node never broadcasts: with no --scheduler_node there is nowhere to announce to
    node = start_node("127.0.0.1", "-c", "1", "--ping_interval", "20")
    assert wait_until(lambda: "--ping_interval 20 has no effect without --scheduler_node" in node.log), node.log


def test_a_bad_assigned_port_is_a_clear_error(config_restored) -> None:
    config.NodePort = "9801"  # dispy kept them as text: taken
    assert config.node_port() == 9801
    config.NodePort = "next to DispyPort"
    with pytest.raises(ConfigError, match="dispy.config.NodePort must be a port number"):
        dispy.JobCluster(where, nodes=["127.0.0.1"])
