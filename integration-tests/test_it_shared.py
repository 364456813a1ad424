"""SharedJobCluster through a real dispyscheduler and real dispynodes on 127.0.0.x:
several client programs at once, the three scheduling policies, exclusive and
cooperative clusters, secrets and certificates on both sides, provisional results and
files straight from the node or relayed through the scheduler (relay=True, or when the
client can't attach), and a client killed mid-run.

The scheduler is always given its nodes with -n: it never broadcasts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler

import dispy
from dispy_core.testing import SchedulerProcess, wait_until

Finished = dispy.DispyJob.Finished


def ident(x):
    return x, dispy_node_ip_addr  # noqa: F821


def nap(seconds, tag):
    import time
    time.sleep(seconds)
    return tag


@pytest.fixture
def start_scheduler():
    """Factory: start_scheduler(nodes, *args) -> SchedulerProcess on 127.0.0.1."""
    started: list[SchedulerProcess] = []

    def start(nodes, *args):
        s = SchedulerProcess("127.0.0.1", [n.addr for n in nodes], *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def shared(compute, sched, **kwargs):
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("loglevel", logging.WARNING)
    return dispy.SharedJobCluster(compute, scheduler_node=f"127.0.0.1:{sched.port}", **kwargs)


# -- several client programs -------------------------------------------------------------
CLIENT = textwrap.dedent("""
    import json, sys, logging, dispy
    def compute(x):
        import time
        time.sleep(0.02)
        return x * x, dispy_node_ip_addr
    port, tag, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    cluster = dispy.SharedJobCluster(compute, scheduler_node="127.0.0.1:%d" % port, host="127.0.0.1",
                                     loglevel=logging.WARNING, recover_file="_recover_" + tag)
    jobs = [cluster.submit(i) for i in range(n)]
    out = []
    for job in jobs:
        value = job()
        out.append([job.id, job.status, value, job.host])
    cluster.close()
    print(json.dumps(out))
