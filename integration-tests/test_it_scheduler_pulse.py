"""dispyscheduler --pulse_interval end to end, with real daemons on 127.0.0.x: a node
that sends nothing for 5 x --pulse_interval (frozen with SIGSTOP) is taken for dead by
the scheduler, and the jobs it held run again on another node for a reentrant
SharedJobCluster. Every node is named with -n: nothing here broadcasts."""

from __future__ import annotations

import logging
import signal

import pytest

pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler

import dispy
from dispy_core.testing import SchedulerProcess, wait_until


def nap(n):
    import time
    time.sleep(3.0)  # long enough that a job is still on the node when it is frozen
    return dispy_node_ip_addr  # noqa: F821


def test_a_silent_node_is_declared_dead_after_five_pulse_intervals(start_node):
    frozen, alive = start_node("127.0.0.51", "-c", "1"), start_node("127.0.0.52", "-c", "1")
    with SchedulerProcess("127.0.0.1", [frozen.addr, alive.addr], "--pulse_interval", "1") as sched:
        cluster = dispy.SharedJobCluster(nap, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.1",
                                         reentrant=True, loglevel=logging.WARNING)
        try:
            assert wait_until(lambda: sched.log.count("joined the pool") == 2, 30), sched.log
            jobs = [cluster.submit(i) for i in range(3)]
            assert wait_until(lambda: any(j.status == dispy.DispyJob.Running and j.ip_addr == frozen.ip
                                          for j in jobs), 30), [(j.status, j.ip_addr) for j in jobs]
            frozen.proc.send_signal(signal.SIGSTOP)  # it sends nothing now, not even a pulse
            try:
                assert cluster.wait(timeout=60), [(j.status, j.ip_addr) for j in jobs]
            finally:
                frozen.proc.send_signal(signal.SIGCONT)
            assert [j.status for j in jobs] == [dispy.DispyJob.Finished] * 3
            assert {j.result for j in jobs} == {alive.ip}  # those on the frozen node ran again
            assert wait_until(lambda: "5 x pulse_interval 1 s" in sched.log, 10), sched.log
        finally:
            cluster.close(timeout=10, terminate=True)
