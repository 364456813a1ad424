"""``SharedJobCluster``: a cluster whose jobs dispyscheduler runs on nodes shared with
other client programs.

The client talks to the scheduler as to its one node (the same conversation and engine
as JobCluster: Compute, SubmitJobs, JobResults with acknowledgements, Resume after a
dropped connection, Pulse, CloseComputation). The scheduler takes every job at once and
queues it; it tells the client where and when each job started (``JobsStarted``) and
what happens to the nodes (``ClusterNode``), which this module turns into the
DispyJob/DispyNode fields and ``cluster_status`` calls a JobCluster gives. Calls on one
node (allocate, deallocate, close, set CPUs, send a file) are ``NodeRequest``\\ s the
scheduler carries out. Provisional results and files of jobs come straight from the
nodes the client attaches to (:mod:`._attach`), unless a job relays them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from dispy_core import config, netif
from dispy_core.errors import ConfigError, ConnectionClosed
from dispy_core.messages import ClusterNode, FileData, JobFile, JobResult, JobsStarted, NodeReply, NodeRequest
from dispy_core.nodes import DispyNode, DispyNodeAvailInfo, NodeAllocate, parse_nodes, split_host_port
from dispy_core.session import NodeSession
from dispy_core.status import JobStatus, NodeStatus

from ._attach import AttachLink
from ._cluster import JobCluster
from ._job import DispyJob
from ._runtime import Runtime

__all__ = ["SharedJobCluster"]

log = logging.getLogger("dispy")

_Running = JobStatus.Running
_EARLY_MAX = 10000


def node_specs_data(nodes: Any, dispy_port: int | None) -> list[dict[str, Any]]:
    """The ``nodes`` argument as data for the scheduler, which evaluates it.
    NodeAllocate subclasses can't be: their ``allocate()`` would have to run there."""
    data = []
    for spec in parse_nodes(nodes, dispy_port):
        if type(spec) is not NodeAllocate:
            raise ConfigError(
                f"SharedJobCluster: {type(spec).__name__} (a NodeAllocate subclass) is not supported: "
                "dispyscheduler chooses nodes with NodeAllocate's own rules (host, port, cpus), it can't "
                "run your allocate(); give NodeAllocate objects, host names or wildcards")
        data.append({"host": spec.host, "port": spec.port, "cpus": spec.cpus,
                     "files": spec._depends_data(), "setup_args": spec._setup_payload()})
    return data


