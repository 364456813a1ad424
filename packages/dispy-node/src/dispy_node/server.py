"""The node's main process: listeners, the zygote, client requests, internal peers.

The main process never runs or unpickles user code. It

* serves clients over TCP (one :class:`~dispy_core.aio.Channel` per connection; with
  ``--certfile`` over mutually authenticated TLS, see :mod:`dispy_core.tls`) and
  answers discovery datagrams (:mod:`.discovery`) on every ``-i`` address;
* listens on an abstract Unix socket, authenticated with a per-node token, for its own
  processes: the zygote (:mod:`.zygote`), one host per computation (:mod:`.host`), and
  the workers (:mod:`.worker`);
* keeps the job queues and CPU accounting in a :class:`~.scheduler.Scheduler`, and moves
  JobSpecs from clients to workers and JobResults back.

The life of each computation (host, workers, job flow, crashes, closing) is
:class:`~.lifecycle.Lifecycle`'s, the base class of :class:`Node`; this module holds the
edges: the listeners, the zygote process, and what clients and internal peers send.

One peer's failure (garbage, wrong secret, a crash of its processes) closes that peer's
connection or fails that computation, never the node.

``--msg_timeout`` bounds socket I/O with clients: a client has that long to complete
the handshake, and a connection whose client has taken none of the data the node is
sending it for that long is closed as stuck (:meth:`Node._io_check`), like a dropped
one: its jobs go on and their results wait for it to come back (Resume) or for
``recover_jobs``. An idle connection (nothing to send) is never timed out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from dispy_core import config, tls
from dispy_core.aio import Channel, StallWatch
from dispy_core.listen import ACCEPT_BATCH, ChannelServer, deepen_backlog
from dispy_core.refusals import RefusalLog, once_key, reason_of
from dispy_core.connection import Connection
from dispy_core.errors import ConfigError, ConnectionClosed, DispyError
from dispy_core.prefix import DaemonPrefix
from dispy_core.messages import (
    ADMIN_KEY_ID,
    AckResults,
    Attach,
    Attached,
    Delivered,
    CancelJob,
    CloseComputation,
    ComputationClosed,
    Compute,
    ComputeFailed,
    DiscoverReply,
    ErrorReport,
    FileSaved,
    ForkHost,
    HostHello,
    InfoRequest,
    Ping,
    Pong,
    Pulse,
    Resume,
    Resumed,
    JobResult,
    JobFile,
    JobResults,
    JobSpec,
    Message,
    NodeJobs,
    NodeJobsRequest,
    NodeLeaving,
    SendFile,
    FilesHeld,
    FilesQuery,
    SubmitJobs,
    Welcome,
    WorkerHello,
    ZygoteHello,
)
from dispy_core.sources import check_sources
from dispy_core.status import JobStatus

from . import admin
from .announce import Announcer
from .discovery import (
    DiscoveryProtocol,
    address_socket,
    discovery_socket,
    join_groups,
    local_requester,
    pick_address,
    served_networks,
)
from .ipc import internal_connection, new_address, new_token, peer_is_same_user
from .lifecycle import CANCEL_GRACE, CLOSED, CLOSING, FAILED, READY, SETUP, Client, Comp, Lifecycle, kill_group, kill_process
from .options import NodeConfig, machine_cpus, resolve_cpus
from .held import DigestCache, check_digests
from .paths import (
    FileRefused,
    check_files,
    computation_dir,
    created_by_node,
    existing_dest_dir,
    link_into_job_dirs,
    make_jobs_root,
    open_prefix,
    write_files,
)
from .scheduler import Scheduler, Worker
from .service import Action, ServiceClock, ServiceWindow
from .sysinfo import SOFTWARE, avail_info, node_info, prime_cpu_percent, python_version_error
from .undelivered import ResultStore

__all__ = ["Node", "CANCEL_GRACE", "SHUTDOWN_TIMEOUT", "DETACHED_GRACE"]

log = logging.getLogger(__name__)

#: Seconds the cleanups of all computations may take together when the node shuts down.
SHUTDOWN_TIMEOUT = 8.0
#: Seconds a computation whose client's connection is gone, and whose jobs are done,
#: waits for the client to come back (Resume) before it is closed (at most
#: --zombie_interval). Its undelivered results stay on disk after that.
DETACHED_GRACE = 30.0


class _Zygote:
    """Marker for the zygote's internal channel."""


