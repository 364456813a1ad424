"""JobCluster against the in-process fake node (see conftest.py): the protocol, job states,
pipelining, callbacks, failures and their warnings, closing. Every wait is bounded."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dispy
from dispy import DispyJob, DispyNode, JobCluster, NodeAllocate
from dispy_core import serialization
from dispy_core.status import JobStatus

T = 10.0  # upper bound for anything that should be quick


def square(x):
    return x * x


def noisy(x):
    print("got", x)
    return x


def fails(x):
    raise ValueError(f"bad {x}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(clusters: list, computation: Any, node: Any, **kwargs: Any) -> JobCluster:
    kwargs.setdefault("loglevel", dispy.logger.DEBUG)
    cluster = JobCluster(computation, nodes=[node.addr] if hasattr(node, "addr") else node, **kwargs)
    clusters.append(cluster)
    return cluster


# -- jobs ----------------------------------------------------------------------------------
def test_results_of_many_jobs(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=2)
    cluster = make(clusters, square, node)
    jobs = [cluster.submit(i) for i in range(200)]
    assert cluster.wait(T)
    assert [j.result for j in jobs] == [i * i for i in range(200)]
    assert [j.id for j in jobs] == list(range(1, 201))
    for j in jobs:
        assert j.status == DispyJob.Finished and j.host == "127.0.0.1" == j.ip_addr
        assert j.submit_time <= j.start_time <= j.end_time
        assert j.finish.is_set() and j.exception is None
    (compute,) = node.computes
    assert compute.kind == "function" and compute.name == "square" and compute.cpus == 2
    assert compute.python_version and compute.process_per_job is False and compute.cleanup_files


def test_pipelining_starts_at_twice_cpus_fifo(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=3, hold=True)
    cluster = make(clusters, square, node)
    jobs = [cluster.submit(i) for i in range(20)]
    assert dispy_wait(lambda: len(node.jobs) == 6)
    time.sleep(0.1)
    assert len(node.jobs) == 6 and node.max_in_flight == 6
    assert sum(j.status == DispyJob.Running for j in jobs) == 6
    assert sum(j.status == DispyJob.Created for j in jobs) == 14
    node.release()
    assert cluster.wait(T)
    assert [s.job_id for s in node.jobs] == [j._uid for j in jobs]  # FIFO


def pause(x):
    time.sleep(0.003)
    return x


def test_jobs_longer_than_a_round_trip_stay_at_two_per_cpu(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=2)
    cluster = make(clusters, pause, node)
    jobs = [cluster.submit(i) for i in range(60)]
    assert cluster.wait(T)
    assert [j.result for j in jobs] == list(range(60))
    assert node.max_in_flight <= 4


def test_tiny_jobs_deepen_the_pipeline(fake_node: Any, clusters: list, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispy_core import engine
    from dispy_core.engine import MAX_DEPTH

    # The depth follows the jobs' times as the node measured them. A fake node's thread
    # preempted on a loaded machine makes a 10 us job take milliseconds, which is longer
    # than the default budget (2 ms): with a budget of 1 s any such job still counts as
    # tiny, so what is tested is the rule, not the machine's load.
    monkeypatch.setattr(engine, "PIPELINE_BUDGET", 1.0)
    node = fake_node(cpus=2)
    cluster = make(clusters, square, node)
    for _ in range(5):
        assert all(j() is not None for j in [cluster.submit(i) for i in range(200)])
    assert 4 < node.max_in_flight <= MAX_DEPTH * 2
    (session,) = cluster._runtime._ready.values()
    assert session.depth > 2


def test_job_call_waits_and_returns_result(fake_node: Any, clusters: list) -> None:
    cluster = make(clusters, square, fake_node())
    job = cluster.submit(7)
    assert job() == 49


def test_stdout_and_exception(fake_node: Any, clusters: list) -> None:
    node = fake_node()
    cluster = make(clusters, noisy, node)
    assert cluster.submit("hi")() == "hi"
    clusters.append(c2 := JobCluster(fails, nodes=[node.addr], loglevel=logging.DEBUG))
    job = c2.submit(3)
    assert job() is None
    assert job.status == DispyJob.Finished
    assert "ValueError: bad 3" in job.exception
    job = cluster.submit("x")
    job()
    assert job.stdout == "got x\n"


def test_kwargs_and_dispy_job_depends(fake_node: Any, clusters: list, tmp_path: Path) -> None:
    def kw(a, b=0):
        return a + b

    data = tmp_path / "job-input.txt"
    data.write_text("x")
    node = fake_node()
    cluster = make(clusters, kw, node)
    job = cluster.submit(1, b=2, dispy_job_depends=[str(data), square])
    assert job() == 3 and job.kwargs == {"b": 2}
    (spec,) = node.jobs
    assert [f.name for f in spec.files] == ["job-input.txt"]
    assert serialization.loads(spec.depends)[0](3) == 9


def test_unserializable_argument_returns_none(fake_node: Any, clusters: list,
                                              caplog: pytest.LogCaptureFixture) -> None:
    cluster = make(clusters, square, fake_node())
    with caplog.at_level(logging.ERROR, "dispy"):
        assert cluster.submit(threading.Lock()) is None
    assert "creating job" in caplog.text and "square" in caplog.text
    assert cluster.submit(2)() == 4


def test_program_computation_and_bytes_output(fake_node: Any, clusters: list, tmp_path: Path) -> None:
    prog = tmp_path / "tool.sh"
    prog.write_text("#!/bin/sh\necho $@\n")
    prog.chmod(0o755)
    node = fake_node(python_version="3.99.0")  # programs don't care about Python versions
    cluster = make(clusters, str(prog), node)
    job = cluster.submit(1, "two")
    assert job() == 0
    assert job.stdout == b"ran 1 two" and isinstance(job.stderr, bytes)
    (compute,) = node.computes
    assert compute.kind == "program" and [f.name for f in compute.files] == ["tool.sh"]


def test_large_arguments_travel_one_job_per_frame(fake_node: Any, clusters: list) -> None:
    def size(data):
        return len(data)

    node = fake_node(cpus=2)
    cluster = make(clusters, size, node)
    data = b"x" * (3 << 20)
    jobs = [cluster.submit(data) for _ in range(6)]
    assert cluster.wait(T)
    assert [j.result for j in jobs] == [3 << 20] * 6
    assert max(node.batches) == 1
    (row,) = cluster.status().nodes
    assert row.tx >= 6 * (3 << 20) and row.jobs_done == 6


# -- nodes ---------------------------------------------------------------------------------
def test_node_allocate_cpus_depends_setup_args(fake_node: Any, clusters: list, tmp_path: Path) -> None:
    data = tmp_path / "node-data.bin"
    data.write_bytes(b"\0" * 10)
    seen: list = []

    class Alloc(NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):  # noqa: ANN001
            seen.append((cluster, ip_addr, name, cpus, avail_info, platform))
            self.setup_args = (ip_addr, 5)
            self.depends = [str(data)]
            return 1

    node = fake_node(cpus=4)
    cluster = make(clusters, square, [Alloc("127.0.0.1", port=node.port)])
    assert cluster.submit(3)() == 9
    ((c, ip, name, cpus, avail, plat),) = seen
    assert c is cluster and ip == "127.0.0.1" and name == "fakenode" and cpus == 4
    assert isinstance(avail, dispy.DispyNodeAvailInfo) and avail.cpu == 90.0 and plat.startswith("Linux")
    (compute,) = node.computes
    assert compute.cpus == 1 and [f.name for f in compute.files] == ["node-data.bin"]
    assert serialization.loads(compute.setup_args) == ("127.0.0.1", 5)
    (row,) = cluster.status().nodes
    assert row.cpus == 1 and row.avail_cpus == 4


def test_allocate_zero_skips_node(fake_node: Any, clusters: list, caplog: pytest.LogCaptureFixture) -> None:
    node = fake_node()
    with caplog.at_level(logging.INFO, "dispy"):
        cluster = make(clusters, square, [NodeAllocate("127.0.0.1", port=node.port, cpus=-8)])
        assert cluster.submit(1) is not None
        assert cluster.wait(0.5) is False
    assert node.computes == []
    assert "not used" in caplog.text


def test_same_node_named_twice_is_used_once(fake_node: Any, clusters: list) -> None:
    node = fake_node()
    cluster = make(clusters, square, [("127.0.0.1", node.port), ("localhost", node.port)])
    assert [cluster.submit(i)() for i in range(5)] == [0, 1, 4, 9, 16]
    assert dispy_wait(lambda: node.connections == 2)
    assert len(node.computes) == 1 and len(cluster.status().nodes) == 1


def test_two_nodes_share_the_work(fake_node: Any, clusters: list) -> None:
    a, b = fake_node(cpus=1, ip="127.0.0.1"), fake_node(cpus=1, ip="127.0.0.2")
    cluster = make(clusters, square, [a.addr, b.addr])
    assert dispy_wait(lambda: len(cluster.status().nodes) == 2)
    jobs = [cluster.submit(i) for i in range(40)]
    assert cluster.wait(T)
    hosts = {j.host for j in jobs}
    assert hosts == {"127.0.0.1", "127.0.0.2"}


# -- failures are reported, never silent ----------------------------------------------------
def test_unreachable_node_warns_once_and_wait_summarises(clusters: list, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, [("127.0.0.9", port)])
        job = cluster.submit(1)
        time.sleep(2.0)  # several retries
        assert cluster.wait(timeout=0.2) is False
    assert job.status == DispyJob.Created
    tries = [r for r in caplog.records if "can't use node" in r.getMessage()]
    assert len(tries) == 1, [r.getMessage() for r in tries]
    assert f"127.0.0.9:{port}" in tries[0].getMessage() and "connection refused" in tries[0].getMessage()
    summary = caplog.records[-1].getMessage()
    assert "timed out" in summary and f"127.0.0.9:{port}" in summary and "refused" in summary
    assert "1 jobs pending" in summary


def test_node_that_starts_late_is_picked_up(fake_node: Any, clusters: list) -> None:
    port = free_port()
    cluster = make(clusters, square, [("127.0.0.1", port)], loglevel=dispy.logger.CRITICAL)
    job = cluster.submit(4)
    time.sleep(0.3)
    assert job.status == DispyJob.Created
    fake_node(port=port)
    assert job.finish.wait(T) and job.result == 16


def test_wait_summary_names_a_node_still_setting_up(fake_node: Any, clusters: list,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    node = fake_node(setup_time=1.0)
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, node)
        job = cluster.submit(2)
        assert cluster.wait(0.3) is False
    assert f"127.0.0.1:{node.port}: the computation is being set up there" in caplog.records[-1].getMessage()
    assert job() == 4


def test_compute_failed_is_a_warning_with_the_reason(fake_node: Any, clusters: list,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    node = fake_node(fail_compute="setup raised ZeroDivisionError")
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, node)
        cluster.submit(1)
        assert cluster.wait(1.0) is False
    text = caplog.text
    assert f"127.0.0.1:{node.port}" in text and "setup raised ZeroDivisionError" in text
    assert len(node.computes) == 1  # final: not retried


def test_other_python_version_is_refused_with_both_versions(fake_node: Any, clusters: list,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import platform

    node = fake_node(python_version="3.99.1")
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, node)
        cluster.submit(1)
        assert cluster.wait(1.0) is False
    assert node.computes == []  # never sent
    msg = next(r.getMessage() for r in caplog.records if "Python 3.99.1" in r.getMessage())
    assert f"this client runs Python {platform.python_version()}" in msg
    assert "program computation" in msg and "127.0.0.1" in msg


def test_wrong_secret_is_named(fake_node: Any, clusters: list, caplog: pytest.LogCaptureFixture) -> None:
    node = fake_node(secret="right")
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, node, secret="wrong")
        cluster.submit(1)
        assert cluster.wait(1.0) is False
    assert "secrets differ" in caplog.text


def test_error_report_is_retried(fake_node: Any, clusters: list, caplog: pytest.LogCaptureFixture) -> None:
    node = fake_node(error_reports=1)
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = make(clusters, square, node)
        assert cluster.submit(3)() == 9
    assert "node busy" in caplog.text


def test_lost_node_abandons_its_jobs(fake_node: Any, clusters: list) -> None:
    events: list = []
    node = fake_node(cpus=1, hold=True)
    cluster = make(clusters, square, node, loglevel=dispy.logger.CRITICAL,
                   cluster_status=lambda s, n, j: events.append((s, j)))
    jobs = [cluster.submit(i) for i in range(3)]
    assert dispy_wait(lambda: len(node.jobs) == 2)
    node.drop()
    for job in jobs[:2]:
        assert job.finish.wait(T)
        assert job.status == DispyJob.Abandoned and "closed the connection" in job.exception
    # the third job waits for a node (the cluster reconnects to this one after a pause)
    assert jobs[2].status in (DispyJob.Created, DispyJob.Running)
    cluster.close(timeout=0, terminate=True)
    assert jobs[2].status in (DispyJob.Cancelled, DispyJob.Terminated)
    assert (DispyNode.Closed, None) in events


def test_dropped_connection_is_resumed_and_each_result_delivered_once(fake_node: Any, clusters: list) -> None:
    from dispy_core.messages import JobResult

    finished: list = []
    node = fake_node(cpus=1, hold=True, resume=True)
    cluster = make(clusters, square, node, loglevel=dispy.logger.CRITICAL,
                   job_status=lambda job: finished.append(job.id))
    first = cluster.submit(3)
    assert dispy_wait(lambda: len(node.jobs) == 1)
    node.release()
    assert first() == 9
    assert dispy_wait(lambda: 1 in node.acked), "the result was not acknowledged"
    node.call(node._state.update, {})  # (the node keeps its computation)
    node.call(lambda: setattr(node, "_hold", True))
    jobs = [cluster.submit(i) for i in range(4, 6)]
    assert dispy_wait(lambda: len(node.jobs) == 3)
    # The connection drops; the node still has job 1's result "unacknowledged" (as if
    # the ack was lost) and resends it: the client must not deliver it twice.
    node.call(node.unacked.__setitem__, 1, JobResult(1, JobStatus.Finished, serialization.dumps(-1)))
    node.drop()
    assert dispy_wait(lambda: node.resumes == 1)
    node.release()
    assert [job() for job in jobs] == [16, 25]
    assert all(job.status == DispyJob.Finished for job in jobs)
    assert first.result == 9  # not the resent duplicate
    assert dispy_wait(lambda: not node.unacked)
    assert len(node.computes) == 1  # resumed, not set up again
    cluster.close()  # (callbacks still queued run before it returns)
    assert sorted(finished) == [1, 2, 3], finished  # each job reported once


def test_node_without_the_computation_after_reconnect_abandons_and_sets_up_again(
        fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=1, hold=True)  # forgets computations when the connection drops
    cluster = make(clusters, square, node, loglevel=dispy.logger.CRITICAL)
    job = cluster.submit(2)
    assert dispy_wait(lambda: len(node.jobs) == 1)
    node.drop()
    assert job.finish.wait(T)
    assert job.status == DispyJob.Abandoned and "no longer runs the computation" in job.exception
    assert dispy_wait(lambda: len(node.computes) == 2)  # set up afresh
    node.release()
    assert cluster.submit(5)() == 25


# -- callbacks -------------------------------------------------------------------------------
def test_callbacks_in_order_on_one_thread(fake_node: Any, clusters: list) -> None:
    calls: list = []
    threads: set = set()

    def job_status(job):
        threads.add(threading.current_thread())
        calls.append(("job", job.id, job.status))

    def cluster_status(status, node, job):
        threads.add(threading.current_thread())
        calls.append(("cluster", status, None if job is None else job.id, node))

    node = fake_node()
    cluster = make(clusters, square, node, job_status=job_status, cluster_status=cluster_status)
    jobs = [cluster.submit(i) for i in range(5)]
    assert cluster.wait(T)
    cluster.close()
    assert len(threads) == 1
    (thread,) = threads
    assert thread is not threading.main_thread() and thread is not cluster._runtime.thread.thread
    init = [c for c in calls if c[0] == "cluster" and c[1] == DispyNode.Initialized]
    assert len(init) == 1 and isinstance(init[0][3], DispyNode)
    for job in jobs:
        mine = [c[:3] for c in calls if c[0] == "job" and c[1] == job.id or
                c[0] == "cluster" and c[2] == job.id]
        assert mine == [("cluster", JobStatus.Created, job.id), ("cluster", JobStatus.Running, job.id),
                        ("job", job.id, JobStatus.Finished), ("cluster", JobStatus.Finished, job.id)]


def test_callback_exceptions_are_logged_not_fatal(fake_node: Any, clusters: list,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def job_status(job):
        raise RuntimeError("callback bug")

    cluster = make(clusters, square, fake_node(), job_status=job_status)
    with caplog.at_level(logging.ERROR, "dispy"):
        jobs = [cluster.submit(i) for i in range(3)]
        assert cluster.wait(T)
        cluster.close()
    assert sum(r.name == "dispy._callbacks" and "raised" in r.getMessage() for r in caplog.records) == 3
    assert [j.result for j in jobs] == [0, 1, 4]


def test_no_callback_thread_without_callbacks(fake_node: Any, clusters: list) -> None:
    cluster = make(clusters, square, fake_node())
    assert cluster._callbacks is None


# -- closing --------------------------------------------------------------------------------
def test_context_manager_closes_on_the_node(fake_node: Any) -> None:
    node = fake_node()
    with JobCluster(square, nodes=[node.addr], loglevel=dispy.logger.DEBUG) as cluster:
        assert cluster.submit(2)() == 4
    assert len(node.closes) == 1 and node.closes[0].terminate is False
    assert not cluster._runtime.thread.thread.is_alive()
    assert cluster.submit(1) is None  # closed
    assert cluster.close() is True


def test_close_timeout_keeps_cluster_open(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=1, hold=True)
    cluster = make(clusters, square, node)
    job = cluster.submit(3)
    assert cluster.close(timeout=0.2) is False
    assert node.closes == []
    node.release()
    assert cluster.close(timeout=T) is True
    assert job.result == 9 and len(node.closes) == 1


def test_close_terminate(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=1, hold=True)
    cluster = make(clusters, square, node)
    jobs = [cluster.submit(i) for i in range(5)]
    assert dispy_wait(lambda: len(node.jobs) == 2)
    assert cluster.close(timeout=0.1, terminate=True) is True
    statuses = [j.status for j in jobs]
    assert statuses[:2] == [DispyJob.Terminated] * 2
    assert statuses[2:] == [DispyJob.Cancelled] * 3
    assert all(j.finish.is_set() for j in jobs)
    assert node.closes[0].terminate is True


def test_exception_in_with_block_terminates(fake_node: Any) -> None:
    node = fake_node(cpus=1, hold=True)
    with pytest.raises(KeyError):
        with JobCluster(square, nodes=[node.addr], loglevel=dispy.logger.DEBUG) as cluster:
            job = cluster.submit(1)
            raise KeyError("boom")
    assert job.status in (DispyJob.Cancelled, DispyJob.Terminated)


# -- status -------------------------------------------------------------------------------------
def test_status_and_print_status(fake_node: Any, clusters: list, capsys: pytest.CaptureFixture) -> None:
    node = fake_node(cpus=2)
    cluster = make(clusters, square, node)
    for job in [cluster.submit(i) for i in range(10)]:
        job()
    st = cluster.status()
    assert st.jobs_pending == 0
    (row,) = st.nodes
    assert (row.ip_addr, row.name, row.cpus, row.jobs_done) == ("127.0.0.1", "fakenode", 2, 10)
    assert row.tx > 0 and row.rx > 0 and row.busy == 0
    cluster.print_status()
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for column in ("Node", "CPUs", "Jobs", "Sec/Job", "Node Time Sec", "Sent", "Rcvd"):
        assert column in header
    assert "127.0.0.1 (fakenode)" in out and " 10 " in out
    assert "Total job time:" in out and "wall time:" in out and "speedup:" in out
    assert cluster.name == "square"


def dispy_wait(predicate: Any, timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- job control ---------------------------------------------------------------------------
def test_cancel_queued_job_without_any_node(clusters: list) -> None:
    seen: list[Any] = []
    statuses: list[Any] = []
    cluster = make(clusters, square, [("127.0.0.9", free_port())], job_status=seen.append,
                   cluster_status=lambda s, n, j: statuses.append((s, j)))
    jobs = [cluster.submit(i) for i in range(3)]
    assert cluster.cancel(jobs[1]) == 0
    assert jobs[1].finish.wait(T) and jobs[1]() is None
    assert jobs[1].status == DispyJob.Cancelled == 8
    assert cluster.cancel(jobs[1]) == -1
    assert cluster.cancel(DispyJob(1, (), {}, 0.0)) == -1  # not this cluster's
    for job in (jobs[0], jobs[2]):
        assert cluster.cancel(job) == 0
    assert cluster.wait(T)  # nothing pending any more
    deadline = time.monotonic() + T
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(j.id for j in seen) == [1, 2, 3]
    assert (JobStatus.Cancelled, jobs[1]) in statuses


def test_submit_node_and_node_jobs_for_unknown_node(clusters: list, caplog: pytest.LogCaptureFixture) -> None:
    cluster = make(clusters, square, [("127.0.0.9", free_port())])
    with caplog.at_level(logging.ERROR, "dispy"):
        assert cluster.submit_node("127.0.0.9", 1) is None
        assert cluster.submit_node(DispyNode("127.0.0.8"), 1) is None
    assert "not in the cluster" in caplog.records[-1].getMessage()
    assert cluster.node_jobs("127.0.0.9") == []


def test_job_snapshot_shares_finish_and_points_back() -> None:
    job = DispyJob(7, (1,), {}, 0.0)
    job.status, job.result = JobStatus.ProvisionalResult, "partial"
    snap = job._snapshot()
    job.result = "final"
    assert snap.result == "partial" and snap.status == JobStatus.ProvisionalResult and snap.id == 7
    assert snap._origin is job and snap.finish is job.finish


def test_reentrant_jobs_of_a_lost_node_run_elsewhere(fake_node: Any, clusters: list) -> None:
    a = fake_node(cpus=1, hold=True)
    b = fake_node(cpus=1, hold=True, ip="127.0.0.2")
    cluster = make(clusters, square, [a.addr, b.addr], reentrant=True, loglevel=dispy.logger.CRITICAL)
    jobs = [cluster.submit(i) for i in range(4)]
    assert dispy_wait(lambda: len(a.jobs) >= 1 and len(b.jobs) >= 1)
    on_a = {spec.job_id for spec in a.jobs}
    a.stop()  # gone for good: its port refuses connections
    b.release()
    assert [job() for job in jobs] == [0, 1, 4, 9]
    assert all(job.status == DispyJob.Finished and job.host == "127.0.0.2" for job in jobs)
    assert on_a <= {spec.job_id for spec in b.jobs}  # they ran again on b


def test_jobs_given_back_by_a_leaving_node_run_elsewhere(fake_node: Any, clusters: list) -> None:
    a = fake_node(cpus=1, hold=True)
    b = fake_node(cpus=1, hold=True, ip="127.0.0.2")
    cluster = make(clusters, square, [a.addr, b.addr], loglevel=dispy.logger.CRITICAL)  # not reentrant
    jobs = [cluster.submit(i) for i in range(6)]
    assert dispy_wait(lambda: len(a.jobs) >= 1 and len(b.jobs) >= 1)
    on_a = {spec.job_id for spec in a.jobs}
    a.leave()  # gives back what it holds; it gets nothing more
    b.release()
    assert [job() for job in jobs] == [0, 1, 4, 9, 16, 25]
    assert all(job.status == DispyJob.Finished and job.host == "127.0.0.2" for job in jobs)
    assert on_a <= {spec.job_id for spec in b.jobs}
    more = cluster.submit(7)
    assert more() == 49 and more.host == "127.0.0.2"
    assert {spec.job_id for spec in a.jobs} == on_a


def test_a_silent_node_is_presumed_dead_after_five_pulse_intervals(fake_node: Any, clusters: list) -> None:
    node = fake_node(cpus=1, hold=True)  # sends no pulses
    cluster = make(clusters, square, node, pulse_interval=1, loglevel=dispy.logger.CRITICAL)
    job = cluster.submit(2)
    assert dispy_wait(lambda: len(node.jobs) == 1)
    start = time.monotonic()
    assert job.finish.wait(T)
    assert job.status == DispyJob.Abandoned and "presumed dead" in job.exception
    assert time.monotonic() - start >= 4.0  # not before 5 x pulse_interval (from dispatch)


def test_nodes_are_found_by_host_names_with_ipv6_addresses(fake_node: Any, clusters: list,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "six.example":  # a host name whose only address is IPv6
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))]
        return real(host, *args, **kwargs)

    node = fake_node(ip="::1", hold=True)
    cluster = make(clusters, square, node)
    job = cluster.submit(3)
    assert dispy_wait(lambda: len(node.jobs) == 1)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert cluster.node_jobs("six.example") == [job]
    node.release()
    assert job() == 9
