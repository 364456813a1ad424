"""Results that outlive their client: recover_jobs after the client is killed, after the
node restarts, with timeout / terminate_pending; a dropped connection resumed with every
result delivered exactly once; pulses carrying the node's availability.

Client programs run as real subprocesses and are killed with SIGKILL; nodes are real
dispynode processes on 127.0.0.x.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil

import dispy
from dispy import DispyJob, DispyNode
from dispy_core.testing import NodeProcess, node_python, wait_until

CLIENT = textwrap.dedent("""
    import sys, time
    import dispy

    def compute(n, gate):
        import os, time
        deadline = time.time() + 60
        while gate and not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.02)  # held until the test opens the gate
        print("out", n)
        return n * n

    node, recover_file, gate, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    certfile, secret = (sys.argv[6] or None), sys.argv[7]
    cluster = dispy.JobCluster(compute, nodes=[node], recover_file=recover_file or None,
                               loglevel=dispy.logger.WARNING, certfile=certfile, secret=secret)
    jobs = [cluster.submit(i, gate if i else "") for i in range(count)]
    assert jobs[0]() == 0  # delivered to this client before it dies
    while any(job.status == dispy.DispyJob.Created for job in jobs):
        time.sleep(0.01)  # all sent (a job that never left a killed client is lost with it)
    time.sleep(0.3)  # (and acknowledged: else the node would rightly give it to recover_jobs too)
    print("READY", flush=True)
    if sys.argv[5] == "exit":
        sys.exit(0)  # without closing the cluster: its jobs go on for recover_jobs
    time.sleep(120)