class Node(Lifecycle):
    """A running dispynode (main process). Use :meth:`run`, or :meth:`start` + :meth:`stop`.

    Must be created inside a running event loop."""

    def __init__(self, cfg: NodeConfig) -> None:
        super().__init__(Scheduler(cfg.cpus), ResultStore(cfg.dest_path_prefix))
        self.cfg = cfg
        self.address = new_address()
        self.token = new_token()
        self.prefix = ""
        self.dest = DaemonPrefix(cfg.dest_path_prefix, "dispynode")  # opened by start()
        self.listening: list[tuple[str, int]] = []
        self.clients: set[Channel] = set()
        self._listener: ChannelServer | None = None
        # Refused client connections (another secret, garbage, no handshake in time):
        # logged, with floods summarised (see dispy_core.refusals)
        self.refusals = RefusalLog(log)
        self._udp: list[asyncio.DatagramTransport] = []
        self.node_id = secrets.token_hex(8)  # in discovery replies (see messages.DiscoverReply)
        self._internal: asyncio.AbstractServer | None = None
        self._zygote_proc: subprocess.Popen[bytes] | None = None
        self._zygote: Channel | None = None
        self._zygote_up: asyncio.Future[None] | None = None
        self._zygote_started = 0.0
        self._fork_queue: list[ForkHost] = []
        self._stop = asyncio.Event()
        self.closing = False
        self._ssl: ssl.SSLContext | None = None
        if cfg.certfile is not None:
            self._ssl = tls.server_context(cfg.certfile, cfg.keyfile)  # ConfigError if unusable
        self.served = 0  # clients whose computations all closed (--serve)
        self._zombie_timer: asyncio.TimerHandle | None = None
        self._io_timer: asyncio.TimerHandle | None = None
        self._stalls = StallWatch(cfg.msg_timeout)
        # Why jobs are held (none start): "operator" (console stop), "service"
        # (--service_stop/--service_end). See the operator section at the end.
        self.holds: set[str] = set()
        self.draining = False  # SIGINT / exit: finishing the jobs in the node, then stopping
        window = cfg.service_window
        self.service: ServiceClock | None = ServiceClock(window) if window is not None else None
        self._service_timer: asyncio.TimerHandle | None = None
        # --admin_secret (or the console's admin_secret command): dispyadmin's key
        self.admin_secret = cfg.admin_secret
        self._announcer: asyncio.Task[None] | None = None  # --scheduler_node
        self.digests = DigestCache()  # files already here, for FilesQuery and Compute.kept

    # == life of the node ================================================================
    async def run(self, on_started: Callable[[Node], None] | None = None) -> None:
        """Start, serve until :meth:`stop` is called, then shut down cleanly."""
        try:
            await self.start()
            if on_started is not None:
                on_started(self)
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        cfg = self.cfg
        # --clean looks before anything is written, and refuses (CleanRefused, a
        # ConfigError) a prefix holding what the node did not create
        self.dest = open_prefix(cfg.dest_path_prefix, cfg.clean)
        self.prefix = self.dest.path
        self.store = ResultStore(self.prefix)
        kept = self.store.scan()
        if kept:
            log.info("%d undelivered job results kept from an earlier run (for recover_jobs)", kept)
        prime_cpu_percent()
        self._internal = await self._loop.create_unix_server(self._internal_channel, path=self.address,
                                                             backlog=ACCEPT_BATCH)
        deepen_backlog(self._internal)
        await self._start_zygote()
        await self._listen()
        if cfg.scheduler_node is not None and self.listening:
            announcer = Announcer(cfg, self.listening[0][1], lambda: not self.comps and self.accepting)
            self._announcer = self._loop.create_task(announcer.run())
        self._zombie_timer = self._loop.call_later(self._zombie_period(), self._zombie_check)
        self._io_timer = self._loop.call_later(self._io_period(), self._io_check)
        if self.service is not None:
            log.info("service window: %s", self.service.window.describe())
            self._service_tick()
        if self.cfg.certfile is not None:
            log.info("TLS: clients must present the certificate in %s", self.cfg.certfile)

    async def _listen(self) -> None:
        port = self.cfg.port
        for attempt in range(20):
            try:
                await self._bind_all(port)
                return
            except OSError as exc:
                self._close_listeners()
                if self.cfg.port or attempt == 19:
                    raise OSError(exc.errno, f"can't listen on port {port or self.cfg.port}: {exc.strerror}") from exc
                port = 0  # the free TCP port chosen was taken for UDP: pick another

    async def _bind_all(self, port: int) -> None:
        self.listening = []
        self._listener = ChannelServer(
            self._new_client_channel, ssl=self._ssl, timeout=self.cfg.msg_timeout, log=log,
            timeout_option="--msg_timeout", refusals=self.refusals,
            tls_hint="a client needs this node's --certfile as its certfile; a plain TCP client can't use this node")
        for ip in self.cfg.ip_addrs:
            port = await self._listener.listen(ip, port)
            self.listening.append((ip, port))
        # Discovery requests are broadcasts or multicasts, which only a socket bound to the
        # wildcard address receives; the reply names whichever served address shares the
        # requester's network (see discovery.py). One socket per address family served.
        for family in (socket.AF_INET, socket.AF_INET6):
            served = [ip for ip in self.cfg.ip_addrs if (":" in ip) == (family == socket.AF_INET6)]
            if not served:
                continue
            sock = discovery_socket(port, family)
            if family == socket.AF_INET6 or self.cfg.ipv4_udp_multicast:
                join_groups(sock, served)
            await self._serve_discovery(sock, self._discover_reply(served, port))
        # Clients also ask their own host's addresses directly (unicast): those sent to a
        # served address come to a socket bound to it, and the reply names that address.
        for ip in self.cfg.ip_addrs:
            direct = address_socket(ip, port)
            if direct is not None:
                await self._serve_discovery(direct, self._direct_reply(ip, port))

    async def _serve_discovery(self, sock: socket.socket, make: Callable[[str, str, bool], DiscoverReply | None]) -> None:
        protocol = DiscoveryProtocol(self.cfg.secret, make, lambda: self.admin_secret)
        transport, _ = await self._loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self._udp.append(transport)

    def _close_listeners(self) -> None:
        # close() stops listening at once. (Not wait_closed(): since Python 3.12 it also
        # waits for every client connection to end, and clients are closed later.)
        if self._listener is not None:
            self._listener.close()
        for transport in self._udp:
            transport.close()
        self._listener, self._udp = None, []

    async def shutdown(self) -> None:
        """Terminate every job, clean up every computation, stop the zygote; idempotent."""
        if self.closing:
            return
        self.closing = True
        log.info("dispynode %s shutting down", self.cfg.name)
        if self._zombie_timer is not None:
            self._zombie_timer.cancel()
        if self._io_timer is not None:
            self._io_timer.cancel()
        if self._announcer is not None:
            self._announcer.cancel()
        self._close_listeners()
        self.refusals.close()  # the summary of refusals not written yet
        closes = [self._loop.create_task(self._close(c, terminate=True, reply=True,
                                                     timeout=SHUTDOWN_TIMEOUT / 2))
                  for c in list(self.comps.values())]
        if closes:
            _, late = await asyncio.wait(closes, timeout=SHUTDOWN_TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d computations did not close in time", len(late))
        self._tick()
        for ch in list(self.clients):
            ch.close()
        await self._stop_zygote()  # and with it every host left
        for comp in list(self.comps.values()):  # what a late close left behind
            for worker in comp.workers.values():
                if worker.pid:
                    kill_group(worker.pid)
            await self._remove_directory(comp)
        if self._internal is not None:
            self._internal.close()
        for task in list(self._tasks):
            task.cancel()

    # == the zygote ======================================================================
    async def _start_zygote(self) -> None:
        self._zygote_started = time.monotonic()
        self._zygote_up = self._loop.create_future()
        init = {"address": self.address, "token": self.token, "name": self.cfg.name,
                "max_file_size": self.cfg.max_file_size,
                "loglevel": logging.DEBUG if self.cfg.debug else logging.INFO}
        # Its own session: a Ctrl-C at the node's terminal is the main process's to
        # handle (shut down cleanly), not something every job should see. Its stdout is
        # our stderr, so that user code's stray prints can't garble our stdout.
        proc = subprocess.Popen([sys.executable, "-m", "dispy_node.zygote"], stdin=subprocess.PIPE,
                                stdout=sys.stderr.fileno(), start_new_session=True, close_fds=True)
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(init) + "\n").encode())
        proc.stdin.close()
        self._zygote_proc = proc
        try:
            await asyncio.wait_for(asyncio.shield(self._zygote_up), timeout=30)
        except TimeoutError:
            raise RuntimeError(f"the zygote process (pid {proc.pid}) did not start; see the log") from None

    async def _stop_zygote(self) -> None:
        proc = self._zygote_proc
        if self._zygote is not None:
            self._zygote.close()
        if proc is None:
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 2.0)
        except TimeoutError:
            pass
        # The zygote leads a process group holding itself and any hosts left.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        await asyncio.to_thread(proc.wait)

    def _zygote_lost(self) -> None:
        self._zygote = None
        if not self.closing:
            log.warning("the zygote process exited; starting a new one")
            self._background(self._restart_zygote())

    async def _restart_zygote(self) -> None:
        proc = self._zygote_proc
        if proc is not None:
            await asyncio.to_thread(proc.wait)
        # A zygote that dies at once would otherwise be restarted in a tight loop.
        await asyncio.sleep(max(0.0, self._zygote_started + 5.0 - time.monotonic()))
        if not self.closing:
            await self._start_zygote()

    def _fork_host(self, msg: ForkHost) -> None:
        if self._zygote is not None and not self._zygote.closed:
            self._zygote.send(msg)
        else:
            self._fork_queue.append(msg)

    # == channels ========================================================================
    def _new_client_channel(self) -> Channel:
        return Channel(Connection(initiator=False, secret=self.cfg.secret, software=SOFTWARE,
                                  keys=self._client_key),
                       self._on_client_message, self._on_client_close)

    def _client_key(self, key_id: str) -> tuple[str, bool] | None:
        """The key a Hello with a key_id authenticates with: dispyadmin's (see
        :mod:`.admin`; AuthenticationError saying why when there is none) or an attaching
        client's."""
        if key_id == ADMIN_KEY_ID:
            return admin.admin_key(self)
        return self._attach_key(key_id)

    def _attach_key(self, compute_id: str) -> tuple[str, bool] | None:
        """The key a client authenticates with to attach to computation ``compute_id``,
        and whether frames carry MACs there."""
        comp = self.comps.get(compute_id)
        if comp is None or not comp.attach_key or comp.state in (CLOSING, CLOSED, FAILED):
            return None
        return comp.attach_key, comp.attach_macs

    def _internal_channel(self) -> Channel:
        ch = Channel(internal_connection(initiator=False, token=self.token, software=SOFTWARE),
                     self._on_internal_message, self._on_internal_close)
        ch.handshake_deadline(self.cfg.msg_timeout, self._handshake_deadline)
        return ch

    def _handshake_deadline(self, ch: Channel) -> None:
        if not ch.closed and not ch.established.done():
            log.warning("closing connection from %s: no handshake within %.1f s (--msg_timeout)",
                        ch.peer, self.cfg.msg_timeout)
            ch.abort()

    def _log_close(self, ch: Channel, exc: BaseException | None, what: str) -> None:
        if exc is None:
            return
        if not ch.established.done() or ch.established.exception() is not None:
            self.refusals.refused(reason_of(exc), "closed %s connection from %s: %s", what, ch.peer, exc, once=once_key(exc))
        elif not isinstance(exc, ConnectionClosed):
            log.warning("closed %s connection from %s: %s", what, ch.peer, exc)
        else:
            log.debug("%s %s disconnected", what, ch.peer)

    # == clients =========================================================================
    def _on_client_message(self, ch: Channel, msg: Message) -> None:
        try:
            t = type(msg)
            user = ch.user
            if user is not None:
                user.last_seen = time.monotonic()
                user.pinged = False
                if user.attach_id == ADMIN_KEY_ID:
                    admin.on_message(self, ch, msg)
                    return
                if user.attach_id:
                    self._on_attached_message(ch, user.attach_id, msg)
                    return
            if t is SubmitJobs:
                self._submit(ch, msg)  # type: ignore[arg-type]
            elif t is AckResults:
                cid = msg.compute_id  # type: ignore[attr-defined]
                if isinstance(cid, str):
                    self._acknowledged(cid, self._owned(ch, cid), msg.job_ids)  # type: ignore[attr-defined]
            elif t is Resume:
                self._resume(ch, msg)  # type: ignore[arg-type]
            elif t is Welcome:
                sockname = ch.transport.get_extra_info("sockname") if ch.transport else None
                ip, port = sockname[:2] if sockname else ("", 0)
                ch.user = Client(ip, port, attach_id=ch.conn.key_id)
                self.clients.add(ch)
            elif t is InfoRequest:
                ch.send(node_info(self.cfg, self.cfg.announced_addr(ch.user.ip_addr), ch.user.port))
            elif t is Pong:
                pass  # it is alive: last_seen is refreshed above
            elif t is Compute:
                self._compute(ch, msg)  # type: ignore[arg-type]
            elif t is FilesQuery:
                self._background(self._files_query(ch, msg))  # type: ignore[arg-type]
            elif t is CancelJob:
                self._cancel(ch, msg)  # type: ignore[arg-type]
            elif t is CloseComputation:
                self._close_request(ch, msg)  # type: ignore[arg-type]
            elif t is SendFile:
                self._send_file(ch, msg, self._owned(ch, msg.compute_id))  # type: ignore[arg-type, attr-defined]
            elif t is NodeJobsRequest:
                self._node_jobs(ch, msg)  # type: ignore[arg-type]
            elif t in admin.REQUESTS:
                ch.send(admin.refusal_on_cluster_connection(self))
            else:
                ch.send(ErrorReport(f"{t.__name__} is not a request dispynode serves"))
        except Exception as exc:
            log.warning("request %s from %s failed: %s", type(msg).__name__, ch.peer, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            if not ch.closed:
                cid = getattr(msg, "compute_id", "")
                ch.send(ErrorReport(f"node could not handle {type(msg).__name__}: {exc}",
                                    cid if isinstance(cid, str) else ""))

    def _on_client_close(self, ch: Channel, exc: BaseException | None) -> None:
        if isinstance(ch.user, Client) and ch.user.attach_id == ADMIN_KEY_ID:
            # an authenticated admin connection that broke (a malformed or altered frame):
            # logged as refusals are, so that a flood of them can't fill the log
            if exc is not None and not isinstance(exc, ConnectionClosed):
                self.refusals.refused(reason_of(exc), "closed admin connection from %s: %s", ch.peer, exc, once=once_key(exc))
            self.clients.discard(ch)
            return
        self._log_close(ch, exc, "client")
        self.clients.discard(ch)
        if isinstance(ch.user, Client) and ch.user.attach_id:
            comp = self.comps.get(ch.user.attach_id)
            if comp is not None and comp.attached is ch:
                log.debug("computation %s: attached client %s is gone", comp.compute_id, ch.peer)
                self._unattach(comp)
            return
        if isinstance(ch.user, Client):
            for comp in list(ch.user.comps):
                if comp.client is not ch:
                    continue
                if comp.state in (CLOSED, FAILED) or self.closing:
                    continue
                # Not necessarily a dead client: a dropped connection looks the same. The
                # jobs go on; their results wait on disk for it (Resume) or recover_jobs.
                log.info("computation %s (%r): client %s is gone; its jobs go on and their results "
                         "are kept for it", comp.compute_id, comp.name, ch.peer)
                self._detach(comp)
                self._loop.call_later(self._detached_grace(), self._detached_check, comp)

    def _on_attached_message(self, ch: Channel, compute_id: str, msg: Message) -> None:
        """A connection authenticated with computation ``compute_id``'s key (a
        SharedJobCluster's own, see Attach): it may attach to that computation, say what
        arrived and send it files (send_file), nothing else."""
        t = type(msg)
        comp = self.comps.get(compute_id)
        if t is Delivered:
            if comp is not None and comp.attached is ch and msg.compute_id == compute_id:  # type: ignore[attr-defined]
                self._delivered(comp, msg.job_ids)  # type: ignore[attr-defined]
        elif t is Attach:
            if msg.compute_id != compute_id:  # type: ignore[attr-defined]
                ch.send(Attached(str(msg.compute_id), "this connection's key is for another computation"))  # type: ignore[attr-defined]
            elif comp is None or comp.state in (CLOSING, CLOSED, FAILED):
                ch.send(Attached(compute_id, f"computation {compute_id} is not running on this node"))
            else:
                if comp.attached is not None and comp.attached is not ch:
                    comp.attached.close()
                    self._unattach(comp)
                comp.attached = ch
                log.debug("computation %s: client %s attached", compute_id, ch.peer)
                ch.send(Attached(compute_id))
        elif t is SendFile:
            owned = comp is not None and comp.attached is ch and msg.compute_id == compute_id  # type: ignore[attr-defined]
            self._send_file(ch, msg, comp if owned else None,  # type: ignore[arg-type]
                            comp.attach_file_limit if owned and comp is not None else 0)
        elif t is Pong:
            pass
        else:
            log.warning("closing attached connection from %s: it may not send %s", ch.peer, t.__name__)
            ch.send(ErrorReport(f"{t.__name__} is not allowed on a connection attached to a computation",
                                compute_id))
            ch.close()

    def _node_jobs(self, ch: Channel, msg: NodeJobsRequest) -> None:
        """node_jobs(from_node=True): the computation's jobs running here now (each
        worker runs the first job of its queue; the others wait behind it)."""
        cid = msg.compute_id if isinstance(msg.compute_id, str) else ""
        comp = self._owned(ch, cid)
        if comp is None:
            ch.send(NodeJobs(cid, [], f"computation {cid} is not this client's on node {self.cfg.name}"))
            return
        running = [w.queue[0] for w in comp.workers.values() if w.queue and not w.gone]
        ch.send(NodeJobs(cid, [spec.job_id for spec in running]))

    def _owned(self, ch: Channel, compute_id: Any) -> Comp | None:
        comp = self.comps.get(compute_id) if isinstance(compute_id, str) else None
        return comp if comp is not None and comp.client is ch else None

    async def _files_query(self, ch: Channel, msg: FilesQuery) -> None:
        """Which of the client's files this node holds identical in its dest_path (see
        held.py); hashing runs in a thread."""
        try:
            wanted = check_digests(msg.files, "FilesQuery")
            directory = existing_dest_dir(self.dest, msg.dest_path)
            names = await asyncio.to_thread(self.digests.held, directory, wanted)
            error = ""
        except (FileRefused, OSError) as exc:
            names, error = [], str(exc)
            log.info("file query from %s: %s", ch.peer, error)
        log.debug("file query from %s for %r: %d of %d files held", ch.peer, msg.dest_path,
                  len(names), len(msg.files) if isinstance(msg.files, list) else 0)
        if not ch.closed:
            ch.send(FilesHeld(names, error))

    async def _check_kept(self, ch: Channel, msg: Compute) -> None:
        """A Compute with files the client did not send (Compute.kept): they must still
        be here, identical, before the computation is set up (hashing runs in a thread,
        and usually hits the cache that the FilesQuery just filled)."""
        cid = msg.compute_id if isinstance(msg.compute_id, str) else ""
        try:
            kept = check_digests(msg.kept, "Compute.kept")
            sent = {getattr(f, "name", "") for f in msg.files} if isinstance(msg.files, list) else set()
            twice = sorted(k.name for k in kept if k.name in sent)
            if twice:
                raise FileRefused(f"malformed Compute: {twice} both sent and kept")
            directory = existing_dest_dir(self.dest, msg.dest_path)
            if directory is None:
                raise FileRefused("malformed Compute: files kept without a dest_path that exists here")
            missing = await asyncio.to_thread(self.digests.missing, directory, kept)
        except (FileRefused, OSError) as exc:
            log.info("refused computation %r from %s: %s", msg.name, ch.peer, exc)
            if not ch.closed:
                ch.send(ComputeFailed(cid, str(exc)))
            return
        if ch.closed:
            return
        if missing:
            log.info("computation %r from %s: files %s changed here since the client asked; "
                     "it has to send them", msg.name, ch.peer, missing)
            ch.send(ComputeFailed(cid, f"files {missing} changed on node {self.cfg.name} since the "
                                       "client checked them", missing))
            return
        log.info("computation %r from %s: kept %d file(s) already in %s (not sent again): %s", msg.name,
                 ch.peer, len(kept), directory, ", ".join(k.name for k in kept))
        self._compute(ch, msg, kept_checked=True)

    def _compute(self, ch: Channel, msg: Compute, kept_checked: bool = False) -> None:
        cid = msg.compute_id

        def refuse(error: str) -> None:
            log.info("refused computation %r from %s: %s", msg.name, ch.peer, error)
            ch.send(ComputeFailed(cid if isinstance(cid, str) else "", error))

        if msg.kept and not kept_checked:
            self._background(self._check_kept(ch, msg))  # then here again
            return
        if not isinstance(cid, str) or not cid or not isinstance(msg.name, str):
            return refuse("malformed Compute: compute_id and name must be strings")
        if msg.kind not in ("function", "program"):
            return refuse(f"unknown computation kind {msg.kind!r}: expected 'function' or 'program'")
        if not isinstance(msg.payload, list) or not isinstance(msg.setup_args, list):
            return refuse("malformed Compute: payload and setup_args must be serialized buffers")
        try:
            check_sources(msg.sources)
        except ValueError as exc:
            return refuse(f"malformed Compute: {exc}")
        if self.closing:
            return refuse(f"node {self.cfg.name} is shutting down")
        if not self.accepting:
            return refuse(self.not_accepting_reason())
        if cid in self.comps:
            return refuse(f"computation {cid} is already set up on this node")
        if self.cfg.serve > 0 and not ch.user.comps:
            active = sum(1 for c in self.clients if isinstance(c.user, Client) and c.user.comps)
            if ch.user.counted or self.served + active >= self.cfg.serve:
                return refuse(f"node {self.cfg.name} serves no more clients "
                              f"(--serve {self.cfg.serve}: {self.served} served, {active} being served)")
        if msg.kind == "function":
            error = python_version_error(msg.python_version if isinstance(msg.python_version, str) else "")
            if error:
                return refuse(error)
        try:
            check_files(msg.files, self.cfg.max_file_size)
            directory = computation_dir(self.dest, msg.dest_path, msg.name)
            jobs_dir = make_jobs_root(self.dest, msg.name)
        except (FileRefused, OSError) as exc:
            return refuse(str(exc))
        # --force_cleanup overrides a client's cleanup=False
        cleanup_files = msg.cleanup_files is not False or self.cfg.force_cleanup
        if cleanup_files and not created_by_node(self.dest, directory):
            # only what the node created is ever removed (dispy_core.prefix)
            cleanup_files = False
            log.info("computation %r: %s was not created by this node: it is kept when the "
                     "computation closes", msg.name, directory)
        want = msg.cpus if isinstance(msg.cpus, int) and msg.cpus > 0 else self.cfg.cpus
        pulse = msg.pulse_interval if isinstance(msg.pulse_interval, (int, float)) else 0.0
        comp = Comp(cid, msg.name, min(want, self.cfg.cpus), bool(msg.process_per_job),
                    client=ch, owner=ch.user, kind=msg.kind, directory=directory,
                    pulse_interval=max(0.0, min(float(pulse), 3600.0)),
                    cleanup_files=cleanup_files,
                    ip_addr=ch.user.ip_addr,
                    jobs_dir=jobs_dir,
                    setup_msg=dataclasses.replace(msg, dest_path=directory, jobs_dir=jobs_dir))
        options = msg.options if isinstance(msg.options, dict) else {}
        key = options.get("attach_key")
        if isinstance(key, str) and len(key) >= 32:  # from dispyscheduler: its client may Attach
            comp.attach_key = key
            comp.attach_macs = options.get("attach_macs") is not False
            limit = options.get("attach_file_limit")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                comp.attach_file_limit = limit
        self.comps[cid] = comp
        self.sched.add(comp)
        ch.user.comps.add(comp)
        ch.user.served = True
        log.info("computation %s (%r) from %s: setting up in %s", cid, msg.name, ch.peer, directory)
        self._fork_host(ForkHost(cid, comp.ip_addr))

    def _submit(self, ch: Channel, msg: SubmitJobs) -> None:
        comp = self._owned(ch, msg.compute_id)
        if msg.acks and isinstance(msg.compute_id, str):
            self._acknowledged(msg.compute_id, comp, msg.acks)
        jobs = msg.jobs
        if not isinstance(jobs, list):
            raise DispyError("malformed SubmitJobs: jobs must be a list")
        if comp is None:
            now = time.time()
            why = f"computation {msg.compute_id} is not set up on this node"
            ch.send(JobResults(msg.compute_id if isinstance(msg.compute_id, str) else "", [
                JobResult(spec.job_id, JobStatus.Terminated, exception=why, start_time=now, end_time=now)
                for spec in jobs if isinstance(spec, JobSpec)]))
            return
        if comp.state in (CLOSING, CLOSED, FAILED):
            why = comp.error or f"computation {comp.compute_id} is closing"
            for spec in jobs:
                if isinstance(spec, JobSpec):
                    self._job_failed(comp, spec, why)
            return
        if self.draining:  # sent before the client got NodeLeaving: back they go
            ch.send(NodeLeaving(comp.compute_id, self._leaving_reason(),
                                [spec for spec in jobs if type(spec) is JobSpec]))
            return
        accepted = []
        for spec in jobs:
            if type(spec) is not JobSpec:
                raise DispyError("malformed SubmitJobs: jobs must be JobSpec records")
            if spec.files:
                try:
                    check_files(spec.files, self.cfg.max_file_size)
                except FileRefused as exc:
                    self._job_failed(comp, spec, f"job {spec.job_id}: {exc}")
                    continue
            try:
                check_sources(spec.sources)
            except ValueError as exc:
                self._job_failed(comp, spec, f"job {spec.job_id}: malformed job: {exc}")
                continue
            if spec.timeout is not None and not config.valid_timeout(spec.timeout):
                self._job_failed(comp, spec, f"job {spec.job_id}: its timeout must be a positive "
                                             f"number of seconds, not {spec.timeout!r}")
                continue
            accepted.append(spec)
        self.sched.submit(comp, accepted)
        self._limit_intake(ch, comp)
        self._kick()

    def _resume(self, ch: Channel, msg: Resume) -> None:
        """A client (reconnecting, or recover_jobs) takes a computation up on this
        connection: every result it has not acknowledged goes again, then Resumed."""
        cid = msg.compute_id
        if not isinstance(cid, str) or not cid:
            ch.send(ErrorReport("malformed Resume: compute_id must be a string"))
            return
        self._tick()  # results in the outbox go where they belong first
        comp = self.comps.get(cid)
        if comp is not None and comp.state in (CLOSED, FAILED):
            comp = None
        results = self.store.load(cid)
        if comp is not None:
            old = comp.client
            if old is not ch:
                if old is not None and isinstance(old.user, Client):
                    old.user.comps.discard(comp)  # a half-open old connection loses it
                comp.client, comp.owner = ch, ch.user
                ch.user.comps.add(comp)
                ch.user.served = True
            comp.detached_since = 0.0
            results.extend(comp.unacked.values())  # sent on a connection that may be gone
            log.info("computation %s (%r) resumed by %s (%d results to deliver)",
                     cid, comp.name, ch.peer, len(results))
        elif results:
            log.info("computation %s: %d stored results to %s", cid, len(results), ch.peer)
        for start in range(0, len(results), 64):
            ch.send(JobResults(cid, results[start:start + 64]))
        unfinished = 0
        if comp is not None:
            unfinished = len(comp.pending) + sum(len(w.queue) for w in comp.workers.values()) + len(comp.lost)
        ch.send(Resumed(cid, comp is not None, unfinished))

    def _detached_grace(self) -> float:
        """Seconds a computation whose client is gone waits to be resumed once its jobs
        are done, before it is closed (its results stay on disk)."""
        return min(DETACHED_GRACE, self.cfg.zombie_interval * 60)

    def _detached_check(self, comp: Comp) -> None:
        if self.comps.get(comp.compute_id) is not comp or comp.client is not None or comp.closed is not None:
            return
        detached = time.monotonic() - comp.detached_since
        if comp.has_jobs and detached < self.cfg.zombie_interval * 60:
            self._loop.call_later(self._detached_grace(), self._detached_check, comp)
            return
        terminate = comp.has_jobs
        log.warning("computation %s (%r): no client for %.0f s; closing it%s (undelivered results are "
                    "kept for recover_jobs)", comp.compute_id, comp.name, detached,
                    ", terminating its jobs (--zombie_interval)" if terminate else "")
        self._background(self._close(comp, terminate=terminate, reply=False))

    def _ready(self, comp: Comp) -> None:
        super()._ready(comp)
        if comp.pulse_interval > 0:
            self._loop.call_later(comp.pulse_interval, self._pulse, comp)

    def _pulse(self, comp: Comp) -> None:
        if self.comps.get(comp.compute_id) is not comp or comp.state in (CLOSED, FAILED):
            return
        ch = comp.client
        if ch is not None and not ch.closed:
            ch.send(Pulse(comp.compute_id, comp.busy, avail_info(self.prefix)))
        self._loop.call_later(comp.pulse_interval, self._pulse, comp)

    def _cancel(self, ch: Channel, msg: CancelJob) -> None:
        comp = self._owned(ch, msg.compute_id)
        if comp is None:
            ch.send(ErrorReport(f"cancel: computation {msg.compute_id} is not set up on this node",
                                msg.compute_id if isinstance(msg.compute_id, str) else ""))
            return
        spec = self.sched.cancel_pending(comp, msg.job_id)
        if spec is not None:
            self._job_failed(comp, spec, None, status=JobStatus.Cancelled)
            return
        found = self.sched.find(comp, msg.job_id)
        if found is None:
            ch.send(ErrorReport(f"cancel: job {msg.job_id} is not queued or running here "
                                "(it may have finished)", comp.compute_id))
            return
        worker, position = found
        log.debug("cancel job %s of %s: held by worker %d at position %d",
                  msg.job_id, comp.compute_id, worker.pid, position)
        self._interrupt(worker, msg.job_id)

    def _close_request(self, ch: Channel, msg: CloseComputation) -> None:
        comp = self._owned(ch, msg.compute_id)
        if comp is None:
            ch.send(ComputationClosed(msg.compute_id if isinstance(msg.compute_id, str) else "",
                                      f"computation {msg.compute_id} is not set up on this node"))
            return
        self._background(self._close(comp, terminate=bool(msg.terminate), reply=True))

    def _send_file(self, ch: Channel, msg: SendFile, comp: Comp | None, limit: int = 0) -> None:
        """Save a client's file in its computation's directory (cluster.send_file; ``comp``
        is the computation if ``ch`` may send it files); always answers FileSaved, with
        ``error`` when the file was refused."""
        cid = msg.compute_id if isinstance(msg.compute_id, str) else ""
        name = getattr(msg.file, "name", "")
        name = name if isinstance(name, str) else ""
        if comp is None or comp.state in (CLOSING, CLOSED, FAILED) or not comp.directory:
            ch.send(FileSaved(cid, name, f"computation {cid} is not set up on this node"))
            return
        try:
            check_files([msg.file], self.cfg.max_file_size)
            size = memoryview(msg.file.data).nbytes  # (check_files checked it is bytes)
            if limit and size > limit:
                # an attached client of dispyscheduler: the scheduler's limit holds here too
                raise FileRefused(f"refused file {name!r}: it is {size} bytes, more than the limit of "
                                  f"{limit} bytes (dispyscheduler --max_file_size)")
        except FileRefused as exc:
            log.info("refused file from %s for %s: %s", ch.peer, cid, exc)
            ch.send(FileSaved(cid, name, str(exc)))
            return
        self._background(self._save_file(ch, comp, msg))

    def _on_job_file(self, worker: Worker, msg: JobFile) -> None:
        """A file from a running job (dispy_send_file): straight to the client, so it
        arrives before the job's result (which the worker sends after it)."""
        comp: Comp = worker.comp  # type: ignore[assignment]
        if not (worker.queue and worker.queue[0].job_id == msg.job_id):
            return  # no longer that worker's job (cancelled, lost): nobody wants it
        try:
            check_files([msg.file], self.cfg.max_file_size)
            if not isinstance(msg.path, str) or not msg.path or msg.path.startswith("/") \
                    or ".." in msg.path.split("/"):
                raise FileRefused(f"refused path {msg.path!r}")
        except FileRefused as exc:
            log.warning("computation %s: job %s: dispy_send_file: %s", comp.compute_id, msg.job_id, exc)
            return
        out = JobFile(comp.compute_id, msg.job_id, msg.path, msg.file)
        if not self._send_attached(comp, msg.job_id, out, relay=msg.relay):
            ch = comp.client
            if ch is not None and not ch.closed:
                ch.send(out)

    async def _save_file(self, ch: Channel, comp: Comp, msg: SendFile) -> None:
        error = None
        directory = comp.directory
        try:
            if not directory or comp.state in (CLOSING, CLOSED, FAILED):
                raise FileRefused(f"computation {comp.compute_id} is closing")
            await asyncio.to_thread(write_files, directory, [msg.file])
            log.debug("saved %s for computation %s", msg.file.name, comp.compute_id)
            for c in list(self.comps.values()):  # running jobs see it too (paths.make_job_dir)
                if c.directory == directory and c.jobs_dir:
                    await asyncio.to_thread(link_into_job_dirs, c.jobs_dir, directory, msg.file.name)
        except (OSError, FileRefused) as exc:
            error = f"could not save {msg.file.name!r}: {exc}"
            log.warning("computation %s: %s", comp.compute_id, error)
        if not ch.closed:
            ch.send(FileSaved(comp.compute_id, msg.file.name, error))

    def _directory_removed(self, directory: str) -> None:
        rel = os.path.relpath(directory, self.prefix)
        if not rel.startswith(".."):
            self.dest.forget(rel.replace(os.sep, "/"))

    # == --serve, --client_shutdown, --zombie_interval ==================================
    def _forgotten(self, comp: Comp) -> None:
        client = comp.owner
        if isinstance(client, Client) and client.served and not client.comps and not client.counted:
            client.counted = True
            self.served += 1
            log.debug("a client of computation %s served (%d clients so far)", comp.compute_id, self.served)
        if 0 < self.cfg.serve <= self.served and not self.comps and not self.closing:
            log.info("served computations from %d clients (--serve %d); quitting", self.served, self.cfg.serve)
            self.stop()

    def _shutdown_requested(self, comp: Comp) -> None:
        if not self.cfg.client_shutdown:
            log.warning("computation %s (%r) called dispynode_shutdown(); ignored: the node runs "
                        "without --client_shutdown", comp.compute_id, comp.name)
            return
        log.info("computation %s (%r) called dispynode_shutdown(): shutting down after its cleanup",
                 comp.compute_id, comp.name)
        self.stop()  # the close in progress finishes first (shutdown waits for it)

    def _io_period(self) -> float:
        return max(0.25, self.cfg.msg_timeout / 4)

    def _io_check(self) -> None:
        """--msg_timeout: close client connections whose peer took none of the data
        waiting for it for that long (a frozen or vanished client, a dead path); see the
        module docstring."""
        self._io_timer = self._loop.call_later(self._io_period(), self._io_check)
        for ch, waiting, idle in self._stalls.stuck(self.clients, time.monotonic()):
            log.warning("closing connection from %s: it took none of the %d bytes waiting for it in "
                        "%.1f s (--msg_timeout); its jobs go on and their results are kept for it",
                        ch.peer, waiting, idle)
            ch.abort()

    def _zombie_period(self) -> float:
        return min(60.0, self.cfg.zombie_interval * 60 / 4)

    def _zombie_check(self) -> None:
        """Close the computations of clients silent for --zombie_interval with no jobs
        (a client with jobs in the node is checked again once they are done)."""
        self._zombie_timer = self._loop.call_later(self._zombie_period(), self._zombie_check)
        limit = self.cfg.zombie_interval * 60
        now = time.monotonic()
        for ch in list(self.clients):
            client = ch.user
            if not isinstance(client, Client) or not client.comps:
                continue
            silent = now - client.last_seen
            if silent < limit:
                # An idle client is not a dead one: ask it, and only one that does not
                # answer within the interval is closed.
                if silent >= limit / 2 and not client.pinged and not ch.closed:
                    client.pinged = True
                    ch.send(Ping())
                continue
            comps = list(client.comps)
            if any(c.has_jobs or c.state == SETUP for c in comps):
                continue
            for comp in comps:
                if comp.closed is None:
                    log.warning("computation %s (%r): client %s sent nothing for %.1f minutes "
                                "(--zombie_interval); closing it", comp.compute_id, comp.name,
                                ch.peer, (now - client.last_seen) / 60)
                    self._background(self._close(comp, terminate=False, reply=True))

    # == internal peers ==================================================================
    def _on_internal_message(self, ch: Channel, msg: Message) -> None:
        role = ch.user
        t = type(msg)
        try:
            if t is JobResults and isinstance(role, Worker):
                self._on_results(role, msg)  # type: ignore[arg-type]
            elif t is JobFile and isinstance(role, Worker):
                self._on_job_file(role, msg)  # type: ignore[arg-type]
            elif isinstance(role, Comp):
                self._on_host_message(role, msg)
            elif t is Welcome:
                sock = ch.transport.get_extra_info("socket") if ch.transport else None
                if sock is None or not peer_is_same_user(sock):
                    log.warning("refused internal connection from another user")
                    ch.abort()
            elif role is None:
                self._identify(ch, msg)
            else:
                log.warning("unexpected %s from internal peer %s", t.__name__, role)
        except Exception:
            log.exception("internal error handling %s", t.__name__)

    def _identify(self, ch: Channel, msg: Message) -> None:
        if isinstance(msg, WorkerHello):
            comp = self.comps.get(msg.compute_id)
            worker = comp.workers.get(msg.worker_id) if comp is not None else None
            if worker is None or worker.channel is not None or worker.gone or worker.retiring:
                ch.close()  # unknown, or no longer wanted: the worker exits at EOF
                return
            ch.user, worker.channel, worker.pid = worker, ch, msg.pid
            assert comp is not None
            comp.start_failures = 0
            if comp.state == SETUP:
                # Ready as soon as one worker runs: the client's first job need not wait
                # for the other workers to fork and connect.
                self._ready(comp)
            self._kick()
        elif isinstance(msg, HostHello):
            comp = self.comps.get(msg.compute_id)
            if comp is None or comp.host is not None or comp.setup_msg is None:
                ch.close()  # a computation forgotten meanwhile: the host exits on EOF
                return
            ch.user, comp.host, comp.host_pid = comp, ch, msg.pid
            ch.send(comp.setup_msg)
            comp.setup_msg = None  # its payload is the host's now
        elif isinstance(msg, ZygoteHello):
            ch.user, self._zygote = _Zygote(), ch
            log.debug("zygote %d connected", msg.pid)
            queued, self._fork_queue = self._fork_queue, []
            for fork in queued:
                ch.send(fork)
            if self._zygote_up is not None and not self._zygote_up.done():
                self._zygote_up.set_result(None)
        else:
            log.warning("internal peer %s sent %s before saying who it is", ch.peer, type(msg).__name__)
            ch.close()

    def _on_internal_close(self, ch: Channel, exc: BaseException | None) -> None:
        role = ch.user
        if isinstance(role, Worker):
            self._worker_gone(role)
        elif isinstance(role, Comp):
            self._host_gone(role)
        elif isinstance(role, _Zygote):
            self._zygote_lost()
        else:
            self._log_close(ch, exc, "internal")

    # == discovery and status ============================================================
    def _discover_reply(self, served: list[str], port: int) -> Callable[[str, str, bool], DiscoverReply | None]:
        networks = served_networks(served)

        def make(nonce: str, source: str, admin: bool) -> DiscoverReply | None:
            ip = pick_address(networks, source) or local_requester(source, served)
            # no point finding a node that refuses computations (dispyadmin manages it anyway)
            if ip is None or not (self.accepting or admin):
                return None
            return DiscoverReply(nonce, time.time(), self.cfg.announced_addr(ip), port, self.cfg.name,
                                 self.cfg.cpus, self.node_id)

        return make

    def _direct_reply(self, ip: str, port: int) -> Callable[[str, str, bool], DiscoverReply | None]:
        """Replies to requests sent to served address ``ip`` itself: whoever reached it
        there can connect to it there."""

        def make(nonce: str, source: str, admin: bool) -> DiscoverReply | None:
            if not (self.accepting or admin):
                return None
            return DiscoverReply(nonce, time.time(), self.cfg.announced_addr(ip), port, self.cfg.name,
                                 self.cfg.cpus, self.node_id)

        return make

    def status(self) -> dict[str, Any]:
        """A snapshot for the status table (see :mod:`.console`)."""
        return {
            "name": self.cfg.name,
            "cpus": self.cfg.cpus,
            "busy": self.sched.busy,
            "jobs_done": self.jobs_done,
            "listening": list(self.listening),
            "state": self.state_text(),
            "computations": [
                {
                    "compute_id": c.compute_id,
                    "name": c.name,
                    "client": c.client.peer if c.client is not None else "",
                    "state": c.state,
                    "cpus": c.cpus,
                    "pending": len(c.pending),
                    "running": c.busy,
                    "done": c.jobs_done,
                }
                for c in self.comps.values()
            ],
        }

    # == operator: CPUs, holding jobs, service window, graceful stop =====================
    # Jobs start only while ``holds`` is empty: the scheduler is then given the node's
    # CPUs, else none (jobs already handed to a worker go on; the rest wait).
    @property
    def accepting(self) -> bool:
        """Whether new computations are taken (and discovery is answered)."""
        return not (self.holds or self.draining or self.closing)

    def not_accepting_reason(self) -> str:
        name = self.cfg.name
        if self.closing or self.draining:
            return f"node {name} is shutting down"
        if "service" in self.holds and self.service is not None:
            return f"node {name} is {self.service.refusal()}"
        return f"node {name} is stopped by its operator (it takes no new computations or jobs)"

    def state_text(self) -> str:
        """One line on what the node does now (for the status table)."""
        if self.closing:
            text = "shutting down"
        elif self.draining:
            text = "shutting down: finishing its jobs"
        elif "operator" in self.holds:
            text = "stopped (console 'stop'): no new computations; queued jobs wait"
        elif "service" in self.holds and self.service is not None:
            text = f"outside its service window ({self.service.phase.value}): queued jobs wait"
        else:
            text = "serving"
        if self.service is not None:
            text += f"; service window {self.service.window.describe()}"
        return text

    def set_cpus(self, n: int) -> int:
        """Use ``n`` CPUs (as ``-c``: a negative number leaves that many unused); returns
        the new count. ConfigError naming the range if ``n`` is not allowed. Jobs beyond
        the new count wait; running ones go on."""
        cpus = resolve_cpus(n, machine_cpus())
        self.cfg = dataclasses.replace(self.cfg, cpus=cpus)
        if not self.holds:
            self.sched.cpus = cpus
        log.info("dispynode %s now uses %d CPUs", self.cfg.name, cpus)
        self._kick()
        return cpus

    def pause_jobs(self, reason: str = "operator") -> None:
        """Start no more jobs and take no new computations until :meth:`resume_jobs`
        with the same reason (and no other reason holds them)."""
        if reason not in self.holds:
            log.info("dispynode %s: holding jobs (%s)", self.cfg.name, reason)
        self.holds.add(reason)
        self.sched.cpus = 0

    def resume_jobs(self, reason: str = "operator") -> bool:
        """Lift the hold ``reason``; returns whether jobs run again (no other hold)."""
        self.holds.discard(reason)
        if self.holds:
            return False
        log.info("dispynode %s: running jobs on %d CPUs", self.cfg.name, self.cfg.cpus)
        self.sched.cpus = self.cfg.cpus
        self._kick()
        return True

    def set_service_times(self, start: str | None, stop: str | None, end: str | None) -> None:
        """A new daily service window (as ``--service_start/stop/end``; all None: always
        serve); ConfigError naming the time that is wrong, and nothing changes. The node
        acts on it at once: it holds or releases jobs, or closes its computations, as it
        would had it been started with these times."""
        window = ServiceWindow.from_options(start, stop, end)
        self.cfg = dataclasses.replace(self.cfg, service_start=start, service_stop=stop, service_end=end)
        if self._service_timer is not None:
            self._service_timer.cancel()
            self._service_timer = None
        old = self.service
        if window is None:
            self.service = None
            log.info("dispynode %s: no service window now (always serving)", self.cfg.name)
            if "service" in self.holds:
                self.resume_jobs("service")
            return
        self.service = ServiceClock(window)
        if old is not None:  # so that update() says what changes from where the node is
            self.service.phase = old.phase
        log.info("dispynode %s: service window now %s", self.cfg.name, window.describe())
        self._service_tick()

    def set_admin_secret(self, secret: str) -> None:
        """dispyadmin's secret from now on (the console's ``admin_secret``); ConfigError
        if it is the cluster secret (see NodeConfig). Open admin connections go on."""
        if secret == self.cfg.secret:
            raise ConfigError("the admin secret must differ from the cluster secret (--secret)")
        self.admin_secret = secret
        log.info("dispynode %s: admin secret set (dispyadmin may manage the node)", self.cfg.name)

    def set_serve(self, serve: int) -> None:
        """Serve ``serve`` clients in all (as ``--serve``; -1: no limit); ConfigError if
        it is neither. A node that has served that many already, and serves none now,
        quits as it would have at the end of its last client."""
        if serve == 0 or serve < -1:
            raise ConfigError(f"invalid serve count {serve}: must be a positive number of clients, "
                              "or -1 for no limit")
        self.cfg = dataclasses.replace(self.cfg, serve=serve)
        log.info("dispynode %s: serving %s clients (%d served so far)", self.cfg.name,
                 "any number of" if serve < 0 else serve, self.served)
        if 0 < serve <= self.served and not self.comps and not self.closing:
            log.info("served computations from %d clients (serve count %d); quitting", self.served, serve)
            self.stop()

    def _service_tick(self) -> None:
        service = self.service
        if service is None or self.closing:
            return
        for action in service.update():
            if action is Action.HOLD:
                log.info("service window: %s", service.refusal())
                self.pause_jobs("service")
            elif action is Action.RELEASE:
                log.info("service window: serving (%s)", service.window.describe())
                self.resume_jobs("service")
            elif action is Action.CLOSE_ALL:
                self._service_end()
        self._service_timer = self._loop.call_later(service.delay(), self._service_tick)

    def _service_end(self) -> None:
        """--service_end: close every computation, terminating its jobs (the node stays)."""
        comps = [c for c in self.comps.values() if c.closed is None]
        if comps:
            log.info("service window ended (--service_end): closing %d computations", len(comps))
        for comp in comps:
            if comp.error is None:
                comp.error = f"node {self.cfg.name}: its service window ended (--service_end)"
            self._background(self._close(comp, terminate=True, reply=True))

    def drain(self) -> None:
        """Graceful stop (SIGINT, console ``exit``): no new computations or jobs; the jobs
        in the node finish and their results go out (while jobs are held, the queued ones
        go back to their clients instead); then the node stops as :meth:`stop` does (with
        nothing left to terminate). Clients are told (NodeLeaving) and send no more jobs;
        jobs already on their way are given back (see _submit)."""
        if self.draining or self.closing:
            return
        self.draining = True
        log.info("dispynode %s: finishing its jobs, then stopping", self.cfg.name)
        for comp in self.comps.values():
            ch = comp.client
            if comp.state in (SETUP, READY) and ch is not None and not ch.closed:
                back = self.sched.take_pending(comp) if self.holds else []
                ch.send(NodeLeaving(comp.compute_id, self._leaving_reason(), back))
        self._drain_check()

    def _leaving_reason(self) -> str:
        return f"node {self.cfg.name} is shutting down; it finishes the jobs it has"

    def _drain_check(self) -> None:
        if self.closing:
            return
        busy = any(w.queue for c in self.comps.values() for w in c.workers.values()) or \
            any(c.lost for c in self.comps.values())
        queued = not self.holds and any(c.pending for c in self.comps.values())
        if busy or queued:
            self._loop.call_later(0.05, self._drain_check)
        else:
            self.stop()

    def kill_processes(self) -> None:
        """Kill every process the node started, at once (a second signal while ending):
        workers with their process groups, hosts, and the zygote's group."""
        for comp in list(self.comps.values()):
            for worker in comp.workers.values():
                if worker.pid:
                    kill_group(worker.pid)
            if comp.host_pid:
                kill_process(comp.host_pid)
        proc = self._zygote_proc
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the zygote leads a group with the hosts
            except OSError:
                pass
