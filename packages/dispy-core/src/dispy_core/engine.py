"""The engine of a computation on nodes: one asyncio loop in a background thread that
owns every socket (see docs/design/shared-scheduler.md).

:class:`Engine` does everything toward nodes for one computation: node sessions
(:mod:`.session`), discovery (:mod:`.discovery`), the scheduler
(:class:`dispy_core.scheduling.Scheduler`), dispatch of job batches, results and their
acknowledgements, Resume after a dropped connection, pulses and dead nodes, reentrant
reruns, NodeLeaving, cancel and the node-management calls, and the nodes a dispynetrelay
tells of (:meth:`Engine.relay_nodes`: each is contacted like a discovered node). Its owner (the client's
``dispy._runtime.Runtime``; dispyscheduler's, later) subclasses it and implements the
hooks listed in :class:`Engine`'s docstring for what it does with jobs and nodes
(results, callbacks, waiting).

Threads: the **owner's threads** call :meth:`Engine.submit` (appends to a deque and
wakes the loop with ``call_soon_threadsafe`` only if no wake-up is already pending, so a
burst of submits costs one wake-up) and :meth:`Engine.call`; the **loop thread**
(:class:`LoopThread`) runs the rest. Per-job work on the loop is kept minimal (no
logging above DEBUG, one dict lookup, one hook call per result); argument buffers go to
the socket without being copied.

The module's constants are read when used: tests may patch them here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import operator
import platform
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from . import config
from .computation import Computation
from .discovery import Discovery, needs_discovery
from .errors import ConfigError
from .messages import (
    AckResults,
    AvailInfo,
    CancelJob,
    CloseComputation,
    FileData,
    JobFile,
    JobResult,
    JobResults,
    JobSpec,
    NodeInfo,
    NodeJobsRequest,
    NodeLeaving,
    Pulse,
    SendFile,
    SubmitJobs,
)
from .netif import local_address
from .nodes import DispyNode, DispyNodeAvailInfo, NodeAllocate, parse_nodes
from .scheduling import Scheduler
from .session import NodeSession
from .status import JobStatus, NodeStatus

__all__ = ["Engine", "EngineJob", "LoopThread"]

# Under "dispy": what a cluster does with nodes is the cluster's to log (its loglevel).
log = logging.getLogger("dispy.engine")

#: Work (seconds per CPU) worth keeping queued at a node whose jobs are short. Two jobs
#: per CPU in flight keep a CPU busy only if a job outlasts a network round trip; for
#: shorter jobs a node's depth grows until about this much work per CPU is queued there,
#: so long jobs stay at 2 per CPU (spread and rebalanced freely) and tiny jobs travel in
#: batches big enough to hide the round trip.
PIPELINE_BUDGET = 0.002
MAX_DEPTH = 32

#: Seconds results wait to be acknowledged in a message of their own, if no jobs go to
#: their node meanwhile (see Engine._ack_soon).
ACK_DELAY = 0.01

#: Seconds a node whose connection dropped may take to be reached again before the jobs
#: it holds are given up (Abandoned). A node whose port refuses connections is given
#: up at once: its process is gone.
RESUME_WINDOW = 30.0

#: Seconds jobs may wait with no node serving the computation before the log says why
#: (again every STALL_REPEAT seconds while it lasts): no wait is silent.
STALL_WARNING = 10.0
STALL_REPEAT = 60.0
#: Seconds between a node's pulses when the cluster gave no pulse_interval. They don't
#: make silent nodes dead (pulse_interval does); they let the client tell a node busy
#: with long jobs from one that sends nothing at all (hung, paused, cut off), which it
#: reports after 5 of them (again every 5 while it lasts).
QUIET_PULSE = 60.0

#: Unsent bytes a node's transport may hold before more jobs wait in its outbox.
WRITE_LIMIT = 1 << 20
#: Largest SubmitJobs frame built from several jobs (a larger job goes alone).
BATCH_BYTES = 1 << 20

_Running = JobStatus.Running
_Provisional = JobStatus.ProvisionalResult


class EngineJob:
    """The fields of a job the engine reads and writes (the client's DispyJob adds the
    rest: result, output, ``finish`` ...). The owner creates jobs with ``_uid`` (the
    job's id on the wire), ``_spec`` (its JobSpec), ``_tx`` (the spec's serialized
    bytes) and ``_pin`` (the node key it must run on, or None) set, then ``submit``\\ s
    them; ``id`` names the job in log lines."""

    __slots__ = (
        "id",
        "status",
        "host",
        "start_time",
        "end_time",
        "_uid",
        "_spec",
        "_node",
        "_tx",
        "_pin",
    )

    def __init__(self, job_id: Any, uid: int, spec: Any, tx: int, pin: Any = None) -> None:
        self.id: Any = job_id
        self.status: int = JobStatus.Created
        self.host: str | None = None  # IP address of the node running it (or that ran it)
        self.start_time: float | None = None
        self.end_time: float | None = None
        self._uid = uid  # the job's id on the wire
        self._spec: Any = spec  # the JobSpec until it is sent (kept to run again if reentrant)
        self._node: Any = None  # the NodeSession of the node running it
        self._tx = tx  # serialized bytes sent for it
        self._pin: Any = pin  # the node key it must run on, or None


J = TypeVar("J", bound=EngineJob)


class LoopThread:
    """An asyncio event loop running ``main()`` in a daemon thread."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, None]], name: str = "dispy-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._main = main
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException:
            log.exception("dispy's event loop failed")
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    @classmethod
    def adopt(cls, loop: asyncio.AbstractEventLoop) -> LoopThread:
        """A handle on a loop that is already running in the current thread (engines
        sharing a daemon's loop: their owner runs each engine's ``_main()`` there)."""
        handle = cls.__new__(cls)
        handle.loop = loop
        handle.thread = threading.current_thread()
        return handle

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def call_soon(self, func: Callable[..., Any], *args: Any) -> bool:
        """Run ``func(*args)`` in the loop; False if the loop has ended."""
        try:
            self.loop.call_soon_threadsafe(func, *args)
            return True
        except RuntimeError:  # loop closed
            return False

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run a coroutine in the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


