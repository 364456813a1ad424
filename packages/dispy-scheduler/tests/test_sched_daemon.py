"""The daemon's side toward clients, in-process, with no node at all: a raw client
connection speaks the protocol (dispy_core.aio) to a Daemon on 127.0.0.1. Admission,
exclusive clusters waiting, bad input, Resume of unknown computations, dead clients.
(The whole path through nodes is tested in integration-tests/test_it_shared.py.)"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from dispy_core import aio, serialization
from dispy_core.messages import (
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    ErrorReport,
    InfoRequest,
    JobResults,
    JobSpec,
    Message,
    NodeInfo,
    Resume,
    Resumed,
    SubmitJobs,
    Welcome,
)
from dispy_scheduler.daemon import CLIENT_SLOTS, Daemon
from dispy_scheduler.options import SchedulerConfig


class Client:
    """A raw client connection: messages in a queue."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.channel: aio.Channel | None = None

    async def connect(self, port: int, secret: str = "") -> Client:
        self.channel = await aio.open_channel(
            "127.0.0.1", port, secret=secret, software="test", timeout=5,
            on_message=lambda ch, m: None if isinstance(m, Welcome) else self.inbox.put_nowait(m),
            on_close=lambda ch, exc: self.inbox.put_nowait(None))
        return self

    def send(self, msg: Message) -> None:
        assert self.channel is not None
        self.channel.send(msg)

    async def next(self, timeout: float = 5.0) -> Message | None:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def quiet(self, timeout: float = 0.5) -> bool:
        try:
            await asyncio.wait_for(self.inbox.get(), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return True
        return False


def compute_msg(**options: Any) -> Compute:
    payload = serialization.dumps({"computation": None})
    return Compute(uuid.uuid4().hex, "f", "function", payload, [], options={"nodes": [], **options})


async def run_daemon(tmp_path: Any, body: Any, **cfg: Any) -> None:
    config = SchedulerConfig(ip_addrs=["127.0.0.1"], scheduler_port=0, port=0, nodes=["127.0.0.9:1"],
                             dest_path_prefix=str(tmp_path), **cfg)
    daemon = Daemon(config)
    started = asyncio.Event()
    task = asyncio.create_task(daemon.run(lambda d: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    try:
        await body(daemon, daemon.listening[0][1])
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)


def test_info_compute_admitted_then_closed(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        c = await Client().connect(port)
        c.send(InfoRequest())
        info = await c.next()
        assert isinstance(info, NodeInfo) and info.cpus == CLIENT_SLOTS and info.name == "dispyscheduler"
        msg = compute_msg()
        c.send(msg)
        ready = await c.next()
        assert isinstance(ready, ComputeReady) and ready.compute_id == msg.compute_id
        assert [cl["state"] for cl in daemon.status()["clusters"]] == ["running"]
        c.send(CloseComputation(msg.compute_id))
        closed = await c.next()
        assert isinstance(closed, ComputationClosed)
        assert daemon.status()["clusters"] == []

    asyncio.run(run_daemon(tmp_path, body))


def test_exclusive_cluster_waits_and_later_ones_wait_behind_it(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        first, excl, later = [await Client().connect(port) for _ in range(3)]
        m1, m2, m3 = compute_msg(), compute_msg(exclusive=True), compute_msg()
        first.send(m1)
        assert isinstance(await first.next(), ComputeReady)
        excl.send(m2)
        await asyncio.sleep(0.2)
        later.send(m3)
        assert await excl.quiet() and await later.quiet()  # both wait
        assert [c["state"] for c in daemon.status()["clusters"]] == ["running", "waiting", "waiting"]
        first.send(CloseComputation(m1.compute_id))
        assert isinstance(await first.next(), ComputationClosed)
        assert isinstance(await excl.next(), ComputeReady)
        assert await later.quiet()  # still behind the exclusive one
        excl.send(CloseComputation(m2.compute_id))
        assert isinstance(await excl.next(), ComputationClosed)
        assert isinstance(await later.next(), ComputeReady)

    asyncio.run(run_daemon(tmp_path, body))


def test_bad_input_gets_a_clear_answer(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        c = await Client().connect(port)
        c.send(SubmitJobs("nope", []))  # no computation on this connection
        err = await c.next()
        assert isinstance(err, ErrorReport) and "no such computation" in err.reason
        bad = compute_msg()
        c.send(Compute(bad.compute_id, "f", "function", bad.payload, [], options={"nodes": [{"host": 5}]}))
        failed = await c.next()
        assert isinstance(failed, ComputeFailed) and "malformed node spec" in failed.error
        c.send(Resume("unknown-computation"))
        resumed = await c.next()
        assert isinstance(resumed, Resumed) and not resumed.running
        ok = compute_msg()
        c.send(ok)
        assert isinstance(await c.next(), ComputeReady)
        c.send(ok)  # a second computation on the same connection
        again = await c.next()
        assert isinstance(again, ComputeFailed) and "already has a computation" in again.error

    asyncio.run(run_daemon(tmp_path, body))


def test_wrong_cluster_secret_is_refused(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        with pytest.raises(Exception, match="secret"):
            await Client().connect(port, secret="wrong")
        c = await Client().connect(port, secret="right")
        c.send(InfoRequest())
        assert isinstance(await c.next(), NodeInfo)

    asyncio.run(run_daemon(tmp_path, body, cluster_secret="right"))


def test_job_pinned_to_an_unknown_node_is_cancelled_with_the_reason(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        c = await Client().connect(port)
        msg = compute_msg()
        c.send(msg)
        assert isinstance(await c.next(), ComputeReady)
        args = serialization.dumps(((1,), {}))
        c.send(SubmitJobs(msg.compute_id, [JobSpec(7, args, node="10.1.2.3")]))
        results = await c.next()
        assert isinstance(results, JobResults)
        assert results.results[0].job_id == 7 and "not known to dispyscheduler" in (results.results[0].exception or "")

    asyncio.run(run_daemon(tmp_path, body))


def test_a_client_gone_past_the_window_is_closed_and_the_next_cluster_admitted(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        daemon.client_window = 0.5
        gone, waiting = await Client().connect(port), await Client().connect(port)
        m1, m2 = compute_msg(exclusive=True), compute_msg()
        gone.send(m1)
        assert isinstance(await gone.next(), ComputeReady)
        waiting.send(m2)
        assert await waiting.quiet()
        assert gone.channel is not None
        gone.channel.abort()  # the client dies
        ready = await waiting.next(timeout=10)  # closed after the window: the next one runs
        assert isinstance(ready, ComputeReady)
        assert [c["state"] for c in daemon.status()["clusters"]] == ["running"]

    asyncio.run(run_daemon(tmp_path, body))


def test_expiring_kept_results_removes_only_the_scheduler_s_files(tmp_path):
    import os
    import time

    from dispy_scheduler.daemon import _Orphan

    old = time.time() - 3600
    for name in ("old.results", "old.results.tmp", "new.results", "report.txt", "data.results.bak"):
        (tmp_path / name).write_text(name)
    (tmp_path / "dir.results").mkdir()
    for name in ("old.results", "old.results.tmp", "report.txt", "data.results.bak", "dir.results"):
        os.utime(tmp_path / name, (old, old))
    _Orphan.expire(str(tmp_path), 60.0)
    assert sorted(os.listdir(tmp_path)) == ["data.results.bak", "dir.results", "new.results", "report.txt"]
