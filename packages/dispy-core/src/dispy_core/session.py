"""One node's conversation with the cluster, from TCP connect to close.

A :class:`NodeSession` runs in the cluster's event loop and reports to its owner (a
:class:`SessionOwner`: a :class:`dispy_core.engine.Engine`, such as the client's Runtime
or dispyscheduler's engines, see docs/design/shared-scheduler.md)::

    connect (aio.open_channel: handshake, secret check)
    InfoRequest  -> NodeInfo        Python version check, duplicate check, allocate()
    [FilesQuery  -> FilesHeld]      with a dest_path: files the node holds are not sent
    Compute      -> ComputeReady    the node is ready: the runtime starts sending jobs
                 -> ComputeFailed   the node refused or setup failed: don't use it
    ... JobResults go straight to the runtime ...
    connection closed               the runtime abandons the node's jobs in flight

A named "node" may be a dispynetrelay (dispy-relay), which answers InfoRequest with
RelayNodes instead of NodeInfo: the session hands each node listed to the owner
(``relay_nodes``: they get sessions of their own), passes on the lists the relay sends
later on that connection, and connects to the relay again when it drops, as to a named
node, so that a restarted relay is used again.

Nodes named explicitly are retried, with back-off up to a few seconds, while they can't
be reached or answer with a transient error, and after a served node's connection drops.
A node that answers with something that is not dispy's protocol (a ProtocolError: garbage,
wrong field types) counts as one that could not be reached: it is retried the same way,
and a discovered one is tried again when discovery finds it again (the engine forgets it,
see :attr:`NodeSession.definite`). Definite answers (ComputeFailed, another Python
version, ``allocate()`` returning 0) are final. Every reason a node can't be used is logged once per node per distinct reason at
WARNING level and kept for the summary that ``wait()`` logs on a timeout: a cluster that
finds no node says so, instead of hanging silently.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from collections import deque
from typing import Any, Protocol

from dispy_core import aio, config
from dispy_core.tls import TLS_HINT
from dispy_core.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionClosed,
    DispyError,
    ProtocolVersionError,
)
from dispy_core.messages import (
    ClusterNode,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    ErrorReport,
    FileData,
    FileDigest,
    FileSaved,
    FilesHeld,
    FilesQuery,
    Ping,
    Pong,
    Pulse,
    Resume,
    Resumed,
    InfoRequest,
    JobFile,
    JobResults,
    JobsStarted,
    Message,
    NodeInfo,
    NodeJobs,
    NodeLeaving,
    NodeReply,
    RelayNodes,
    Welcome,
)

from .computation import Computation, payload_size, python_minor
from .nodes import DispyNode, DispyNodeAvailInfo, NodeAllocate

__all__ = ["NodeSession", "SessionOwner", "describe_error", "describe_connect_error", "RETRY_FIRST", "RETRY_MAX"]


class SessionOwner(Protocol):
    """What a NodeSession needs from the one that runs a computation on nodes (the
    :class:`dispy_core.engine.Engine`): its settings, and where the session reports what happens."""

    closing: bool
    secret: str | bytes
    software: str
    ssl: Any
    compute_id: str
    computation: Computation
    computation_ships_code: bool
    python_version: str
    cluster: Any  # passed to NodeAllocate.allocate
    dest_path: str | None
    cleanup_files: bool
    process_per_job: bool
    node_pulse_interval: float
    compute_options: dict[str, Any]  # Compute.options (for dispyscheduler)

    def local_addr_for(self, host: str) -> tuple[str, int] | None: ...
    def claim(self, session: NodeSession) -> NodeSession | None: ...
    def release(self, session: NodeSession) -> None: ...
    def note_tried(self, label: str, reason: str) -> None: ...
    def node_record(self, session: NodeSession, info: NodeInfo, avail: DispyNodeAvailInfo | None) -> DispyNode: ...
    def node_ready(self, session: NodeSession) -> None: ...
    def node_lost(self, session: NodeSession, reason: str) -> None: ...
    def node_resumed(self, session: NodeSession, unfinished: int) -> None: ...
    def resume_failed(self, session: NodeSession, reason: str) -> None: ...
    def on_results(self, session: NodeSession, msg: JobResults) -> None: ...
    def on_pulse(self, session: NodeSession, msg: Pulse) -> None: ...
    def on_job_file(self, session: NodeSession, msg: JobFile) -> None: ...
    def node_leaving(self, session: NodeSession, msg: NodeLeaving) -> None: ...
    def on_shared(self, session: NodeSession, msg: Any) -> None: ...
    def relay_nodes(self, session: NodeSession, msg: RelayNodes) -> None: ...

# Under "dispy": what a cluster does with nodes is the cluster's to log (its loglevel).
log = logging.getLogger("dispy.session")

#: Seconds before the first retry of an unreachable node; doubles up to RETRY_MAX.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0

_RETRY, _FINAL, _SERVED = "retry", "final", "served"


class _Relay(Exception):
    """The peer is a dispynetrelay: it answered InfoRequest with the nodes it knows."""

    def __init__(self, msg: RelayNodes) -> None:
        super().__init__("a relay")
        self.msg = msg


class _Unusable(Exception):
    """This attempt failed with a reason for the user; ``final`` means don't retry."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


