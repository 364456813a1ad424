"""Fixtures for the client's tests.

* ``fake_node``: an in-process stand-in for dispynode that speaks the client<->node
  protocol of :mod:`dispy_core.messages` on 127.0.0.1 (port 0), runs function jobs in its
  own thread and records what it received. It makes the failure paths (refused setup,
  other Python, dropped connections, held jobs) deterministic and fast.
* ``real_node``: a real ``dispynode`` subprocess (:class:`dispy_core.testing.NodeProcess`),
  skipped when the node's Python can't import ``dispy_node``.

Everything binds to loopback addresses and nodes are always named: nothing broadcasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import platform
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dispy_core.serialization import dumps
from dispy_core import serialization
from dispy_core.aio import Channel
from dispy_core.connection import Connection
from dispy_core.messages import (
    AvailInfo,
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    ErrorReport,
    FilesHeld,
    FilesQuery,
    InfoRequest,
    JobResult,
    JobResults,
    JobSpec,
    Message,
    AckResults,
    NodeInfo,
    NodeLeaving,
    Resume,
    Resumed,
    SubmitJobs,
    Welcome,
)
from dispy_core.status import JobStatus
from dispy_core.testing import NodeProcess, node_python


class FakeNode:
    """A protocol-level dispynode in a thread of the test process (see module doc)."""

    def __init__(self, *, cpus: int = 2, secret: str = "", ip: str = "127.0.0.1",
                 name: str = "fakenode", python_version: str | None = None,
                 fail_compute: str | None = None, error_reports: int = 0,
                 hold: bool = False, port: int = 0, setup_time: float = 0.0,
                 resume: bool = False, held_files: list[str] | None = None,
                 kept_changed_once: bool = False) -> None:
        self.cpus = cpus
        # FilesQuery: None answers as a node that does not know it (ErrorReport); else the
        # names it claims to hold. kept_changed_once: the first Compute with kept files is
        # refused naming them all (as if they changed meanwhile).
        self.held_files = held_files
        self.kept_changed_once = kept_changed_once
        self.queries: list[FilesQuery] = []
        self.secret = secret
        self.ip = ip
        self.name = name
        self.python_version = python_version or platform.python_version()
        self.fail_compute = fail_compute
        self.error_reports = error_reports
        self.setup_time = setup_time
        self.computes: list[Compute] = []
        self.jobs: list[JobSpec] = []
        self.batches: list[int] = []
        self.closes: list[CloseComputation] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self._held: list[tuple[Channel, JobSpec]] = []
        self._hold = hold
        self._leaving = False
        self.resume = resume  # keep computations across dropped connections (else: "restarted")
        self.unacked: dict[int, JobResult] = {}  # final results sent and not acknowledged
        self.acked: list[int] = []
        self.resumes = 0
        self._channels: list[Channel] = []
        self._state: dict[str, Any] | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fakenode", daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(self._factory, ip, port), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    # -- test controls ---------------------------------------------------------------------
    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return func(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def release(self) -> None:
        """Run the jobs held so far, and every later job at once."""
        def go() -> None:
            self._hold = False
            held, self._held = self._held, []
            for ch, spec in held:
                self._run(ch, spec)
        self.call(go)

    def leave(self) -> None:
        """Shut down as dispynode does on SIGINT: tell the clients (NodeLeaving), giving
        back the jobs held so far and every later one."""
        def go() -> None:
            self._leaving = True
            held, self._held = self._held, []
            for ch in list(self._channels):
                if isinstance(ch.user, dict):
                    back = [spec for c, spec in held if c is ch]
                    self.in_flight -= len(back)
                    ch.send(NodeLeaving(ch.user["compute"].compute_id, "fakenode is shutting down", back))
        self.call(go)

    def drop(self) -> None:
        """Close every client connection abruptly (the node "dies")."""
        def go() -> None:
            for ch in list(self._channels):
                ch.abort()
        self.call(go)

    def stop(self) -> None:
        def go() -> None:
            self.server.close()
            for ch in list(self._channels):
                ch.abort()
        if self.loop.is_running():
            self.call(go)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    # -- the protocol --------------------------------------------------------------------------
    def _factory(self) -> Channel:
        ch = Channel(Connection(initiator=False, secret=self.secret, software="fakenode"),
                     self._on_message, self._on_close)
        self._channels.append(ch)
        self.connections += 1
        return ch

    def _on_close(self, ch: Channel, exc: BaseException | None) -> None:
        if ch in self._channels:
            self._channels.remove(ch)

    def _on_message(self, ch: Channel, msg: Message) -> None:
        if isinstance(msg, Welcome):
            return
        if isinstance(msg, InfoRequest):
            if self.error_reports > 0:
                self.error_reports -= 1
                ch.send(ErrorReport("node busy"))
                return
            ch.send(NodeInfo(self.name, self.ip, self.port, self.cpus, self.cpus, "Linux-fake-x86_64",
                             self.python_version, "fakenode 0", AvailInfo(90.0, 1 << 30, 1 << 34, 1.0)))
        elif isinstance(msg, FilesQuery):
            self.queries.append(msg)
            if self.held_files is None:
                ch.send(ErrorReport("FilesQuery is not a request dispynode serves"))
            else:
                ch.send(FilesHeld([f.name for f in msg.files if f.name in self.held_files]))
        elif isinstance(msg, Compute):
            self.computes.append(msg)
            if msg.kept and self.kept_changed_once:
                self.kept_changed_once = False
                ch.send(ComputeFailed(msg.compute_id, "files changed", [k.name for k in msg.kept]))
                return
            if self.fail_compute:
                ch.send(ComputeFailed(msg.compute_id, self.fail_compute))
                return
            payload = serialization.loads(msg.payload)
            ch.user = self._state = {"compute": msg, "payload": payload}
            cpus = min(self.cpus, msg.cpus) if msg.cpus else self.cpus
            ready = ComputeReady(msg.compute_id, cpus, "/fake/dest")
            self.loop.call_later(self.setup_time, lambda: None if ch.closed else ch.send(ready))
        elif isinstance(msg, AckResults):
            self._ack(msg.job_ids)
        elif isinstance(msg, Resume):
            self.resumes += 1
            known = [c for c in self.computes if c.compute_id == msg.compute_id]
            if not (self.resume and known and self._state is not None):
                ch.send(Resumed(msg.compute_id, False))
                return
            ch.user = self._state
            self._held = [(ch, spec) for _c, spec in self._held]  # the jobs go on, for the new connection
            if self.unacked:  # sent before, maybe lost: all again (the client deduplicates)
                ch.send(JobResults(msg.compute_id, list(self.unacked.values())))
            ch.send(Resumed(msg.compute_id, True, len(self._held)))
        elif isinstance(msg, SubmitJobs) and self._leaving:
            ch.send(NodeLeaving(msg.compute_id, "fakenode is shutting down", msg.jobs))
        elif isinstance(msg, SubmitJobs):
            self._ack(msg.acks)
            self.batches.append(len(msg.jobs))
            self.in_flight += len(msg.jobs)
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            for spec in msg.jobs:
                self.jobs.append(spec)
                if self._hold:
                    self._held.append((ch, spec))
                else:
                    self.loop.call_soon(self._run, ch, spec)
        elif isinstance(msg, CloseComputation):
            self.closes.append(msg)
            if msg.terminate:
                held, self._held = [(c, s) for c, s in self._held if c is not ch], \
                    [(c, s) for c, s in self._held if c is ch]
                for _, spec in self._held:
                    self._reply(ch, JobResult(spec.job_id, JobStatus.Terminated))
                self._held = held
            ch.send(ComputationClosed(msg.compute_id))

    def _run(self, ch: Channel, spec: JobSpec) -> None:
        if ch.closed:
            return
        state = ch.user
        compute: Compute = state["compute"]
        start = time.time()
        if compute.kind == "program":
            args, _ = serialization.loads(spec.args)
            result = JobResult(spec.job_id, JobStatus.Finished, dumps(0),
                               b"ran " + " ".join(args).encode(), b"", None, start, time.time())
            self._reply(ch, result)
            return
        func = state["payload"]["computation"]
        out = io.StringIO()
        exception = None
        value: Any = None
        try:
            args, kwargs = serialization.loads(spec.args)
            with contextlib.redirect_stdout(out):
                value = func(*args, **kwargs)
        except Exception:
            exception = traceback.format_exc()
        self._reply(ch, JobResult(spec.job_id, JobStatus.Finished, dumps(value),
                                  out.getvalue(), "", exception, start, time.time()))

    def _reply(self, ch: Channel, result: JobResult) -> None:
        self.in_flight -= 1
        self.unacked[result.job_id] = result
        if not ch.closed:
            ch.send(JobResults(ch.user["compute"].compute_id, [result]))

    def _ack(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            self.acked.append(job_id)
            self.unacked.pop(job_id, None)


@pytest.fixture
def fake_node() -> Iterator[Callable[..., FakeNode]]:
    """Factory: fake_node(**options) -> a running FakeNode, stopped after the test."""
    nodes: list[FakeNode] = []

    def make(**kwargs: Any) -> FakeNode:
        node = FakeNode(**kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def clusters() -> Iterator[list[Any]]:
    """Clusters appended here are closed (terminating jobs) after the test."""
    made: list[Any] = []
    yield made
    for cluster in made:
        cluster.close(timeout=0, terminate=True)


@pytest.fixture(autouse=True)
def _dispy_log_level() -> Iterator[None]:
    # JobCluster(loglevel=...) sets the "dispy" logger's level: keep tests independent.
    logger = logging.getLogger("dispy")
    level = logger.level
    yield
    logger.setLevel(level)


@functools.cache
def node_available() -> str:
    """'' if the node's Python can run dispy_node, else why not."""
    try:
        proc = subprocess.run([node_python(), "-c", "import dispy_node.cli"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="module")
def real_node() -> Iterator[NodeProcess]:
    """A real dispynode with 2 CPUs on 127.0.0.1, shared by a test module."""
    why = node_available()
    if why:
        pytest.skip(f"dispy_node is not available to {node_python()}: {why}")
    with NodeProcess("127.0.0.1", "-c", "2") as node:
        yield node
