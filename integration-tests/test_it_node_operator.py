"""Operating a real dispynode with a real JobCluster: service windows around the current
time, SIGINT (finish the jobs), SIGTERM (terminate them), a second signal (at once), and
--unsafe_setup's warning."""

from __future__ import annotations

import datetime
import logging
import signal
import time

import psutil

import dispy
from dispy_core.testing import wait_until


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def hhmm(minutes_from_now: int) -> str:
    t = datetime.datetime.now() + datetime.timedelta(minutes=minutes_from_now)
    return t.strftime("%H:%M")


def sleep_for(seconds):
    import time

    time.sleep(seconds)
    return seconds


# -- service windows ---------------------------------------------------------------------
def test_outside_the_service_window_computations_are_refused(start_node, caplog):
    node = start_node("127.0.0.31", "--service_start", hhmm(10), "--service_end", hhmm(20))
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(sleep_for, nodes=nodes_of(node))
    try:
        job = cluster.submit(0)
        assert cluster.wait(timeout=2) is False
        assert job.status == dispy.DispyJob.Created
        assert "outside its service window" in caplog.text, caplog.text
    finally:
        cluster.close(timeout=1, terminate=True)
    assert node.alive()


def test_inside_the_service_window_jobs_run(start_node):
    node = start_node("127.0.0.32", "--service_start", hhmm(-2), "--service_stop", hhmm(30),
                      "--service_end", hhmm(40))
    with dispy.JobCluster(sleep_for, nodes=nodes_of(node)) as cluster:
        assert [cluster.submit(0)() for _ in range(3)] == [0, 0, 0]
    assert wait_until(lambda: "service window: from" in node.log, 10), node.log


# -- signals -------------------------------------------------------------------------------
def test_sigint_lets_running_and_queued_jobs_finish(start_node):
    node = start_node("127.0.0.33", "-c", "2")
    with dispy.JobCluster(sleep_for, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0)() == 0  # set up
        jobs = [cluster.submit(0.6) for _ in range(4)]  # two run, two wait in the node
        assert wait_until(lambda: sum(j.status == dispy.DispyJob.Running for j in jobs) >= 2, 10)
        time.sleep(0.2)  # the node holds them all
        node.proc.send_signal(signal.SIGINT)
        assert cluster.wait(timeout=20)
        assert [j.status for j in jobs] == [dispy.DispyJob.Finished] * 4, [j.exception for j in jobs]
        assert [j.result for j in jobs] == [0.6] * 4
        assert node.proc.wait(15) == 0
    assert wait_until(lambda: "finishing its jobs, then stopping" in node.log, 10), node.log


def test_jobs_move_off_a_node_that_is_leaving(start_node, caplog):
    leaving = start_node("127.0.0.37", "-c", "1")
    staying = start_node("127.0.0.38", "-c", "1")
    caplog.set_level(logging.INFO, logger="dispy")
    with dispy.JobCluster(sleep_for, nodes=nodes_of(leaving, staying)) as cluster:
        jobs = [cluster.submit(0.05) for _ in range(80)]
        assert wait_until(lambda: sum(j.status == dispy.DispyJob.Finished for j in jobs) >= 10, 20)
        leaving.proc.send_signal(signal.SIGINT)
        assert leaving.proc.wait(20) == 0
        assert cluster.wait(timeout=30)
    # None was lost or terminated by the node going away; the rest ran on the other node.
    assert [j.status for j in jobs] == [dispy.DispyJob.Finished] * 80, [j.exception for j in jobs]
    hosts = [j.host for j in jobs]
    assert hosts.count(leaving.ip) >= 1 and hosts[-1] == staying.ip
    assert "node 127.0.0.37" in caplog.text and "is leaving (node" in caplog.text


def test_sigterm_terminates_running_jobs(start_node):
    node = start_node("127.0.0.34", "-c", "1")
    with dispy.JobCluster(sleep_for, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0)() == 0
        job = cluster.submit(60)
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 10)
        family = psutil.Process(node.proc.pid).children(recursive=True)
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(30) == 0  # not the job's 60 s
        assert cluster.wait(timeout=10)
        assert job.status == dispy.DispyJob.Terminated
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not alive, alive


def slow_cleanup():
    import time

    time.sleep(60)


def test_second_signal_ends_at_once(start_node):
    node = start_node("127.0.0.35", "-c", "1")
    cluster = dispy.JobCluster(sleep_for, nodes=nodes_of(node), cleanup=slow_cleanup)
    try:
        assert cluster.submit(0)() == 0
        job = cluster.submit(60)
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 10)
        family = psutil.Process(node.proc.pid).children(recursive=True)
        node.proc.send_signal(signal.SIGINT)  # would wait a minute for the job
        time.sleep(0.3)
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(20) == 1  # at once, not after the job's 60 s
        _, alive = psutil.wait_procs(family, timeout=5)
        assert not alive, alive
        assert wait_until(lambda: "stopping at once" in node.log, 5)
    finally:
        cluster.close(timeout=1, terminate=True)


# -- --unsafe_setup ----------------------------------------------------------------------------
def test_unsafe_setup_is_accepted_with_a_warning(start_node):
    node = start_node("127.0.0.36", "--unsafe_setup")
    assert wait_until(lambda: "WARNING --unsafe_setup changes nothing" in node.log, 5), node.log
    with dispy.JobCluster(sleep_for, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(0)() == 0
