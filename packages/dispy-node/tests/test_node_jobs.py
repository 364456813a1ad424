"""Computations and jobs through a real node: results, output, setup, depends, files,
programs, crashes, process per job, closing."""

from __future__ import annotations

import asyncio
import os
import platform
import sys

from node_testkit import MAX_FILE_SIZE, TestClient, client_test, ship_by_value, value

from dispy_core.messages import ComputeFailed, ComputeReady, FileData, JobResults
from dispy_core.status import JobStatus
from dispy_core.testing import wait_until

ship_by_value(__name__)


def square(x):
    print(f"squaring {x}")
    print("to stderr", file=sys.stderr)
    return x * x


def fails(x):
    raise ValueError(f"bad value {x}")


def pid_of(_):
    return os.getpid()


def node_globals(_):
    dispynode_logger.info("hello from job %s", os.getpid())  # noqa: F821
    return dispy_node_name, dispy_node_ip_addr, dispy_job_path, os.getcwd()  # noqa: F821


def test_results_stdout_stderr(node):
    async def body(c: TestClient):
        cid = await c.ready(square)
        results = await c.run_jobs(cid, (3,), (4,), (5,))
        assert [value(r) for r in results] == [9, 16, 25]
        r = results[0]
        assert r.status == JobStatus.Finished and r.exception is None
        assert r.stdout == "squaring 3\n" and r.stderr == "to stderr\n"
        assert 0 < r.start_time <= r.end_time
        await c.close_computation(cid)

    client_test(node, body)


def test_exception_gives_terminated_with_traceback(node):
    async def body(c: TestClient):
        cid = await c.ready(fails)
        (r,) = await c.run_jobs(cid, (7,))
        assert r.status == JobStatus.Terminated and r.result is None
        assert "ValueError: bad value 7" in r.exception
        assert "in fails" in r.exception
        assert "dispy_node" not in r.exception  # the node's own frames are stripped
        await c.close_computation(cid)

    client_test(node, body)


def test_lambda_and_closure(node):
    k = 10

    async def body(c: TestClient):
        cid = await c.ready(lambda x: x + k)
        results = await c.run_jobs(cid, (1,), (2,))
        assert [value(r) for r in results] == [11, 12]
        await c.close_computation(cid)

    client_test(node, body)


def test_node_globals_and_job_dir(node):
    async def body(c: TestClient):
        reply = await c.compute(node_globals)
        assert isinstance(reply, ComputeReady)
        (r,) = await c.run_jobs(reply.compute_id, (0,))
        name, ip, path, cwd = value(r)
        assert (name, ip) == ("test-node", "127.0.0.1")
        assert path == cwd == reply.dest_path
        assert reply.dest_path.startswith(node.dest_path_prefix)
        assert r.stderr == ""  # dispynode_logger writes to the node's log
        assert await asyncio.to_thread(wait_until, lambda: "hello from job" in node.log, 5)
        await c.close_computation(reply.compute_id)

    client_test(node, body)


# -- setup, cleanup, depends ------------------------------------------------------------
def setup_globals(n, marker):
    global table, marker_path
    table = {i: i * n for i in range(10)}
    marker_path = marker
    return 0


def cleanup_globals(n, marker):
    with open(marker, "w") as fh:
        fh.write(f"cleaned {len(table)}")


def use_table(i):
    return table[i]


def test_setup_globals_visible_and_cleanup_runs(node, tmp_path):
    marker = str(tmp_path / "cleanup-ran")

    async def body(c: TestClient):
        cid = await c.ready(use_table, setup=setup_globals, cleanup=cleanup_globals, setup_args=(3, marker))
        results = await c.run_jobs(cid, (2,), (5,))
        assert [value(r) for r in results] == [6, 15]
        closed = await c.close_computation(cid)
        assert closed.error is None

    client_test(node, body)
    assert open(marker).read() == "cleaned 10"


def setup_returns_5():
    return 5


def setup_raises():
    raise RuntimeError("no database here")


def setup_logs(marker):
    global where
    where = (dispy_node_name, dispy_node_ip_addr)  # noqa: F821 - globals the node gives
    dispynode_logger.info("setup on %s at %s", *where)  # noqa: F821
    return 0


def cleanup_logs(marker):
    dispynode_logger.info("cleanup on %s", dispy_node_name)  # noqa: F821
    with open(marker, "w") as fh:
        fh.write(" ".join(where))


def where_set_up(_):
    return where