def describe_error(exc: BaseException | None) -> str:
    """Why a connection failed, in words a user can act on."""
    if exc is None:
        return "the connection was closed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is dispynode running there, on this port?)"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"no answer within {config.MsgTimeout:g} s (config.MsgTimeout)"
    if isinstance(exc, AuthenticationError):
        return f"authentication failed, the secrets differ ({exc})"
    if isinstance(exc, ProtocolVersionError):
        return f"protocol version mismatch: {exc}"
    if isinstance(exc, socket.gaierror):
        return f"can't resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, DispyError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def describe_connect_error(exc: BaseException, tls: bool) -> str:
    """Why connecting (TCP, TLS, dispy handshake) failed; TLS named where it is the likely cause.

    ``tls`` is whether this cluster uses TLS (certfile given). A TLS node closes the
    connection of a plain client at its first bytes; a TLS client fails on a plain node
    or on a node with another certificate with an SSLError.
    """
    if isinstance(exc, ssl.SSLError):
        text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc)) or type(exc).__name__
        return f"TLS handshake failed: {text} ({TLS_HINT})"
    reason = describe_error(exc)
    if isinstance(exc, (ConnectionClosed, ConnectionResetError, BrokenPipeError)):
        if tls:
            return f"{reason}; TLS may have failed ({TLS_HINT})"
        return (f"{reason}; if the node uses TLS (dispynode --certfile), this cluster needs the "
                f"same certfile (TLS handshake failed?)")
    return reason