""")


def run_client(tmp_path, node: NodeProcess, count: int, how: str = "kill",
               recover_file: str | None = None, hold: bool = False, certfile: str = "",
               secret: str = "") -> tuple[str, subprocess.Popen[str]]:
    """Start a client program; return the recover file it uses and the process, killed
    (SIGKILL) or exited once its first job's result arrived. Its other jobs wait until
    then (or, with ``hold``, run until they are terminated)."""
    gate = tmp_path / "gate"
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    path = recover_file if recover_file is not None else str(tmp_path / "_dispy_client")
    proc = subprocess.Popen([sys.executable, str(script), f"{node.ip}:{node.port}", path, str(gate),
                             str(count), how, certfile, secret], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + proc.stdout.read()
    if how == "kill":
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    if not hold:
        gate.touch()
    return path, proc


def without_first(jobs: list[DispyJob]) -> list[DispyJob]:
    """The recovered jobs but job 1, checking that none comes twice. (Job 1's result
    reached the client before it died; whether its acknowledgement reached the node
    too is a race the client lost or won, so recover_jobs may rightly return it.)"""
    ids = [job.id for job in jobs]
    assert len(ids) == len(set(ids)), ids
    first = [job for job in jobs if job.id == 1]
    assert all(job.result == 0 and job.status == DispyJob.Finished for job in first)
    return [job for job in jobs if job.id != 1]


def computation_dirs(node: NodeProcess) -> list[str]:
    return [d for d in os.listdir(node.dest_path_prefix) if not d.startswith(".")]


def test_recover_jobs_after_the_client_is_killed(tmp_path, start_node):
    node = start_node("127.0.0.6", "-c", "2")
    # 2 CPUs: the client keeps 4 jobs in flight there while they are held, and sends the
    # 5th when job 1 is done.
    path, _ = run_client(tmp_path, node, count=5)
    assert os.path.exists(path)
    jobs = without_first(dispy.recover_jobs(path))
    # Job 1 reached the client before it died; every other job comes back, once.
    assert [job.id for job in jobs] == [2, 3, 4, 5]
    for job in jobs:
        n = job.id - 1
        assert job.status == DispyJob.Finished, job.exception
        assert job.result == n * n and job.stdout == f"out {n}\n" and job.exception is None
        assert job.host == node.ip and job.end_time >= job.start_time > 0
        assert job.finish.is_set()
    assert not os.path.exists(path), "the recover file is deleted once everything is recovered"
    # The node was released: the computation is closed there, its files gone.
    assert wait_until(lambda: computation_dirs(node) == [], 10), computation_dirs(node)


def square(n):
    return n * n


def test_a_dead_client_does_not_hold_the_node_from_others(tmp_path, start_node):
    # dispy 4 kept a node bound to a dead client until --zombie_interval (an hour).
    node = start_node("127.0.0.6", "-c", "2")
    path, _ = run_client(tmp_path, node, count=2, hold=True)  # its job 2 still runs, on one CPU
    with dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node.ip, port=node.port)],
                          recover_file=str(tmp_path / "_dispy_other")) as other:
        jobs = [other.submit(i) for i in range(20)]
        assert other.wait(timeout=30)
        assert [j.result for j in jobs] == [i * i for i in range(20)]
    (tmp_path / "gate").touch()
    jobs = without_first(dispy.recover_jobs(path, timeout=30))
    assert [(j.id, j.result) for j in jobs] == [(2, 1)]


def test_recover_jobs_over_tls_with_a_secret(tmp_path, start_node):
    pem = tmp_path / "cluster.pem"
    subprocess.run([sys.executable, "-m", "dispy_core.certgen", str(pem)], check=True, capture_output=True)
    node = start_node("127.0.0.6", "-c", "2", "--certfile", str(pem), "-s", "recover-secret")
    path, _ = run_client(tmp_path, node, count=3, certfile=str(pem), secret="recover-secret")
    jobs = without_first(dispy.recover_jobs(path))  # the secret and the certificate come from the file
    assert sorted((job.id, job.result) for job in jobs) == [(2, 1), (3, 4)]


def test_recover_jobs_uses_the_newest_default_file(tmp_path, start_node, monkeypatch):
    node = start_node("127.0.0.6", "-c", "2")
    path, _ = run_client(tmp_path, node, count=3, recover_file="")  # the default name
    assert os.path.basename(path) != "_dispy_client"
    [default] = [p for p in os.listdir(tmp_path) if p.startswith("_dispy_")]
    monkeypatch.chdir(tmp_path)
    jobs = without_first(dispy.recover_jobs())
    assert sorted((job.id, job.result) for job in jobs) == [(2, 1), (3, 4)]
    assert not (tmp_path / default).exists()


def test_timeout_leaves_jobs_running_and_terminate_pending_ends_them(tmp_path, start_node):
    node = start_node("127.0.0.6", "-c", "2")
    path, _ = run_client(tmp_path, node, count=3, hold=True)
    start = time.monotonic()
    assert without_first(dispy.recover_jobs(path, timeout=0.5)) == []
    assert time.monotonic() - start < 10
    assert os.path.exists(path), "jobs still run: the file is kept for another try"
    assert len(computation_dirs(node)) == 1
    jobs = without_first(dispy.recover_jobs(path, timeout=0.5, terminate_pending=True))
    assert sorted(job.id for job in jobs) == [2, 3]
    assert all(job.status in (DispyJob.Terminated, DispyJob.Cancelled) for job in jobs)
    assert not os.path.exists(path)
    assert wait_until(lambda: computation_dirs(node) == [], 10)
    # no worker still runs a job (each ran in a worker forked for the computation)
    assert wait_until(lambda: len(psutil.Process(node.proc.pid).children(recursive=True)) <= 1, 10)


def test_results_survive_a_node_restart(tmp_path):
    prefix = tmp_path / "node"
    prefix.mkdir()
    with NodeProcess("127.0.0.7", "-c", "2", "--zombie_interval", "0.02", python=node_python(),
                     dest_path_prefix=str(prefix)) as node:
        port = node.port
        path, _ = run_client(tmp_path, node, count=4)
        # the jobs finish with no client; their results go to disk, the computation closes
        assert wait_until(lambda: computation_dirs(node) == [], 15)
        assert node.alive()
    with NodeProcess("127.0.0.7", "-c", "2", python=node_python(), port=port,
                     dest_path_prefix=str(prefix)) as node:
        assert "3 undelivered job results kept" in node.log or wait_until(
            lambda: "3 undelivered job results kept" in node.log, 5), node.log
        jobs = without_first(dispy.recover_jobs(path))
        assert sorted((job.id, job.result, job.status) for job in jobs) == [
            (2, 1, DispyJob.Finished), (3, 4, DispyJob.Finished), (4, 9, DispyJob.Finished)]
        assert wait_until(lambda: not os.listdir(prefix / ".undelivered"), 5), "acknowledged results stay"


def test_a_program_that_exits_without_closing_leaves_its_jobs_to_recover(tmp_path, start_node):
    node = start_node("127.0.0.6", "-c", "2")
    path, proc = run_client(tmp_path, node, count=4, how="exit")
    assert proc.returncode == 0
    assert proc.stdout is not None
    output = proc.stdout.read()
    assert "go on running there" in output and "recover_jobs" in output, output
    jobs = without_first(dispy.recover_jobs(path))
    assert sorted((job.id, job.result) for job in jobs) == [(2, 1), (3, 4), (4, 9)]


def square_slowly(n):
    import time
    time.sleep(0.25)
    return n * n


def test_dropped_connection_resumes_and_each_result_arrives_once(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reported: list[int] = []
    lock = threading.Lock()

    def job_status(job):
        if job.status in (DispyJob.Finished, DispyJob.Terminated, DispyJob.Abandoned):
            with lock:
                reported.append(job.id)

    with dispy.JobCluster(square_slowly, nodes=[f"{node.ip}:{node.port}"], job_status=job_status,
                          loglevel=dispy.logger.ERROR) as cluster:
        jobs = [cluster.submit(i) for i in range(10)]
        assert jobs[1]() == 1
        runtime = cluster._runtime
        assert runtime is not None

        def drop() -> None:  # the TCP connection breaks (not a clean close)
            for session in list(runtime._ready.values()):
                session.channel.transport.abort()

        runtime.thread.call_soon(drop)
        assert [job() for job in jobs] == [i * i for i in range(10)]
        assert all(job.status == DispyJob.Finished for job in jobs)
        cluster.wait()
        assert "resumed" in node.log or wait_until(lambda: "resumed" in node.log, 5), node.log
    assert sorted(reported) == list(range(1, 11)), reported


def test_pulses_deliver_avail_info_to_cluster_status(node, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    infos = []

    def cluster_status(status, dispy_node, job):
        if status == DispyNode.AvailInfo:
            infos.append(dispy_node.avail_info)

    with dispy.JobCluster(square_slowly, nodes=[f"{node.ip}:{node.port}"], pulse_interval=1,
                          cluster_status=cluster_status) as cluster:
        assert cluster.submit(3)() == 9
        assert wait_until(lambda: len(infos) >= 2, 5)
    info = infos[-1]
    assert 0 <= info.cpu <= 100 and info.memory > 0 and info.disk > 0 and 0 <= info.swap <= 100


def where(seconds):
    import time
    time.sleep(seconds)
    return dispy_node_ip_addr  # noqa: F821 - set on the node


def test_paused_node_is_presumed_dead_its_jobs_rerun_and_it_is_readmitted(start_node, tmp_path, monkeypatch):
    """pulse_interval + reentrant: a node stopped with SIGSTOP goes silent; after 5 pulse
    intervals its job runs again on the other node; resumed with SIGCONT it is used again,
    and the late result of the job it had is not reported a second time."""
    monkeypatch.chdir(tmp_path)
    a = start_node("127.0.0.8", "-c", "1")
    b = start_node("127.0.0.9", "-c", "1")
    reported: list[int] = []
    initialized: list[str] = []

    def job_status(job):
        if job.status in (DispyJob.Finished, DispyJob.Abandoned, DispyJob.Terminated):
            reported.append(job.id)

    def cluster_status(status, node, job):
        if status == DispyNode.Initialized:
            initialized.append(node.ip_addr)

    with dispy.JobCluster(where, nodes=[dispy.NodeAllocate(p.ip, port=p.port) for p in (a, b)],
                          pulse_interval=1, reentrant=True, job_status=job_status,
                          cluster_status=cluster_status, loglevel=dispy.logger.ERROR) as cluster:
        assert wait_until(lambda: sorted(initialized) == [a.ip, b.ip], 15)
        assert cluster.submit_node(a.ip, 0.0)() == a.ip
        assert cluster.deallocate_node(b.ip) == 0  # so that the next job goes to a
        on_a = cluster.submit(1.5)
        assert wait_until(lambda: on_a.status == DispyJob.Running and on_a.host == a.ip, 5)
        assert cluster.allocate_node(b.ip) == 0
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            assert on_a() == b.ip  # ran again on b
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        assert wait_until(lambda: initialized.count(a.ip) == 2, 20), initialized
        assert cluster.submit_node(a.ip, 0.0)() == a.ip
        cluster.wait()
        time.sleep(0.5)  # a late result from a would come now
    assert sorted(reported) == [1, 2, 3], reported