def test_setup_and_cleanup_see_the_node_globals(node, tmp_path):
    marker = str(tmp_path / "cleanup-ran")

    async def body(c: TestClient):
        cid = await c.ready(where_set_up, setup=setup_logs, cleanup=cleanup_logs, setup_args=(marker,))
        assert [value(r) for r in await c.run_jobs(cid, (0,))] == [("test-node", "127.0.0.1")]
        closed = await c.close_computation(cid)
        assert closed.error is None

    client_test(node, body)
    assert open(marker).read() == "test-node 127.0.0.1"
    assert wait_until(lambda: "setup on test-node at 127.0.0.1" in node.log
                      and "cleanup on test-node" in node.log, 5), node.log


def test_setup_failures_are_reported(node):
    async def body(c: TestClient):
        reply = await c.compute(square, setup=setup_returns_5)
        assert isinstance(reply, ComputeFailed)
        assert "returned 5; expected 0, 1 or 2" in reply.error
        reply = await c.compute(square, setup=setup_raises)
        assert isinstance(reply, ComputeFailed)
        assert "RuntimeError: no database here" in reply.error and "in setup_raises" in reply.error
        # the node still serves
        cid = await c.ready(square)
        assert [value(r) for r in await c.run_jobs(cid, (2,))] == [4]

    client_test(node, body)


def setup_returns(n):
    return n


def test_setup_codes_1_and_2_are_success(node):
    async def body(c: TestClient):
        for code in (1, 2):
            cid = await c.ready(square, setup=setup_returns, setup_args=(code,))
            await c.close_computation(cid)

    client_test(node, body)


class Helper:
    def __init__(self, base):
        self.base = base

    def add(self, x):
        return self.base + x


def helper_fn(x):
    return x * 100


def uses_depends(x):
    return Helper(1).add(x) + helper_fn(x), open("data.txt").read()


def test_depends_functions_classes_and_files(node):
    async def body(c: TestClient):
        cid = await c.ready(uses_depends, depends=[Helper, helper_fn],
                            files=[FileData("data.txt", b"shipped", 0o600)])
        (r,) = await c.run_jobs(cid, (2,))
        assert value(r) == (203, "shipped")
        await c.close_computation(cid)

    client_test(node, body)


def job_files(_):
    here = sorted(os.listdir(dispy_job_path))  # noqa: F821
    # Looked up by name at run time: a direct reference would make cloudpickle ship
    # job_helper with the computation itself.
    helper = globals()["job_helper"]
    return dispy_job_path, os.getcwd(), here, open("input.txt").read(), helper()  # noqa: F821


def job_helper():
    return "per-job depends"


def test_per_job_files_and_depends(node):
    async def body(c: TestClient):
        reply = await c.compute(job_files)
        assert isinstance(reply, ComputeReady)
        cid = reply.compute_id
        (r,) = await c.run_jobs(cid, (0,), files=[FileData("input.txt", b"job data")], depends=[job_helper])
        path, cwd, listing, text, helper = value(r)
        # A directory of its own, outside the computation's (whose listing never shows it)
        assert path == cwd and path != reply.dest_path and not path.startswith(reply.dest_path + os.sep)
        assert os.listdir(reply.dest_path) == []
        assert listing == ["input.txt"] and text == "job data" and helper == "per-job depends"
        assert not os.path.exists(path)  # removed after the job
        # per-job depends are gone for the next job
        (r,) = await c.run_jobs(cid, (0,), files=[FileData("input.txt", b"x")])
        assert r.status == JobStatus.Terminated and "KeyError: 'job_helper'" in r.exception
        await c.close_computation(cid)

    client_test(node, body)


# -- what dispy 4.x programs find in a computation's namespace -------------------------
def delegate_to(name, n):
    return globals()[name](n)


def per_job_step(n):
    # Neither name exists in this module: the node's namespace and setup provide them.
    return dispy_node_name, table[n]  # noqa: F821


def test_per_job_function_sees_the_computation_s_namespace(node, tmp_path):
    # delegate.py of dispy 4.x: a function sent with one job runs in the computation's
    # namespace, so it sees dispy_node_name and what setup made.
    async def body(c: TestClient):
        cid = await c.ready(delegate_to, setup=setup_globals, setup_args=(3, str(tmp_path / "m")))
        r1, r2 = await c.run_jobs(cid, ("per_job_step", 2), ("per_job_step", 4), depends=[per_job_step])
        assert (value(r1), value(r2)) == (("test-node", 6), ("test-node", 12)), (r1.exception, r2.exception)
        await c.close_computation(cid)

    client_test(node, body)


struct = "the program's own struct"  # a name the node would otherwise provide


