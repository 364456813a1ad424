"""The client documentation's examples, run by a JobCluster against a real dispynode.

Each test is a dispy program a user would write (sample.py, obj_instances.py,
delegate.py, node_setup.py, a program computation, depends of every kind).
"""

from __future__ import annotations

import stat
import sys
import threading

import dispy


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


# -- sample.py ------------------------------------------------------------------------
def compute(n):
    import time

    time.sleep(0.01)
    return dispy_node_name, dispy_node_ip_addr, n * n  # noqa: F821


def test_sample_results_ids_hosts_and_status(node, capsys):
    with dispy.JobCluster(compute, nodes=nodes_of(node)) as cluster:
        jobs = [cluster.submit(i) for i in range(20)]
        for i, job in enumerate(jobs):
            name, ip, square = job()
            assert square == i * i and ip == "127.0.0.1" and name
            assert job.status == dispy.DispyJob.Finished == 11
            assert job.host == job.ip_addr == "127.0.0.1"
            assert job.id == i + 1
            assert job.start_time <= job.end_time
        assert cluster.wait(timeout=5)
        cluster.print_status()
    out = capsys.readouterr().out
    for column in ("Node", "CPUs", "Jobs", "Sec/Job", "Node Time Sec", "Sent", "Rcvd"):
        assert column in out
    assert "127.0.0.1" in out and "20" in out


# -- obj_instances.py: a class in depends, instances as arguments, stdout ------------
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __str__(self):
        return f"Point({self.x}, {self.y})"


def norm(p):
    print(f"computing {p}")
    print("to stderr", file=sys.stderr)
    return Point(p.x * 2, p.y * 2)


def test_class_instances_and_output(node):
    with dispy.JobCluster(norm, nodes=nodes_of(node), depends=[Point]) as cluster:
        job = cluster.submit(Point(1, 2))
        job.id = Point(0, 0)  # any object may be an id
        result = job()
        assert (result.x, result.y) == (2, 4)
        assert job.stdout == "computing Point(1, 2)\n"
        assert job.stderr == "to stderr\n"
        assert str(job.id) == "Point(0, 0)"


# -- delegate.py: per-job code with dispy_job_depends --------------------------------
def delegate(name, n):
    return globals()[name](n)


def triple(n):
    return 3 * n


def square(n):
    return n * n


def test_dispy_job_depends_functions(node):
    with dispy.JobCluster(delegate, nodes=nodes_of(node)) as cluster:
        a = cluster.submit("triple", 5, dispy_job_depends=[triple])
        b = cluster.submit("square", 5, dispy_job_depends=[square])
        assert (a(), b()) == (15, 25)
        # per-job code does not leak into later jobs
        c = cluster.submit("triple", 1)
        c()
        assert c.status == dispy.DispyJob.Terminated and "KeyError" in c.exception


def read_job_file(name):
    import os

    with open(os.path.join(dispy_job_path, name)) as f:  # noqa: F821
        return f.read(), os.path.basename(os.getcwd()) == os.path.basename(dispy_job_path)  # noqa: F821


def test_dispy_job_depends_files(node, tmp_path):
    data = tmp_path / "job-data.txt"
    data.write_text("payload for one job")
    with dispy.JobCluster(read_job_file, nodes=nodes_of(node)) as cluster:
        job = cluster.submit("job-data.txt", dispy_job_depends=[str(data)])
        assert job() == ("payload for one job", True)
        later = cluster.submit("job-data.txt")
        later()
        assert later.status == dispy.DispyJob.Terminated  # removed after its job


# -- node_setup.py: setup/cleanup, globals, NodeAllocate.allocate, depends files -----
def setup(data_file, factor):
    global data, scale
    with open(data_file) as f:
        data = f.read()
    scale = factor
    return 0


def cleanup(data_file, factor):
    global data
    del data


def use_setup_globals(i):
    return data.upper(), scale * i  # noqa: F821


class PerNodeAllocate(dispy.NodeAllocate):
    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
        assert isinstance(avail_info, dispy.DispyNodeAvailInfo)
        assert avail_info.memory > 0 and 0 <= avail_info.cpu <= 100
        assert platform
        self.setup_args = ("node-data.txt", 10)
        return min(cpus, 1)


