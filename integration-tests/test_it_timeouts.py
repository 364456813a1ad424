"""Bounding jobs and waits against real dispynodes: JobCluster(job_timeout=...),
submit(..., dispy_job_timeout=...), job(timeout=...), and the warnings that say why jobs
wait: no node serves the computation, or the node that has them went silent (no wait is
silent)."""

from __future__ import annotations

import logging
import signal
import stat
import time

import pytest

import dispy
import dispy_core.engine
from dispy_core.testing import unused_port, wait_until


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def sleeper(seconds):
    import time

    time.sleep(seconds)
    return seconds


def timeout_line(job, seconds):
    return f"TimeoutError: job {job._uid} ran longer than its timeout of {seconds:g} s and was terminated\n"


def test_cluster_job_timeout_and_per_submit_override(node):
    statuses = {}

    def job_status(job):
        statuses.setdefault(job.id, []).append(job.status)

    with dispy.JobCluster(sleeper, nodes=nodes_of(node), job_timeout=1.5, job_status=job_status,
                          reentrant=True) as cluster:
        # 2 CPUs, six 0.8 s jobs: the last ones start ~1.6 s after submission, so the
        # timeout must count from each job's start on the node.
        quick = [cluster.submit(0.8) for _ in range(6)]
        slow = cluster.submit(30)
        longer = cluster.submit(2.5, dispy_job_timeout=5)  # its own bound, above the cluster's
        unbounded = cluster.submit(2, dispy_job_timeout=None)  # None: no bound for this one
        short = cluster.submit(30, dispy_job_timeout=0.5)
        assert cluster.wait(timeout=60)
    assert [j.status for j in quick] == [dispy.DispyJob.Finished] * 6
    assert (longer.status, longer.result) == (dispy.DispyJob.Finished, 2.5)
    assert (unbounded.status, unbounded.result) == (dispy.DispyJob.Finished, 2)
    for job, seconds in ((slow, 1.5), (short, 0.5)):
        assert job.status == dispy.DispyJob.Terminated and job.result is None
        assert job.exception.endswith(timeout_line(job, seconds)), job.exception
        assert "time.sleep(seconds)" in job.exception  # where it was stopped
        assert seconds - 0.1 < job.end_time - job.start_time < 15
    # Ended for good: a reentrant cluster does not run a timed-out job again.
    wait_until(lambda: len(statuses) == 10)
    assert statuses[slow.id] == [dispy.DispyJob.Terminated]
    assert all(len(s) == 1 for s in statuses.values()), statuses


def test_program_job_timeout(node, tmp_path):
    script = tmp_path / "forever.sh"
    script.write_text("#!/bin/sh\necho started\nexec sleep 60\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with dispy.JobCluster(str(script), nodes=nodes_of(node), job_timeout=1) as cluster:
        job = cluster.submit()
        start = time.monotonic()
        job()
        assert time.monotonic() - start < 20  # not the program's 60 s
    assert job.status == dispy.DispyJob.Terminated
    assert job.exception.endswith(timeout_line(job, 1)), job.exception


def test_bad_timeouts_are_refused_clearly(node, caplog):
    for bad in (0, -1, "10", True, float("nan")):
        with pytest.raises(dispy.ConfigError, match="job_timeout must be a positive number"):
            dispy.JobCluster(sleeper, nodes=nodes_of(node), job_timeout=bad)
    caplog.set_level(logging.ERROR)
    with dispy.JobCluster(sleeper, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0, dispy_job_timeout="soon") is None
        assert "dispy_job_timeout must be a positive number of seconds" in caplog.text
        assert cluster.submit(0)() == 0  # the cluster goes on


def test_waiting_on_a_job_can_be_bounded(node):
    with dispy.JobCluster(sleeper, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(3)
        with pytest.raises(TimeoutError, match=rf"job {job.id} is not done after 0.5 s \(status (Running|Created)"):
            job(timeout=0.5)
        assert job(timeout=30) == 3  # the job went on


def test_jobs_waiting_with_no_node_are_explained(monkeypatch, caplog):
    monkeypatch.setattr(dispy_core.engine, "STALL_WARNING", 1.5)
    port = unused_port()
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(sleeper, nodes=[dispy.NodeAllocate("127.0.0.1", port=port)])
    try:
        cluster.submit(0)
        # No timeout given: the log says why, without waiting for wait() to return.
        wait_until(lambda: "no node serves the computation" in caplog.text, timeout=15)
        assert f"127.0.0.1:{port}" in caplog.text and "1 jobs of sleeper have waited" in caplog.text
    finally:
        cluster.close(timeout=0, terminate=True)


def test_a_silent_node_holding_jobs_is_reported_without_pulse_interval(node, monkeypatch, caplog):
    monkeypatch.setattr(dispy_core.engine, "QUIET_PULSE", 0.4)  # reported after 2 s of silence
    caplog.set_level(logging.WARNING)
    with dispy.JobCluster(sleeper, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0)() == 0
        job = cluster.submit(4)
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 10)
        time.sleep(1.2)  # its pulses come, nothing to report
        assert "has sent nothing" not in caplog.text
        node.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_until(lambda: "has sent nothing, not even a pulse" in caplog.text, 15), caplog.text
        finally:
            node.proc.send_signal(signal.SIGCONT)
        # Reported, not given up: without pulse_interval the job just goes on.
        assert job(timeout=30) == 4 and job.status == dispy.DispyJob.Finished
    assert f"node {node.ip}" in caplog.text and "1 jobs of sleeper" in caplog.text