class NodeSession:
    """Connects to one node, sets the computation up there and carries its messages."""

    def __init__(self, runtime: SessionOwner, spec: NodeAllocate, host: str, port: int, *, retry: bool) -> None:
        self.runtime = runtime
        self.spec = spec
        self.host = host
        self.port = port
        self.retry = retry
        self.label = f"{host}:{port}"
        self.channel: aio.Channel | None = None
        self.key: tuple[str, int] | None = None  # (node IP, port) once NodeInfo arrived
        self.node: Any = None  # the DispyNode, once the node is ready
        self.cpus = 0
        self.ready = False
        self.close_ack: asyncio.Future[ComputationClosed | None] | None = None
        self.outbox: deque[Any] = deque()  # jobs assigned here, not yet written
        self.flush_waiting = False
        self.job_time: float | None = None  # moving average of the node's job times
        self.depth = 0  # jobs in flight per CPU the scheduler allows here
        self._reply: asyncio.Future[Message] | None = None
        self._expect: tuple[type[Message], ...] = ()
        self._closed: asyncio.Future[BaseException | None] | None = None
        # Reasons already logged for this node (shared by the sessions the engine starts
        # for one discovered node: each distinct reason is logged once, not once per try).
        self._logged: set[str] = set()
        #: run() ended on a definite answer (ComputeFailed, another Python version,
        #: allocate() returning 0, a bug): don't try this node again. False: it could not
        #: be reached or used this time, and may be tried again when found again.
        self.definite = False
        self._last_reason = ""
        self._broke = ""  # why this client dropped the connection (see _broken)
        self.user_closed = False  # cluster.close_node() closed it: don't reconnect
        self.leaving = False  # the node said it is shutting down (NodeLeaving): no new jobs
        self.finished = asyncio.Event()  # run() has returned
        self.file_waiters: deque[asyncio.Future[str | None]] = deque()  # send_file replies, FIFO
        self.jobs_waiters: deque[asyncio.Future[NodeJobs | None]] = deque()  # NodeJobs replies, FIFO
        self.acks: list[int] = []  # job ids whose results arrived, to acknowledge
        self.resumable = True  # a lost connection may be resumed (not after a failure there)
        self.resume_until = 0.0  # monotonic deadline of reconnecting to resume; 0: not resuming
        self.last_heard = 0.0  # monotonic time of the node's last message (pulse_interval)
        self.relay = False  # the peer is a dispynetrelay (RelayNodes), not a node

    # -- the session's life -------------------------------------------------------------
    async def run(self) -> None:
        delay = RETRY_FIRST
        while not self.runtime.closing:
            try:
                outcome = await self._attempt()
            except asyncio.CancelledError:
                self._abort()
                raise
            except Exception:  # a bug here must not take the cluster down
                log.exception("node %s: unexpected error", self.label)
                self._abort()
                self.runtime.release(self)
                outcome = _FINAL
            if self.resume_until and outcome == _RETRY and time.monotonic() > self.resume_until:
                # Reconnecting to carry on failed: its jobs in flight are given up.
                self._give_up_resume(self._last_reason or "it could not be reached again")
            if outcome == _FINAL or self.runtime.closing:
                self.definite = outcome == _FINAL
                return
            if not self.retry and not self.resume_until:
                return
            if outcome == _SERVED:
                delay = RETRY_FIRST if not self.resume_until else 0.05
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _attempt(self) -> str:
        runtime = self.runtime
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self.close_ack = None
        self.channel = None
        self._broke = ""
        try:
            self.channel = await aio.open_channel(
                self.host, self.port, secret=runtime.secret, software=runtime.software,
                on_message=self._on_message, on_close=self._on_close,
                timeout=config.MsgTimeout, local_addr=runtime.local_addr_for(self.host), ssl=runtime.ssl,
            )
        except (OSError, TimeoutError, asyncio.TimeoutError, DispyError) as exc:
            self._failed(describe_connect_error(exc, tls=runtime.ssl is not None))
            if self.resume_until and isinstance(exc, ConnectionRefusedError):
                self._give_up_resume(self._last_reason)  # the node process is gone
                return _FINAL if not self.retry else _SERVED
            return _RETRY
        # Python 3.11's wait_for() may swallow a cancellation that races with the result;
        # ``closing`` is checked after every await of the setup so a closing cluster wins.
        if runtime.closing:
            self._abort()
            return _FINAL
        if self.resume_until or (self.node is not None and self.resumable):
            # It served this computation before: carry on there if it still runs it.
            try:
                resumed = await self._request(Resume(runtime.compute_id), (Resumed,))
            except _Unusable as exc:
                self._failed(exc.reason)
                self._abort()
                return _RETRY
            assert isinstance(resumed, Resumed)
            if runtime.closing:
                self._abort()
                return _FINAL
            if resumed.running:
                self.resume_until = 0.0
                self.last_heard = time.monotonic()
                runtime.node_resumed(self, resumed.unfinished)
                reason = await self._closed
                runtime.node_lost(self, describe_error(reason))
                return _SERVED
            # The node has no such computation any more (restarted, or it was closed
            # there): what it kept was delivered above; the rest is given up, and the
            # computation is set up there afresh.
            if self.resume_until:
                self._give_up_resume("the node no longer runs the computation (was it restarted?)")
        try:
            await self._setup()
        except _Relay as relay:
            return await self._relayed(relay.msg)
        except _Unusable as exc:
            self._failed(exc.reason, final=exc.final)
            self._abort()
            runtime.release(self)
            return _FINAL if exc.final else _RETRY
        if runtime.closing:
            self._abort()
            runtime.release(self)
            return _FINAL
        self.resumable = True
        self.last_heard = time.monotonic()
        runtime.node_ready(self)
        reason = await self._closed
        runtime.node_lost(self, describe_error(reason))
        return _SERVED

    async def _relayed(self, msg: RelayNodes) -> str:
        """The peer is a dispynetrelay (see :mod:`dispy_core.messages`): use the nodes it
        names, now and as it names more, until the connection closes; then connect to it
        again like to a node (a restarted relay is used again)."""
        runtime = self.runtime
        self.relay = True
        log.info("%s is a dispynetrelay (%s): it knows %d nodes%s", self.label, msg.relay or "?", len(msg.nodes),
                 "" if msg.nodes else " yet; it tells of those it finds later")
        if not msg.nodes:
            runtime.note_tried(self.label, "a dispynetrelay, which knows no node on its network yet "
                                           "(are nodes running there, with the same secret?)")
        runtime.relay_nodes(self, msg)
        assert self._closed is not None
        reason = await self._closed
        if not runtime.closing:
            log.info("dispynetrelay %s: %s; connecting to it again", self.label, describe_error(reason))
        return _SERVED

    async def _setup(self) -> None:
        runtime = self.runtime
        info = await self._request(InfoRequest(), (NodeInfo, RelayNodes))
        if isinstance(info, RelayNodes):
            raise _Relay(info)
        assert isinstance(info, NodeInfo)
        if runtime.closing:
            raise _Unusable("", final=True)
        ip_addr = info.ip_addr or self._peer_ip()
        if runtime.computation_ships_code:
            theirs, ours = python_minor(info.python_version), python_minor(runtime.python_version)
            if theirs and theirs != ours:
                raise _Unusable(
                    f"node runs Python {info.python_version} but this client runs Python "
                    f"{runtime.python_version}: Python functions can't be shipped between Python "
                    f"versions; use the same minor version or a program computation",
                    final=True,
                )
        self.key = (ip_addr, info.port or self.port)
        other = runtime.claim(self)
        if other is not None:
            log.debug("node %s is already served through %s", self.label, other.label)
            self._abort()
            raise _Unusable("", final=True)
        avail = None
        if info.avail_info is not None:
            a = info.avail_info
            avail = DispyNodeAvailInfo(a.cpu, a.memory, a.disk, a.swap)
        try:
            cpus = self.spec.allocate(runtime.cluster, ip_addr, info.name, info.cpus, avail, info.platform)
        except Exception as exc:
            log.exception("node %s: %s.allocate() raised", self.label, type(self.spec).__name__)
            raise _Unusable(f"allocate() raised {type(exc).__name__}: {exc}", final=True) from None
        if not isinstance(cpus, int) or cpus <= 0:
            log.info("node %s (%s, %s CPUs) not used: allocate() returned %r",
                     self.label, info.name, info.cpus, cpus)
            raise _Unusable("", final=True)
        cpus = min(cpus, info.cpus) if info.cpus > 0 else cpus
        try:
            files = list(runtime.computation.files)
            files.extend(self.spec._depends_data())
            setup_args = self.spec._setup_payload()
        except ConfigError as exc:
            raise _Unusable(f"can't prepare the computation for it: {exc}", final=True) from None
        kept = await self._files_held(files)
        runtime.note_tried(self.label, "")  # it answered; the computation is being set up
        while True:
            compute = Compute(
                compute_id=runtime.compute_id,
                name=runtime.computation.name,
                kind=runtime.computation.kind,
                payload=runtime.computation.payload,
                setup_args=setup_args,
                files=[f for f in files if f.name not in kept],
                cpus=cpus,
                dest_path=runtime.dest_path,
                cleanup_files=runtime.cleanup_files,
                process_per_job=runtime.process_per_job,
                python_version=runtime.python_version,
                pulse_interval=runtime.node_pulse_interval,
                options=runtime.compute_options,
                kept=list(kept.values()),
                sources=runtime.computation.sources,
            )
            # Setup runs the user's setup function on the node: no time limit, as always.
            reply = await self._request(compute, (ComputeReady, ComputeFailed), timeout=None)
            if runtime.closing:
                raise _Unusable("", final=True)
            if isinstance(reply, ComputeFailed) and kept and reply.missing:
                # A file it held changed there meanwhile (a computation sharing the
                # dest_path): send those too; nothing was set up.
                missing = reply.missing if isinstance(reply.missing, list) else list(kept)
                still = {name: d for name, d in kept.items() if name not in missing}
                if len(still) < len(kept):
                    log.info("node %s: %s; sending them", self.label, reply.error)
                    kept = still
                    continue
            break
        if isinstance(reply, ComputeFailed):
            raise _Unusable(f"node refused the computation: {reply.error}", final=True)
        assert isinstance(reply, ComputeReady)
        if kept:
            log.info("node %s already had %d of the computation's files in %s (%d bytes not sent): %s",
                     self.label, len(kept), runtime.dest_path, sum(d.size for d in kept.values()),
                     ", ".join(kept))
        self.cpus = reply.cpus if reply.cpus > 0 else cpus
        self.node = runtime.node_record(self, info, avail)
        self.node.tx += payload_size(compute.payload) + sum(len(f.data) for f in compute.files)

    async def _files_held(self, files: list[FileData]) -> dict[str, FileDigest]:
        """Which of ``files`` the node already holds, identical, in the computation's
        dest_path (left there by an earlier cluster with cleanup=False): those are not
        sent again. Only asked with a dest_path (without one the node makes a fresh
        directory) and never of dispyscheduler (``compute_options["nodes"]``: it is not
        where the files end up, and forwards them to nodes that it asks itself)."""
        runtime = self.runtime
        if not files or not runtime.dest_path or "nodes" in runtime.compute_options:
            return {}
        # Hashing a large file takes a while: not in the event loop.
        digests = await asyncio.to_thread(lambda: [runtime.computation.digest(f) for f in files])
        # The node may have to hash large files itself (the first time): no time limit,
        # as for setup; a node that goes away still ends the wait.
        reply = await self._request(FilesQuery(runtime.dest_path, digests), (FilesHeld,), timeout=None)
        assert isinstance(reply, FilesHeld)
        if reply.error:
            log.info("node %s could not tell which files it has: %s", self.label, reply.error)
        held = set(reply.names)
        return {d.name: d for d in digests if d.name in held}

    # -- messages ------------------------------------------------------------------------
    async def _request(self, msg: Message, expect: tuple[type[Message], ...],
                       timeout: float | None = -1.0) -> Message:
        assert self.channel is not None
        if timeout is not None and timeout < 0:
            timeout = config.MsgTimeout
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._reply, self._expect = fut, expect
        try:
            self.channel.send(msg)
            return await asyncio.wait_for(fut, timeout)
        except ConnectionClosed as exc:
            raise _Unusable(self._broke or describe_error(exc)) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise _Unusable(f"no answer to {type(msg).__name__} within {timeout:g} s") from None
        finally:
            self._reply = None

    def _on_message(self, channel: aio.Channel, msg: Message) -> None:
        self.last_heard = time.monotonic()
        if type(msg) is JobResults:
            if self.node is None:  # no computation here yet: nothing to have results of
                self._broken(channel, "job results")
                return
            self.runtime.on_results(self, msg)
            return
        if type(msg) is Pulse:
            self.runtime.on_pulse(self, msg)  # type: ignore[arg-type]
            return
        if isinstance(msg, Welcome):
            return
        if isinstance(msg, JobFile):
            self.runtime.on_job_file(self, msg)
            return
        if isinstance(msg, Ping):  # the node checks that this client is alive
            channel.send(Pong(msg.nonce))
            return
        if isinstance(msg, NodeLeaving):
            self.runtime.node_leaving(self, msg)
            return
        if isinstance(msg, (JobsStarted, ClusterNode, NodeReply)):  # from dispyscheduler
            self.runtime.on_shared(self, msg)
            return
        if isinstance(msg, RelayNodes) and self.relay:  # a relay heard of a node since
            self.runtime.relay_nodes(self, msg)
            return
        fut = self._reply
        if isinstance(msg, FileSaved):
            self._file_reply(msg.error)
            return
        if isinstance(msg, NodeJobs):
            self._jobs_reply(msg)
            return
        if isinstance(msg, ComputationClosed):
            if self.close_ack is not None and not self.close_ack.done():
                self.close_ack.set_result(msg)
            elif not self.runtime.closing:
                log.warning("node %s closed the computation%s", self.label,
                            f": {msg.error}" if msg.error else "")
                self.resumable = False
                channel.close()
            return
        if isinstance(msg, ErrorReport):
            if msg.reason.startswith("cancel:"):
                # A CancelJob crossed the job's result (or the node lost it): the result,
                # if any, is on its way; nothing else to do.
                log.debug("node %s: %s", self.label, msg.reason)
                return
            if self.file_waiters and "SendFile" in msg.reason:  # a node that can't save files
                self._file_reply(msg.reason)
                return
            if fut is not None and not fut.done() and self._expect == (FilesHeld,):
                # A node that can't tell which files it has (an older one): it holds none.
                fut.set_result(FilesHeld([], msg.reason))
                return
            if self.jobs_waiters and "NodeJobsRequest" in msg.reason:  # a node that can't tell
                self._jobs_reply(None)
                return
            if fut is not None and not fut.done():
                fut.set_exception(_Unusable(f"node reported: {msg.reason}"))
            elif self.close_ack is not None and not self.close_ack.done():
                log.debug("node %s while closing: %s", self.label, msg.reason)
                self.close_ack.set_result(None)
            elif self.ready and msg.compute_id == self.runtime.compute_id:
                # The computation failed there (its processes died): this connection can't
                # run jobs any more. Closing it abandons what is in flight; an explicit node
                # is then set up afresh.
                log.warning("node %s: the computation failed there: %s", self.label, msg.reason)
                self.resumable = False
                channel.close()
            else:
                log.warning("node %s reported an error: %s", self.label, msg.reason)
            return
        if fut is not None and not fut.done() and isinstance(msg, self._expect):
            fut.set_result(msg)
            return
        log.debug("node %s: unexpected %s", self.label, type(msg).__name__)

    def _broken(self, channel: aio.Channel, what: str) -> None:
        """The node sent what it can't have before the computation was set up there: not
        a dispy node, or a broken one. The connection is dropped, with that reason (the
        node is tried again like one that could not be reached)."""
        self._broke = f"it sent {what} before the computation was set up there (not a dispy node?)"
        fut = self._reply
        if fut is not None and not fut.done():
            fut.set_exception(_Unusable(self._broke))
        channel.abort()

    def _file_reply(self, error: str | None) -> None:
        while self.file_waiters:
            waiter = self.file_waiters.popleft()
            if not waiter.done():
                waiter.set_result(error)
                return

    def _jobs_reply(self, msg: NodeJobs | None) -> None:
        while self.jobs_waiters:
            waiter = self.jobs_waiters.popleft()
            if not waiter.done():
                waiter.set_result(msg)
                return

    def _on_close(self, channel: aio.Channel, exc: BaseException | None) -> None:
        if channel is not self.channel and self.channel is not None:
            return
        fut = self._reply
        if fut is not None and not fut.done():
            fut.set_exception(_Unusable(describe_error(exc or ConnectionClosed("the node closed the connection"))))
        if self.close_ack is not None and not self.close_ack.done():
            self.close_ack.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(exc)

    # -- helpers ---------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        assert self.channel is not None
        self.channel.send(msg)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def closed_future(self) -> asyncio.Future[BaseException | None]:
        """Done when the current connection has closed."""
        assert self._closed is not None
        return self._closed

    def abort(self) -> None:
        """Close the current connection, whatever the session is doing."""
        self._abort()

    def _abort(self) -> None:
        if self.channel is not None and not self.channel.closed:
            self.channel.close()

    def _peer_ip(self) -> str:
        peer = self.channel.peer if self.channel is not None else ""
        return peer[0] if isinstance(peer, tuple) and peer else self.host

    def _give_up_resume(self, reason: str) -> None:
        self.resume_until = 0.0
        self.runtime.resume_failed(self, reason)

    def _failed(self, reason: str, final: bool = False) -> None:
        if not reason:
            return
        self._last_reason = reason
        self.runtime.note_tried(self.label, reason)
        if reason in self._logged:
            return
        self._logged.add(reason)
        if final:
            log.warning("can't use node %s: %s", self.label, reason)
        elif not self.retry:  # a discovered node (Engine._run_session)
            log.warning("can't use node %s: %s; will try again when discovery finds it again",
                        self.label, reason)
        else:
            log.warning("can't use node %s: %s; will keep trying", self.label, reason)
