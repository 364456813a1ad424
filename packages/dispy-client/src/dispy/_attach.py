"""A SharedJobCluster's own connection to a node: what jobs send while they run comes
straight from the node instead of through dispyscheduler.

When a node is ready for the cluster, the scheduler names the key to attach with
(``ClusterNode.attach``). The client connects to the node, authenticates with that key
(``Hello.key_id``: the node-side compute id) and sends ``Attach``. From then on the
node sends the computation's provisional results and ``dispy_send_file`` files on this
connection, unless the job passed ``relay=True``; the client answers ``Delivered`` for
each, and the node holds the job's final result (which comes through the scheduler) until
the job's items have arrived, so a file is always there before its job is done.

If the node can't be reached or the connection drops, nothing is lost: the node sends
everything through the scheduler again, as it does for relay=True.

The other way, ``cluster.send_file(path, node)`` sends the file on this connection
(unless ``relay=True``), the node answering ``FileSaved``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from dispy_core import aio, config
from dispy_core.errors import ConnectionClosed, DispyError
from dispy_core.messages import (
    Attach,
    Attached,
    Delivered,
    FileData,
    FileSaved,
    JobFile,
    JobResults,
    Message,
    Ping,
    Pong,
    SendFile,
    Welcome,
)
from dispy_core.session import describe_connect_error

__all__ = ["AttachLink"]

log = logging.getLogger("dispy")


class AttachLink:
    """The connection to one node (see the module docstring). ``on_item(uid, item)`` is
    called in the loop for each JobResult (provisional) or JobFile, ``uid`` being the
    node-side job id."""

    def __init__(self, host: str, port: int, compute_id: str, key: str, macs: bool, *, ssl: Any, software: str,
                 local_addr: tuple[str, int] | None, on_item: Callable[[int, Any], None]) -> None:
        self.host, self.port = host, port
        self.label = f"{host}:{port}"
        self.compute_id = compute_id
        self._key = key
        self._macs = macs  # frame MACs (when the cluster has a secret)
        self._ssl = ssl
        self._software = software
        self._local_addr = local_addr
        self._on_item = on_item
        self._channel: aio.Channel | None = None
        self._attached: asyncio.Future[str] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._file_waiters: deque[asyncio.Future[str | None]] = deque()  # FileSaved, in order
        self.attached = False

    async def run(self) -> None:
        """Connect, attach, and serve until the connection closes or the task is cancelled."""
        loop = asyncio.get_running_loop()
        self._attached = loop.create_future()
        self._closed = loop.create_future()
        try:
            self._channel = await aio.open_channel(
                self.host, self.port, secret=self._key, software=self._software, key_id=self.compute_id,
                frame_macs=self._macs,
                on_message=self._on_message, on_close=self._on_close, timeout=config.MsgTimeout,
                local_addr=self._local_addr, ssl=self._ssl)
            self._channel.send(Attach(self.compute_id))
            error = await asyncio.wait_for(asyncio.shield(self._attached), config.MsgTimeout)
        except (OSError, TimeoutError, asyncio.TimeoutError, DispyError) as exc:
            log.info("node %s: can't attach (%s); its jobs' files and provisional results come through "
                     "dispyscheduler", self.label, describe_connect_error(exc, tls=self._ssl is not None))
            self.close()
            return
        except asyncio.CancelledError:
            self.close()
            raise
        if error:
            log.info("node %s: can't attach: %s; its jobs' files and provisional results come through "
                     "dispyscheduler", self.label, error)
            self.close()
            return
        self.attached = True
        log.debug("attached to node %s", self.label)
        try:
            await self._closed
        finally:
            self.attached = False
            self.close()

    def close(self) -> None:
        if self._channel is not None and not self._channel.closed:
            self._channel.close()

    async def send_file(self, file: FileData) -> str | None:
        """Save ``file`` in the computation's directory on the node (send_file): None
        once saved, else why not. Raises ConnectionClosed if the connection closes first
        (the caller may then send it through the scheduler)."""
        channel, closed = self._channel, self._closed
        if not self.attached or channel is None or channel.closed or closed is None or closed.done():
            raise ConnectionClosed(f"not attached to node {self.label}")
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._file_waiters.append(waiter)
        channel.send(SendFile(self.compute_id, file))
        pending: list[asyncio.Future[Any]] = [waiter, closed]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            raise ConnectionClosed(f"node {self.label} closed the connection before saving {file.name}")
        return waiter.result()

    def _on_message(self, channel: aio.Channel, msg: Message) -> None:
        t = type(msg)
        if t is JobResults:
            ids = []
            for r in msg.results:  # type: ignore[attr-defined]
                self._deliver(r.job_id, r)
                ids.append(r.job_id)
            channel.send(Delivered(self.compute_id, ids))
        elif t is JobFile:
            self._deliver(msg.job_id, msg)  # type: ignore[attr-defined]
            channel.send(Delivered(self.compute_id, [msg.job_id]))  # type: ignore[attr-defined]
        elif t is FileSaved:
            if self._file_waiters:
                waiter = self._file_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(msg.error)  # type: ignore[attr-defined]
        elif t is Attached:
            if self._attached is not None and not self._attached.done():
                self._attached.set_result(msg.error or "")  # type: ignore[attr-defined]
        elif t is Ping:
            channel.send(Pong(msg.nonce))  # type: ignore[attr-defined]
        elif t is not Welcome:
            log.debug("node %s: unexpected %s on the attached connection", self.label, t.__name__)

    def _deliver(self, uid: Any, item: Any) -> None:
        try:
            self._on_item(uid, item)
        except Exception:  # a bug here must not cost the node's Delivered
            log.exception("node %s: handling what job %s sent failed", self.label, uid)

    def _on_close(self, channel: aio.Channel, exc: BaseException | None) -> None:
        if self._attached is not None and not self._attached.done():
            self._attached.set_result(f"the connection closed ({exc or 'by the node'})")
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
