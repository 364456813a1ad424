"""One SharedJobCluster in the scheduler: its client's connection and its engine.

:class:`SharedCluster` holds what the client sent (its computation, node specs, options)
and what the client is owed: results are kept until the client acknowledges them, and only
then acknowledged to their node, so a client that reconnects (Resume, or ``recover_jobs``
from a new process) gets every result once. :class:`ClusterEngine` is the
:class:`dispy_core.engine.Engine` of the cluster, running in the daemon's loop on the
daemon's shared :class:`dispy_core.scheduling.Scheduler` (one cluster there per
SharedJobCluster); its hooks turn what happens on nodes into messages for the client.

Jobs get a daemon-wide id (``_uid``, the one nodes see); the client's id is ``cid``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from dispy_core.computation import Computation, payload_size
from dispy_core.engine import Engine, EngineJob
from dispy_core.errors import ConfigError
from dispy_core.messages import (
    AvailInfo,
    ClusterNode,
    Compute,
    FileData,
    JobFile,
    JobResult,
    JobResults,
    JobsStarted,
    JobSpec,
    Message,
    NodeReply,
    NodeRequest,
)
from dispy_core.nodes import DispyNode, NodeAllocate
from dispy_core.session import NodeSession
from dispy_core.status import JobStatus, NodeStatus

if TYPE_CHECKING:
    from dispy_core.aio import Channel

    from .daemon import Daemon

__all__ = ["SharedCluster", "ClusterEngine", "SchedJob", "SharedSpec"]

log = logging.getLogger("dispy.scheduler")

_Provisional = JobStatus.ProvisionalResult


class SchedJob(EngineJob):
    """A client's job in the scheduler: ``cid`` is the client's id for it."""

    __slots__ = ("cid", "engine")

    def __init__(self, cid: int, uid: int, spec: JobSpec, tx: int, pin: Any, engine: ClusterEngine) -> None:
        super().__init__(cid, uid, spec, tx, pin)
        self.cid = cid
        self.engine = engine


class SharedSpec(NodeAllocate):
    """A node spec a client sent as data: its depends files arrive read, its setup
    arguments serialized (NodeAllocate subclasses don't travel: the client refuses them)."""

    def __init__(self, host: str, port: int | None, cpus: int, files: list[FileData], setup_args: list[Any]) -> None:
        super().__init__(host, port, cpus)
        self.files = files
        self.setup_payload = setup_args

    def _depends_data(self) -> list[Any]:
        return list(self.files)

    def _setup_payload(self) -> list[Any]:
        return list(self.setup_payload)


def spec_from_data(d: Any, node_port: int) -> SharedSpec:
    """A node spec from Compute.options / NodeRequest; ConfigError if malformed."""
    if not isinstance(d, dict) or not isinstance(d.get("host"), str):
        raise ConfigError(f"malformed node spec {d!r}")
    port = d.get("port")
    cpus = d.get("cpus", 0)
    files = d.get("files") or []
    setup_args = d.get("setup_args") or []
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise ConfigError(f"malformed port in node spec {d!r}")
    # setup_args goes to the nodes as a payload: buffers (received, memoryviews), or they
    # would refuse the Compute as malformed.
    if not isinstance(cpus, int) or not isinstance(files, list) or not all(isinstance(f, FileData) for f in files) \
            or not isinstance(setup_args, list) or not all(isinstance(b, memoryview) for b in setup_args):
        raise ConfigError(f"malformed node spec for host {d['host']!r}")
    return SharedSpec(d["host"], port or node_port, cpus, files, setup_args)


class ClusterEngine(Engine[SchedJob]):
    """The engine of one shared cluster (see the module docstring)."""

    def __init__(self, daemon: Daemon, cluster: SharedCluster, computation: Computation,
                 specs: list[NodeAllocate], compute: Compute) -> None:
        cfg = daemon.cfg
        self.daemon = daemon
        self.shared = cluster
        self.cid_key = cluster.compute_id  # the cluster's id in the shared Scheduler
        super().__init__(
            None, computation, specs,
            secret=cfg.node_secret, dest_path=compute.dest_path,
            cleanup_files=compute.cleanup_files or cfg.cleanup_nodes,
            process_per_job=compute.process_per_job, local_host=cfg.ip_addrs, client_port=cfg.port,
            software=daemon.software, dispy_port=cfg.node_port - 1, ssl=daemon.node_ssl,
            pulse_interval=daemon.node_pulse_interval, reentrant=cluster.reentrant,
            ipv4_udp_multicast=cfg.ipv4_udp_multicast, ping_interval=cfg.ping_interval,
            sched=daemon.sched, thread=daemon.loop_ref,
            compute_options={"attach_key": cluster.attach_key, "attach_macs": daemon.attach_macs,
                             # the client's dispy.config.MaxFileSize, for its jobs' dispy_send_file
                             "max_file_size": cluster.max_file_size,
                             # --max_file_size, for files the client sends the node itself
                             "attach_file_limit": cfg.max_file_size},
        )
        self.auto_ack = False  # results are acknowledged to nodes once the client has them
        if compute.python_version:
            self.python_version = compute.python_version  # what nodes must run (shipped code)
        daemon.sched.add_cluster(self.cid_key, nodes=())

    # -- the shared pool --------------------------------------------------------------
    def _pool_add(self, session: NodeSession, cpus: int, limited: bool) -> None:
        assert session.key is not None
        node_cpus = self.daemon.pool_join(self, session)
        self.sched.allow(self.cid_key, session.key, None if cpus >= node_cpus else cpus)

    def _pool_pause(self, key: tuple[str, int]) -> None:
        if self.cid_key in self.sched.clusters:
            self.sched.allow(self.cid_key, key, 0)

    def _pool_resume(self, key: tuple[str, int], cpus: int) -> None:
        if self.sched.has_node(key):
            self.sched.allow(self.cid_key, key, None if cpus >= self.sched.node(key).cpus else cpus)

    def _pool_remove(self, key: tuple[str, int]) -> list[SchedJob]:
        jobs = self.sched.release(self.cid_key, key) if self.cid_key in self.sched.clusters else []
        self.daemon.pool_leave(self, key)
        return jobs

    def _queue(self, job: SchedJob) -> None:
        self.sched.submit(job, job._pin, self.cid_key)

    def _queued_jobs(self) -> list[SchedJob]:
        if self.cid_key not in self.sched.clusters:
            return []
        return list(self.sched.queued_jobs(self.cid_key))

    def node_jobs(self, key: tuple[str, int]) -> list[SchedJob]:
        return [job for job in self.sched.in_flight(key) if job.engine is self]

    def _dispatch(self) -> None:
        self._dispatch_pending = False
        self.daemon.dispatch()

    def _start_discovery(self) -> None:
        self.daemon.watch(self)  # the daemon's nodes (-n, discovery) matching wildcard specs

    def set_node_cpus(self, key: tuple[str, int], cpus: int) -> int:
        return self.daemon.set_node_cpus(self.shared, key, cpus)

    def _depth_fixed(self, key: Any) -> bool:
        return key in self.daemon.limited

    # -- hooks: what happens on nodes goes to the client -----------------------------
    def _job_result(self, session: NodeSession, job: SchedJob, r: JobResult, status: int) -> int:
        if r.start_time:
            job.start_time = r.start_time
        job.end_time = r.end_time or time.time()
        job.status = status
        assert session.key is not None
        self.shared.result(dataclasses.replace(r, job_id=job.cid, status=status, host=session.key[0]),
                           session.key, job._uid)
        return payload_size(r.result)

    def _job_finished(self, job: SchedJob, status: int, node: DispyNode | None, now: float, exception: str) -> None:
        job.status = status
        self.shared.result(JobResult(job.cid, status, exception=exception, start_time=job.start_time or 0.0,
                                     end_time=now, host=node.ip_addr if node is not None else ""), None, job._uid)

    def _job_provisional(self, session: NodeSession, job: SchedJob, r: JobResult) -> None:
        self.shared.provisional(dataclasses.replace(r, job_id=job.cid))

    def _jobs_done(self, n: int) -> None:
        self.shared.done += n
        self.daemon.changed()

    def _jobs_dispatched(self, session: NodeSession, jobs: list[SchedJob]) -> None:
        assert session.key is not None
        self.shared.started(session.key, jobs)
        self.daemon.changed()

    def _node_status(self, status: int, session: NodeSession) -> None:
        self.shared.node_status(status, session)
        self.daemon.changed()

    def _job_file(self, session: NodeSession, job: SchedJob | None, msg: JobFile) -> None:
        if job is None:
            log.debug("node %s: file %r from an unknown job ignored", session.label, msg.path)
            return
        self.shared.send(JobFile(self.shared.compute_id, job.cid, msg.path, msg.file))

    def _stray_result(self, session: NodeSession, r: JobResult) -> None:
        if not self.shared.holds_uid(r.job_id):
            assert session.key is not None
            self.ack(session.key, [r.job_id])  # the client has it: the node may forget it


class SharedCluster:
    """A SharedJobCluster as the scheduler keeps it (see the module docstring)."""

    def __init__(self, daemon: Daemon, channel: Channel, compute: Compute, client: str) -> None:
        options = compute.options if isinstance(compute.options, dict) else {}
        self.daemon = daemon
        self.compute = compute
        self.compute_id = compute.compute_id
        self.name = compute.name
        self.client = client  # "ip:port" of the client, for logs and the status table
        self.channel: Channel | None = channel
        self.exclusive = bool(options.get("exclusive", False))
        self.reentrant = bool(options.get("reentrant", False))
        self.ships_code = bool(options.get("ships_code", True))
        limit = options.get("max_file_size")
        self.max_file_size = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0
        self.node_data = options.get("nodes")
        self.state = "waiting"  # -> "running" -> "closed"
        self.engine: ClusterEngine | None = None
        self.created = time.monotonic()
        self.jobs: dict[int, SchedJob] = {}  # client id -> job not finished
        self.held: OrderedDict[int, tuple[JobResult, tuple[str, int] | None, int]] = OrderedDict()
        self._held_uids: set[int] = set()
        self._out: list[JobResult] = []
        self._started: list[list[Any]] = []
        self._flush_pending = False
        self.done = 0
        self.last_heard = time.monotonic()
        self.detached_at: float | None = None  # monotonic time the client's connection dropped
        self.pulse_interval = compute.pulse_interval if compute.pulse_interval > 0 else 0.0
        self.next_pulse = time.monotonic() + self.pulse_interval if self.pulse_interval else 0.0
        self.closing = False
        self.attach_key = secrets.token_hex(32)  # the client's key to attach to nodes (Attach)

    # -- set up ---------------------------------------------------------------------------
    def specs(self) -> list[NodeAllocate]:
        """The node specs to use: the client's, or every node the scheduler knows."""
        port = self.daemon.cfg.node_port
        if not self.node_data:
            specs = [SharedSpec("*", port, 0, [], [])]
        elif not isinstance(self.node_data, list):
            raise ConfigError("malformed node specs")
        else:
            specs = [spec_from_data(d, port) for d in self.node_data]
        return list(self.daemon.expand(specs))

    def start(self) -> None:
        """Admitted: start the engine (nodes are contacted, jobs may run)."""
        compute = self.compute
        computation = Computation(compute.name, compute.kind, list(compute.payload), list(compute.files),
                                  ships_code=self.ships_code, sources=compute.sources)
        self.engine = ClusterEngine(self.daemon, self, computation, self.specs(), compute)
        self.state = "running"
        self.daemon.spawn(self.engine._main())

    # -- client -> scheduler ------------------------------------------------------------
    def submit(self, specs: list[JobSpec]) -> None:
        engine = self.engine
        assert engine is not None
        daemon = self.daemon
        for spec in specs:
            if not isinstance(spec, JobSpec) or not isinstance(spec.job_id, int) or spec.job_id in self.jobs:
                log.warning("cluster %s: malformed or duplicate job from %s ignored", self.name, self.client)
                continue
            try:
                daemon.check_files(list(spec.files))
            except ConfigError as exc:
                self._refused(engine, spec.job_id, str(exc))
                continue
            pin = None
            if spec.node is not None:
                pin = daemon.node_key(str(spec.node))
                if pin is None:
                    self._refused(engine, spec.job_id, f"submit_node: node {spec.node} is not known to dispyscheduler")
                    continue
            uid = daemon.new_uid()
            node_spec = dataclasses.replace(spec, job_id=uid, node=None)
            tx = payload_size(spec.args) + sum(len(f.data) for f in spec.files) + payload_size(spec.depends)
            job = SchedJob(spec.job_id, uid, node_spec, tx, pin, engine)
            self.jobs[spec.job_id] = job
            engine._jobs[uid] = job
            engine._queue(job)
        daemon.dispatch()
        daemon.changed()

    def _refused(self, engine: ClusterEngine, cid: int, reason: str) -> None:
        """A job submitted that can't run: it ends Cancelled, with the reason (and is
        counted as submitted and failed, as a job cancelled later is)."""
        engine._count_end(JobStatus.Cancelled)
        self.result(JobResult(cid, JobStatus.Cancelled, exception=reason, end_time=time.time()), None, 0)

    def ack(self, job_ids: list[int]) -> None:
        """The client has these results: forget them, and let their nodes forget them."""
        by_node: dict[tuple[str, int], list[int]] = {}
        for cid in job_ids:
            held = self.held.pop(cid, None) if isinstance(cid, int) else None
            if held is None:
                continue
            _, key, uid = held
            self._held_uids.discard(uid)
            if key is not None:
                by_node.setdefault(key, []).append(uid)
        if self.engine is not None:
            for key, uids in by_node.items():
                self.engine.ack(key, uids)

    def release_results(self) -> None:
        """Acknowledge every held result to its node (the scheduler keeps them itself)."""
        by_node: dict[tuple[str, int], list[int]] = {}
        for _, key, uid in self.held.values():
            if key is not None:
                by_node.setdefault(key, []).append(uid)
        if self.engine is not None:
            for key, uids in by_node.items():
                self.engine.ack(key, uids)

    def cancel(self, cid: int) -> None:
        job = self.jobs.get(cid)
        if job is None or self.engine is None:
            return
        self.engine.cancel(job)

    async def node_request(self, msg: NodeRequest) -> None:
        if msg.op == "node_jobs":
            self.send(await self._node_jobs(msg))
            return
        status, error = await self._node_request(msg)
        self.send(NodeReply(self.compute_id, msg.req_id, status, error))

    async def _node_jobs(self, msg: NodeRequest) -> NodeReply:
        """node_jobs(from_node=True) of the client: ask the node, answer with the client's
        ids of the jobs it runs for this cluster."""
        engine = self.engine
        key = engine.node_key(msg.node) if engine is not None and isinstance(msg.node, str) and msg.node else None
        if engine is None or self.closing or key is None:
            return NodeReply(self.compute_id, msg.req_id, -1, f"node {msg.node!r} does not serve this cluster")
        jobs = await engine.node_jobs_from_node(key)
        if jobs is None:
            return NodeReply(self.compute_id, msg.req_id, -1, f"node {msg.node} did not tell its jobs")
        return NodeReply(self.compute_id, msg.req_id, len(jobs), "", [job.cid for job in jobs])

    async def _node_request(self, msg: NodeRequest) -> tuple[int, str]:
        engine = self.engine
        if engine is None or self.closing:
            return -1, "the cluster is not running"
        op = msg.op
        if op == "allocate":
            if msg.spec is not None:
                try:
                    item: Any = spec_from_data(msg.spec, self.daemon.cfg.node_port)
                except ConfigError as exc:
                    return -1, str(exc)
            else:
                item = msg.node
            key = engine.node_key(msg.node) if msg.node else None
            status = engine.allocate(item, key)
            return status, "" if status == 0 else f"can't allocate node {msg.node or item.host}"
        key = engine.node_key(msg.node) if isinstance(msg.node, str) and msg.node else None
        if key is None:
            return -1, f"node {msg.node!r} does not serve this cluster"
        if op == "deallocate":
            return engine.deallocate(key), ""
        if op == "close":
            return await engine.close_node(key, bool(msg.arg)), ""
        if op == "set_cpus":
            if not isinstance(msg.arg, int) or isinstance(msg.arg, bool):
                return -1, f"set_node_cpus: CPUs must be an int, not {msg.arg!r}"
            if not (self.exclusive or self.daemon.cfg.cooperative):
                return -1, ("set_node_cpus: dispyscheduler changes a node's CPUs only for exclusive clusters, "
                            "or when started with --cooperative (the node is shared with other clusters)")
            n = engine.set_node_cpus(key, msg.arg)
            return n, "" if n >= 0 else f"set_node_cpus({msg.arg}) failed on node {msg.node}"
        if op == "send_file":
            if not isinstance(msg.file, FileData):
                return -1, "send_file: no file"
            try:
                self.daemon.check_files([msg.file])
            except ConfigError as exc:
                return -1, f"send_file: {exc}"
            return await engine.send_file(key, msg.file), ""
        return -1, f"unknown node request {op!r}"

    # -- scheduler -> client -------------------------------------------------------------
    def holds_uid(self, uid: int) -> bool:
        return uid in self._held_uids

    def result(self, r: JobResult, key: tuple[str, int] | None, uid: int) -> None:
        """A job's final result (or how it ended): kept until the client acknowledges it."""
        self.jobs.pop(r.job_id, None)
        self.held[r.job_id] = (r, key, uid)
        self._held_uids.add(uid)
        self._out.append(r)
        self._flush_soon()

    def provisional(self, r: JobResult) -> None:
        self._out.append(r)
        self._flush_soon()

    def started(self, key: tuple[str, int], jobs: list[SchedJob]) -> None:
        ip, port = key
        for job in jobs:
            self._started.append([job.cid, ip, port, job.start_time, job._uid])
        self._flush_soon()

    def node_status(self, status: int, session: NodeSession) -> None:
        node = session.node
        if node is None or session.key is None:
            return
        a = node.avail_info
        avail = None if a is None else AvailInfo(a.cpu, a.memory, a.disk, a.swap)
        self._flush()  # jobs started / results before the node's state changes
        attach = None
        tls = self.daemon.attach_tls
        if status == NodeStatus.Initialized and tls is not None and self.engine is not None:
            attach = [self.engine.compute_id, self.attach_key, tls, self.daemon.attach_macs]
        self.send(ClusterNode(self.compute_id, status, session.key[0], session.key[1], node.name, node.cpus,
                              node.platform, avail, node.busy, node.jobs_done, node.cpu_time, node.tx, node.rx,
                              attach))

    def send(self, msg: Message) -> None:
        channel = self.channel
        if channel is None or channel.closed:
            return  # kept results go again after Resume; the rest is not needed then
        try:
            channel.send(msg)
        except Exception as exc:
            log.debug("cluster %s: sending to client %s failed: %s", self.name, self.client, exc)

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self._started:
            started, self._started = self._started, []
            self.send(JobsStarted(self.compute_id, started))
        if self._out:
            out, self._out = self._out, []
            self.send(JobResults(self.compute_id, out))

    def resend_held(self) -> None:
        """After Resume: every result the client has not acknowledged, again, and where
        the jobs still running run (JobsStarted sent meanwhile went nowhere)."""
        self._out = [r for r, _, _ in self.held.values()]
        self._started = [[job.cid, job._node.key[0], job._node.key[1], job.start_time, job._uid]
                         for job in self.jobs.values()
                         if job.status == JobStatus.Running and job._node is not None and job._node.key]
        self._flush()

    # -- status ---------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs."""
        running = sum(1 for job in self.jobs.values() if job.status == JobStatus.Running)
        return len(self.jobs) - running, running