class Engine(Generic[J]):
    """Everything a computation does on the network: nodes, jobs in flight, results.

    It is a :class:`dispy_core.session.SessionOwner` (its sessions report here). The
    loop starts at the end of ``__init__``: a subclass sets its own attributes first.

    Hooks, called in the loop; the owner overrides them (the defaults only keep the
    job records right):

    * ``_job_result(session, job, result, status) -> int``: a job's final result came
      (``JobResult``; ``status`` is what the job ends with). The engine has done its
      bookkeeping; the hook sets the job's fields (times at least) and ``status``, in
      that order, and returns the bytes received for it. Once per result: keep it lean.
    * ``_job_finished(job, status, node, now, exception)``: a job ended without a
      result (cancelled, abandoned, terminated, with ``exception`` saying why).
    * ``_job_provisional(session, job, result)``: a provisional result (the job goes on).
    * ``_jobs_done(n)``: ``n`` more jobs submitted ended (either way above), once per
      batch.
    * ``_jobs_dispatched(session, jobs)``: these jobs (status Running) went to a node.
    * ``_node_status(status, session)``: a node (``session.node``) is ready
      (NodeStatus.Initialized), was given up (Closed) or sent a pulse (AvailInfo).
    * ``_job_file(session, job, msg)``: a file a job sent (``JobFile``, already
      checked); ``job`` is None if the job is unknown.
    """

    #: A job sent to a node is Running there. Not for a SharedJobCluster, whose one
    #: "node" (dispyscheduler) queues the jobs and reports when each starts.
    sent_runs = True

    def __init__(
        self,
        cluster: Any,
        computation: Computation,
        specs: list[NodeAllocate],
        *,
        secret: str | bytes,
        dest_path: str | None,
        cleanup_files: bool,
        process_per_job: bool,
        local_host: str | list[str] | None,
        client_port: int,
        software: str,
        dispy_port: int | None = None,
        ssl: Any = None,
        compute_id: str | None = None,
        pulse_interval: float = 0.0,
        reentrant: bool = False,
        ipv4_udp_multicast: bool = False,
        ping_interval: float | None = None,
        compute_options: dict[str, Any] | None = None,
        node_port: int | None = None,
        sched: Scheduler[J] | None = None,
        thread: LoopThread | None = None,
    ) -> None:
        self.cluster = cluster
        self.ssl = ssl  # the client SSLContext (dispy_core.tls) when certfile is given
        self.computation = computation
        self.computation_ships_code = computation.ships_code
        self.specs = specs
        self.secret = secret
        self.dest_path = dest_path
        self.cleanup_files = cleanup_files
        self.process_per_job = process_per_job
        # host=: the local addresses (multi-homed); each node is reached from the one on
        # its network (see netif.local_address).
        self.local_hosts = [local_host] if isinstance(local_host, str) else list(local_host or ())
        self.local_host = self.local_hosts[0] if self.local_hosts else None
        self.local_addr = (self.local_host, 0) if self.local_host else None
        self.ipv4_udp_multicast = ipv4_udp_multicast
        self.ping_interval = ping_interval
        self.client_port = client_port
        self.dispy_port = dispy_port  # for the node port of nodes given later
        self.node_port = node_port  # JobCluster(node_port=): that port instead of dispy_port's
        self.python_version = platform.python_version()
        self.software = software  # what the handshake tells nodes this is
        self.compute_id = compute_id or uuid.uuid4().hex
        self.pulse_interval = pulse_interval
        self.node_pulse_interval = pulse_interval or QUIET_PULSE  # what nodes are asked for
        self.reentrant = reentrant  # jobs of a lost node run again elsewhere (specs are kept)
        self.compute_options: dict[str, Any] = compute_options or {}  # Compute.options (SharedJobCluster's)
        self.closing = False
        # Job counters (job_counts()): written in the loop only.
        self._n_done = 0  # finished without an exception
        self._n_failed = 0  # finished with an exception, cancelled, terminated or abandoned

        # The node pool and job queue: the engine's own, or (dispyscheduler) one shared by
        # the engines of several computations, in which the subclass keeps a cluster.
        self.sched: Scheduler[J] = Scheduler(key=operator.attrgetter("_uid")) if sched is None else sched
        #: Acknowledge a result to its node as soon as it arrives. dispyscheduler turns
        #: this off and calls ack() once its client has the result (end to end).
        self.auto_ack = True
        self._incoming: deque[J] = deque()
        self._wake_pending = False
        self._dispatch_pending = False
        self._jobs: dict[int, J] = {}  # loop only: queued or in flight, by uid
        self._cancelling: set[int] = set()  # loop only: uids of running jobs cancelled
        self._ready: dict[tuple[str, int], NodeSession] = {}  # loop only
        self._claims: dict[tuple[str, int], NodeSession] = {}  # loop only
        self.nodes: dict[tuple[str, int], DispyNode] = {}  # every node that served
        self._tried_lock = threading.Lock()
        self._tried: dict[str, str] = {}  # node label -> last reason it could not be used
        self.ever_initialized = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[NodeSession] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._stop: asyncio.Event | None = None
        self._discovery: Discovery | None = None
        self._discovered: set[tuple[str, int]] = set()
        # Reasons logged why a discovered node could not be used, per node: its next
        # sessions (when found again) don't log them again.
        self._failure_logs: dict[tuple[str, int], set[str]] = {}
        # node_id (DiscoverReply) -> where that node was found: discovery asks each of this
        # host's addresses, and a node serving several of them answers at each; use it once
        self._discovered_ids: dict[str, tuple[str, int]] = {}
        self._deallocated: set[tuple[str, int]] = set()  # loop only: no new jobs go there
        self._served: dict[tuple[str, int], NodeSession] = {}  # loop only: last session per node
        self._cpu_limits: dict[tuple[str, int], int] = {}  # loop only: set_node_cpus() below the node's
        self._suspended: dict[tuple[str, int], NodeSession] = {}  # loop only: reconnecting to resume
        if thread is None:
            self.thread = LoopThread(self._main)  # last: the loop starts running now
        else:  # a loop shared with other engines: its owner runs _main() as a task there
            self.thread = thread

    # -- the loop's main task -------------------------------------------------------------
    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for spec in self.specs:
                if not spec.wildcard:
                    assert spec.port is not None
                    self._start_session(spec, spec.host, spec.port, retry=True)
            if needs_discovery(self.specs):
                self._start_discovery()
            if self.pulse_interval:
                self._spawn(self._watch_pulses())
            self._spawn(self._watch_stall())
            await self._stop.wait()
            log.debug("stopping: cancelling %d tasks", len(self._tasks))
            for session in list(self._sessions):
                session.abort()  # ends its awaits even if a cancellation gets lost
            for task in list(self._tasks):
                task.cancel()
        self._tg = None

    def _start_discovery(self) -> None:
        """Broadcast for nodes matching the wildcard specs (again, if already listening)."""
        if self._discovery is not None:
            self._discovery.refresh()
            return
        port = next(s.port for s in self.specs if s.wildcard)
        assert port is not None
        ipv6 = any(s.wildcard and ":" in s.host for s in self.specs)
        self._discovery = Discovery(self.secret, port, self._on_discovered, self.local_hosts,
                                    self.client_port, ipv4_multicast=self.ipv4_udp_multicast,
                                    ipv6=ipv6, ping_interval=self.ping_interval,
                                    match=self._wildcard_matches)
        self._spawn(self._discovery.run())

    def _wildcard_matches(self, ip_addr: str) -> bool:
        """Whether some wildcard spec (those added later by discover() too) accepts a node
        at ``ip_addr``: which of this host's addresses discovery asks directly."""
        return any(spec.wildcard and spec.matches(ip_addr) for spec in self.specs)

    def local_addr_for(self, host: str) -> tuple[str, int] | None:
        """The (address, 0) to connect to node ``host`` from, per ``host=``; None: any."""
        ip = local_address(self.local_hosts, host)
        return None if ip is None else (ip, 0)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_session(self, spec: NodeAllocate, host: str, port: int, *, retry: bool) -> None:
        session = NodeSession(self, spec, host, port, retry=retry)
        if not retry:  # found again after a failed try: don't log the same reason again
            session._logged = self._failure_logs.setdefault((host, port), set())
        self._sessions.add(session)
        self._spawn(self._run_session(session))

    async def _run_session(self, session: NodeSession) -> None:
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            session.finished.set()
            if not session.retry and not session.user_closed and (
                    session.node is not None or not session.definite) and not self.closing:
                # a discovered node that served and went away, or could not be reached or
                # used (it answered garbage, say), may be found again (ping_interval,
                # discover_nodes, its announcements) and is tried then
                self._discovered.discard((session.host, session.port))
                for node_id, where in list(self._discovered_ids.items()):
                    if where == (session.host, session.port):
                        del self._discovered_ids[node_id]

    def _on_discovered(self, reply: Any) -> None:
        key = (reply.ip_addr, reply.port)
        if self.closing or key in self._discovered or key in self._claims:
            return
        node_id = getattr(reply, "node_id", "")  # "" from older nodes and announcements
        if node_id and self._discovered_ids.get(node_id, key) != key:
            log.debug("node %s:%s was found at %s:%s already", *key, *self._discovered_ids[node_id])
            return
        for spec in sorted((s for s in self.specs if s.wildcard), key=lambda s: s.host, reverse=True):
            if spec.matches(reply.ip_addr):
                self._discovered.add(key)
                if node_id:
                    self._discovered_ids[node_id] = key
                log.debug("discovered node %s:%s (%s)", reply.ip_addr, reply.port, reply.name)
                self._start_session(spec, reply.ip_addr, reply.port, retry=False)
                return
        log.debug("node %s:%s answered but matches no node spec", reply.ip_addr, reply.port)

    def relay_nodes(self, session: NodeSession, msg: Any) -> None:
        """A dispynetrelay (reached through ``session``, a node spec naming it) tells of
        the nodes on its network (``RelayNodes``): each one not in use or being
        contacted is contacted like a discovered node, under the relay's spec (its cpus,
        depends, setup_args). One that can't be used is tried again when the relay names
        it again (it does whenever it hears from the node)."""
        if self.closing:
            return
        if msg.nodes:  # the relay is no reason why no node serves
            with self._tried_lock:
                self._tried.pop(session.label, None)
        for node in msg.nodes:
            key = (node.ip_addr, node.port)
            if key in self._discovered or key in self._claims or key in self._ready:
                continue
            self._discovered.add(key)
            log.debug("dispynetrelay %s: node %s:%s (%s)", session.label, node.ip_addr, node.port, node.name)
            self._start_session(session.spec, node.ip_addr, node.port, retry=False)

    # -- sessions report here ---------------------------------------------------------------
    def claim(self, session: NodeSession) -> NodeSession | None:
        """Reserve a node for ``session``; returns the session already serving it, if any."""
        assert session.key is not None
        other = self._claims.get(session.key)
        if other is not None and other is not session:
            return other
        self._claims[session.key] = session
        return None

    def release(self, session: NodeSession) -> None:
        if session.key is not None and self._claims.get(session.key) is session:
            del self._claims[session.key]

    def note_tried(self, label: str, reason: str) -> None:
        with self._tried_lock:
            self._tried[label] = reason

    def tried(self) -> dict[str, str]:
        with self._tried_lock:
            return dict(self._tried)

    def why_no_node(self) -> str:
        """Why no node serves the computation, as far as this client knows."""
        tried = self.tried()
        if tried:
            why = "; ".join(f"{label}: {reason or 'the computation is being set up there'}"
                            for label, reason in tried.items())
            return f"nodes tried: {why}"
        if any(spec.wildcard for spec in self.specs):
            stranded = self._discovery.stranded if self._discovery is not None else ""
            if stranded:  # no route anywhere: only this host's nodes could have answered
                return (f"no node answered discovery: the request could not leave this host ({stranded}), "
                        "and no node answered at this host's own addresses; name the nodes, or give "
                        "host= an address on their network")
            return ("no node answered discovery (the broadcast, nor the node port at this host's own "
                    "addresses): are nodes running, with the same secret and node port?")
        return "no node has answered yet"

    async def _watch_stall(self) -> None:
        """Jobs waiting while no node serves the computation: say so, and why, after
        STALL_WARNING seconds and every STALL_REPEAT seconds while it lasts. Without
        pulse_interval, also nodes that hold jobs and send nothing (see QUIET_PULSE)."""
        warn_at = None
        silent: dict[tuple[str, int], float] = {}  # node -> when it was last reported
        while True:
            await asyncio.sleep(1.0)
            if not self.pulse_interval and self._ready and not self.closing:
                self._report_silent_nodes(silent)
            waiting = len(self._jobs) + len(self._incoming)  # submitted, not done
            if waiting <= 0 or self._ready or self.closing:
                warn_at = None
                continue
            now = time.monotonic()
            if warn_at is None:
                warn_at, since = now + STALL_WARNING - 1.0, now - 1.0
            elif now >= warn_at:
                warn_at = now + STALL_REPEAT
                log.warning("%d jobs of %s have waited %.0f s and no node serves the computation; %s",
                            waiting, self.computation.name, now - since, self.why_no_node())

    def node_record(self, session: NodeSession, info: NodeInfo, avail: DispyNodeAvailInfo | None) -> DispyNode:
        """The DispyNode for a node that is ready (the same object after a reconnect)."""
        assert session.key is not None
        node = self.nodes.get(session.key)
        if node is None:
            node = DispyNode(session.key[0], info.name, session.cpus, info.platform)
            self.nodes[session.key] = node
        node.name = info.name
        node.cpus = session.cpus
        node.avail_cpus = info.cpus
        node.platform = info.platform
        node.avail_info = avail
        node.busy = 0
        node.update_time = time.time()
        return node

    def node_ready(self, session: NodeSession) -> None:
        assert session.key is not None and session.node is not None
        session.ready = True
        self._ready[session.key] = session
        session.job_time = None
        session.depth = self.sched.pipeline
        self._served[session.key] = session
        limit = self._cpu_limits.get(session.key)
        if limit is not None and limit >= session.cpus:
            del self._cpu_limits[session.key]
            limit = None
        cpus = session.cpus if limit is None else limit
        session.node.cpus = cpus
        self._pool_add(session, 0 if session.key in self._deallocated else cpus, limit is not None)
        self.ever_initialized = True
        self.note_tried(session.label, "")
        log.info("node %s (%s) ready with %d CPUs for computation %s",
                 session.label, session.node.name, session.cpus, self.computation.name)
        self._node_status(NodeStatus.Initialized, session)
        self._dispatch()

    def node_lost(self, session: NodeSession, reason: str) -> None:
        """A ready node's connection closed. Unless it was closed on purpose (or the
        computation failed there), its jobs stay where they are while the session
        reconnects and resumes (the node keeps their results until acknowledged)."""
        key = session.key
        if key is None or self._ready.get(key) is not session:
            self.release(session)
            return
        session.ready = False
        del self._ready[key]
        if not self.closing and not session.user_closed and session.resumable:
            self._pool_pause(key)  # nothing new goes there meanwhile
            self._suspended[key] = session
            session.resume_until = time.monotonic() + RESUME_WINDOW
            log.warning("node %s: connection lost (%s); reconnecting to carry on with its %d jobs",
                        session.label, reason, len(self.node_jobs(key)))
            return
        self.release(session)
        self._give_up(session, reason)

    async def _watch_pulses(self) -> None:
        """A node that sends nothing (not even a pulse) for 5 x pulse_interval is taken
        for dead: its jobs run elsewhere (reentrant) or end Abandoned."""
        limit = 5 * self.pulse_interval
        while True:
            await asyncio.sleep(self.pulse_interval)
            now = time.monotonic()
            for session in list(self._ready.values()):
                if now - session.last_heard > limit:
                    self._node_dead(session, f"nothing from it for {now - session.last_heard:.0f} s "
                                             f"(5 x pulse_interval {self.pulse_interval:g} s)")

    def _report_silent_nodes(self, reported: dict[tuple[str, int], float]) -> None:
        limit = 5 * QUIET_PULSE
        now = time.monotonic()
        for key, session in self._ready.items():
            quiet = now - session.last_heard
            if quiet < limit:
                reported.pop(key, None)
                continue
            if now - reported.get(key, -limit) < limit:
                continue
            running = len(self.node_jobs(key))
            if running:
                reported[key] = now
                log.warning("node %s has sent nothing, not even a pulse, for %.0f s while %d jobs of %s "
                            "are there: it may be hung, paused or cut off (with pulse_interval such a "
                            "node is given up, and with reentrant its jobs run elsewhere)",
                            session.label, quiet, running, self.computation.name)

    def _node_dead(self, session: NodeSession, reason: str) -> None:
        key = session.key
        assert key is not None
        session.ready = False
        del self._ready[key]
        log.warning("node %s presumed dead: %s", session.label, reason)
        self._give_up(session, f"node presumed dead: {reason}")
        # It may come back: the session reconnects and resumes, and is then used again.
        session.abort()

    def node_resumed(self, session: NodeSession, unfinished: int) -> None:
        """The node took the computation up again on the session's new connection."""
        key = session.key
        assert key is not None
        if self._suspended.pop(key, None) is None:
            # Its jobs were given up meanwhile (presumed dead, or not reached in time):
            # it is a node like a new one now (late results of those jobs are ignored).
            other = self.claim(session)
            if other is not None:
                session.abort()
                return
            log.info("node %s is back", session.label)
            self.node_ready(session)
            return
        session.ready = True
        self._ready[key] = session
        limit = self._cpu_limits.get(key)
        if key in self._deallocated:
            self._pool_pause(key)
        else:
            self._pool_resume(key, limit or session.cpus)
        log.info("node %s: reconnected; computation %s resumed (%d jobs there unfinished)",
                 session.label, self.computation.name, unfinished)
        self._flush(session)
        self._dispatch()

    def resume_failed(self, session: NodeSession, reason: str) -> None:
        """Reconnecting to a node failed, or it no longer has the computation."""
        key = session.key
        if key is None or self._suspended.get(key) is not session:
            return
        del self._suspended[key]
        self.release(session)
        self._give_up(session, reason)

    def _give_up(self, session: NodeSession, reason: str) -> None:
        """Jobs sent to a lost node end Abandoned, or with ``reentrant`` are queued again
        (to run elsewhere, or there once it is back if pinned); jobs never sent are
        queued again in any case."""
        assert session.key is not None
        lost = self._pool_remove(session.key)
        unsent = {job._uid for job in session.outbox}
        session.outbox.clear()
        again = [job for job in lost if job._uid in unsent or (self.reentrant and job._spec is not None)]
        if again:
            lost = [job for job in lost if job._uid not in unsent and not (self.reentrant and job._spec is not None)]
            for job in again:
                job.status = JobStatus.Created
                job._node = None
                job.host = None
                self._queue(job)
            self._dispatch_soon()
        node = session.node
        node.busy = 0
        moved = f"; {len(again)} jobs queued again" if again else ""
        if session.user_closed:
            log.info("node %s closed for computation %s%s%s", session.label, self.computation.name,
                     f"; {len(lost)} jobs running there are abandoned" if lost else "", moved)
            self.note_tried(session.label, "closed with close_node()")
        elif not self.closing:
            log.warning("node %s lost (%s)%s%s", session.label, reason,
                        f"; {len(lost)} jobs running there are abandoned" if lost else "", moved)
            self.note_tried(session.label, f"connection lost: {reason}")
        now = time.time()
        for job in lost:
            self._finish(job, JobStatus.Abandoned, node, now,
                         f"node {session.label} closed the connection before the job finished: {reason}")
        self._jobs_done(len(lost))
        self._node_status(NodeStatus.Closed, session)

    # -- jobs in ------------------------------------------------------------------------------
    def submit(self, job: J) -> bool:
        """From any thread: queue a job whose ``_spec`` is set; False once closing."""
        if self.closing:
            return False
        self._incoming.append(job)
        if not self._wake_pending:
            self._wake_pending = True
            self.thread.call_soon(self._drain)
        return True

    def call(self, func: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """From a user's thread: ``func(*args)`` run in the loop; its return value (awaited,
        if it is awaitable)."""
        async def run() -> Any:
            result = func(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        return self.thread.run(run(), timeout)

    def _drain(self) -> None:
        self._wake_pending = False  # before draining: later submits schedule a new wake
        incoming, jobs, queue = self._incoming, self._jobs, self._queue
        while incoming:
            job = incoming.popleft()
            jobs[job._uid] = job
            queue(job)
        self._dispatch()

    def _dispatch_soon(self) -> None:
        """Dispatch once at the end of this loop iteration: results of several messages
        read together free slots that one SubmitJobs per node then fills."""
        if not self._dispatch_pending:
            self._dispatch_pending = True
            self.thread.loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        batches = self.sched.assign()
        if not batches:
            return
        now = time.time()
        for key, jobs in batches:
            self._deliver(key, jobs, now)  # type: ignore[arg-type]

    def _deliver(self, key: tuple[str, int], jobs: list[J], now: float) -> None:
        """Send jobs the scheduler placed on a node (its batch, or this computation's part of it)."""
        session = self._ready[key]
        node = session.node
        if self.sent_runs:
            ip_addr = node.ip_addr
            for job in jobs:
                job.status = _Running
                job.host = ip_addr
                job.start_time = now
                job._node = session
        else:
            for job in jobs:
                job._node = session
        node.busy += len(jobs)
        session.outbox.extend(jobs)
        self._flush(session)
        self._jobs_dispatched(session, jobs)

    def _flush(self, session: NodeSession) -> None:
        """Send a node's assigned jobs, as long as its socket keeps up.

        Jobs leave in frames of at most BATCH_BYTES (one job per frame if it is larger),
        and only while the transport holds less than WRITE_LIMIT unsent bytes: a burst of
        large arguments is written one after the other, never piled up (and copied) in
        the transport's buffer. When the socket is behind, a waiter resumes the flush
        once it has drained.
        """
        outbox = session.outbox
        channel = session.channel
        if channel is None or channel.transport is None or session.flush_waiting:
            return
        node = session.node
        reentrant = self.reentrant
        while outbox:
            if channel.write_buffer_size() > WRITE_LIMIT:
                session.flush_waiting = True
                self._spawn(self._resume_flush(session))
                return
            specs: list[JobSpec] = []
            size = 0
            while outbox and (not specs or size + outbox[0]._tx <= BATCH_BYTES):
                job = outbox.popleft()
                specs.append(job._spec)
                if not reentrant:
                    job._spec = None  # the buffers are the socket's now (kept to run again if reentrant)
                size += job._tx
            node.tx += size
            acks, session.acks = session.acks, []
            try:
                session.send(SubmitJobs(self.compute_id, specs, acks))
            except Exception as exc:  # closed under us: node_lost abandons the jobs
                log.debug("sending jobs to %s failed: %s", session.label, exc)
                outbox.clear()
                session.close()
                return

    async def _resume_flush(self, session: NodeSession) -> None:
        channel = session.channel
        assert channel is not None
        closed = session.closed_future()
        try:
            drained: asyncio.Future[Any] = asyncio.ensure_future(channel.drain())
            await asyncio.wait([drained, closed], return_when=asyncio.FIRST_COMPLETED)
            drained.cancel()
        finally:
            session.flush_waiting = False
        if session.ready and session.channel is channel:
            self._flush(session)

    # -- results in ------------------------------------------------------------------------------
    def on_results(self, session: NodeSession, msg: JobResults) -> None:
        jobs = self._jobs
        node = session.node
        now = time.time()
        rx = 0
        done = 0
        busy = 0.0  # node-measured seconds of the jobs finished in this batch
        job_result, cancelling = self._job_result, self._cancelling
        acks = session.acks
        auto_ack = self.auto_ack
        if not acks and auto_ack:
            self._ack_soon(session)
        for r in msg.results:
            if r.status == _Provisional:
                job = jobs.get(r.job_id)
                if job is not None and job._node is session:
                    self._job_provisional(session, job, r)
                continue
            if auto_ack:
                acks.append(r.job_id)  # the node may forget it now (duplicates too)
            job = jobs.get(r.job_id)
            if job is None or job._node is not session:
                log.debug("node %s: result for unknown or finished job %s ignored", session.label, r.job_id)
                if not auto_ack:
                    self._stray_result(session, r)
                continue
            status = r.status
            if cancelling and r.job_id in cancelling:
                cancelling.discard(r.job_id)
                status = JobStatus.Cancelled  # whatever the node made of the interrupt
            del jobs[r.job_id]
            self.sched.job_done(r.job_id)
            job._node = None
            node.jobs_done += 1
            node.busy -= 1
            rx += job_result(session, job, r, status)  # the owner sets status, marks it done
            self._count_end(status)
            if job.start_time is not None:
                busy += job.end_time - job.start_time  # type: ignore[operator]
            done += 1
        node.rx += rx
        node.update_time = now
        if done:
            node.cpu_time += busy
            self._tune_depth(session, busy / done)
            self._jobs_done(done)
            self._dispatch_soon()

    def ack(self, key: tuple[str, int], job_ids: list[int]) -> None:
        """Acknowledge results to the node they came from (when ``auto_ack`` is off); if
        it is not connected now, it sends them again after Resume (see _stray_result)."""
        session = self._ready.get(key) or self._suspended.get(key)
        if session is None:
            return
        if not session.acks:
            self._ack_soon(session)
        session.acks.extend(job_ids)

    def _ack_soon(self, session: NodeSession) -> None:
        """Acknowledge results shortly (ACK_DELAY): jobs going out to the node meanwhile
        carry the acks in their SubmitJobs instead, so a busy cluster sends no ack
        messages of their own."""
        self.thread.loop.call_later(ACK_DELAY, self._send_acks, session)

    def _send_acks(self, session: NodeSession) -> None:
        acks = session.acks
        if not acks:
            return
        session.acks = []
        channel = session.channel
        if channel is not None and not channel.closed:
            try:
                channel.send(AckResults(self.compute_id, acks))
            except Exception as exc:  # closed meanwhile: the node resends them
                log.debug("acknowledging results to %s: %s", session.label, exc)

    def node_leaving(self, session: NodeSession, msg: NodeLeaving) -> None:
        """The node is shutting down (dispynode got SIGINT): no new jobs go there; the
        jobs it gives back (it will not run them) are queued again, to run elsewhere (or
        there, if pinned, should it come back)."""
        key = session.key
        if key is None or msg.compute_id != self.compute_id or not isinstance(msg.jobs, list):
            return
        self._pool_pause(key)
        back = 0
        for spec in msg.jobs:
            job = self._jobs.get(spec.job_id) if isinstance(spec, JobSpec) else None
            if job is None or job._node is not session:
                continue
            self.sched.job_done(spec.job_id)
            session.node.busy -= 1
            job._spec, job._node, job.host, job.status = spec, None, None, JobStatus.Created
            self._queue(job)
            back += 1
        if not session.leaving:
            session.leaving = True
            log.info("node %s is leaving (%s)%s", session.label, msg.reason,
                     f"; {back} jobs it gave back are queued again" if back else "")
        elif back:
            log.info("node %s (leaving) gave back %d more jobs", session.label, back)
        if back:
            self._dispatch_soon()

    def on_pulse(self, session: NodeSession, msg: Pulse) -> None:
        """A node's pulse: its availability (DispyNode.avail_info) goes to the owner (_node_status)."""
        node = session.node
        if node is None or msg.compute_id != self.compute_id:
            return
        node.update_time = time.time()
        a = msg.avail_info
        if isinstance(a, AvailInfo):
            node.avail_info = DispyNodeAvailInfo(a.cpu, a.memory, a.disk, a.swap)
        self._node_status(NodeStatus.AvailInfo, session)

    def on_shared(self, session: NodeSession, msg: Any) -> None:
        """A message only dispyscheduler sends its clients (JobsStarted, ClusterNode,
        NodeReply): for the SharedJobCluster's engine; a node never sends these."""
        log.debug("node %s: unexpected %s ignored", session.label, type(msg).__name__)

    def on_job_file(self, session: NodeSession, msg: JobFile) -> None:
        """A file a job sent (dispy_send_file): handed to the owner (_job_file) now, in
        the loop, so it is dealt with before the job's result (which follows it)."""
        file = msg.file
        data = file.data if isinstance(file, FileData) else None
        if msg.compute_id != self.compute_id or not isinstance(msg.path, str) or \
                not isinstance(data, (bytes, bytearray, memoryview)):
            log.warning("node %s: malformed file from job %s ignored", session.label, msg.job_id)
            return
        self._job_file(session, self._jobs.get(msg.job_id), msg)

    # -- job control (called in the loop) ---------------------------------------------
    def cancel(self, job: J) -> int:
        """Cancel a queued job (it ends Cancelled now) or a running one (CancelJob to its
        node; its result, when it comes, makes it Cancelled). -1 if done or unknown."""
        self._drain()
        uid = job._uid
        if self._jobs.get(uid) is not job:
            return -1
        now = time.time()
        if self.sched.cancel(uid) is not None:
            self._finish(job, JobStatus.Cancelled, None, now, "cancelled")
            self._jobs_done(1)
            return 0
        session = job._node
        if session is None:
            return -1
        if job in session.outbox:  # assigned but not written yet: it never left
            session.outbox.remove(job)
            self.sched.job_done(uid)
            session.node.busy -= 1
            self._finish(job, JobStatus.Cancelled, session.node, now, "cancelled")
            self._jobs_done(1)
            self._dispatch_soon()
            return 0
        if uid in self._cancelling:
            return 0
        try:
            session.send(CancelJob(self.compute_id, uid))
        except Exception as exc:
            log.warning("cancelling job %s on %s failed: %s", job.id, session.label, exc)
            return -1
        self._cancelling.add(uid)
        return 0

    def node_key(self, node: Any) -> tuple[str, int] | None:
        """The key of a node that served the cluster, given as a DispyNode, an IP address
        or a host name (resolved); None if no such node."""
        nodes = list(self.nodes.items())
        if isinstance(node, DispyNode):
            for key, n in nodes:
                if n is node:
                    return key
            node = node.ip_addr
        if not isinstance(node, str) or not node:
            return None
        for key, n in nodes:
            if key[0] == node or n.name == node:
                return key
        try:  # a host name: any of its addresses, IPv4 or IPv6
            ips = {str(info[4][0]) for info in socket.getaddrinfo(node, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            return None
        for key, _n in nodes:
            if key[0] in ips:
                return key
        return None

    def node_jobs(self, key: tuple[str, int]) -> list[J]:
        """Jobs dispatched to a node and not finished (in the loop)."""
        return self.sched.in_flight(key)

    async def node_jobs_from_node(self, key: tuple[str, int]) -> list[J] | None:
        """The jobs the node says are running there now (NodeJobsRequest), in the order
        they started; None (logged) if the node is not serving the computation or did not
        answer within MsgTimeout."""
        session = self._ready.get(key)
        if session is None or self.closing:
            log.error("node_jobs(): node %s:%s is not serving computation %s", key[0], key[1],
                      self.computation.name)
            return None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        session.jobs_waiters.append(waiter)
        try:
            session.send(NodeJobsRequest(self.compute_id))
            closed: asyncio.Future[Any] = session.closed_future()
            await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED, timeout=config.MsgTimeout)
        finally:
            if waiter in session.jobs_waiters:
                session.jobs_waiters.remove(waiter)
        reply = waiter.result() if waiter.done() else None
        if reply is None or reply.error or not isinstance(reply.job_ids, list):
            why = reply.error if reply is not None and reply.error else (
                "it did not answer" if not waiter.done() else "it can't tell (an older dispynode?)")
            log.error("node_jobs(): asking node %s failed: %s", session.label, why)
            return None
        jobs = self._jobs
        return [jobs[uid] for uid in reply.job_ids if isinstance(uid, int) and uid in jobs]

    # -- the pool (the subclass of a shared Scheduler keeps its cluster there) ----------
    def _pool_add(self, session: NodeSession, cpus: int, limited: bool) -> None:
        """A node is ready: ``cpus`` of it for this computation (``limited``: by set_node_cpus)."""
        self.sched.add_node(session.key, cpus, 1 if limited else None)

    def _pool_pause(self, key: tuple[str, int]) -> None:
        """No new jobs of this computation go to the node for now (jobs there stay)."""
        if self.sched.has_node(key):
            self.sched.set_cpus(key, 0)

    def _pool_resume(self, key: tuple[str, int], cpus: int) -> None:
        """Jobs go to the node again, on ``cpus`` CPUs."""
        if self.sched.has_node(key):
            self.sched.set_cpus(key, cpus)

    def _pool_remove(self, key: tuple[str, int]) -> list[J]:
        """This computation is done with the node; its jobs in flight there."""
        return self.sched.remove_node(key)

    def _queue(self, job: J) -> None:
        self.sched.submit(job, job._pin)

    def _queued_jobs(self) -> list[J]:
        return list(self.sched.queued_jobs())

    # -- node management (called in the loop) ----------------------------------------
    def deallocate(self, key: tuple[str, int]) -> int:
        """No new jobs for this node (jobs there finish; pinned jobs wait)."""
        if self.closing or key not in self.nodes:
            return -1
        self._deallocated.add(key)
        self._pool_pause(key)
        return 0

    def allocate(self, item: Any, key: tuple[str, int] | None) -> int:
        """Use a node again (deallocated or closed), or contact a new one (``item`` as
        in the ``nodes`` argument); a wildcard only matches nodes discovered later."""
        if self.closing:
            return -1
        if key is not None:
            session = self._ready.get(key)
            if session is not None:
                if key in self._deallocated:
                    self._deallocated.discard(key)
                    if not session.leaving:
                        self._pool_resume(key, self._cpu_limits.get(key, session.cpus))
                    self._dispatch()
                return 0
            self._deallocated.discard(key)
            old = self._served.get(key)
            if old is not None and not isinstance(item, NodeAllocate):
                item = NodeAllocate(old.host, old.port, old.spec.cpus, old.spec.depends, old.spec.setup_args) \
                    if type(old.spec) is NodeAllocate else old.spec
        return self._add_spec(item, discover=False)

    def discover(self, items: list[Any]) -> int:
        """Contact explicit nodes; start (or repeat) discovery for wildcard entries."""
        if self.closing:
            return -1
        status = 0
        for item in items:
            key = self.node_key(item) if isinstance(item, (str, DispyNode)) and not (
                isinstance(item, str) and "*" in item) else None
            if key is not None:
                status |= self.allocate(item, key)
            else:
                status |= self._add_spec(item, discover=True)
        return status

    def _add_spec(self, item: Any, *, discover: bool) -> int:
        try:
            specs = parse_nodes([item], self.dispy_port, node_port=self.node_port)
        except ConfigError as exc:
            log.error("node %r: %s", item, exc)
            return -1
        spec = specs[0]
        assert spec.port is not None
        if spec.wildcard:
            if spec not in self.specs:
                self.specs.append(spec)
            if discover:
                self._start_discovery()
            return 0
        for session in self._sessions:
            if (session.host, session.port) == (spec.host, spec.port) and not session.user_closed:
                return 0  # already being contacted or served
        self.specs.append(spec)
        self._start_session(spec, spec.host, spec.port, retry=True)
        return 0

    def set_node_cpus(self, key: tuple[str, int], cpus: int) -> int:
        """Use ``cpus`` CPUs of a node (negative: all but that many); the CPUs now used, or -1.

        The limit is the client's: the scheduler keeps at most that many of this
        cluster's jobs at the node (no pipelining below the node's own CPU count, so the
        node never runs more of them at once)."""
        session = self._ready.get(key)
        if session is None or self.closing:
            return -1
        total = session.cpus
        n = min(cpus, total) if cpus > 0 else total + cpus
        if cpus == 0 or n <= 0:
            log.error("set_node_cpus(): node %s has %d CPUs for computation %s; %d is not a valid "
                      "number of CPUs to use", session.label, total, self.computation.name, cpus)
            return -1
        if n < total:
            self._cpu_limits[key] = n
            self.sched.set_depth(key, 1)
        else:
            self._cpu_limits.pop(key, None)
            self.sched.set_depth(key, max(1, session.depth))
        if key not in self._deallocated and not session.leaving:
            self.sched.set_cpus(key, n)
        session.node.cpus = n
        log.info("node %s: computation %s uses %d of its %d CPUs", session.label, self.computation.name, n, total)
        self._dispatch()
        return n

    async def close_node(self, key: tuple[str, int], terminate: bool) -> int:
        """Close the computation on one node: its jobs there finish (or are terminated),
        cleanup runs, its files go; the node is no longer used (until allocate)."""
        session = self._ready.get(key)
        if session is None or self.closing:
            return -1
        self._deallocated.discard(key)
        session.retry = False
        session.user_closed = True
        self._pool_pause(key)
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[Any] = loop.create_future()
        session.close_ack = ack
        try:
            session.send(CloseComputation(self.compute_id, terminate))
        except Exception as exc:
            log.debug("closing computation on %s: %s", session.label, exc)
            ack.set_result(None)
        closed: asyncio.Future[Any] = session.closed_future()
        await asyncio.wait([ack, closed], return_when=asyncio.FIRST_COMPLETED)
        msg = ack.result() if ack.done() else None
        if msg is not None and getattr(msg, "error", None):
            log.warning("node %s: closing computation %s: %s", session.label, self.computation.name, msg.error)
        session.close()
        await session.finished.wait()
        return 0

    async def resetup_node(self, key: tuple[str, int], terminate: bool = False) -> int:
        """Close the computation on a node (jobs there finish, or with ``terminate`` are
        terminated), then set it up again through a new session: allocate() is asked
        again, setup runs again."""
        session = self._ready.get(key)
        if session is None or self.closing:
            return -1
        deallocated = key in self._deallocated
        if await self.close_node(key, terminate=terminate) != 0 or self.closing:
            return -1
        if deallocated:
            self._deallocated.add(key)
        log.info("node %s: setting computation %s up again", session.label, self.computation.name)
        self._start_session(session.spec, session.host, session.port, retry=True)
        return 0

    async def send_file(self, key: tuple[str, int], file: FileData) -> int:
        """Save ``file`` in the computation's directory on a node; 0, or -1 (logged)."""
        session = self._ready.get(key)
        if session is None or self.closing:
            log.error("send_file(): node %s:%s is not serving computation %s", key[0], key[1],
                      self.computation.name)
            return -1
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        session.file_waiters.append(waiter)
        try:
            session.send(SendFile(self.compute_id, file))
        except Exception as exc:
            session.file_waiters.remove(waiter)
            log.error("send_file(): sending %s to %s failed: %s", file.name, session.label, exc)
            return -1
        session.node.tx += len(file.data)
        closed: asyncio.Future[Any] = session.closed_future()
        await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            if waiter in session.file_waiters:
                session.file_waiters.remove(waiter)
            log.error("send_file(): node %s closed the connection before saving %s", session.label, file.name)
            return -1
        error = waiter.result()
        if error:
            log.error("send_file(): node %s did not save %s: %s", session.label, file.name, error)
            return -1
        log.debug("node %s saved file %s", session.label, file.name)
        return 0

    def _tune_depth(self, session: NodeSession, job_time: float) -> None:
        """Follow the node's mean job time (moving average) and set its pipeline depth."""
        mean = session.job_time
        mean = job_time if mean is None else 0.7 * mean + 0.3 * job_time
        session.job_time = mean
        if mean * self.sched.pipeline >= PIPELINE_BUDGET:
            depth = self.sched.pipeline
        else:
            depth = min(MAX_DEPTH, max(self.sched.pipeline, int(PIPELINE_BUDGET / max(mean, 1e-6))))
        if depth != session.depth:
            session.depth = depth
            if not self._depth_fixed(session.key):  # a limited node keeps depth 1
                self.sched.set_depth(session.key, depth)

    def _depth_fixed(self, key: Any) -> bool:
        """The node's pipeline depth stays 1: fewer of its CPUs are used than it has."""
        return key in self._cpu_limits

    def _finish(self, job: J, status: int, node: DispyNode | None, now: float, exception: str) -> None:
        """End a job that got no result from a node (cancelled, abandoned, terminated)."""
        self._jobs.pop(job._uid, None)
        self._cancelling.discard(job._uid)
        job._node = job._spec = None
        self._count_end(status)
        self._job_finished(job, status, node, now, exception)

    # -- job counters (the web monitor's) -------------------------------------------------
    def _count_end(self, status: int) -> None:
        """A job submitted here ended with ``status`` (the two places jobs end call this)."""
        if status == JobStatus.Finished:
            self._n_done += 1
        else:
            self._n_failed += 1

    def job_counts(self) -> dict[str, int]:
        """From any thread: ``submitted`` (jobs given to the engine), ``running`` (on a
        node now: sent there, or reported started by a SharedJobCluster's scheduler),
        ``done`` (finished without an exception), ``failed`` (finished with an exception,
        or cancelled, terminated or abandoned) and ``pending`` (submitted and not ended).

        Read in the loop, so the numbers agree with each other (a job is never both
        pending and done); if the loop has ended (or is stuck for MsgTimeout), read here.
        Jobs are counted where they enter (the engine's job table, whoever fills it: the
        client's submit or dispyscheduler's) and where they end (``_count_end``).
        """
        thread = self.thread
        if threading.current_thread() is not thread.thread and thread.alive:
            async def read() -> dict[str, int]:
                return self._counts_now()
            try:
                return thread.run(read(), timeout=config.MsgTimeout)  # type: ignore[no-any-return]
            except Exception:
                pass  # the loop ended meanwhile: nothing changes the numbers any more
        return self._counts_now()

    def _counts_now(self) -> dict[str, int]:
        done, failed = self._n_done, self._n_failed
        jobs = list(self._jobs.values())  # (a copy: from another thread only once the loop ended)
        running = sum(1 for job in jobs if job.status in (_Running, _Provisional))
        pending = len(jobs) + len(self._incoming)
        return {"submitted": done + failed + pending, "running": running, "done": done, "failed": failed,
                "pending": pending}

    # -- hooks for the owner (see the class docstring) --------------------------------
    def _job_result(self, session: NodeSession, job: J, r: JobResult, status: int) -> int:
        if r.start_time:
            job.start_time = r.start_time
        job.end_time = r.end_time or time.time()
        job.status = status
        return 0

    def _job_finished(self, job: J, status: int, node: DispyNode | None, now: float, exception: str) -> None:
        job.status = status
        job.end_time = now

    def _job_provisional(self, session: NodeSession, job: J, r: JobResult) -> None:
        job.status = _Provisional

    def _jobs_done(self, n: int) -> None:
        pass

    def _jobs_dispatched(self, session: NodeSession, jobs: list[J]) -> None:
        pass

    def _node_status(self, status: int, session: NodeSession) -> None:
        pass

    def _stray_result(self, session: NodeSession, r: JobResult) -> None:
        """(``auto_ack`` off) A final result for a job no longer in flight here: sent
        again by the node after a Resume, or late. The owner acknowledges it if its
        client already has it."""

    def _job_file(self, session: NodeSession, job: J | None, msg: JobFile) -> None:
        log.debug("node %s: file %r from job %s ignored", session.label, msg.path, msg.job_id)

    # -- closing ------------------------------------------------------------------------------
    async def shutdown(self, terminate: bool) -> None:
        """Close the computation on every node (bounded by MsgTimeout) and stop."""
        self.closing = True
        self._send_all_acks()
        now = time.time()
        self._drain()
        if terminate:
            cancelled = self._queued_jobs()
            for job in cancelled:
                self.sched.cancel(job._uid)
                self._finish(job, JobStatus.Cancelled, None, now, "cancelled: the cluster was closed")
            self._jobs_done(len(cancelled))
        loop = asyncio.get_running_loop()
        acks = []
        closing = []
        for session in list(self._ready.values()):
            session.close_ack = loop.create_future()
            try:
                session.send(CloseComputation(self.compute_id, terminate))
            except Exception as exc:
                log.debug("closing computation on %s: %s", session.label, exc)
                session.close_ack.set_result(None)
            acks.append(session.close_ack)
            closing.append(session)
        if acks:
            log.debug("closing computation %s on %d nodes", self.computation.name, len(acks))
            done, waiting = await asyncio.wait(acks, timeout=config.MsgTimeout)
            if waiting:
                log.warning("%d nodes did not confirm closing the computation within %g s",
                            len(waiting), config.MsgTimeout)
            for session, ack in zip(closing, acks):
                # the node's confirmation carries what went wrong there (a cleanup that
                # raised: its traceback), as close_node reports it
                msg = ack.result() if ack.done() and not ack.cancelled() else None
                if msg is not None and getattr(msg, "error", None):
                    log.warning("node %s: closing computation %s: %s", session.label, self.computation.name,
                                msg.error)
        now = time.time()
        left = 0
        for key, session in list(self._ready.items()):
            for job in self.node_jobs(key):
                self._finish(job, JobStatus.Terminated, session.node, now,
                             "terminated: the cluster was closed before the job finished")
                left += 1
        self._jobs_done(left)
        for session in list(self._ready.values()):
            session.close()
        for session in list(self._suspended.values()):
            self.resume_failed(session, "the cluster was closed while reconnecting to it")
        for job in list(self._jobs.values()):  # queued with no node ever ready
            self._finish(job, JobStatus.Cancelled, None, now, "cancelled: the cluster was closed")
            self._jobs_done(1)
        assert self._stop is not None
        self._stop.set()

    async def leave(self) -> None:
        """Stop without closing the computation on the nodes (see JobCluster._leave):
        they run the jobs they have and keep the results for recover_jobs."""
        self.closing = True
        self._send_all_acks()
        for session in list(self._sessions):
            session.abort()
        assert self._stop is not None
        self._stop.set()

    def _send_all_acks(self) -> None:
        for session in list(self._ready.values()):
            self._send_acks(session)
