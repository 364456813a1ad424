"""What a job's traceback shows: the user's file names, line numbers and source lines,
for code in the client's ``__main__`` script, in its own modules shipped by value (as
``depends`` or only with one job's ``dispy_job_depends``), lambdas, nested functions and
methods, whatever cloudpickle version is installed (3.1.3 and later name every code
object they pickle ``<dynamic-code>``); and for code from ``python -c``, which has no
file, its ``<string>`` name and line numbers, as Python's own tracebacks.

The client programs run as real subprocesses against a real dispynode on 127.0.0.1 (and
through a real dispyscheduler, which is given its node with ``-n``). The
program moves its files away once its jobs are submitted (and before they may run), so
the node can't read them from the client's disk: what the tracebacks show came with the
computation and the jobs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap

import pytest

from dispy_core.testing import NodeProcess, SchedulerProcess

PROGRAM = textwrap.dedent('''
    import json, os, sys, time
    import dispy
    import tbhelpers
    import jobhelpers

    class Thing:
        def explode(self):
            return {}["no such key"]  # <<method>>

    def dep_fail(n):
        raise KeyError(f"depends function fails for {n}")  # <<depends>>

    def job_fail(n):
        raise LookupError(f"job depends function fails for {n}")  # <<job_depends>>

    def compute(n, gate):
        import os, time
        deadline = time.time() + 60
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.02)  # until the program has moved its files away
        if n == 1:
            return dep_fail(n)
        if n == 2:
            return tbhelpers.helper_fail(n)
        if n == 3:
            return job_fail(n)
        if n == 4:
            return job_helper_fail(n)
        if n == 5:
            inverse = lambda x: 1 / x  # <<lambda>>
            return inverse(0)
        if n == 6:
            def nested():
                return int("not a number")  # <<nested>>
            return nested()
        if n == 7:
            return Thing().explode()  # <<call_method>>
        raise ValueError(f"compute fails for {n}")  # <<compute>>

    node, gate, moved, scheduler = sys.argv[1:5]
    depends = [dep_fail, tbhelpers, Thing]
    if scheduler:  # through dispyscheduler, which passes the sources on to its nodes
        cluster = dispy.SharedJobCluster(compute, scheduler_node=scheduler, host="127.0.0.1",
                                         depends=depends, loglevel=dispy.logger.WARNING)
    else:
        cluster = dispy.JobCluster(compute, nodes=[node], depends=depends,
                                   loglevel=dispy.logger.WARNING)
    jobs = {n: cluster.submit(n, gate) for n in (0, 1, 2, 5, 6, 7)}
    jobs[3] = cluster.submit(3, gate, dispy_job_depends=[job_fail])
    jobs[4] = cluster.submit(4, gate, dispy_job_depends=[jobhelpers.job_helper_fail])
    # Everything is sent by now or read for sending: the node can't find these files.
    os.rename(os.path.dirname(os.path.abspath(__file__)), moved)
    open(gate, "w").close()
    cluster.wait()
    print(json.dumps({n: job.exception for n, job in jobs.items()}))
    cluster.close()
''')

TBHELPERS = textwrap.dedent('''
    def helper_fail(n):
        value = None
        return value.missing  # <<helper>>
''')

JOBHELPERS = textwrap.dedent('''
    def job_helper_fail(n):
        raise OverflowError(f"job helper fails for {n}")  # <<job_helper>>
''')


def marked(text: str, mark: str) -> tuple[int, str]:
    """(line number, source line as a traceback shows it) of the line marked ``# <<mark>>``."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.endswith(f"# <<{mark}>>"):
            return number, line.strip()
    raise AssertionError(f"no marker {mark}")


def assert_frame(exception: str, path: str, text: str, mark: str, function: str) -> None:
    number, source = marked(text, mark)
    frame = f'  File "{path}", line {number}, in {function}\n    {source}\n'
    assert frame in exception, f"expected\n{frame}in\n{exception}"


@pytest.mark.parametrize("through", ["JobCluster", "SharedJobCluster"])
def test_tracebacks_show_the_program_s_files_and_source_lines(tmp_path, through):
    if through == "SharedJobCluster":
        pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
    src = tmp_path / "src"
    src.mkdir()
    program, tbhelpers, jobhelpers = src / "client_prog.py", src / "tbhelpers.py", src / "jobhelpers.py"
    program.write_text(PROGRAM)
    tbhelpers.write_text(TBHELPERS)
    jobhelpers.write_text(JOBHELPERS)
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(NodeProcess("127.0.0.1", "-c", "2"))
        scheduler = ""
        if through == "SharedJobCluster":
            sched = stack.enter_context(SchedulerProcess("127.0.0.1", [node.addr]))
            scheduler = f"127.0.0.1:{sched.port}"
        proc = subprocess.run([sys.executable, str(program), f"{node.ip}:{node.port}",
                               str(tmp_path / "gate"), str(tmp_path / "moved"), scheduler],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not src.exists()  # the node could not have read them from here
    exc = {int(n): text for n, text in json.loads(proc.stdout.splitlines()[-1]).items()}
    main, tb, jb = str(program), str(tbhelpers), str(jobhelpers)
    for text in exc.values():
        assert text and "<dynamic-code>" not in text, text
    assert_frame(exc[0], main, PROGRAM, "compute", "compute")
    assert exc[0].endswith("ValueError: compute fails for 0\n")
    # A depends function, and a module of the client's shipped by value as depends.
    assert_frame(exc[1], main, PROGRAM, "depends", "dep_fail")
    assert_frame(exc[2], tb, TBHELPERS, "helper", "helper_fail")
    assert exc[2].endswith("AttributeError: 'NoneType' object has no attribute 'missing'\n")
    # dispy_job_depends: a function of the program, and one of a module only that job uses
    # (its text travels with the job).
    assert_frame(exc[3], main, PROGRAM, "job_depends", "job_fail")
    assert_frame(exc[4], jb, JOBHELPERS, "job_helper", "job_helper_fail")
    assert exc[4].endswith("OverflowError: job helper fails for 4\n")
    # A lambda, a nested function, a method of a class shipped by value.
    assert_frame(exc[5], main, PROGRAM, "lambda", "<lambda>")
    assert_frame(exc[6], main, PROGRAM, "nested", "nested")
    assert_frame(exc[7], main, PROGRAM, "method", "explode")
    # The whole stack: the frame of compute that called the method is there too.
    assert_frame(exc[7], main, PROGRAM, "call_method", "compute")


PROGRAM_C = textwrap.dedent('''
    import json, sys
    import dispy

    def compute(n):
        return 1 / n

    cluster = dispy.JobCluster(compute, nodes=[sys.argv[1]], loglevel=dispy.logger.WARNING)
    job = cluster.submit(0)
    job()
    print(json.dumps(job.exception))
    cluster.close()
''')


def test_code_with_no_file_shows_its_name_and_line_numbers(tmp_path):
    """``python -c``: no file and no text to send; the frame shows ``<string>`` and the
    line number, as the traceback of a local call does."""
    with NodeProcess("127.0.0.1", "-c", "1") as node:
        proc = subprocess.run([sys.executable, "-c", PROGRAM_C, f"{node.ip}:{node.port}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exception = json.loads(proc.stdout.splitlines()[-1])
    number = PROGRAM_C.splitlines().index("    return 1 / n") + 1
    assert f'  File "<string>", line {number}, in compute\n' in exception, exception
    assert exception.endswith("ZeroDivisionError: division by zero\n")