""")


def test_three_client_programs_share_two_nodes(start_node, start_scheduler, tmp_path):
    a, b = start_node("127.0.0.2", "-c", "2"), start_node("127.0.0.3", "-c", "2")
    sched = start_scheduler([a, b])
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    procs = [subprocess.Popen([sys.executable, str(script), str(sched.port), f"c{i}", "60"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    hosts = set()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        rows = json.loads(out.strip().splitlines()[-1])
        assert len(rows) == 60
        for job_id, status, value, host in rows:
            assert status == Finished
            assert value[0] == (job_id - 1) ** 2
            assert value[1] == host
            hosts.add(host)
    assert hosts == {"127.0.0.2", "127.0.0.3"}  # every program's jobs spread over both nodes


# -- the three policies ------------------------------------------------------------------
@pytest.mark.parametrize("policy,flag,expected", [
    ("default", None, ["b1", "b2", "b3", "a1", "a2", "a3"]),  # earliest submitted job first
    ("early", "--early_cluster_scheduler", ["a1", "a2", "a3", "b1", "b2", "b3"]),  # first-created cluster first
    ("fair", "--fair_cluster_scheduler", ["b1", "a1", "b2", "a2", "b3", "a3"]),  # least recently served first
])
def test_policy_order_of_execution(start_node, start_scheduler, policy, flag, expected):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node], *([flag] if flag else []))
    ready = threading.Event()
    a = shared(nap, sched, cluster_status=lambda s, n, j: ready.set() if s == dispy.DispyNode.Initialized else None)
    assert ready.wait(20)  # A is created first at the scheduler (early policy)
    b_ready = threading.Event()
    b = shared(nap, sched, cluster_status=lambda s, n, j: b_ready.set() if s == dispy.DispyNode.Initialized else None)
    try:
        assert b_ready.wait(20)
        # A fills the node's two slots (1 CPU x pipeline 2) with jobs that take a while...
        blockers = [a.submit(1.5, "x1"), a.submit(1.5, "x2")]
        assert wait_until(lambda: all(j.status == dispy.DispyJob.Running for j in blockers), 10)
        # ... meanwhile B's jobs, then A's, wait at the scheduler
        small = [b.submit(0.05, f"b{i}") for i in (1, 2, 3)]
        time.sleep(0.3)
        small += [a.submit(0.05, f"a{i}") for i in (1, 2, 3)]
        for job in blockers + small:
            assert job() is not None and job.status == Finished, job.exception
        order = [j.result for j in sorted(small, key=lambda j: j.start_time)]
        assert order == expected, f"{policy}: {order}"
    finally:
        a.close(timeout=30, terminate=True)
        b.close(timeout=30, terminate=True)


# -- exclusive and cooperative ------------------------------------------------------------
def overlaps(jobs):
    spans = sorted((j.start_time, j.end_time) for j in jobs)
    return any(spans[i + 1][0] < spans[i][1] - 0.05 for i in range(len(spans) - 1))


def test_exclusive_waits_for_others_and_makes_later_ones_wait(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "2")
    sched = start_scheduler([node])
    first = shared(nap, sched)
    running = first.submit(2.0, "first")
    assert wait_until(lambda: running.status == dispy.DispyJob.Running, 15)
    ready = threading.Event()
    excl = shared(nap, sched, exclusive=True,
                  cluster_status=lambda s, n, j: ready.set() if s == dispy.DispyNode.Initialized else None)
    excl_jobs = [excl.submit(0.4, f"e{i}") for i in range(4)]
    # (the exclusive cluster must reach the scheduler first: clusters are queued in order)
    assert wait_until(lambda: "waits (exclusive" in sched.log, 15), sched.log
    later = shared(nap, sched)
    later_jobs = [later.submit(0.4, f"l{i}") for i in range(4)]
    try:
        time.sleep(0.5)
        assert all(j.status == dispy.DispyJob.Created for j in excl_jobs + later_jobs), \
            [(j.id, j.status, j.host) for j in excl_jobs + later_jobs]
        assert running() == "first"
        first_closed = time.time()
        first.close()
        assert ready.wait(20)
        # the exclusive cluster may change the node's CPUs: one job at a time from now
        assert excl.set_node_cpus("127.0.0.2", 1) == 1
        assert [j() for j in excl_jobs] == [f"e{i}" for i in range(4)]
        assert min(j.start_time for j in excl_jobs) >= first_closed - 0.05
        excl_closed = time.time()
        excl.close()
        assert [j() for j in later_jobs] == [f"l{i}" for i in range(4)]
        assert min(j.start_time for j in later_jobs) >= excl_closed - 0.05
        # the node's CPUs are back to 2 once the exclusive cluster closed (not --cooperative)
        assert overlaps(later_jobs)
        # a shared (non-exclusive) cluster may not change the node's CPUs
        assert later.set_node_cpus("127.0.0.2", 1) == -1
    finally:
        for c in (first, excl, later):
            c.close(timeout=30, terminate=True)


def test_exclusive_cluster_runs_its_jobs_one_cpu_at_a_time_after_set_node_cpus(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "2")
    sched = start_scheduler([node])
    ready = threading.Event()
    excl = shared(nap, sched, exclusive=True,
                  cluster_status=lambda s, n, j: ready.set() if s == dispy.DispyNode.Initialized else None)
    try:
        assert ready.wait(20)
        assert excl.set_node_cpus("127.0.0.2", 1) == 1
        jobs = [excl.submit(0.3, i) for i in range(4)]
        assert [j() for j in jobs] == list(range(4))
        assert not overlaps(jobs)
    finally:
        excl.close(timeout=30, terminate=True)


def test_cooperative_clusters_change_cpus_for_everyone(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "2")
    sched = start_scheduler([node], "--cooperative")
    ready = threading.Event()
    one = shared(nap, sched, cluster_status=lambda s, n, j: ready.set() if s == dispy.DispyNode.Initialized else None)
    other = shared(nap, sched)
    try:
        assert ready.wait(20)
        assert one.set_node_cpus("127.0.0.2", 1) == 1
        jobs = [other.submit(0.3, i) for i in range(4)]
        assert [j() for j in jobs] == list(range(4))
        assert not overlaps(jobs)  # the other cluster's jobs too: the node has 1 CPU now
        assert one.set_node_cpus("127.0.0.2", 2) == 2
        jobs = [other.submit(0.3, i) for i in range(4)]
        assert [j() for j in jobs] == list(range(4))
        assert overlaps(jobs)
    finally:
        one.close(timeout=30, terminate=True)
        other.close(timeout=30, terminate=True)


# -- secrets and certificates ------------------------------------------------------------
def test_node_and_cluster_secrets_are_separate(start_node, start_scheduler, caplog):
    node = start_node("127.0.0.2", "-c", "2", "-s", "node-secret")
    sched = start_scheduler([node], "--node_secret", "node-secret", "--cluster_secret", "cluster-secret")
    with shared(ident, sched, secret="cluster-secret") as cluster:
        jobs = [cluster.submit(i) for i in range(10)]
        assert [j() for j in jobs] == [(i, "127.0.0.2") for i in range(10)]
    caplog.set_level(logging.WARNING, logger="dispy")
    wrong = shared(ident, sched, secret="node-secret")  # the node's secret is not the clusters'
    try:
        job = wrong.submit(1)
        assert not wrong.wait(3)
        assert job.status == dispy.DispyJob.Created
        assert "authentication failed" in caplog.text
    finally:
        wrong.close(timeout=0, terminate=True)


def certgen(*args):
    subprocess.run([sys.executable, "-m", "dispy_core.certgen", *args], check=True, capture_output=True)


def test_node_and_cluster_certificates(start_node, start_scheduler, tmp_path, caplog, monkeypatch):
    certgen(str(tmp_path / "node.pem"))
    certgen(str(tmp_path / "cluster.pem"), "--keyfile", str(tmp_path / "cluster.key"))
    node = start_node("127.0.0.2", "-c", "2", "--certfile", str(tmp_path / "node.pem"))
    sched = start_scheduler([node], "--node_certfile", str(tmp_path / "node.pem"),
                            "--cluster_certfile", str(tmp_path / "cluster.pem"),
                            "--cluster_keyfile", str(tmp_path / "cluster.key"))
    with shared(ident, sched, certfile=str(tmp_path / "cluster.pem"), keyfile=str(tmp_path / "cluster.key")) as c:
        jobs = [c.submit(i) for i in range(10)]
        assert [j() for j in jobs] == [(i, "127.0.0.2") for i in range(10)]
        assert not c._runtime._links  # the client can't attach to a node whose certificate it lacks ...
    with shared(chatty, sched, job_status=lambda j: seen.append((j.status, j.result)),
                certfile=str(tmp_path / "cluster.pem"), keyfile=str(tmp_path / "cluster.key")) as c:
        seen = []
        monkeypatch.chdir(tmp_path)
        assert c.submit(2)() == ("done", 2)  # ... so what its jobs send comes through the scheduler
    assert [r for s, r in seen if s == dispy.DispyJob.ProvisionalResult] == [("partial", i) for i in range(2)]
    assert (tmp_path / "made-by-job.txt").read_text() == "hello 2"
    caplog.set_level(logging.WARNING, logger="dispy")
    plain = shared(ident, sched)  # no certificate: the scheduler's TLS refuses it
    try:
        plain.submit(1)
        assert not plain.wait(3)
        assert "TLS" in caplog.text
    finally:
        plain.close(timeout=0, terminate=True)


# -- provisional results and files: straight from the node, or relayed ---------------------
def chatty(n, relay=False):
    for i in range(n):
        dispy_provisional_result(("partial", i), relay=relay)  # noqa: F821
    with open("made-by-job.txt", "w") as f:
        f.write("hello %d" % n)
    dispy_send_file("made-by-job.txt", relay=relay)  # noqa: F821
    return ("done", n)


@pytest.mark.parametrize("relay", [False, True])
def test_provisional_results_and_files_arrive_either_way(start_node, start_scheduler, tmp_path, monkeypatch,
                                                         relay):
    monkeypatch.chdir(tmp_path)
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    seen = []
    with shared(chatty, sched, job_status=lambda j: seen.append((j.status, j.result))) as cluster:
        job = cluster.submit(3, relay)
        assert job() == ("done", 3)
    assert [r for s, r in seen if s == dispy.DispyJob.ProvisionalResult] == [("partial", i) for i in range(3)]
    assert (tmp_path / "made-by-job.txt").read_text() == "hello 3"


def stepper(go):
    import os
    import time
    dispy_provisional_result("first")  # noqa: F821
    while not os.path.exists(go):
        time.sleep(0.02)
    dispy_provisional_result("straight")  # noqa: F821
    with open("straight.txt", "w") as f:
        f.write("from the node")
    dispy_send_file("straight.txt")  # noqa: F821
    dispy_provisional_result("relayed", relay=True)  # noqa: F821
    return "done"


def check_straight_from_node(cluster, sched, tmp_path, seen):
    """With the scheduler frozen, what the job sends without relay still arrives; what it
    relays (and its result) arrives once the scheduler runs again."""
    assert wait_until(lambda: any(link.attached for link in cluster._runtime._links.values()), 15)
    go = tmp_path / "go"
    job = cluster.submit(str(go))
    assert wait_until(lambda: "first" in seen, 15)
    sched.proc.send_signal(signal.SIGSTOP)
    try:
        go.touch()
        assert wait_until(lambda: "straight" in seen and (tmp_path / "straight.txt").exists(), 10)
        time.sleep(0.5)
        assert "relayed" not in seen and job.status == dispy.DispyJob.ProvisionalResult
    finally:
        sched.proc.send_signal(signal.SIGCONT)
    assert job(timeout=15) == "done"
    assert wait_until(lambda: len(seen) == 3, 5)  # job_status runs in the callback thread
    assert seen == ["first", "straight", "relayed"]
    assert (tmp_path / "straight.txt").read_text() == "from the node"


def provisional(seen):
    return lambda j: seen.append(j.result) if j.status == dispy.DispyJob.ProvisionalResult else None


def test_provisional_results_and_files_come_straight_from_the_node(start_node, start_scheduler, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    node = start_node("127.0.0.2", "-c", "1", "-s", "node-secret")
    sched = start_scheduler([node], "--node_secret", "node-secret", "--cluster_secret", "cluster-secret")
    seen = []
    with shared(stepper, sched, secret="cluster-secret", job_status=provisional(seen)) as cluster:
        check_straight_from_node(cluster, sched, tmp_path, seen)


def test_straight_from_a_tls_node_when_clients_hold_its_certificate(start_node, start_scheduler, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    pem, key = str(tmp_path / "shared.pem"), str(tmp_path / "shared.key")
    certgen(pem, "--keyfile", key)
    node = start_node("127.0.0.2", "-c", "1", "--certfile", pem, "--keyfile", key)
    sched = start_scheduler([node], "--node_certfile", pem, "--node_keyfile", key,
                            "--cluster_certfile", pem, "--cluster_keyfile", key)
    seen = []
    with shared(stepper, sched, certfile=pem, keyfile=key, job_status=provisional(seen)) as cluster:
        check_straight_from_node(cluster, sched, tmp_path, seen)


def big_file(size):
    with open("big.bin", "wb") as f:
        f.write(b"x" * size)
    dispy_send_file("big.bin")  # noqa: F821
    return size


def test_a_file_sent_straight_is_saved_before_its_job_is_done(start_node, start_scheduler, tmp_path,
                                                               monkeypatch):
    """The file goes straight to the client and the result through the scheduler: the node
    holds the result until the client has the file."""
    monkeypatch.chdir(tmp_path)
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    with shared(big_file, sched) as cluster:
        assert wait_until(lambda: any(link.attached for link in cluster._runtime._links.values()), 15)
        for n in (1, 16 << 20, 2, 8 << 20):
            assert cluster.submit(n)() == n
            assert os.path.getsize(tmp_path / "big.bin") == n  # there when job() returns
            os.remove(tmp_path / "big.bin")


def where(x):
    return dispy_node_ip_addr  # noqa: F821


def test_submit_node_send_file_deallocate_close_node(start_node, start_scheduler, tmp_path):
    a, b = start_node("127.0.0.2", "-c", "1"), start_node("127.0.0.3", "-c", "1")
    sched = start_scheduler([a, b])
    up = []
    cluster = shared(where, sched, cluster_status=lambda s, n, j: up.append(n.ip_addr)
                     if s == dispy.DispyNode.Initialized else None)
    try:
        assert wait_until(lambda: len(set(up)) == 2, 20)
        assert {j() for j in [cluster.submit_node("127.0.0.3", i) for i in range(5)]} == {"127.0.0.3"}
        data = tmp_path / "data.txt"
        data.write_text("payload")
        assert cluster.send_file(str(data), "127.0.0.2") == 0
        assert cluster.deallocate_node("127.0.0.2") == 0
        assert {j() for j in [cluster.submit(i) for i in range(6)]} == {"127.0.0.3"}
        assert cluster.allocate_node("127.0.0.2") == 0
        assert cluster.close_node("127.0.0.3") == 0
        assert {j() for j in [cluster.submit(i) for i in range(4)]} == {"127.0.0.2"}
        assert cluster.resetup_node("127.0.0.2") == -1  # not with a shared cluster
        assert cluster.submit_node("127.0.0.9", 1) is None  # not a node of the cluster
    finally:
        cluster.close(timeout=30, terminate=True)


def read_file(name):
    with open(name) as f:
        return f.read()


def test_send_file_goes_straight_to_the_node_or_through_the_scheduler(start_node, start_scheduler, tmp_path):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    straight, relayed = tmp_path / "straight.txt", tmp_path / "relayed.txt"
    straight.write_text("no scheduler needed")
    relayed.write_text("through the scheduler")
    with shared(read_file, sched) as cluster:
        assert wait_until(lambda: any(link.attached for link in cluster._runtime._links.values()), 15)
        outcome = []
        sched.proc.send_signal(signal.SIGSTOP)
        try:
            assert cluster.send_file(str(straight), "127.0.0.2") == 0  # the scheduler is frozen
            sender = threading.Thread(
                target=lambda: outcome.append(cluster.send_file(str(relayed), "127.0.0.2", relay=True)))
            sender.start()
            time.sleep(1.0)
            assert outcome == []  # relay=True waits for the scheduler
        finally:
            sched.proc.send_signal(signal.SIGCONT)
        sender.join(30)
        assert outcome == [0]
        assert cluster.submit("straight.txt")() == "no scheduler needed"
        assert cluster.submit("relayed.txt")() == "through the scheduler"


def test_node_allocate_subclass_is_refused(start_node, start_scheduler):
    class Mine(dispy.NodeAllocate):
        def allocate(self, *args):
            return 1

    with pytest.raises(dispy.ConfigError, match="subclass"):
        dispy.SharedJobCluster(ident, nodes=[Mine("127.0.0.2")], scheduler_node="127.0.0.1:1")


# -- a client killed mid-run -------------------------------------------------------------
VICTIM = textwrap.dedent("""
    import sys, time, logging, dispy
    def compute(x):
        import time
        time.sleep(1.5)
        return x + 100
    port = int(sys.argv[1])
    cluster = dispy.SharedJobCluster(compute, scheduler_node="127.0.0.1:%d" % port, host="127.0.0.1",
                                     loglevel=logging.WARNING, recover_file="_victim_recover")
    jobs = [cluster.submit(i) for i in range(2)]
    while not all(j.status == dispy.DispyJob.Running for j in jobs):
        time.sleep(0.05)
    print("running", flush=True)
    time.sleep(60)