class SharedRuntime(Runtime):
    """The engine of a SharedJobCluster: its one "node" is dispyscheduler (see the module
    docstring). ``nodes`` holds the real nodes, as the scheduler reports them."""

    sent_runs = False  # jobs wait in the scheduler until JobsStarted

    def __init__(self, *args: Any, client_port: int = 0, local_port: int = 0, **kwargs: Any) -> None:
        self.local_port = local_port  # SharedJobCluster(client_port=): the port replies come to
        self.scheduler: DispyNode | None = None
        self._where: dict[int, tuple[str, int]] = {}  # job uid -> node it runs on
        self._node_uid: dict[int, int] = {}  # job uid -> the id its node knows it by
        self._by_node_uid: dict[int, int] = {}  # and back
        self._early: dict[int, list[Any]] = {}  # items of jobs not reported started yet
        self._links: dict[tuple[str, int], AttachLink] = {}  # nodes attached to (see _attach.py)
        self._requests: dict[int, asyncio.Future[NodeReply]] = {}
        self._req_ids = itertools.count(1)
        super().__init__(*args, client_port=client_port, **kwargs)

    def local_addr_for(self, host: str) -> tuple[str, int] | None:
        addr = super().local_addr_for(host)
        if not self.local_port:
            return addr
        return (addr[0] if addr else "", self.local_port)

    # -- the scheduler as the session's node -------------------------------------------
    def node_record(self, session: NodeSession, info: Any, avail: DispyNodeAvailInfo | None) -> DispyNode:
        if self.scheduler is None:
            self.scheduler = DispyNode(session.host, info.name, 0, info.platform)
        self.scheduler.update_time = time.time()
        return self.scheduler

    def node_ready(self, session: NodeSession) -> None:
        super().node_ready(session)
        self.scheduler_session = session

    def _node_status(self, status: int, session: NodeSession) -> None:
        if status == NodeStatus.Initialized:
            log.info("dispyscheduler %s admitted computation %s", session.label, self.computation.name)
            if self.recover is not None and session.key is not None:
                self.recover.add_node(session.key[0], session.key[1], "dispyscheduler")
        elif status == NodeStatus.Closed and not self.closing:
            log.warning("lost dispyscheduler %s", session.label)

    def _jobs_dispatched(self, session: NodeSession, jobs: list[DispyJob]) -> None:
        """Sent to the scheduler, where they wait (Created): Running once on a node (JobsStarted)."""

    # -- what the scheduler reports -------------------------------------------------------
    def on_shared(self, session: NodeSession, msg: Any) -> None:
        if isinstance(msg, JobsStarted):
            self._started(session, msg)
        elif isinstance(msg, ClusterNode):
            self._cluster_node(msg)
        elif isinstance(msg, NodeReply):
            fut = self._requests.pop(msg.req_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _started(self, session: NodeSession, msg: JobsStarted) -> None:
        if msg.compute_id != self.compute_id or not isinstance(msg.jobs, list):
            return
        callbacks, cluster_status = self.callbacks, self.cluster_status
        for entry in msg.jobs:
            try:
                uid, ip, port, start, node_uid = entry
                job = self._jobs.get(uid)
            except (TypeError, ValueError):
                continue
            if job is None or job._node is not session:
                continue
            key = (str(ip), int(port))
            self._where[uid] = key
            if isinstance(node_uid, int):
                self._node_uid[uid] = node_uid
                self._by_node_uid[node_uid] = uid
            job.status = _Running
            job.host = key[0]
            job.start_time = float(start) if isinstance(start, (int, float)) else time.time()
            node = self.nodes.get(key)
            if node is not None:
                node.busy += 1
            if callbacks is not None and cluster_status is not None:
                callbacks.put(cluster_status, _Running, node, job)
            early = self._early.pop(node_uid, None) if self._early else None
            for item in early or ():
                self._attached_item(node_uid, item)

    def _cluster_node(self, msg: ClusterNode) -> None:
        if msg.compute_id != self.compute_id:
            return
        key = (msg.ip_addr, msg.port)
        node = self.nodes.get(key)
        if node is None:
            node = DispyNode(msg.ip_addr, msg.name, msg.cpus, msg.platform)
            self.nodes[key] = node
        node.name, node.cpus, node.platform = msg.name, msg.cpus, msg.platform
        node.busy, node.jobs_done, node.cpu_time = msg.busy, msg.jobs_done, msg.cpu_time
        node.tx, node.rx = msg.tx, msg.rx
        node.update_time = time.time()
        a = msg.avail_info
        if a is not None:
            node.avail_info = DispyNodeAvailInfo(a.cpu, a.memory, a.disk, a.swap)
        if msg.status == NodeStatus.Initialized:
            self.ever_initialized = True
            log.info("node %s (%s) ready with %d CPUs for computation %s", msg.ip_addr, msg.name, msg.cpus,
                     self.computation.name)
            self._attach(key, msg.attach)
        elif msg.status == NodeStatus.Closed:
            link = self._links.pop(key, None)
            if link is not None:
                link.close()
        if self.cluster_status is not None and self.callbacks is not None:
            self.callbacks.put(self.cluster_status, msg.status, node, None)

    # -- straight from the nodes (see _attach.py) -----------------------------------------
    def _attach(self, key: tuple[str, int], attach: Any) -> None:
        if self.closing or not isinstance(attach, list) or len(attach) != 4:
            return
        compute_id, secret, tls, macs = attach
        if not isinstance(compute_id, str) or not isinstance(secret, str):
            return
        old = self._links.get(key)
        if old is not None:
            old.close()
        link = AttachLink(key[0], key[1], compute_id, secret, bool(macs), ssl=self.ssl if tls else None,
                          software=self.software, local_addr=Runtime.local_addr_for(self, key[0]),
                          on_item=self._attached_item)
        self._links[key] = link
        self._spawn(link.run())

    def _attached_item(self, node_uid: int, item: Any) -> None:
        """A provisional result (JobResult) or file (JobFile) straight from a node."""
        uid = self._by_node_uid.get(node_uid)
        if uid is None:
            # Before the scheduler's JobsStarted for the job (it comes the other way round):
            # kept until then, at most _EARLY_MAX items.
            if sum(len(v) for v in self._early.values()) < _EARLY_MAX:
                self._early.setdefault(node_uid, []).append(item)
            return
        job = self._jobs.get(uid)
        if job is None or job._node is None:
            return
        if isinstance(item, JobFile):
            self._job_file(job._node, job, item)
        elif isinstance(item, JobResult) and item.status == JobStatus.ProvisionalResult:
            self._job_provisional(job._node, job, dataclasses.replace(item, job_id=uid))

    def _forget_node_uid(self, uid: int) -> None:
        node_uid = self._node_uid.pop(uid, None)
        if node_uid is not None:
            self._by_node_uid.pop(node_uid, None)

    def _job_node(self, session: NodeSession, job: DispyJob) -> DispyNode | None:
        key = self._where.get(job._uid)
        return None if key is None else self.nodes.get(key)

    def _job_result(self, session: NodeSession, job: DispyJob, r: Any, status: int) -> int:
        rx = super()._job_result(session, job, r, status)
        self._forget_node_uid(job._uid)
        key = self._where.pop(job._uid, None)
        node = None if key is None else self.nodes.get(key)
        if node is not None:
            node.busy = max(0, node.busy - 1)
            node.jobs_done += 1
            if job.start_time and job.end_time:
                node.cpu_time += job.end_time - job.start_time
            node.rx += rx
        return rx

    def _job_finished(self, job: DispyJob, status: int, node: DispyNode | None, now: float,
                      exception: str) -> None:
        key = self._where.pop(job._uid, None)
        self._forget_node_uid(job._uid)
        super()._job_finished(job, status, node if key is None else self.nodes.get(key), now, exception)

    def node_jobs(self, key: tuple[str, int]) -> list[DispyJob]:
        jobs = self._jobs
        return [jobs[uid] for uid, where in self._where.items() if where == key and uid in jobs]

    async def node_jobs_from_node(self, key: tuple[str, int]) -> list[DispyJob] | None:  # type: ignore[override]
        """The scheduler asks the node which of this cluster's jobs run there now."""
        reply = await self._ask("node_jobs", key[0])
        if reply is None or reply.status < 0 or not isinstance(reply.job_ids, list):
            return None
        jobs = self._jobs
        return [jobs[uid] for uid in reply.job_ids if isinstance(uid, int) and uid in jobs]

    # -- calls on one node, carried out by the scheduler ---------------------------------
    async def _request(self, op: str, node: str = "", arg: Any = None, spec: dict[str, Any] | None = None,
                       file: FileData | None = None) -> int:
        reply = await self._ask(op, node, arg, spec, file)
        return -1 if reply is None else int(reply.status)

    async def _ask(self, op: str, node: str = "", arg: Any = None, spec: dict[str, Any] | None = None,
                   file: FileData | None = None) -> NodeReply | None:
        """Send a NodeRequest; its NodeReply (failures logged), or None if none came."""
        session = getattr(self, "scheduler_session", None)
        if session is None or not session.ready or self.closing:
            log.error("%s: not connected to dispyscheduler", op)
            return None
        req_id = next(self._req_ids)
        fut: asyncio.Future[NodeReply] = asyncio.get_running_loop().create_future()
        self._requests[req_id] = fut
        try:
            session.send(NodeRequest(self.compute_id, req_id, op, node, arg, spec, file))
            closed = session.closed_future()
            await asyncio.wait([fut, closed], return_when=asyncio.FIRST_COMPLETED,
                               timeout=None if op in ("close", "send_file") else config.MsgTimeout * 2)
        except Exception as exc:
            log.error("%s: %s", op, exc)
            return None
        finally:
            self._requests.pop(req_id, None)
        if not fut.done():
            log.error("%s on node %s: dispyscheduler did not answer", op, node)
            return None
        reply = fut.result()
        if reply.status < 0 and reply.error:
            log.error("%s on node %s: %s", op, node, reply.error)
        return reply

    def deallocate(self, key: tuple[str, int]) -> Any:  # type: ignore[override]
        return self._request("deallocate", key[0])

    def allocate(self, item: Any, key: tuple[str, int] | None) -> Any:  # type: ignore[override]
        if key is not None:
            return self._request("allocate", key[0])
        try:
            spec = node_specs_data([item], self.dispy_port)[0]
        except ConfigError as exc:
            log.error("allocate_node(%r): %s", item, exc)
            return -1
        return self._request("allocate", spec=spec)

    def discover(self, items: list[Any]) -> Any:  # type: ignore[override]
        async def run() -> int:
            status = 0
            for item in items:
                key = self.node_key(item) if isinstance(item, (str, DispyNode)) and "*" not in str(item) else None
                result = self.allocate(item, key)
                status |= (await result) if asyncio.iscoroutine(result) else result
            return status
        return run()

    async def close_node(self, key: tuple[str, int], terminate: bool) -> int:
        return await self._request("close", key[0], bool(terminate))

    def set_node_cpus(self, key: tuple[str, int], cpus: int) -> Any:  # type: ignore[override]
        return self._request("set_cpus", key[0], cpus)

    async def send_file(self, key: tuple[str, int], file: FileData) -> int:
        return await self._request("send_file", key[0], file=file)

    async def send_file_straight(self, key: tuple[str, int], file: FileData) -> int:
        """send_file on the node's attached connection; through the scheduler if there is
        none or it closes before the node answered."""
        link = self._links.get(key)
        if link is None or not link.attached:
            return await self.send_file(key, file)
        try:
            error = await link.send_file(file)
        except ConnectionClosed as exc:
            log.info("send_file(): %s; sending %s through dispyscheduler", exc, file.name)
            return await self.send_file(key, file)
        if error:
            log.error("send_file(): node %s did not save %s: %s", link.label, file.name, error)
            return -1
        node = self.nodes.get(key)
        if node is not None:
            node.tx += len(file.data)
        return 0


class SharedJobCluster(JobCluster):
    """A cluster that shares nodes with other client programs through dispyscheduler
    (running at ``scheduler_node``, default this host; ``"host:port"`` names another
    port than 9702). Parameters and methods are JobCluster's, except:

    * ``secret``, ``keyfile``/``certfile`` are for the scheduler (its
      ``--cluster_secret`` and ``--cluster_certfile``); the scheduler has its own with nodes;
    * ``nodes`` are evaluated by the scheduler: host names, IP addresses, wildcards and
      NodeAllocate objects (not subclasses: their ``allocate()`` can't run there);
    * ``exclusive=True``: the cluster waits until no other runs, then has the nodes alone
      (later clusters wait for it); it may ``set_node_cpus``, reset when it closes;
    * ``client_port`` (dispy 4.x: ``port``): the local port the connection to the
      scheduler (and so its replies) uses, e.g. one forwarded by ssh; 0: any free port;
      None (default): ``dispy.config.SharedSchedulerClientPort`` (0 unless set);
    * ``scheduler_port`` (dispy 4.x): the scheduler's port, as ``"host:port"`` in
      ``scheduler_node`` would give it (default ``dispy_port`` + 2);
    * ``poll_interval`` is checked (5-1000 s) and not needed: the client opens every
      connection, so results reach it wherever it is;
    * ``pulse_interval`` is the scheduler's (``dispyscheduler --pulse_interval``), and
      ``resetup_node`` is not available.
    """

    def __init__(
        self,
        computation: Any,
        nodes: Any = None,
        depends: list[Any] | None = None,
        job_status: Callable[[DispyJob], Any] | None = None,
        cluster_status: Callable[[int, DispyNode | None, DispyJob | None], Any] | None = None,
        host: str | list[str] | None = None,
        client_port: int | None = None,
        dispy_port: int | None = None,
        scheduler_node: str | None = None,
        ext_host: Any = None,
        loglevel: int | str = logging.INFO,
        setup: Callable[..., Any] | None = None,
        cleanup: bool | Callable[..., Any] = True,
        dest_path: str | None = None,
        reentrant: bool = False,
        poll_interval: float | None = None,
        exclusive: bool = False,
        secret: str | bytes = "",
        keyfile: str | None = None,
        certfile: str | None = None,
        recover_file: str | None = None,
        *,
        pulse_interval: float | None = None,
        job_timeout: float | None = None,
        process_per_job: bool = False,
        scheduler_host: str | None = None,
        ip_addr: str | list[str] | None = None,
        ext_ip_addr: Any = None,
        callback: Callable[[DispyJob], Any] | None = None,
        port: int | None = None,
        scheduler_port: int | None = None,
    ) -> None:
        self._runtime = None
        self._closed = True
        if port is not None:  # dispy 4.x's name (the documentation's SSH example uses it)
            if client_port is not None:
                raise ConfigError("give client_port or its old name port, not both")
            client_port = port
        if client_port is None:
            client_port = config.SharedSchedulerClientPort
        if pulse_interval is not None:
            raise ConfigError("SharedJobCluster takes no pulse_interval: nodes pulse the scheduler, as "
                              "dispyscheduler --pulse_interval says")
        if not isinstance(exclusive, bool):
            raise ConfigError(f"exclusive must be True or False, not {exclusive!r}")
        if isinstance(client_port, bool) or not isinstance(client_port, int) or not 0 <= client_port < 65536:
            raise ConfigError(f"client_port must be a port number (0: any), not {client_port!r}")
        if scheduler_host is not None:  # dispy 4.15's name
            if scheduler_node is not None:
                raise ConfigError("give scheduler_node or its other name scheduler_host, not both")
            scheduler_node = scheduler_host
        self._scheduler = self._scheduler_address(scheduler_node, dispy_port)
        if scheduler_port is not None:
            if isinstance(scheduler_port, bool) or not isinstance(scheduler_port, int) \
                    or not 0 < scheduler_port < 65536:
                raise ConfigError(f"scheduler_port must be a port number, not {scheduler_port!r}")
            self._scheduler = (self._scheduler[0], scheduler_port)
        self._exclusive = exclusive
        self._client_port = client_port
        self._node_data = node_specs_data(nodes, dispy_port)  # ConfigError now, before anything starts
        super().__init__(
            computation, None, depends, job_status, cluster_status, host, ext_host, dispy_port, False,
            dest_path, loglevel, setup, cleanup, None, None, reentrant, secret, keyfile, certfile,
            recover_file, process_per_job, job_timeout, poll_interval=poll_interval, ip_addr=ip_addr,
            ext_ip_addr=ext_ip_addr, callback=callback)

    @staticmethod
    def _scheduler_address(node: Any, dispy_port: int | None) -> tuple[str, int]:
        port = config.scheduler_port(dispy_port or None)
        if node is None:  # where dispyscheduler started without -i on this host serves
            return netif.default_ip_addr(), port
        if not isinstance(node, str) or not node.strip():
            raise ConfigError(f"scheduler_node must be a host name or IP address, not {node!r}")
        host, given = split_host_port(node.strip())
        return host, given or port

    def _new_runtime(self, specs: list[Any], **kwargs: Any) -> Runtime:
        host, port = self._scheduler
        options = {"nodes": self._node_data, "exclusive": self._exclusive,
                   "reentrant": bool(kwargs.get("reentrant")), "ships_code": self._computation.ships_code,
                   **kwargs.pop("compute_options", {})}
        kwargs["reentrant"] = False  # the scheduler reruns jobs of lost nodes; a lost scheduler is resumed
        return SharedRuntime(self, self._computation, [NodeAllocate(host, port)], compute_options=options,
                             local_port=self._client_port, **kwargs)

    @staticmethod
    def _file_sender(runtime: Runtime, relay: bool) -> Callable[..., Any]:
        assert isinstance(runtime, SharedRuntime)
        return runtime.send_file if relay else runtime.send_file_straight

    def _place(self, spec: Any, pin: Any) -> tuple[Any, Any]:
        if pin is None:
            return spec, None
        return dataclasses.replace(spec, node=f"{pin[0]}:{pin[1]}"), None  # the scheduler pins it

    def resetup_node(self, node: Any, terminate_pending: bool = False) -> int:
        """Not available with SharedJobCluster (the nodes are shared): returns -1."""
        log.error("resetup_node() is not available with SharedJobCluster: the scheduler shares the node "
                  "with other clusters; use close_node() and allocate_node()")
        return -1

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SharedJobCluster {self.name} {state} via {self._scheduler[0]}:{self._scheduler[1]}>"
