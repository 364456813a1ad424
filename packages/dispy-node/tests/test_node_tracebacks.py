"""Tracebacks of user code on a real node show the client's source lines (Compute.sources,
JobSpec.sources) for code from files the node doesn't have, in jobs, timed-out jobs and
setup; malformed sources fields are refused."""

from __future__ import annotations

import linecache
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from node_testkit import TestClient, client_test, ship_by_value

from dispy_core import serialization
from dispy_core.messages import ComputeFailed, JobSpec, SubmitJobs
from dispy_core.status import JobStatus

ship_by_value(__name__)

# Code as a notebook has it: compiled under a name that is no file on any disk, its text
# only in the client's linecache (IPython registers each cell there).
CELL = "/client/only/cell_1.py"
CELL_TEXT = textwrap.dedent("""\
    def compute(n):
        import time
        if n < 0:
            time.sleep(60)  # <<sleeping>> (one call: the timeout interrupts it there)
        return job_helper(n)

    def failing_setup():
        raise RuntimeError("no database here")  # <<setup>>
""")
JOB_CELL = "/client/only/cell_2.py"
JOB_CELL_TEXT = textwrap.dedent("""\
    def job_helper(n):
        raise ValueError(f"bad value {n}")  # <<job_helper>>
""")


def define(name: str, text: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name.rsplit("/", 1)[-1][:-3]}  # not importable: by value
    exec(compile(text, name, "exec"), namespace)
    return namespace


def frame(name: str, text: str, mark: str, function: str) -> str:
    for number, line in enumerate(text.splitlines(), 1):
        if f"# <<{mark}>>" in line:
            return f'  File "{name}", line {number}, in {function}\n    {line.strip()}\n'
    raise AssertionError(mark)


@pytest.fixture
def cells() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for name, text in ((CELL, CELL_TEXT), (JOB_CELL, JOB_CELL_TEXT)):
        linecache.cache[name] = (len(text), None, text.splitlines(keepends=True), name)
    yield define(CELL, CELL_TEXT), define(JOB_CELL, JOB_CELL_TEXT)
    for name in (CELL, JOB_CELL):
        linecache.cache.pop(name, None)


def test_job_and_timeout_tracebacks_show_the_client_s_lines(node, cells):
    cell, job_cell = cells

    async def body(c: TestClient):
        cid = await c.ready(cell["compute"])
        # job_helper comes with the job (dispy_job_depends): its text with the job too.
        (r,) = await c.run_jobs(cid, (4,), depends=[job_cell["job_helper"]])
        assert r.status == JobStatus.Terminated
        assert frame(JOB_CELL, JOB_CELL_TEXT, "job_helper", "job_helper") in r.exception, r.exception
        assert r.exception.endswith("ValueError: bad value 4\n")
        (r,) = await c.run_jobs(cid, (-1,), timeout=0.5)
        assert r.status == JobStatus.Terminated
        assert frame(CELL, CELL_TEXT, "sleeping", "compute") in r.exception, r.exception
        await c.close_computation(cid)

    client_test(node, body)


def test_setup_failure_shows_the_client_s_lines(node, cells):
    cell, _ = cells

    async def body(c: TestClient):
        reply = await c.compute(cell["compute"], setup=cell["failing_setup"])
        assert isinstance(reply, ComputeFailed)
        assert frame(CELL, CELL_TEXT, "setup", "failing_setup") in reply.error, reply.error

    client_test(node, body)


def square(x: int) -> int:
    return x * x


# (Sources that are not a {str: str} mapping make the message malformed: refused where it
# is decoded, see dispy-core's test_core_validation.)
@pytest.mark.parametrize("bad", [{"": "text"}, {"f\0.py": "text"}])
def test_malformed_sources_are_refused(node, bad):
    async def body(c: TestClient):
        reply = await c.compute(square, sources=bad)
        assert isinstance(reply, ComputeFailed) and "malformed Compute: sources" in reply.error, reply
        cid = await c.ready(square)
        c.send(SubmitJobs(cid, [JobSpec(1001, serialization.dumps(((3,), {})), sources=bad),
                                JobSpec(1002, serialization.dumps(((3,), {})))]))
        bad_job, good_job = await c.wait_results(cid, [1001, 1002])
        assert bad_job.status == JobStatus.Terminated and "malformed job: sources" in bad_job.exception
        assert good_job.status == JobStatus.Finished and serialization.loads(good_job.result) == 9
        await c.close_computation(cid)

    client_test(node, body)
