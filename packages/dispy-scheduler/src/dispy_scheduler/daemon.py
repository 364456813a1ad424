"""dispyscheduler's daemon: many SharedJobCluster clients, one pool of nodes.

One asyncio loop runs everything (see docs/design/shared-scheduler.md):

* a listener for clients (``--scheduler_port``, ``--cluster_secret``, the cluster TLS
  pair). A client talks to the scheduler as to a node (InfoRequest, Compute, SubmitJobs
  ...): the scheduler is its one node, which takes every job at once and queues it;
* per admitted cluster a :class:`~dispy_scheduler.cluster.ClusterEngine`, which sets the
  computation up on nodes (``--node_secret``, the node TLS pair) and runs its jobs;
* one :class:`dispy_core.scheduling.Scheduler` shared by those engines: each node is in
  it once, each cluster has a queue there, and the policy (``default``, ``fair``,
  ``early``) chooses whose job takes a free slot. :meth:`Daemon.dispatch` hands each
  placed job to its cluster's engine.

Clusters are admitted in arrival order; an ``exclusive`` one waits until no other runs,
and clusters arriving after it wait until it has closed. A client whose connection drops
may come back with Resume (its cluster goes on meanwhile) within the client window
(``min(30 s, --zombie_interval)``); after that it is dead: its computation is closed on
the nodes (jobs terminated), its queue dropped, its nodes free for the others, and the
results it had not acknowledged saved under ``--dest_path_prefix`` for ``recover_jobs``
until ``--zombie_interval`` passes. A connected client that sends nothing is pinged, and
taken for dead after ``--zombie_interval``. Nothing done for one client waits on another.

With ``--httpd`` the daemon owns a :class:`~dispy_scheduler.web.SchedulerWeb` (the web
monitor): it tells it of each cluster admitted and closed, and of changes (:meth:`Daemon.changed`).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import platform
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from dispy_core import config, messages, tls
from dispy_core.aio import Channel, StallWatch
from dispy_core.connection import Connection
from dispy_core.discovery import Discovery
from dispy_core.engine import RESUME_WINDOW, LoopThread
from dispy_core.errors import ConfigError, DispyError
from dispy_core.listen import ChannelServer, peer_text
from dispy_core.prefix import DaemonPrefix
from dispy_core.refusals import RefusalLog, once_key, reason_of
from dispy_core.messages import (
    AckResults,
    CancelJob,
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    ErrorReport,
    InfoRequest,
    JobResults,
    Message,
    NodeInfo,
    NodeRequest,
    Ping,
    Pong,
    Pulse,
    Resume,
    Resumed,
    SubmitJobs,
    Welcome,
)
from dispy_core.nodes import DispyNode, is_wildcard
from dispy_core.scheduling import Scheduler
from dispy_core.session import NodeSession
from dispy_core.sources import check_sources

from .__about__ import __version__
from .cluster import ClusterEngine, SchedJob, SharedCluster, SharedSpec
from .options import SchedulerConfig, parse_node

if TYPE_CHECKING:
    from .web import SchedulerWeb

__all__ = ["Daemon", "CLIENT_SLOTS"]

log = logging.getLogger("dispy.scheduler")

#: The CPUs the scheduler reports to a client (it is the client's one "node"): the client
#: sends every job at once and the scheduler queues them, so that the policy chooses
#: between the clusters' queued jobs.
CLIENT_SLOTS = 1 << 20

SOFTWARE = f"dispyscheduler {__version__} / Python {platform.python_version()}"
#: Under --dest_path_prefix: the results dead clients did not get, for recover_jobs.
RESULTS_DIRECTORY = "results"


class _Known:
    """A node the scheduler knows of (from discovery): what Engine._on_discovered reads."""

    __slots__ = ("ip_addr", "port", "name", "node_id")

    def __init__(self, ip_addr: str, port: int, name: str, node_id: str = "") -> None:
        self.ip_addr, self.port, self.name, self.node_id = ip_addr, port, name, node_id


def attach_tls(node_certfile: str | None, cluster_certfile: str | None) -> bool | None:
    """How clients attach to nodes (ClusterNode.attach): False over TCP (nodes without
    TLS), True over TLS (the nodes' certificate is the clients' own), None: they can't (a
    node with TLS accepts only its certificate, which clients don't hold)."""
    if node_certfile is None:
        return False
    if cluster_certfile is None:
        return None
    try:
        with open(node_certfile, "rb") as a, open(cluster_certfile, "rb") as b:
            return True if a.read() == b.read() else None
    except OSError:
        return None