def setup_with_node_modules():
    global started
    started = time.time()  # noqa: F821 - time is not imported here
    return 0


def uses_node_modules(data):
    # dispy 4.x examples use os and time in computations without importing them: the
    # original node ran them in its own module's namespace.
    time.sleep(0.01)  # noqa: F821
    return hashlib.sha1(data).hexdigest(), started <= time.time(), struct  # noqa: F821


def test_node_modules_are_there_unless_the_program_defines_the_name(node):
    async def body(c: TestClient):
        cid = await c.ready(uses_node_modules, setup=setup_with_node_modules)
        (r,) = await c.run_jobs(cid, (b"abc",))
        assert value(r) == ("a9993e364706816aba3e25717850c26c9cd0d89d", True,
                            "the program's own struct"), r.exception
        await c.close_computation(cid)

    client_test(node, body)


# -- programs ---------------------------------------------------------------------------
SCRIPT = b"""#!/bin/sh
echo "args: $*"
echo "oops" >&2
exit $1
"""


def test_program_computation(node):
    async def body(c: TestClient):
        cid = await c.ready("job.sh", kind="program", files=[FileData("job.sh", SCRIPT, 0o644)])
        r0, r3 = await c.run_jobs(cid, (0, "a b"), (3,))
        assert r0.status == JobStatus.Finished and value(r0) == 0
        assert bytes(r0.stdout) == b"args: 0 a b\n" and bytes(r0.stderr) == b"oops\n"
        assert value(r3) == 3
        await c.close_computation(cid)
        cid = await c.ready("echo", kind="program")  # found on PATH
        (r,) = await c.run_jobs(cid, ("hello", 42))
        assert bytes(r.stdout) == b"hello 42\n"
        reply = await c.compute("no-such-program-here", kind="program")
        assert isinstance(reply, ComputeFailed) and "no-such-program-here" in reply.error

    client_test(node, body)


# -- crashes ----------------------------------------------------------------------------
def crash(how):
    if how == "exit":
        os._exit(3)
    if how == "segv":
        import ctypes

        ctypes.string_at(0)
    return os.getpid()


def test_worker_crashes_are_reported_and_node_recovers(node):
    async def body(c: TestClient):
        cid = await c.ready(crash, cpus=1)
        ok1, exited, ok2, segv, ok3 = await c.run_jobs(cid, ("ok",), ("exit",), ("ok",), ("segv",), ("ok",))
        assert exited.status == JobStatus.Terminated
        assert exited.exception == f"job {exited.job_id}: worker process exited with status 3"
        assert segv.status == JobStatus.Terminated
        assert segv.exception == f"job {segv.job_id}: worker process killed by signal SIGSEGV (11)"
        assert all(r.status == JobStatus.Finished for r in (ok1, ok2, ok3)), (ok1, ok2, ok3)
        assert len({value(ok1), value(ok2), value(ok3)}) == 3  # a new worker after each crash
        await c.close_computation(cid)

    client_test(node, body)


# -- workers ----------------------------------------------------------------------------
def test_process_per_job_and_reuse(node):
    async def body(c: TestClient):
        cid = await c.ready(pid_of, cpus=1)
        pids = [value(r) for r in await c.run_jobs(cid, *[(i,) for i in range(4)])]
        assert len(set(pids)) == 1  # one worker, reused
        await c.close_computation(cid)
        cid = await c.ready(pid_of, cpus=1, process_per_job=True)
        pids = [value(r) for r in await c.run_jobs(cid, *[(i,) for i in range(4)])]
        assert len(set(pids)) == 4
        await c.close_computation(cid)

    client_test(node, body)


def test_more_jobs_than_cpus(node):
    async def body(c: TestClient):
        cid = await c.ready(square)
        results = await c.run_jobs(cid, *[(i,) for i in range(200)])
        assert [value(r) for r in results] == [i * i for i in range(200)]
        await c.close_computation(cid)

    client_test(node, body)


# -- checks on Compute ------------------------------------------------------------------
def test_python_version_mismatch(node):
    async def body(c: TestClient):
        reply = await c.compute(square, python_version="3.1.0")
        assert isinstance(reply, ComputeFailed)
        assert "3.1.0" in reply.error and platform.python_version() in reply.error
        # a program computation does not depend on the client's Python
        reply = await c.compute("echo", kind="program", python_version="3.1.0")
        assert isinstance(reply, ComputeReady)

    client_test(node, body)


