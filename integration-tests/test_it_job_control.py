"""Job control against real dispynodes: cluster.cancel, submit_node, node_jobs and
dispy_provisional_result (the client documentation's sections of those names)."""

from __future__ import annotations

import threading
import time

import dispy


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def sleeper(seconds):
    import time

    time.sleep(seconds)
    return dispy_node_ip_addr  # noqa: F821


def wait_running(job, timeout=10.0):
    deadline = time.monotonic() + timeout
    while job.status != dispy.DispyJob.Running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status == dispy.DispyJob.Running


# -- cluster.cancel ---------------------------------------------------------------------
def test_cancel_queued_job(start_node):
    node = start_node("127.0.0.1", "-c", "1")
    seen = []
    statuses = []
    with dispy.JobCluster(sleeper, nodes=nodes_of(node), job_status=seen.append,
                          cluster_status=lambda s, n, j: statuses.append((s, j))) as cluster:
        # one CPU, two jobs in flight per CPU: the fourth job stays queued at the client
        jobs = [cluster.submit(1.5) for _ in range(4)]
        wait_running(jobs[0])
        queued = jobs[3]
        assert queued.status == dispy.DispyJob.Created
        assert cluster.cancel(queued) == 0
        assert queued() is None  # returns at once
        assert queued.status == dispy.DispyJob.Cancelled == 8
        assert queued.finish.is_set()
        assert cluster.cancel(queued) == -1
        assert cluster.wait(timeout=15)  # does not wait for the cancelled job
        assert [j.status for j in jobs[:3]] == [dispy.DispyJob.Finished] * 3
    assert queued in seen
    assert (dispy.DispyJob.Cancelled, queued) in statuses


def test_cancel_running_job(node):
    seen = []
    with dispy.JobCluster(sleeper, nodes=nodes_of(node), job_status=seen.append) as cluster:
        job = cluster.submit(30)
        wait_running(job)
        time.sleep(0.5)  # it has reached the node and started
        start = time.monotonic()
        assert cluster.cancel(job) == 0
        job()
        assert time.monotonic() - start < 20  # not the job's 30 s
        assert job.status == dispy.DispyJob.Cancelled
        assert job.result is None
        assert "KeyboardInterrupt" in (job.exception or "")
        assert cluster.cancel(job) == -1
        # the node keeps serving the cluster
        assert cluster.submit(0)() == node.ip
    assert seen and seen[0] is job


def best_effort(n):
    import time

    best = "nothing yet"
    try:
        for i in range(n):
            best = f"best so far {i}"
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("interrupted")
        return best
    return "done"


def test_cancelled_job_that_returns_keeps_its_result(node):
    with dispy.JobCluster(best_effort, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(600)
        wait_running(job)
        time.sleep(1.0)
        assert cluster.cancel(job) == 0
        result = job()
        assert result.startswith("best so far")
        assert job.status == dispy.DispyJob.Cancelled
        assert job.stdout == "interrupted\n"
        assert job.exception is None


def test_cancel_finished_job_returns_minus_one(node):
    with dispy.JobCluster(sleeper, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(0)
        assert job() == node.ip
        assert cluster.cancel(job) == -1
        assert job.status == dispy.DispyJob.Finished


# -- cluster.submit_node and cluster.node_jobs --------------------------------------
def test_submit_node_pins_jobs(start_node):
    a = start_node("127.0.0.2", "-c", "2")
    b = start_node("127.0.0.3", "-c", "2")
    ready = []
    both = threading.Event()

    def status(st, node, job):
        if st == dispy.DispyNode.Initialized:
            ready.append(node)
            if len(ready) == 2:
                both.set()

    with dispy.JobCluster(sleeper, nodes=nodes_of(a, b), cluster_status=status) as cluster:
        assert both.wait(20)
        node_b = next(n for n in ready if n.ip_addr == "127.0.0.3")
        on_a = [cluster.submit_node("127.0.0.2", 0.05) for _ in range(6)]
        on_b = [cluster.submit_node(node_b, 0.05) for _ in range(6)]
        for job in on_a:
            assert job() == "127.0.0.2" and job.host == "127.0.0.2"
        for job in on_b:
            assert job() == "127.0.0.3" and job.host == "127.0.0.3"
        # dispy_job_depends works as with submit
        job = cluster.submit_node("127.0.0.3", 0, dispy_job_depends=[best_effort])
        assert job() == "127.0.0.3"
        assert cluster.submit_node("127.0.0.9", 1) is None
        assert cluster.submit_node("no-such-host.invalid", 1) is None


def test_node_jobs(start_node):
    a = start_node("127.0.0.2", "-c", "2")
    b = start_node("127.0.0.3", "-c", "1")
    with dispy.JobCluster(sleeper, nodes=nodes_of(a, b)) as cluster:
        deadline = time.monotonic() + 20
        while len(cluster.status().nodes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.node_jobs("127.0.0.2") == []
        on_a = [cluster.submit_node("127.0.0.2", 2) for _ in range(2)]
        on_b = [cluster.submit_node("127.0.0.3", 2)]
        for job in on_a + on_b:
            wait_running(job)
        assert cluster.node_jobs("127.0.0.2") == on_a
        assert cluster.node_jobs("127.0.0.3", from_node=True) == on_b
        node_a = next(n for n in cluster.status().nodes if n.ip_addr == "127.0.0.2")
        assert cluster.node_jobs(node_a) == on_a
        assert cluster.node_jobs("127.0.0.9") == []
        assert cluster.wait(timeout=15)
        assert cluster.node_jobs("127.0.0.2") == []
        assert cluster.node_jobs("127.0.0.3") == []


# -- dispy_provisional_result ----------------------------------------------------------
def provisional(n):
    import time

    for i in range(n):
        assert dispy_provisional_result(("partial", i)) == 0  # noqa: F821
    time.sleep(0.2)
    return ("final", n)


def test_provisional_results(node):
    seen = []
    final = threading.Event()

    def job_status(job):
        seen.append((job.status, job.result))
        if job.status == dispy.DispyJob.Finished:
            final.set()

    with dispy.JobCluster(provisional, nodes=nodes_of(node), job_status=job_status) as cluster:
        job = cluster.submit(3)
        assert job() == ("final", 3)
        assert job.status == dispy.DispyJob.Finished
        assert final.wait(5)
        # more jobs afterwards: provisional results did not count as completions
        others = [cluster.submit(1) for _ in range(4)]
        assert [j() for j in others] == [("final", 1)] * 4
    P = dispy.DispyJob.ProvisionalResult
    assert seen[:4] == [(P, ("partial", 0)), (P, ("partial", 1)), (P, ("partial", 2)),
                        (dispy.DispyJob.Finished, ("final", 3))]


def longrun(n):
    import time

    for i in range(n):
        dispy_provisional_result(i)  # noqa: F821
        time.sleep(0.05)
    return "never"


def test_cancel_from_job_status_on_provisional_result(node):
    done = threading.Event()
    cluster = None

    def job_status(job):
        if job.status == dispy.DispyJob.ProvisionalResult and job.result >= 3:
            cluster.cancel(job)  # a snapshot of the job: cancels the job itself
        elif job.status in (dispy.DispyJob.Cancelled, dispy.DispyJob.Finished):
            done.set()

    with dispy.JobCluster(longrun, nodes=nodes_of(node), job_status=job_status) as cluster:
        job = cluster.submit(100_000)
        assert done.wait(15)
        job()
        assert job.status == dispy.DispyJob.Cancelled
        assert job.result is None  # the node sent no result: KeyboardInterrupt ended it
        assert "KeyboardInterrupt" in (job.exception or "")