class Daemon:
    """A running dispyscheduler. Create it in a running loop; ``await run(started)``."""

    def __init__(self, cfg: SchedulerConfig) -> None:
        self.cfg = cfg
        self.software = SOFTWARE
        self.sched: Scheduler[SchedJob] = Scheduler(key=operator.attrgetter("_uid"), policy=cfg.policy)
        self.node_ssl = tls.client_context(cfg.node_certfile, cfg.node_keyfile) if cfg.node_certfile else None
        self.cluster_ssl = tls.server_context(cfg.cluster_certfile, cfg.cluster_keyfile) \
            if cfg.cluster_certfile else None
        self.attach_tls = attach_tls(cfg.node_certfile, cfg.cluster_certfile)
        # Attached connections get frame MACs as the clients' own connections do.
        self.attach_macs = bool(cfg.cluster_secret)
        if self.attach_tls is None:
            log.info("node and cluster certificates differ: clients can't attach to nodes, so provisional "
                     "results and files of jobs come through dispyscheduler")
        # Nodes pulse every --pulse_interval (5 missed: presumed dead, jobs rerun with
        # reentrant); without it every zombie_interval / 5, so a node silent for
        # --zombie_interval is taken for dead, as the documentation says.
        self.node_pulse_interval = cfg.pulse_interval or cfg.zombie_interval * 60.0 / 5
        self.client_window = min(RESUME_WINDOW, cfg.zombie_interval * 60.0)
        self.clusters: dict[str, SharedCluster] = {}  # admitted or waiting, by compute id
        self.waiting: deque[SharedCluster] = deque()
        self._uid = 0
        self.pool: dict[tuple[str, int], set[ClusterEngine]] = {}  # node -> engines using it
        self.node_info: dict[tuple[str, int], DispyNode] = {}
        self._cpus_before: dict[tuple[str, int], int] = {}  # node CPUs an exclusive cluster changed
        # Nodes using fewer CPUs than they have: one job per CPU in flight there (no
        # pipelining, or the node would run more jobs at once than the CPUs set).
        self.limited: set[tuple[str, int]] = set()
        self.known: dict[tuple[str, int], _Known] = {}
        self.watchers: set[ClusterEngine] = set()
        self.listening: list[tuple[str, int]] = []
        self.closing = False
        self.draining = False
        self.done_clusters = 0
        self.loop_ref: LoopThread | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: ChannelServer | None = None
        # Refused client connections (another secret, garbage, no handshake in time):
        # logged, with floods summarised (see dispy_core.refusals)
        self.refusals = RefusalLog(log)
        self._discovery: Discovery | None = None
        self.results_dir = os.path.join(cfg.dest_path_prefix, RESULTS_DIRECTORY)  # see _prepare_dir
        self.results_own = False  # whether dispyscheduler created results_dir (expiring is then safe)
        self._stalls = StallWatch(cfg.msg_timeout)  # --msg_timeout on I/O with clients
        self.web: SchedulerWeb | None = None  # --httpd

    @property
    def web_url(self) -> str | None:
        """The web monitor's address, ready to open (None without --httpd)."""
        return self.web.url if self.web is not None else None

    def changed(self) -> None:
        """Something the web monitor shows changed (jobs, nodes): it samples soon."""
        if self.web is not None:
            self.web.notify()

    # == life ==============================================================================
    async def run(self, started: Callable[[Daemon], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.loop_ref = LoopThread.adopt(loop)
        config.MsgTimeout = self.cfg.msg_timeout  # this process's timeout toward nodes (and clients)
        self._stop = asyncio.Event()
        self._prepare_dir()
        if self.cfg.httpd:
            # first: a port that is taken stops the start before clients are served
            from .web import SchedulerWeb

            self.web = SchedulerWeb(self)
            self.web.start()
        self._server = ChannelServer(self._new_channel, ssl=self.cluster_ssl, timeout=self.cfg.msg_timeout,
                                     log=log, refusals=self.refusals, tls_hint="a SharedJobCluster needs dispyscheduler's "
                                                       "--cluster_certfile as its certfile")
        port = self.cfg.scheduler_port
        try:
            for ip in self.cfg.ip_addrs:
                port = await self._server.listen(ip, port)
                self.listening.append((ip, port))
        except BaseException:
            # not started: nothing stays listening (the web monitor's port included)
            self._server.close()
            if self.web is not None:
                self.web.shutdown(wait=False)
            raise
        if self.cfg.nodes:
            log.info("nodes: %s (named with -n: no discovery broadcasts)", ", ".join(self.cfg.nodes))
        else:
            self._discovery = Discovery(self.cfg.node_secret, self.cfg.node_port, self._found,
                                        list(self.cfg.ip_addrs), self.cfg.port,
                                        ipv4_multicast=self.cfg.ipv4_udp_multicast,
                                        ping_interval=self.cfg.ping_interval)
            self.spawn(self._discovery.run())
        self.spawn(self._watch())
        log.info("dispyscheduler %s: %s policy, serving clients at %s", __version__, self.sched.policy,
                 ", ".join(f"{ip}:{p}" for ip, p in self.listening))
        if started is not None:
            started(self)
        await self._stop.wait()
        await self._shutdown()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispyscheduler task failed", exc_info=task.exception())

    def stop(self) -> None:
        """Close every computation (their jobs are terminated) and stop."""
        self.closing = True
        if self._stop is not None:
            self._stop.set()

    def drain(self) -> None:
        """Admit no new clusters; stop once the running ones have closed."""
        self.draining = True
        log.info("dispyscheduler: admitting no new clusters; stopping when the %d running ones close",
                 sum(1 for c in self.clusters.values() if c.state == "running"))
        for cluster in list(self.waiting):
            self._refuse(cluster, "dispyscheduler is shutting down")
        self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if self.draining and not self.clusters:
            self.stop()

    async def _shutdown(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        self.refusals.close()  # the summary of refusals not written yet
        for cluster in list(self.clusters.values()):
            await self.close(cluster, terminate=True, reason="dispyscheduler is stopping")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.web is not None:
            # in a thread: the final snapshot, pushed to the open pages, is read in this loop
            await asyncio.to_thread(self.web.shutdown, True)

    def _prepare_dir(self) -> None:
        # The scheduler keeps only results_dir under the prefix (the results dead clients
        # did not get), and removes only what it created (dispy_core.prefix): --clean
        # looks first and refuses (CleanRefused, nothing removed) a prefix that holds
        # anything else, e.g. a directory of the user's.
        prefix = DaemonPrefix(self.cfg.dest_path_prefix, "dispyscheduler")
        if self.cfg.clean:
            n = prefix.clean()
            log.info("--clean: removed %d entries earlier runs left in %s", n, prefix.path)
        prefix.open()
        self.results_dir = prefix.mkdir(RESULTS_DIRECTORY, 0o700)
        self.results_own = prefix.created(RESULTS_DIRECTORY)
        if not os.path.isdir(self.results_dir):
            raise ConfigError(f"--dest_path_prefix: {self.results_dir} is not a directory")
        if not self.results_own:
            log.info("%s was not created by dispyscheduler: results kept there for recover_jobs "
                     "are removed when recovered, never for their age (--zombie_interval)", self.results_dir)

    # == clients ===========================================================================
    def _new_channel(self) -> Channel:
        return Channel(Connection(initiator=False, secret=self.cfg.cluster_secret, software=SOFTWARE),
                       self._on_message, self._on_close)

    def _on_message(self, ch: Channel, msg: Message) -> None:
        cluster = ch.user
        if isinstance(cluster, SharedCluster):
            cluster.last_heard = time.monotonic()
        kind = type(msg)
        try:
            if kind is SubmitJobs:
                assert isinstance(msg, SubmitJobs)
                if self._mine(ch, msg.compute_id) and isinstance(msg.jobs, list):
                    if msg.acks:
                        cluster.ack(msg.acks)
                    cluster.submit(msg.jobs)
            elif kind is AckResults:
                assert isinstance(msg, AckResults)
                if isinstance(cluster, _Orphan) and isinstance(msg.job_ids, list):
                    cluster.ack(msg.job_ids)
                elif self._mine(ch, msg.compute_id) and isinstance(msg.job_ids, list):
                    cluster.ack(msg.job_ids)
            elif kind is Welcome or kind is Pong:
                pass
            elif kind is InfoRequest:
                ip = self.cfg.ip_addrs[0]
                ch.send(NodeInfo("dispyscheduler", self.cfg.announced_addr(ip), self.listening[0][1],
                                 CLIENT_SLOTS, CLIENT_SLOTS, platform.platform(), platform.python_version(),
                                 SOFTWARE))
            elif kind is Compute:
                assert isinstance(msg, Compute)
                self._admit(ch, msg)
            elif kind is Resume:
                assert isinstance(msg, Resume)
                self._resume(ch, msg.compute_id)
            elif kind is CancelJob:
                assert isinstance(msg, CancelJob)
                if self._mine(ch, msg.compute_id):
                    cluster.cancel(msg.job_id)
            elif kind is NodeRequest:
                assert isinstance(msg, NodeRequest)
                if self._mine(ch, msg.compute_id):
                    self.spawn(cluster.node_request(msg))
            elif kind is CloseComputation:
                assert isinstance(msg, CloseComputation)
                if self._mine(ch, msg.compute_id):
                    self.spawn(self.close(cluster, bool(msg.terminate), reason="its client closed it"))
            elif kind is Ping:
                assert isinstance(msg, Ping)
                ch.send(Pong(msg.nonce))
            else:
                ch.send(ErrorReport(f"dispyscheduler does not take {kind.__name__} messages"))
        except DispyError as exc:
            log.debug("client %s: %s", peer_text(ch.peer), exc)

    def _mine(self, ch: Channel, compute_id: Any) -> bool:
        cluster = ch.user
        if isinstance(cluster, SharedCluster) and cluster.compute_id == compute_id and cluster.state == "running":
            return True
        ch.send(ErrorReport("no such computation running for this connection", compute_id
                            if isinstance(compute_id, str) else ""))
        return False

    def _on_close(self, ch: Channel, exc: BaseException | None) -> None:
        if exc is not None and ch.established.exception() is not None:  # refused at the handshake
            self.refusals.refused(reason_of(exc), "closed client connection from %s: %s", peer_text(ch.peer), exc, once=once_key(exc))
            return
        cluster = ch.user
        if not isinstance(cluster, SharedCluster) or cluster.channel is not ch:
            return
        cluster.channel = None
        if cluster.state == "waiting":
            log.info("client %s of %s left before its cluster was admitted", cluster.client, cluster.name)
            self._forget(cluster)
            return
        if cluster.state == "running" and not cluster.closing:
            cluster.detached_at = time.monotonic()
            log.warning("client %s of %s: connection lost (%s); its cluster goes on for %.0f s for it to "
                        "come back (Resume, recover_jobs)", cluster.client, cluster.name,
                        exc or "closed", self.client_window)

    def _admit(self, ch: Channel, msg: Compute) -> None:
        if ch.user is not None:
            ch.send(ComputeFailed(str(msg.compute_id), "this connection already has a computation"))
            return
        if not isinstance(msg.compute_id, str) or not msg.compute_id or msg.compute_id in self.clusters:
            ch.send(ComputeFailed(str(msg.compute_id), "invalid or duplicate computation id"))
            return
        if self.draining or self.closing:
            ch.send(ComputeFailed(msg.compute_id, "dispyscheduler is shutting down"))
            return
        try:
            check_sources(msg.sources)  # passed on to the nodes as they are
        except ValueError as exc:
            ch.send(ComputeFailed(msg.compute_id, f"malformed Compute: {exc}"))
            return
        cluster = SharedCluster(self, ch, msg, peer_text(ch.peer))
        try:
            specs = cluster.specs()  # malformed node specs are refused now
            files = list(msg.files) + [f for spec in specs for f in spec._depends_data()]
            self.check_files(files)
        except ConfigError as exc:
            ch.send(ComputeFailed(msg.compute_id, str(exc)))
            return
        ch.user = cluster
        self.clusters[cluster.compute_id] = cluster
        self.waiting.append(cluster)
        self._admit_waiting()
        if cluster.state == "waiting":
            running = [c.name for c in self.clusters.values() if c.state == "running"]
            log.info("cluster %s of %s waits (%s)", cluster.name, cluster.client,
                     "exclusive: until no other cluster runs" if cluster.exclusive else
                     f"behind exclusive cluster {', '.join(running)} or earlier waiting ones")

    def check_files(self, files: list[Any]) -> None:
        """ConfigError if a file from a client is over --max_file_size."""
        limit = self.cfg.max_file_size
        for f in files:
            if limit and len(f.data) > limit:
                raise ConfigError(f"file {f.name} ({len(f.data)} bytes) is larger than dispyscheduler's "
                                  f"--max_file_size ({limit} bytes)")

    def _admit_waiting(self) -> None:
        while self.waiting and not self.closing:
            cluster = self.waiting[0]
            running = [c for c in self.clusters.values() if c.state == "running"]
            if any(c.exclusive for c in running) or (cluster.exclusive and running):
                return
            self.waiting.popleft()
            cluster.start()
            if self.web is not None:
                self.web.cluster_started(cluster)
            log.info("cluster %s of %s admitted%s", cluster.name, cluster.client,
                     " (exclusive)" if cluster.exclusive else "")
            cluster.send(ComputeReady(cluster.compute_id, CLIENT_SLOTS, cluster.compute.dest_path or ""))

    def _refuse(self, cluster: SharedCluster, reason: str) -> None:
        cluster.send(ComputeFailed(cluster.compute_id, reason))
        self._forget(cluster)

    def _forget(self, cluster: SharedCluster) -> None:
        cluster.state = "closed"
        if self.web is not None:
            self.web.cluster_closed(cluster)
        if cluster in self.waiting:
            self.waiting.remove(cluster)
        self.clusters.pop(cluster.compute_id, None)
        if cluster.channel is not None:
            cluster.channel.user = None
        self._admit_waiting()
        self._maybe_stopped()

    def _resume(self, ch: Channel, compute_id: Any) -> None:
        cluster = self.clusters.get(compute_id) if isinstance(compute_id, str) else None
        if cluster is not None and cluster.state == "running" and not cluster.closing:
            old = cluster.channel
            if old is not None and old is not ch:
                old.user = None
                old.close()
            ch.user = cluster
            cluster.channel = ch
            cluster.detached_at = None
            cluster.last_heard = time.monotonic()
            log.info("client %s of %s is back (Resume)", peer_text(ch.peer), cluster.name)
            cluster.resend_held()
            ch.send(Resumed(compute_id, True, len(cluster.jobs)))
            return
        orphan = _Orphan.load(self.results_dir, compute_id) if isinstance(compute_id, str) else None
        if orphan is not None and orphan.results:
            ch.user = orphan
            log.info("client %s: recovering %d results of a closed computation", peer_text(ch.peer),
                     len(orphan.results))
            ch.send(JobResults(compute_id, list(orphan.results.values())))
        ch.send(Resumed(compute_id if isinstance(compute_id, str) else "", False, 0))

    async def close(self, cluster: SharedCluster, terminate: bool, reason: str, dead: bool = False) -> None:
        """Close a cluster: on every node (jobs there finish, or are terminated), then here."""
        if cluster.closing or cluster.state == "closed":
            return
        cluster.closing = True
        engine = cluster.engine
        if engine is not None:
            if dead:
                # The results its client did not get are the scheduler's to keep from now on
                # (saved below): the nodes may forget them, and those still to come.
                engine.auto_ack = True
                cluster.release_results()
            await engine.shutdown(terminate)
            cluster._flush()
            self.watchers.discard(engine)
            for users in self.pool.values():
                users.discard(engine)
            if cluster.compute_id in self.sched.clusters:
                # Jobs that ended without a result (terminated, or a node that did not
                # confirm the close) still hold their slots: free them for the others.
                for key in self._node_keys():
                    self.sched.release(cluster.compute_id, key)
                self.sched.remove_cluster(cluster.compute_id)
            for key in [k for k, users in self.pool.items() if not users]:
                self._drop_node(key)
        log.info("cluster %s of %s closed: %s; %d jobs done", cluster.name, cluster.client, reason, cluster.done)
        if dead and cluster.held:
            _Orphan.save(self.results_dir, cluster)
        if not dead:
            cluster.send(ComputationClosed(cluster.compute_id))
        if cluster.exclusive and not self.cfg.cooperative:
            self._reset_cpus()
        self.done_clusters += 1
        self._forget(cluster)

    async def _watch(self) -> None:
        """Once a second: pulses to clients, zombie clients, dead clients, old results."""
        zombie = self.cfg.zombie_interval * 60.0
        last_sweep = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for cluster in list(self.clusters.values()):
                if cluster.state != "running" or cluster.closing:
                    continue
                if cluster.detached_at is not None:
                    if now - cluster.detached_at > self.client_window:
                        log.warning("client %s of %s did not come back within %.0f s: closing its computation",
                                    cluster.client, cluster.name, self.client_window)
                        self.spawn(self.close(cluster, terminate=True, reason="its client is gone", dead=True))
                    continue
                ch = cluster.channel
                if ch is None:
                    continue
                quiet = now - cluster.last_heard
                if quiet > zombie:
                    log.warning("client %s of %s sent nothing for %.0f s (--zombie_interval): taken for dead",
                                cluster.client, cluster.name, quiet)
                    ch.abort()
                    continue
                if quiet > zombie / 2:
                    cluster.send(Ping(int(now)))
                if cluster.pulse_interval and now >= cluster.next_pulse:
                    cluster.next_pulse = now + cluster.pulse_interval
                    queued, running = cluster.counts()
                    cluster.send(Pulse(cluster.compute_id, running))
            channels = [c.channel for c in self.clusters.values() if c.channel is not None]
            for ch, waiting, idle in self._stalls.stuck(channels, now):
                # a client that takes nothing (frozen, cut off): closed as a dropped one, so
                # that it can come back and resume, or is given up after the window
                log.warning("closing connection from client %s: it took none of the %d bytes waiting for it "
                            "in %.1f s (--msg_timeout)", peer_text(ch.peer), waiting, idle)
                ch.abort()
            if now - last_sweep > 60.0 and self.results_own:
                last_sweep = now
                _Orphan.expire(self.results_dir, zombie)

    # == nodes =============================================================================
    def new_uid(self) -> int:
        self._uid += 1
        return self._uid

    def expand(self, specs: list[SharedSpec]) -> list[SharedSpec]:
        """With -n, wildcard specs become the named nodes they match (contacted directly,
        and again whenever they are lost): nothing is broadcast."""
        if not self.cfg.nodes:
            return specs
        named = []
        for text in self.cfg.nodes:
            host, port = parse_node(text, self.cfg.node_port)
            try:
                ip = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)[0][4][0]
            except OSError as exc:
                log.warning("-n %s: can't resolve: %s", text, exc)
                continue
            named.append((str(ip), port))
        out: list[SharedSpec] = []
        seen: set[tuple[str, int]] = set()
        for spec in specs:
            if not is_wildcard(spec.host):
                out.append(spec)
                seen.add((spec.host, spec.port or self.cfg.node_port))
                continue
            for ip, port in named:
                if (ip, port) not in seen and spec.matches(ip):
                    seen.add((ip, port))
                    out.append(SharedSpec(ip, port, spec.cpus, spec.files, spec.setup_payload))
        return out

    def watch(self, engine: ClusterEngine) -> None:
        """An engine with wildcard specs: the nodes discovery found, now and later."""
        self.watchers.add(engine)
        if self._discovery is not None:
            self._discovery.refresh()
        for rec in list(self.known.values()):
            engine._on_discovered(rec)

    def _found(self, reply: Any) -> None:
        rec = _Known(reply.ip_addr, reply.port, reply.name, reply.node_id)
        self.known[(rec.ip_addr, rec.port)] = rec
        for engine in list(self.watchers):
            engine._on_discovered(rec)

    def pool_join(self, engine: ClusterEngine, session: NodeSession) -> int:
        """A cluster's session on a node is ready: the node is in the pool (once, with the
        CPUs it offers); returns its CPUs there."""
        key = session.key
        assert key is not None
        if not self.sched.has_node(key):
            node = session.node
            self.sched.add_node(key, max(1, node.avail_cpus or session.cpus))
            self.node_info[key] = DispyNode(key[0], node.name, node.avail_cpus or session.cpus, node.platform)
            log.info("node %s (%s) joined the pool with %d CPUs", session.label, node.name,
                     self.sched.node(key).cpus)
        self.pool.setdefault(key, set()).add(engine)
        return self.sched.node(key).cpus

    def pool_leave(self, engine: ClusterEngine, key: tuple[str, int]) -> None:
        users = self.pool.get(key)
        if users is not None:
            users.discard(engine)
            if not users:
                self._drop_node(key)

    def _drop_node(self, key: tuple[str, int]) -> None:
        self.pool.pop(key, None)
        if self.sched.has_node(key) and not self.sched.in_flight(key):
            self.sched.remove_node(key)
            self.node_info.pop(key, None)
            self._cpus_before.pop(key, None)
            self.limited.discard(key)

    def dispatch(self) -> None:
        """Place queued jobs on nodes (the policy chooses between clusters) and hand each
        cluster's part of a node's batch to that cluster's engine."""
        batches = self.sched.assign()
        if not batches:
            return
        now = time.time()
        for key, jobs in batches:
            engine = jobs[0].engine
            if all(job.engine is engine for job in jobs):
                engine._deliver(key, jobs, now)  # type: ignore[arg-type]
                continue
            parts: dict[ClusterEngine, list[SchedJob]] = {}
            for job in jobs:
                parts.setdefault(job.engine, []).append(job)
            for engine, part in parts.items():
                engine._deliver(key, part, now)  # type: ignore[arg-type]

    def node_key(self, text: str) -> tuple[str, int] | None:
        """A node of the pool named by IP address, "ip:port" or host name."""
        keys = self._node_keys()
        for key in keys:
            info = self.node_info.get(key)
            if text in (key[0], f"{key[0]}:{key[1]}") or (info is not None and info.name == text):
                return key
        try:
            ips = {str(info[4][0]) for info in socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            return None
        for key in keys:
            if key[0] in ips:
                return key
        return None

    def _node_keys(self) -> list[tuple[str, int]]:
        return cast("list[tuple[str, int]]", self.sched.nodes)

    def set_node_cpus(self, cluster: SharedCluster, key: tuple[str, int], cpus: int) -> int:
        """Change a node's CPUs in the pool (for every cluster): exclusive clusters or
        --cooperative. An exclusive cluster's changes are undone when it closes, unless
        --cooperative (then clients set and reset CPUs between themselves)."""
        info = self.node_info.get(key)
        if info is None or not self.sched.has_node(key):
            return -1
        total = info.cpus
        n = min(cpus, total) if cpus > 0 else total + cpus
        if cpus == 0 or n <= 0:
            log.error("set_node_cpus(): node %s has %d CPUs; %d is not a valid number of CPUs to use",
                      key[0], total, cpus)
            return -1
        if cluster.exclusive and not self.cfg.cooperative:
            self._cpus_before.setdefault(key, self.sched.node(key).cpus)
        self._set_cpus(key, n, total)
        log.info("node %s: %d of its %d CPUs used (set by cluster %s)", key[0], n, total, cluster.name)
        self.dispatch()
        return n

    def _set_cpus(self, key: tuple[str, int], n: int, total: int) -> None:
        self.sched.set_cpus(key, n)
        if n < total:
            self.limited.add(key)
            self.sched.set_depth(key, 1)
        else:
            self.limited.discard(key)
            self.sched.set_depth(key, self.sched.pipeline)
        # Each cluster's record of the node (what its client and the web monitor are
        # shown) says the CPUs it uses there now: n, or fewer if its spec asked for fewer.
        for engine in self.pool.get(key, ()):
            record = engine.nodes.get(key)
            if record is not None:
                session = engine._ready.get(key)
                record.cpus = min(n, session.cpus) if session is not None and session.cpus > 0 else n
        self.changed()

    def _reset_cpus(self) -> None:
        for key, cpus in self._cpus_before.items():
            info = self.node_info.get(key)
            if self.sched.has_node(key) and info is not None:
                self._set_cpus(key, cpus, info.cpus)
                log.info("node %s: back to %d CPUs", key[0], cpus)
        self._cpus_before.clear()

    # == status ============================================================================
    def status(self) -> dict[str, Any]:
        nodes = []
        for key in self._node_keys():
            info = self.node_info.get(key)
            engines = self.pool.get(key, set())
            done = cpu_time = 0.0
            for engine in engines:
                node = engine.nodes.get(key)
                if node is not None:
                    done += node.jobs_done
                    cpu_time += node.cpu_time
            nodes.append({"ip_addr": key[0], "port": key[1], "name": info.name if info else "",
                          "cpus": self.sched.node(key).cpus, "running": len(self.sched.in_flight(key)),
                          "done": int(done), "cpu_time": cpu_time})
        clusters = []
        for cluster in self.clusters.values():
            queued, running = cluster.counts()
            clusters.append({"name": cluster.name, "client": cluster.client, "state": cluster.state,
                             "exclusive": cluster.exclusive, "queued": queued, "running": running,
                             "done": cluster.done})
        return {"listening": list(self.listening), "policy": self.sched.policy, "nodes": nodes,
                "clusters": clusters, "web": self.web_url}


class _Orphan:
    """Results of a closed computation that its client never acknowledged (the client
    died), kept in a file until ``recover_jobs`` (Resume) takes them or they expire."""

    def __init__(self, path: str, compute_id: str, results: dict[int, Any]) -> None:
        self.path = path
        self.compute_id = compute_id
        self.results = results

    @staticmethod
    def _path(directory: str, compute_id: str) -> str:
        safe = "".join(c for c in compute_id if c.isalnum() or c in "-_")[:100]
        return os.path.join(directory, f"{safe}.results")

    @classmethod
    def save(cls, directory: str, cluster: SharedCluster) -> None:
        path = cls._path(directory, cluster.compute_id)
        msg = JobResults(cluster.compute_id, [r for r, _, _ in cluster.held.values()])
        parts, _ = messages.encode(msg)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
            os.replace(tmp, path)
            log.info("cluster %s: %d results its client did not get are kept in %s for recover_jobs",
                     cluster.name, len(msg.results), path)
        except OSError as exc:
            log.error("cluster %s: can't keep %d undelivered results: %s", cluster.name, len(msg.results), exc)

    @classmethod
    def load(cls, directory: str, compute_id: str) -> _Orphan | None:
        path = cls._path(directory, compute_id)
        try:
            with open(path, "rb") as f:
                body = f.read()
            msg = messages.decode(JobResults.TYPE, memoryview(body))
        except FileNotFoundError:
            return None
        except (OSError, DispyError) as exc:
            log.error("can't read kept results %s: %s", path, exc)
            return None
        if not isinstance(msg, JobResults) or msg.compute_id != compute_id:
            return None
        return cls(path, compute_id, {r.job_id: r for r in msg.results})

    def ack(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            self.results.pop(job_id, None)
        try:
            if not self.results:
                os.unlink(self.path)
            else:
                parts, _ = messages.encode(JobResults(self.compute_id, list(self.results.values())))
                with open(self.path + ".tmp", "wb") as f:
                    for part in parts:
                        f.write(part)
                os.replace(self.path + ".tmp", self.path)
        except OSError as exc:
            log.debug("updating %s: %s", self.path, exc)

    @staticmethod
    def expire(directory: str, age: float) -> None:
        """Remove the kept results older than ``age`` seconds (only files of the names
        :meth:`save` writes: nothing else that may be in the directory)."""
        now = time.time()
        try:
            names = [n for n in os.listdir(directory) if n.endswith((".results", ".results.tmp"))]
        except OSError:
            return
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > age:
                    os.unlink(path)
                    log.info("undelivered results %s expired (--zombie_interval)", path)
            except OSError:
                pass