def test_file_checks(node):
    big = FileData("big.bin", b"x" * (MAX_FILE_SIZE + 1))

    async def body(c: TestClient):
        reply = await c.compute(square, files=[big])
        assert isinstance(reply, ComputeFailed)
        assert "big.bin" in reply.error and str(MAX_FILE_SIZE + 1) in reply.error
        assert str(MAX_FILE_SIZE) in reply.error
        for name in ("../evil", "/etc/passwd", "a/b", "..", "", "a\\b"):
            reply = await c.compute(square, files=[FileData(name, b"x")])
            assert isinstance(reply, ComputeFailed), name
            assert "refused file name" in reply.error
        reply = await c.compute(square, dest_path="../../outside")
        assert isinstance(reply, ComputeFailed) and "dest_path" in reply.error
        # the same checks for a job's files
        cid = await c.ready(square)
        bad, toobig, ok = await c.wait_results(cid, [
            *c.submit(cid, (1,), files=[FileData("../x", b"")]),
            *c.submit(cid, (2,), files=[big]),
            *c.submit(cid, (3,)),
        ])
        assert bad.status == JobStatus.Terminated and "refused file name" in bad.exception
        assert toobig.status == JobStatus.Terminated and "big.bin" in toobig.exception
        assert value(ok) == 9
        await c.close_computation(cid)

    client_test(node, body)


def test_dest_path_is_under_the_prefix(node):
    async def body(c: TestClient):
        reply = await c.compute(square, dest_path="/abs/dir")
        assert isinstance(reply, ComputeReady)
        assert reply.dest_path == os.path.join(os.path.realpath(node.dest_path_prefix), "abs", "dir")
        await c.close_computation(reply.compute_id)

    client_test(node, body)


# -- closing ----------------------------------------------------------------------------
def test_close_removes_directory_unless_cleanup_files_false(node):
    async def body(c: TestClient):
        reply = await c.compute(square, files=[FileData("f.txt", b"1")])
        assert isinstance(reply, ComputeReady) and os.path.exists(os.path.join(reply.dest_path, "f.txt"))
        closed = await c.close_computation(reply.compute_id)
        assert closed.error is None and not os.path.exists(reply.dest_path)
        reply = await c.compute(square, files=[FileData("f.txt", b"1")], cleanup_files=False)
        assert isinstance(reply, ComputeReady)
        await c.close_computation(reply.compute_id)
        assert os.path.exists(os.path.join(reply.dest_path, "f.txt"))

    client_test(node, body)


def nap(data):
    import time

    time.sleep(0.01)
    return len(data)


def test_node_stops_reading_a_client_that_floods_it_with_arguments():
    # 40 jobs x 4 MiB sent at once to one CPU: the node must not read 160 MiB of
    # arguments into its main process; it stops reading until its queue drains.
    from dispy_core.testing import NodeProcess

    data = os.urandom(4 << 20)
    with NodeProcess("127.0.0.1", "-s", "flood", "-c", "1") as proc:
        async def body(c: TestClient):
            cid = await c.ready(nap)
            ids = [c.submit(cid, (data,))[0] for _ in range(40)]
            results = await c.wait_results(cid, ids, timeout=60)
            assert [value(r) for r in results] == [len(data)] * 40
            await c.close_computation(cid)

        client_test(proc, body, timeout=90, secret="flood")
        with open(f"/proc/{proc.proc.pid}/status") as f:
            peak_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert peak_kib < 100 * 1024, f"node main process peaked at {peak_kib // 1024} MiB"


def sends_provisional(n):
    sent = [dispy_provisional_result(("partial", i)) for i in range(n)]  # noqa: F821
    return sent


def test_provisional_results_are_relayed_and_do_not_complete_the_job(node):
    async def body(c: TestClient):
        cid = await c.ready(sends_provisional)
        (job_id,) = c.submit(cid, (3,))
        seen = []
        while True:
            msg = await c.recv()
            if not isinstance(msg, JobResults):
                continue
            for r in msg.results:
                assert r.job_id == job_id
                seen.append((r.status, value(r)))
            if seen and seen[-1][0] != JobStatus.ProvisionalResult:
                break
        P = JobStatus.ProvisionalResult
        assert seen == [(P, ("partial", 0)), (P, ("partial", 1)), (P, ("partial", 2)),
                        (JobStatus.Finished, [0, 0, 0])]
        # the node's slots are intact: as many jobs as ever run to the end
        results = await c.run_jobs(cid, *[(0,)] * 6)
        assert all(r.status == JobStatus.Finished for r in results)
        await c.close_computation(cid)

    client_test(node, body)