def test_setup_globals_and_allocate(node, tmp_path):
    data = tmp_path / "node-data.txt"
    data.write_text("in-memory data")
    nodes = [PerNodeAllocate(node.ip, port=node.port)]
    with dispy.JobCluster(use_setup_globals, nodes=nodes, depends=[str(data)], setup=setup,
                          cleanup=cleanup) as cluster:
        assert [cluster.submit(i)() for i in range(4)] == [("IN-MEMORY DATA", 10 * i) for i in range(4)]


def failing_setup():
    return 7


def test_setup_failure_is_reported(node, caplog):
    with dispy.JobCluster(square, nodes=nodes_of(node), setup=failing_setup) as cluster:
        job = cluster.submit(2)
        assert cluster.wait(timeout=3) is False
        assert job.status == dispy.DispyJob.Created
        assert "7" in caplog.text and "setup" in caplog.text
        cluster.close(timeout=1, terminate=True)


# -- depends of every kind ------------------------------------------------------------
def use_module(n):
    return helper_mod.twice(n)  # noqa: F821


def test_depends_module_shipped_by_value(node, tmp_path, monkeypatch):
    (tmp_path / "helper_mod.py").write_text("def twice(n):\n    return 2 * n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import helper_mod

    try:
        with dispy.JobCluster(use_module, nodes=nodes_of(node), depends=[helper_mod]) as cluster:
            assert cluster.submit(21)() == 42
    finally:
        sys.modules.pop("helper_mod", None)


def read_dep_file(name):
    with open(name) as f:
        return f.read()


def test_depends_file_in_computation_dir(node, tmp_path):
    f = tmp_path / "shared.txt"
    f.write_text("shared by all jobs")
    with dispy.JobCluster(read_dep_file, nodes=nodes_of(node), depends=[str(f)]) as cluster:
        assert [cluster.submit("shared.txt")() for _ in range(3)] == ["shared by all jobs"] * 3


def test_lambda_and_closure(node):
    offset = 100
    with dispy.JobCluster(lambda x: x + offset, nodes=nodes_of(node)) as cluster:
        assert cluster.submit(1)() == 101

    def make(k):
        def f(x):
            return x * k
        return f

    with dispy.JobCluster(make(7), nodes=nodes_of(node)) as cluster:
        assert cluster.submit(6)() == 42


# -- a program computation ----------------------------------------------------------
def test_program_computation(node, tmp_path):
    script = tmp_path / "node_update_script.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "print('args:', ' '.join(sys.argv[1:]))\n"
        "print('oops', file=sys.stderr)\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with dispy.JobCluster(str(script), nodes=nodes_of(node)) as cluster:
        jobs = [cluster.submit(str(code), "x") for code in (0, 3)]
        cluster.wait(timeout=30)
        assert [j.result for j in jobs] == [0, 3]
        assert jobs[0].stdout == b"args: 0 x\n" and jobs[1].stderr == b"oops\n"


# -- callbacks ------------------------------------------------------------------------
def test_job_status_and_cluster_status_callbacks(node):
    seen = []
    threads = set()
    lock = threading.Lock()

    def job_status(job):
        with lock:
            seen.append(("job", job.id, job.status))
            threads.add(threading.get_ident())

    def cluster_status(status, dnode, job):
        with lock:
            seen.append(("cluster", status, job.id if job else None))
            threads.add(threading.get_ident())

    with dispy.JobCluster(square, nodes=nodes_of(node), job_status=job_status,
                          cluster_status=cluster_status) as cluster:
        jobs = [cluster.submit(i) for i in range(5)]
        cluster.wait()
    from dispy_core.testing import wait_until
    assert wait_until(lambda: sum(1 for s in seen if s[0] == "job") == 5, 5)
    assert ("cluster", dispy.DispyNode.Initialized, None) in seen
    assert len(threads) == 1 and threading.get_ident() not in threads
    for job in jobs:
        assert seen.index(("cluster", dispy.DispyJob.Running, job.id)) < seen.index(
            ("job", job.id, dispy.DispyJob.Finished))
