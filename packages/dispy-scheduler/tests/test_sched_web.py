"""dispyscheduler --httpd in-process: a Daemon on 127.0.0.1 with its web monitor on a free
port, raw client connections (no dispy client, no node: the node named with -n does not
answer), and the views called from other threads as the web server calls them.

The whole path with real nodes, SharedJobCluster clients and a browser is in
integration-tests/test_it_scheduler_httpd.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.request
import uuid
from typing import Any

import pytest

from dispy_core import aio, serialization
from dispy_core.messages import (
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeReady,
    JobResults,
    JobSpec,
    Message,
    SubmitJobs,
    Welcome,
)
from dispy_core.status import JobStatus
from dispy_scheduler import web
from dispy_scheduler.daemon import Daemon
from dispy_scheduler.options import SchedulerConfig


class Client:
    """A raw client connection: messages in a queue."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.channel: aio.Channel | None = None

    async def connect(self, port: int) -> Client:
        self.channel = await aio.open_channel(
            "127.0.0.1", port, secret="", software="test", timeout=5,
            on_message=lambda ch, m: None if isinstance(m, Welcome) else self.inbox.put_nowait(m),
            on_close=lambda ch, exc: self.inbox.put_nowait(None))
        return self

    def send(self, msg: Message) -> None:
        assert self.channel is not None
        self.channel.send(msg)

    async def next(self, kind: type, timeout: float = 5.0) -> Any:
        """The next message of that kind (others, e.g. JobsStarted, are skipped)."""
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if msg is None or isinstance(msg, kind):
                return msg

    async def admitted(self, port: int, name: str = "f") -> str:
        await self.connect(port)
        payload = serialization.dumps({"computation": None})
        msg = Compute(uuid.uuid4().hex, name, "function", payload, [], options={"nodes": []})
        self.send(msg)
        assert isinstance(await self.next(ComputeReady), ComputeReady)
        return msg.compute_id


