"""The node tests' toolkit: a small asyncio client that speaks the wire protocol
(dispy_core.aio + messages + serialization) to a real dispynode.

Imported by the test modules as ``node_testkit`` (conftest.py puts this directory on
sys.path: with --import-mode=importlib a conftest can't be imported by name).
"""

from __future__ import annotations

import asyncio
import itertools
import platform
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from dispy_core import serialization
from dispy_core.aio import Channel, open_channel
from dispy_core.messages import (
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    FileData,
    JobResult,
    JobResults,
    JobSpec,
    Message,
    SubmitJobs,
    Welcome,
)
from dispy_core.sources import read_sources
from dispy_core.testing import NodeProcess

SECRET = "node-test-secret"
MAX_FILE_SIZE = 64 * 1024


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run one test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ship_by_value(module_name: str) -> None:
    """Test modules can't be imported on the node: send their functions by value."""
    serialization.register_by_value(sys.modules[module_name])


class Closed(Message):
    """Put in the inbox when the connection ends."""

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc


class TestClient:
    """A minimal client: sends requests, queues everything the node sends back."""

    __test__ = False
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.channel: Channel | None = None
        self.results: dict[str, dict[Any, JobResult]] = {}
        self.others: list[Message] = []

    @classmethod
    async def connect(cls, node: NodeProcess, secret: str = SECRET) -> TestClient:
        client = cls()
        client.channel = await open_channel(node.ip, node.port, secret=secret, software="node-tests",
                                            on_message=client._on_message, on_close=client._on_close,
                                            timeout=10)
        return client

    def _on_message(self, ch: Channel, msg: Message) -> None:
        if not isinstance(msg, Welcome):
            self.inbox.put_nowait(msg)

    def _on_close(self, ch: Channel, exc: BaseException | None) -> None:
        self.inbox.put_nowait(Closed(exc))

    def send(self, msg: Message) -> None:
        assert self.channel is not None
        self.channel.send(msg)

    async def recv(self, timeout: float = 15.0) -> Message:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def request(self, msg: Message, timeout: float = 15.0) -> Message:
        self.send(msg)
        return await self.next_reply(timeout)

    async def next_reply(self, timeout: float = 15.0) -> Message:
        """The next message that is not a JobResults (those are filed by job id)."""
        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, JobResults):
                self._file(msg)
            else:
                return msg

    def _file(self, msg: JobResults) -> None:
        box = self.results.setdefault(msg.compute_id, {})
        for r in msg.results:
            box[r.job_id] = r

    async def compute(self, computation: Any, *, depends: Iterable[Any] = (), setup: Any = None,
                      cleanup: Any = True, setup_args: tuple[Any, ...] = (), files: Iterable[FileData] = (),
                      kind: str = "function", python_version: str | None = None,
                      **kwargs: Any) -> ComputeReady | ComputeFailed:
        cid = uuid.uuid4().hex
        payload = {"computation": computation, "depends": list(depends), "setup": setup, "cleanup": cleanup}
        code_files: set[str] = set()  # as a client does: the source text of by-value code goes along
        buffers = serialization.dumps(payload, code_files)
        kwargs.setdefault("sources", read_sources(code_files))
        msg = Compute(cid, getattr(computation, "__name__", str(computation)), kind,
                      buffers, serialization.dumps(tuple(setup_args)),
                      files=list(files), python_version=python_version or platform.python_version(),
                      **kwargs)
        reply = await self.request(msg, timeout=20)
        assert isinstance(reply, (ComputeReady, ComputeFailed)), reply
        assert reply.compute_id == cid
        return reply

    async def ready(self, computation: Any, **kwargs: Any) -> str:
        reply = await self.compute(computation, **kwargs)
        assert isinstance(reply, ComputeReady), getattr(reply, "error", reply)
        return reply.compute_id

    def submit(self, cid: str, *argss: tuple[Any, ...], files: list[FileData] | None = None,
               depends: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
               timeout: Any = None) -> list[int]:
        specs = []
        for args in argss:
            job_id = next(self._ids)
            code_files: set[str] = set()
            specs.append(JobSpec(job_id, serialization.dumps((tuple(args), kwargs or {}), code_files),
                                 list(files or []),
                                 serialization.dumps(depends, code_files) if depends is not None else None,
                                 timeout, sources=read_sources(code_files)))
        self.send(SubmitJobs(cid, specs))
        return [s.job_id for s in specs]

    async def wait_results(self, cid: str, job_ids: Iterable[Any], timeout: float = 20.0) -> list[JobResult]:
        job_ids = list(job_ids)
        box = self.results.setdefault(cid, {})

        async def collect() -> None:
            while not all(j in box for j in job_ids):
                msg = await self.recv()
                if isinstance(msg, JobResults):
                    self._file(msg)
                else:
                    self.others.append(msg)

        await asyncio.wait_for(collect(), timeout)
        return [box[j] for j in job_ids]

    async def run_jobs(self, cid: str, *argss: tuple[Any, ...], **kw: Any) -> list[JobResult]:
        return await self.wait_results(cid, self.submit(cid, *argss, **kw))

    async def close_computation(self, cid: str, terminate: bool = False) -> ComputationClosed:
        reply = await self.request(CloseComputation(cid, terminate), timeout=30)
        assert isinstance(reply, ComputationClosed), reply
        return reply

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def value(result: JobResult) -> Any:
    assert result.result is not None, result.exception
    return serialization.loads(result.result)


def client_test(node: NodeProcess, body: Callable[[TestClient], Coroutine[Any, Any, Any]],
                timeout: float = 30.0, secret: str = SECRET) -> Any:
    """Connect a TestClient to ``node``, run ``body(client)``, close."""

    async def main() -> Any:
        client = await TestClient.connect(node, secret)
        try:
            return await body(client)
        finally:
            client.close()

    return run(main(), timeout)