""")


def test_client_killed_mid_run_frees_nodes_and_keeps_results_for_recover_jobs(start_node, start_scheduler,
                                                                              tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    node = start_node("127.0.0.2", "-c", "2")
    sched = start_scheduler([node], "--zombie_interval", "0.05")  # a gone client is dead after 3 s
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    victim = subprocess.Popen([sys.executable, str(script), str(sched.port)], cwd=tmp_path,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "running"
        other = shared(nap, sched)
        jobs = [other.submit(0.2, i) for i in range(4)]  # wait behind the victim's two jobs
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        assert [j() for j in jobs] == list(range(4))  # the node is not kept from the others
        # the victim's jobs finished after it died; once its computation is closed the
        # scheduler keeps their results for recover_jobs
        assert wait_until(lambda: "did not come back" in sched.log and "kept in" in sched.log, 15), sched.log
        recovered = dispy.recover_jobs(str(tmp_path / "_victim_recover"), timeout=20)
        assert sorted((j.id, j.result, j.status) for j in recovered) == [(1, 100, Finished), (2, 101, Finished)]
        assert {j.host for j in recovered} == {"127.0.0.2"}  # the node, not the scheduler
        other.close()
    finally:
        if victim.poll() is None:
            victim.kill()


# -- nodes failing, limits, the scheduler stopping, bad input ------------------------------
def test_reentrant_jobs_of_a_killed_node_run_on_another(start_node, start_scheduler):
    a, b = start_node("127.0.0.2", "-c", "1"), start_node("127.0.0.3", "-c", "1")
    sched = start_scheduler([a, b])
    up = []
    cluster = shared(nap, sched, reentrant=True,
                     cluster_status=lambda s, n, j: up.append(n.ip_addr) if s == dispy.DispyNode.Initialized else None)
    try:
        assert wait_until(lambda: len(set(up)) == 2, 20)
        jobs = [cluster.submit(1.0, i) for i in range(4)]
        assert wait_until(lambda: any(j.status == dispy.DispyJob.Running and j.host == "127.0.0.2" for j in jobs), 10)
        a.proc.kill()
        assert [j() for j in jobs] == list(range(4))
        assert all(j.status == Finished for j in jobs)
        assert {j.host for j in jobs} == {"127.0.0.3"}  # the jobs that were on the dead node ran again
    finally:
        cluster.close(timeout=30, terminate=True)


def test_files_over_max_file_size_are_refused(start_node, start_scheduler, tmp_path, caplog):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node], "--max_file_size", "1k")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 4096)
    caplog.set_level(logging.WARNING, logger="dispy")
    refused = shared(ident, sched, depends=[str(big)])
    try:
        refused.submit(1)
        assert not refused.wait(3)
        assert "max_file_size" in caplog.text
    finally:
        refused.close(timeout=0, terminate=True)
    up = threading.Event()
    with shared(ident, sched, cluster_status=lambda s, n, j: up.set() if s == dispy.DispyNode.Initialized else None) as c:
        assert up.wait(20)
        # The scheduler's limit holds for files sent straight to the node (the client
        # attached to it) as for those sent through the scheduler.
        assert wait_until(lambda: any(link.attached for link in c._runtime._links.values()), 15)
        assert c.send_file(str(big), "127.0.0.2") == -1
        assert c.send_file(str(big), "127.0.0.2", relay=True) == -1
        job = c.submit(5, dispy_job_depends=[str(big)])
        assert job() is None and job.status == dispy.DispyJob.Cancelled and "max_file_size" in job.exception
        assert c.submit(6)() == (6, "127.0.0.2")


class Cutter:
    """A TCP forwarder from 127.0.0.1 to ``target`` whose connections the test can cut
    (both ends see the connection drop, as on a network failure)."""

    def __init__(self, target):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.server.accept()
                up = socket.create_connection(self.target)
            except OSError:
                return
            self.accepted += 1
            self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.server.close()
        self.cut()


def test_a_client_whose_connection_to_the_scheduler_drops_carries_on(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "2")
    sched = start_scheduler([node])
    cutter = Cutter(("127.0.0.1", sched.port))
    try:
        with dispy.SharedJobCluster(nap, scheduler_node=f"127.0.0.1:{cutter.port}", host="127.0.0.1",
                                    loglevel=logging.WARNING) as cluster:
            jobs = [cluster.submit(1.0, i) for i in range(6)]
            assert wait_until(lambda: sum(j.status == dispy.DispyJob.Running for j in jobs) == 2, 15)
            cutter.cut()  # two jobs run on the node, four wait in the scheduler
            assert [j(timeout=30) for j in jobs] == list(range(6))
            assert cutter.accepted == 2  # it reconnected once and resumed its computation
            assert {j.host for j in jobs} == {"127.0.0.2"}
            assert all(j.status == Finished for j in jobs)
            assert cluster.submit(0, "after")() == "after"
    finally:
        cutter.close()


def test_sigint_lets_running_clusters_finish_and_refuses_new_ones(start_node, start_scheduler, caplog):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    running = shared(nap, sched)
    job = running.submit(1.5, "finished")
    assert wait_until(lambda: job.status == dispy.DispyJob.Running, 15)
    sched.proc.send_signal(signal.SIGINT)
    assert wait_until(lambda: "admitting no new clusters" in sched.log, 10)
    caplog.set_level(logging.WARNING, logger="dispy")
    late = shared(nap, sched)
    try:
        late.submit(0.1, "late")
        assert not late.wait(2)
        assert "shutting down" in caplog.text
    finally:
        late.close(timeout=0, terminate=True)
    assert job() == "finished"
    running.close()
    assert sched.proc.wait(20) == 0


def test_sigterm_terminates_running_jobs(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    cluster = shared(nap, sched)
    try:
        job = cluster.submit(30, "never")
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 15)
        sched.proc.send_signal(signal.SIGTERM)
        assert sched.proc.wait(30) == 0
        assert job(timeout=30) is None
        assert job.status in (dispy.DispyJob.Terminated, dispy.DispyJob.Abandoned)
    finally:
        cluster.close(timeout=0, terminate=True)


def test_garbage_and_strangers_do_not_disturb_the_scheduler(start_node, start_scheduler):
    import socket
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node], "--cluster_secret", "s")
    with socket.create_connection(("127.0.0.1", sched.port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(5000))
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    with shared(ident, sched, secret="s") as cluster:
        assert cluster.submit(3)() == (3, "127.0.0.2")
    assert sched.alive()


def shared_setup(base):
    global offset
    offset = base
    return 0


def with_setup(x):
    with open("dep.txt") as f:
        return x + offset + int(f.read())  # noqa: F821


def test_setup_and_depends_run_on_the_nodes(start_node, start_scheduler, tmp_path):
    a, b = start_node("127.0.0.2", "-c", "1"), start_node("127.0.0.3", "-c", "1")
    sched = start_scheduler([a, b])
    dep = tmp_path / "dep.txt"
    dep.write_text("1000")
    nodes = [dispy.NodeAllocate("127.0.0.2", a.port, setup_args=(10,)),
             dispy.NodeAllocate("127.0.0.3", b.port, setup_args=(20,))]
    up = []
    with shared(with_setup, sched, nodes=nodes, depends=[str(dep)], setup=shared_setup,
                cluster_status=lambda s, n, j: up.append(n.ip_addr) if s == dispy.DispyNode.Initialized else None
                ) as cluster:
        assert wait_until(lambda: len(set(up)) == 2, 20)
        jobs = [cluster.submit(i) for i in range(8)]
        for job in jobs:
            assert job() == job.id - 1 + 1000 + (10 if job.host == "127.0.0.2" else 20), job.exception
        assert {job.host for job in jobs} == {"127.0.0.2", "127.0.0.3"}


def test_a_cluster_closed_with_jobs_running_gives_their_slots_back(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node])
    first = shared(nap, sched)
    long = [first.submit(30, i) for i in range(2)]  # both slots of the 1-CPU node
    assert wait_until(lambda: all(j.status == dispy.DispyJob.Running for j in long), 15)
    first.close(timeout=0, terminate=True)
    with shared(nap, sched) as second:
        jobs = [second.submit(0.1, i) for i in range(4)]
        assert [j(timeout=30) for j in jobs] == list(range(4))


def test_slots_of_jobs_a_frozen_node_never_confirmed_are_given_back(start_node, start_scheduler):
    node = start_node("127.0.0.2", "-c", "1")
    sched = start_scheduler([node], "--msg_timeout", "2")
    first = shared(nap, sched)
    long = [first.submit(30, i) for i in range(2)]
    assert wait_until(lambda: all(j.status == dispy.DispyJob.Running for j in long), 15)
    node.proc.send_signal(signal.SIGSTOP)  # it will not confirm the close in time
    try:
        first.close(timeout=0, terminate=True)
    finally:
        node.proc.send_signal(signal.SIGCONT)
    with shared(nap, sched) as second:
        jobs = [second.submit(0.1, i) for i in range(4)]
        assert [j(timeout=30) for j in jobs] == list(range(4))