def snapshot(daemon: Daemon) -> dict[str, Any]:
    """GET /api/snapshot (blocking: call it in a thread)."""
    assert daemon.web_url is not None
    with urllib.request.urlopen(daemon.web_url + "api/snapshot", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def run_daemon(tmp_path: Any, body: Any, **cfg: Any) -> Daemon:
    config = SchedulerConfig(ip_addrs=["127.0.0.1"], scheduler_port=0, port=0, nodes=["127.0.0.9:1"],
                             dest_path_prefix=str(tmp_path), httpd=True, http_port=0, **cfg)
    daemon = Daemon(config)
    started = asyncio.Event()
    task = asyncio.create_task(daemon.run(lambda d: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    try:
        await body(daemon, daemon.listening[0][1])
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)
    return daemon


def test_clusters_come_and_go_on_the_monitor_named_with_their_client(tmp_path: Any) -> None:
    async def body(daemon: Daemon, port: int) -> None:
        assert daemon.web_url is not None and daemon.web_url.startswith("http://127.0.0.1:")
        assert daemon.status()["web"] == daemon.web_url
        one, two, other = Client(), Client(), Client()
        cid1 = await one.admitted(port)
        await two.admitted(port)  # the same name from the same address: told apart
        await other.admitted(port, name="render")
        assert daemon.web is not None
        names = sorted(v.name for v in daemon.web.backend.views())
        assert names == ["f @ 127.0.0.1", "f @ 127.0.0.1 #2", "render @ 127.0.0.1"]
        snap = await asyncio.to_thread(snapshot, daemon)
        assert sorted(c["name"] for c in snap["clusters"]) == names
        one.send(CloseComputation(cid1))
        assert isinstance(await one.next(ComputationClosed), ComputationClosed)
        assert sorted(v.name for v in daemon.web.backend.views()) == ["f @ 127.0.0.1 #2", "render @ 127.0.0.1"]
        snap = await asyncio.to_thread(snapshot, daemon)
        assert sorted(c["name"] for c in snap["clusters"]) == ["f @ 127.0.0.1 #2", "render @ 127.0.0.1"]

    asyncio.run(run_daemon(tmp_path, body))


def test_views_called_from_other_threads_act_in_the_loop(tmp_path: Any, monkeypatch: Any) -> None:
    loop_thread: list[threading.Thread] = []

    async def body(daemon: Daemon, port: int) -> None:
        loop_thread.append(threading.current_thread())
        client = Client()
        cid = await client.admitted(port)
        args = serialization.dumps(((1,), {}))
        client.send(SubmitJobs(cid, [JobSpec(1, args), JobSpec(2, args), JobSpec(3, args, node="10.1.2.3")]))
        # job 3 is pinned to a node the scheduler does not know: it ends at once, cancelled
        results = await client.next(JobResults)
        assert [r.job_id for r in results.results] == [3]
        assert daemon.web is not None
        (view,) = daemon.web.backend.views()
        assert isinstance(view, web.SchedulerView)
        # each engine call is made in the loop's thread, whoever calls the view
        engine = view.cluster.engine
        assert engine is not None
        seen: list[threading.Thread] = []
        real_counts = engine.job_counts

        def counts() -> dict[str, int]:
            seen.append(threading.current_thread())
            return real_counts()

        monkeypatch.setattr(engine, "job_counts", counts)
        got = await asyncio.to_thread(view.job_counts)
        assert got == {"submitted": 3, "running": 0, "done": 0, "failed": 1, "pending": 2}, got
        assert seen and set(seen) == set(loop_thread)  # (the server samples it too: also in the loop)
        assert view.job_counts() == got  # in the loop's own thread: called directly
        assert await asyncio.to_thread(view.nodes) == []  # the -n node never answered
        assert await asyncio.to_thread(view.node_jobs, "127.0.0.9") == []

        # cancel by the daemon's id of a job (what the node page shows as uid)
        uid = view.cluster.jobs[1]._uid
        assert await asyncio.to_thread(view.cancel, str(uid)) == 0
        results = await client.next(JobResults)
        assert [(r.job_id, r.status) for r in results.results] == [(1, JobStatus.Cancelled)]
        assert await asyncio.to_thread(view.job_counts) == {
            "submitted": 3, "running": 0, "done": 0, "failed": 2, "pending": 1}
        for bad in (str(uid), "12345", "not-a-number"):  # gone now, never was, not an id
            with pytest.raises(KeyError):
                await asyncio.to_thread(view.cancel, bad)

        # node actions on a node that does not serve the cluster: -1, as the engine says
        assert await asyncio.to_thread(view.set_node_cpus, "127.0.0.9", 1) == -1
        assert await asyncio.to_thread(view.deallocate_node, "127.0.0.9") == -1
        assert await asyncio.to_thread(view.close_node, "127.0.0.9") == -1
        with pytest.raises(ValueError, match="wildcard"):
            await asyncio.to_thread(view.add_node, "127.0.0.*", None, 0)
        with pytest.raises(ValueError, match="IP address or host name"):
            await asyncio.to_thread(view.allocate_node, " ")

    asyncio.run(run_daemon(tmp_path, body))


def test_a_view_after_the_daemon_ended_shows_the_last_state(tmp_path: Any) -> None:
    views: list[web.SchedulerView] = []

    async def body(daemon: Daemon, port: int) -> None:
        client = Client()
        cid = await client.admitted(port)
        client.send(SubmitJobs(cid, [JobSpec(1, serialization.dumps(((1,), {})))]))
        assert daemon.web is not None
        for _ in range(100):
            (view,) = daemon.web.backend.views()
            assert isinstance(view, web.SchedulerView)
            if (await asyncio.to_thread(view.job_counts))["submitted"] == 1:
                break
            await asyncio.sleep(0.05)
        views.append(view)

    asyncio.run(run_daemon(tmp_path, body))
    (view,) = views
    # the loop is closed: the last counts stay, and actions say why nothing is done
    assert view.job_counts()["submitted"] == 1
    with pytest.raises(web.SchedulerGone):
        view.cancel("1")


def test_a_taken_web_port_stops_the_start_before_clients_are_served(tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = SchedulerConfig(ip_addrs=["127.0.0.1"], scheduler_port=0, port=0, nodes=["127.0.0.9:1"],
                                 dest_path_prefix=str(tmp_path), httpd=True, http_port=port)
        daemon = Daemon(config)

        async def run() -> None:
            await daemon.run(lambda d: pytest.fail("started"))

        with pytest.raises(OSError, match=f"web server can't listen on 127.0.0.1:{port}"):
            asyncio.run(run())
        assert daemon.listening == []


def test_a_taken_client_port_leaves_no_web_server_behind(tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = SchedulerConfig(ip_addrs=["127.0.0.1"], scheduler_port=taken.getsockname()[1], port=0,
                                 nodes=["127.0.0.9:1"], dest_path_prefix=str(tmp_path), httpd=True, http_port=0)
        daemon = Daemon(config)

        async def run() -> None:
            await daemon.run(lambda d: pytest.fail("started"))

        with pytest.raises(OSError):
            asyncio.run(run())
    assert daemon.web is not None
    with socket.socket() as again:  # the web monitor's port is free again
        again.bind(("127.0.0.1", daemon.web.server.port))


def test_a_token_is_made_beyond_loopback_and_the_url_carries_the_token(tmp_path: Any) -> None:
    # (never started on 0.0.0.0: tests listen on loopback only)
    class Owner:
        cfg = SchedulerConfig(ip_addrs=["127.0.0.1"], httpd=True, http_host="0.0.0.0")

    made = web.SchedulerWeb(Owner())  # type: ignore[arg-type]
    assert made.server.token and len(made.server.token) >= 20
    assert web.SchedulerWeb(Owner()).server.token != made.server.token  # random

    async def body(daemon: Daemon, port: int) -> None:
        assert daemon.web_url is not None and daemon.web_url.endswith("/?token=s3cret")
        assert daemon.web_url.startswith("http://127.0.0.1:")

    asyncio.run(run_daemon(tmp_path, body, http_token="s3cret"))
