"""A shared cluster's client attached to the node with its computation's key (Attach):
what jobs send comes on that connection unless they relay it, the job's final result waits
for Delivered, the client may send files for the computation, and the connection can do
nothing else."""

from __future__ import annotations

import asyncio

import pytest
from node_testkit import TestClient, client_test, ship_by_value, value

from dispy_core import serialization
from dispy_core.aio import open_channel
from dispy_core.errors import AuthenticationError
from dispy_core.messages import (
    Attach,
    Attached,
    Delivered,
    ErrorReport,
    FileData,
    FileSaved,
    JobFile,
    JobResults,
    SendFile,
    SubmitJobs,
)
from dispy_core.status import JobStatus

ship_by_value(__name__)

KEY = "0123456789abcdef" * 4


def chat():
    dispy_provisional_result("straight")  # noqa: F821
    dispy_provisional_result("relayed", relay=True)  # noqa: F821
    with open("f.txt", "w") as f:
        f.write("from the job")
    dispy_send_file("f.txt")  # noqa: F821
    return "done"


async def attach(node, cid: str, key: str = KEY) -> TestClient:
    a = TestClient()
    a.channel = await open_channel(node.ip, node.port, secret=key, key_id=cid, software="attach-tests",
                                   on_message=a._on_message, on_close=a._on_close, timeout=10)
    return a


async def nothing_within(client: TestClient, seconds: float) -> None:
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        msg = await client.recv(seconds)
        raise AssertionError(f"unexpected {msg!r}")


def test_an_attached_client_gets_what_jobs_send_and_holds_back_their_results(node):
    async def body(c: TestClient):
        cid = await c.ready(chat, options={"attach_key": KEY})
        for secret, key_id in (("another key, long enough" * 3, cid), (KEY, "no-such-computation")):
            with pytest.raises(AuthenticationError):
                await open_channel(node.ip, node.port, secret=secret, key_id=key_id, timeout=10)
        a = await attach(node, cid)
        assert await a.request(Attach(cid)) == Attached(cid)
        [job] = c.submit(cid, ())
        first, second = await a.recv(), await a.recv()
        assert isinstance(first, JobResults) and first.results[0].status == JobStatus.ProvisionalResult
        assert (first.results[0].job_id, value(first.results[0])) == (job, "straight")
        assert isinstance(second, JobFile) and (second.job_id, second.path) == (job, "f.txt")
        assert bytes(second.file.data) == b"from the job"
        relayed = await c.recv()  # relay=True: on the computation's own connection
        assert isinstance(relayed, JobResults) and value(relayed.results[0]) == "relayed"
        await nothing_within(c, 1.0)  # the final result waits until both items arrived
        a.send(Delivered(cid, [job]))
        await nothing_within(c, 0.5)
        a.send(Delivered(cid, [job]))
        done = await c.recv()
        assert isinstance(done, JobResults) and done.results[0].status == JobStatus.Finished
        assert serialization.loads(done.results[0].result) == "done"

        a.send(SubmitJobs(cid, []))  # an attached connection may do nothing else
        refused = await a.recv()
        assert isinstance(refused, ErrorReport) and "not allowed" in refused.reason
        assert type(await a.recv()).__name__ == "Closed"

        # Detached, the job's items go with its results; a new attach takes over again.
        [job2] = c.submit(cid, ())
        provisional, files, final = [], [], None
        while final is None:
            msg = await c.recv()
            if isinstance(msg, JobFile):
                files.append(msg.path)
                continue
            assert isinstance(msg, JobResults), msg
            for r in msg.results:
                assert r.job_id == job2
                if r.status == JobStatus.ProvisionalResult:
                    provisional.append(value(r))
                else:
                    final = value(r)
        assert (provisional, files, final) == (["straight", "relayed"], ["f.txt"], "done")
        b = await attach(node, cid)
        assert await b.request(Attach(cid)) == Attached(cid)
        await c.close_computation(cid)
        assert type(await b.recv()).__name__ == "Closed"  # closing the computation ends it
        with pytest.raises(AuthenticationError):  # and its key
            await open_channel(node.ip, node.port, secret=KEY, key_id=cid, timeout=10)

    client_test(node, body)


def before_and_after(go):
    import os
    import time
    dispy_provisional_result("before")  # noqa: F821
    while not os.path.exists(go):
        time.sleep(0.01)
    dispy_provisional_result("after")  # noqa: F821
    return "done"


def test_a_job_that_began_sending_through_the_scheduler_goes_on_that_way(node, tmp_path):
    # The two ways keep no order between them: had "after" gone on the connection
    # attached in between, it could overtake "before" (seen through a dispyscheduler).
    go = tmp_path / "go"

    async def body(c: TestClient):
        cid = await c.ready(before_and_after, options={"attach_key": KEY})
        [job] = c.submit(cid, (str(go),))
        before = await c.recv()
        assert isinstance(before, JobResults) and value(before.results[0]) == "before"
        a = await attach(node, cid)
        assert await a.request(Attach(cid)) == Attached(cid)
        go.touch()
        got = []
        while not got or got[-1] != "done":
            msg = await c.recv()
            assert isinstance(msg, JobResults), msg
            got += [value(r) for r in msg.results if r.job_id == job]
        assert got == ["after", "done"]
        await nothing_within(a, 0.5)
        a.close()
        await c.close_computation(cid)

    client_test(node, body)


def read(name):
    with open(name) as f:
        return f.read()


def test_an_attached_client_may_send_files_for_the_computation_s_directory(node):
    async def body(c: TestClient):
        cid = await c.ready(read, options={"attach_key": KEY, "attach_macs": False})
        a = TestClient()
        a.channel = await open_channel(node.ip, node.port, secret=KEY, key_id=cid, frame_macs=False,
                                       on_message=a._on_message, on_close=a._on_close, timeout=10)
        assert await a.request(Attach(cid)) == Attached(cid)
        saved = await a.request(SendFile(cid, FileData("note.txt", b"sent straight", 0o644, 0.0)))
        assert saved == FileSaved(cid, "note.txt", None)
        refused = await a.request(SendFile(cid, FileData("../escape.txt", b"x", 0o644, 0.0)))
        assert isinstance(refused, FileSaved) and refused.error
        other = await a.request(SendFile("another-computation", FileData("x.txt", b"x", 0o644, 0.0)))
        assert isinstance(other, FileSaved) and "not set up" in other.error
        [r] = await c.run_jobs(cid, ("note.txt",))
        assert value(r) == "sent straight"
        a.close()
        await c.close_computation(cid)

    client_test(node, body)


def test_a_computation_without_a_key_can_t_be_attached_to(node):
    async def body(c: TestClient):
        cid = await c.ready(chat)  # a JobCluster's: no attach_key
        with pytest.raises(AuthenticationError):
            await open_channel(node.ip, node.port, secret="", key_id=cid, timeout=10)
        other = await c.ready(chat, options={"attach_key": KEY})
        a = await attach(node, other)  # its key, but asking for another computation
        reply = await a.request(Attach(cid))
        assert isinstance(reply, Attached) and "another computation" in reply.error
        a.close()
        await c.close_computation(cid)
        await c.close_computation(other)

    client_test(node, body)
