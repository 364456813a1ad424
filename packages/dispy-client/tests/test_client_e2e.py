"""JobCluster against a real dispynode subprocess on 127.0.0.1 (named explicitly: nothing
broadcasts). Skipped when the node's Python can't import dispy_node (see conftest.py).

One node serves the whole module; each test makes its own cluster and closes it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dispy
from dispy import DispyJob, DispyNode, JobCluster, NodeAllocate
from dispy_core.status import JobStatus
from dispy_core.testing import NodeProcess

T = 30.0


@pytest.fixture
def nodes(real_node: NodeProcess) -> list[tuple[str, int]]:
    return [("127.0.0.1", real_node.port)]


@pytest.fixture
def cluster_of(nodes: list) -> Iterator[Any]:
    made: list[JobCluster] = []

    def make(computation: Any, **kwargs: Any) -> JobCluster:
        kwargs.setdefault("nodes", nodes)
        kwargs.setdefault("loglevel", dispy.logger.WARNING)
        cluster = JobCluster(computation, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close(timeout=T, terminate=True)


def finished(jobs: list[DispyJob]) -> list[Any]:
    for job in jobs:
        assert job.finish.wait(T), job
    return [job.result for job in jobs]


# -- computations -----------------------------------------------------------------------------
def square(x):
    return x * x


def test_results_of_100_jobs(cluster_of: Any) -> None:
    cluster = cluster_of(square)
    jobs = [cluster.submit(i) for i in range(100)]
    assert cluster.wait(T)
    assert finished(jobs) == [i * i for i in range(100)]
    assert {j.status for j in jobs} == {DispyJob.Finished}
    assert {j.host for j in jobs} == {"127.0.0.1"}
    assert all(j.start_time <= j.end_time for j in jobs)


def talk(x):
    import sys

    print("out", x)
    print("err", x, file=sys.stderr)
    return x


def test_stdout_and_stderr(cluster_of: Any) -> None:
    job = cluster_of(talk).submit(5)
    assert job() == 5
    assert job.stdout == "out 5\n" and job.stderr == "err 5\n"


def raises(x):
    return 1 / x


def test_exception(cluster_of: Any) -> None:
    cluster = cluster_of(raises)
    job = cluster.submit(0)
    assert job() is None
    assert "ZeroDivisionError" in job.exception
    assert cluster.submit(4)() == 0.25  # the worker survives


def node_setup(base):
    global BASE
    BASE = base
    return 0


def uses_base(x):
    return BASE + x  # noqa: F821 - set by node_setup on the node


def test_setup_globals_are_visible_to_jobs(cluster_of: Any, real_node: NodeProcess) -> None:
    spec = NodeAllocate("127.0.0.1", port=real_node.port, setup_args=(100,))
    cluster = cluster_of(uses_base, nodes=[spec], setup=node_setup)
    assert finished([cluster.submit(i) for i in range(4)]) == [100, 101, 102, 103]


def setup_no_args():
    global READY
    READY = "yes"
    return 0


def uses_ready():
    return READY  # noqa: F821


def test_setup_partial(cluster_of: Any) -> None:
    cluster = cluster_of(uses_ready, setup=functools.partial(setup_no_args))
    assert cluster.submit()() == "yes"


class Adder:
    def __init__(self, k):
        self.k = k

    def add(self, x):
        return x + self.k


def double(x):
    return 2 * x


def uses_depends(x):
    with open("e2e-depends.txt") as f:
        text = f.read()
    return Adder(1).add(double(x)), text


def test_depends_function_class_and_file(cluster_of: Any, tmp_path: Path) -> None:
    data = tmp_path / "e2e-depends.txt"
    data.write_text("from the client")
    cluster = cluster_of(uses_depends, depends=[Adder, double, str(data)])
    assert cluster.submit(5)() == (11, "from the client")


def read_file(name):
    with open(name) as f:
        return f.read()


def test_dispy_job_depends(cluster_of: Any, tmp_path: Path) -> None:
    cluster = cluster_of(read_file)
    jobs = []
    for i in range(3):
        path = tmp_path / f"job-{i}.txt"
        path.write_text(f"job {i}")
        jobs.append(cluster.submit(path.name, dispy_job_depends=[str(path)]))
    assert finished(jobs) == ["job 0", "job 1", "job 2"], [j.exception for j in jobs]


def test_program_computation(cluster_of: Any, tmp_path: Path) -> None:
    prog = tmp_path / "e2e-prog.sh"
    prog.write_text('#!/bin/sh\necho "args: $@"\necho oops >&2\nexit 3\n')
    prog.chmod(0o755)
    cluster = cluster_of(str(prog))
    job = cluster.submit(1, "two")
    assert job.finish.wait(T)
    assert job.stdout == b"args: 1 two\n" and job.stderr == b"oops\n", job.exception
    assert job.result == 3


def test_lambda(cluster_of: Any) -> None:
    cluster = cluster_of(lambda x: x + 1)
    assert cluster.submit(1)() == 2


def test_closure(cluster_of: Any) -> None:
    factor = 7

    def scaled(x):
        return x * factor

    assert cluster_of(scaled).submit(6)() == 42


def where():
    return dispy_node_name, dispy_node_ip_addr  # noqa: F821 - node globals


def test_node_globals(cluster_of: Any) -> None:
    name, ip = cluster_of(where).submit()()
    assert ip == "127.0.0.1" and name


def big(data):
    return len(data), data[:4]


def test_large_argument(cluster_of: Any) -> None:
    data = os.urandom(5 << 20)
    jobs = [cluster_of(big).submit(data) for _ in range(1)]
    assert finished(jobs) == [(5 << 20, data[:4])]


# -- the cluster ---------------------------------------------------------------------------------
def test_print_status(cluster_of: Any, capsys: pytest.CaptureFixture) -> None:
    cluster = cluster_of(square)
    finished([cluster.submit(i) for i in range(10)])
    cluster.print_status()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split("|")[0].strip() == "Node"
    for column in ("CPUs", "Jobs", "Sec/Job", "Node Time Sec", "Sent", "Rcvd"):
        assert column in out.splitlines()[0]
    row = next(line for line in out.splitlines() if line.startswith(" 127.0.0.1"))
    assert [c.strip() for c in row.split("|")][1:3] == ["2", "10"]
    assert "speedup:" in out


def test_callbacks_order_and_thread(cluster_of: Any) -> None:
    calls: list = []
    lock = threading.Lock()

    def job_status(job):
        with lock:
            calls.append(("job", job.id, job.status, threading.current_thread().name))

    def cluster_status(status, node, job):
        with lock:
            calls.append(("cluster", job.id if job else None, status, threading.current_thread().name))

    cluster = cluster_of(square, job_status=job_status, cluster_status=cluster_status)
    jobs = [cluster.submit(i) for i in range(10)]
    assert cluster.wait(T)
    cluster.close(timeout=T)
    assert {c[3] for c in calls} == {"dispy-callbacks"}
    assert calls[0][:3] in {("cluster", None, DispyNode.Initialized), ("cluster", 1, JobStatus.Created)}
    for job in jobs:
        mine = [c[:3] for c in calls if c[1] == job.id]
        assert mine == [("cluster", job.id, JobStatus.Created), ("cluster", job.id, JobStatus.Running),
                        ("job", job.id, JobStatus.Finished), ("cluster", job.id, JobStatus.Finished)]


def test_wait_returns_after_the_callbacks_about_the_jobs_have_run(cluster_of: Any) -> None:
    # A program that collects results in job_status (bounded_submit.py of dispy 4.x) reads
    # them after wait(): they must all be there, however slow the callback is.
    seen: list = []

    def job_status(job):
        if job.status == DispyJob.Finished:
            threading.Event().wait(0.2)  # a slow callback: wait() must not return before it
            seen.append(job.result)

    def waits_in_a_callback(status, node, job):
        if status == DispyJob.Finished and job.id == 3:
            seen.append(("waited", cluster.wait(T)))  # from the callback thread: no deadlock

    cluster = cluster_of(square, job_status=job_status, cluster_status=waits_in_a_callback)
    for i in range(4):
        cluster.submit(i)
    assert cluster.wait(T)
    assert sorted(r for r in seen if isinstance(r, int)) == [0, 1, 4, 9] and ("waited", True) in seen
    cluster.close(timeout=T)


def test_context_manager_close(nodes: list) -> None:
    with JobCluster(square, nodes=nodes, loglevel=dispy.logger.WARNING) as cluster:
        jobs = [cluster.submit(i) for i in range(5)]
    assert [j.result for j in jobs] == [0, 1, 4, 9, 16]  # close waited for them
    assert not cluster._runtime.thread.thread.is_alive()
    # the node is free for the next cluster
    with JobCluster(square, nodes=nodes, loglevel=dispy.logger.WARNING) as again:
        assert again.submit(3)() == 9


def test_missing_node_wait_times_out_with_reason(nodes: list, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "dispy"):
        cluster = JobCluster(square, nodes=[("127.0.0.9", 1)], loglevel=dispy.logger.WARNING)
        try:
            cluster.submit(1)
            assert cluster.wait(timeout=0.5) is False
        finally:
            cluster.close(timeout=0, terminate=True)
    assert "127.0.0.9:1" in caplog.text and "refused" in caplog.text
