"""dispyscheduler's web monitor (``--httpd``): every shared cluster on dispy's monitor pages.

:class:`SchedulerWeb` owns a :class:`dispy_core.web.WebServer` showing a
:class:`dispy_core.web.MonitorBackend`, and one :class:`SchedulerView` (a
:class:`dispy_core.web.ClusterView`) per admitted cluster, named ``"name @ client
address"``: added when the daemon admits the cluster (its engine starts), removed when it
closes. The daemon tells it of changes (jobs done or started, nodes), which the server
samples at most once a second and pushes to every open browser.

Threads: the web server calls the views from its own threads, while every cluster's
state (its :class:`~dispy_scheduler.cluster.ClusterEngine`, the shared scheduler, node
records) belongs to the daemon's asyncio loop. So a view never reads or changes that state
itself: each call is carried out in the loop (``call_soon_threadsafe`` /
``run_coroutine_threadsafe``) and waited for at most :data:`CALL_TIMEOUT` seconds; what
the loop returns is a copy (node records are copied there), never an object the loop goes
on changing. Called in the loop's own thread, a view runs the call directly.

What the scheduler's pages show and do differently from a client's ``dispy.httpd``:

* job arguments are not shown: the scheduler holds a job's arguments as the client
  serialized them and never deserializes a client's data (that would run the client's
  code in the scheduler);
* ``set_cpus`` changes the CPUs the scheduler uses on the node for every cluster (the
  pool is shared), as ``set_node_cpus`` of an exclusive cluster does; it is the
  operator's action, so it is not limited to exclusive clusters or ``--cooperative``;
* a node is named by IP address, ``ip:port``, its name or a host name (resolved in the
  server's thread, never in the loop); wildcards are refused (they name no one node).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from dispy_core.errors import ConfigError, DispyError
from dispy_core.netif import canonical
from dispy_core.nodes import DispyNode, NodeAllocate, is_wildcard, split_host_port

from .cluster import SharedSpec, spec_from_data

if TYPE_CHECKING:
    from .cluster import ClusterEngine, SharedCluster
    from .daemon import Daemon

__all__ = ["SchedulerWeb", "SchedulerView", "SchedulerGone", "CALL_TIMEOUT", "CLOSE_TIMEOUT", "POLL_SEC",
           "view_name"]

log = logging.getLogger("dispy.scheduler")

T = TypeVar("T")

#: Seconds a page's request waits for the daemon's loop to carry out a call.
CALL_TIMEOUT = 10.0
#: Seconds ``close_node`` waits for the node to close the computation (its jobs there
#: finish first); after that the answer says it goes on closing.
CLOSE_TIMEOUT = 30.0
#: Seconds between samples of the state when nothing is reported (changes the daemon
#: reports are sampled within a second).
POLL_SEC = 2.0
#: What the node page shows as a job's arguments (see the module docstring).
ARGS_NOT_SHOWN = "(not shown: dispyscheduler keeps them as the client serialized them)"

_COUNT_KEYS = ("submitted", "running", "done", "failed", "pending")


class SchedulerGone(DispyError):
    """The daemon's loop has ended (dispyscheduler is stopping): nothing can be done."""


def view_name(cluster: SharedCluster) -> str:
    """``"name @ client address"`` (the client's IP address, without its port)."""
    host = cluster.client.rsplit(":", 1)[0] if ":" in cluster.client else cluster.client
    return f"{cluster.name} @ {host}"


def _copy_node(node: DispyNode) -> DispyNode:
    dup = copy.copy(node)
    if node.avail_info is not None:
        dup.avail_info = copy.copy(node.avail_info)
    return dup


def _addresses(text: str) -> set[str]:
    """The IP addresses a node's name stands for: itself if it is one, else what the
    resolver says (in the calling thread: the server's, never the daemon's loop)."""
    text = canonical(text)
    try:
        ipaddress.ip_address(text)
        return {text}
    except ValueError:
        pass
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _node_text(node: str) -> str:
    if not isinstance(node, str) or not node.strip():
        raise ValueError(f"a node is named by its IP address or host name, not {node!r}")
    node = node.strip()
    if is_wildcard(node):
        raise ValueError(f"{node!r} is a wildcard; name one node by its IP address or host name")
    return node


class SchedulerView:
    """One shared cluster as the monitor sees it (a :class:`dispy_core.web.ClusterView`);
    every method may be called from any thread (see the module docstring)."""

    def __init__(self, daemon: Daemon, cluster: SharedCluster, name: str) -> None:
        self.name = name
        self.cluster = cluster
        self._daemon = daemon
        # What the page showed last: shown again if the loop does not answer in time
        # (a busy moment), instead of counts and nodes dropping to nothing.
        self._counts: dict[str, int] = dict.fromkeys(_COUNT_KEYS, 0)
        self._nodes: list[DispyNode] = []

    def __repr__(self) -> str:
        return f"<SchedulerView {self.name!r}>"

    # -- carrying calls into the loop --------------------------------------------------
    def _call(self, func: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT) -> T:
        """``func(*args)`` run in the daemon's loop; its result or its exception."""
        ref = self._daemon.loop_ref
        if ref is None or ref.loop.is_closed():
            raise SchedulerGone("dispyscheduler is not running")
        if threading.current_thread() is ref.thread and ref.loop.is_running():
            return func(*args)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return  # the caller gave up waiting: don't act late
            try:
                done.set_result(func(*args))
            except BaseException as exc:  # handed to the waiting thread
                done.set_exception(exc)

        try:
            ref.loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed
            raise SchedulerGone("dispyscheduler is stopping") from None
        try:
            return done.result(timeout)
        except concurrent.futures.TimeoutError:
            done.cancel()
            raise TimeoutError(f"dispyscheduler did not answer within {timeout:g} s (busy?)") from None

    def _await(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """The coroutine ``make()`` run in the daemon's loop, waited for ``timeout`` seconds
        (TimeoutError then; the coroutine goes on)."""
        ref = self._daemon.loop_ref
        if ref is None or ref.loop.is_closed():
            raise SchedulerGone("dispyscheduler is not running")
        if threading.current_thread() is ref.thread and ref.loop.is_running():
            raise RuntimeError("a view's waiting calls can't be made in the daemon's loop")
        coro = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, ref.loop)
        except RuntimeError:
            coro.close()
            raise SchedulerGone("dispyscheduler is stopping") from None
        return future.result(timeout)

    def _engine(self) -> ClusterEngine | None:
        """(In the loop.) The cluster's engine while it runs."""
        engine = self.cluster.engine
        if engine is None or self.cluster.state != "running" or engine.closing:
            return None
        return engine

    def _key(self, engine: ClusterEngine, text: str, ips: set[str]) -> tuple[str, int] | None:
        """(In the loop.) The node of this cluster that ``text`` names (``ips``: the
        addresses it resolved to, in the caller's thread)."""
        wanted = canonical(text)
        for key, node in engine.nodes.items():
            if wanted in (key[0], f"{key[0]}:{key[1]}", f"[{key[0]}]:{key[1]}") or node.name == text:
                return key
        for key in engine.nodes:
            if key[0] in ips:
                return key
        return None

    # -- what the pages show ------------------------------------------------------------
    def job_counts(self) -> dict[str, int]:
        def counts() -> dict[str, int]:
            engine = self.cluster.engine
            if engine is None:
                return dict(self._counts)
            return {key: int(value) for key, value in engine.job_counts().items()}

        try:
            self._counts = self._call(counts)
        except (SchedulerGone, TimeoutError) as exc:
            log.debug("web monitor: counts of %s: %s", self.name, exc)
        return dict(self._counts)

    def nodes(self) -> list[DispyNode]:
        def nodes() -> list[DispyNode]:
            engine = self.cluster.engine
            return [] if engine is None else [_copy_node(n) for n in engine.nodes.values()]

        try:
            self._nodes = self._call(nodes)
        except (SchedulerGone, TimeoutError) as exc:
            log.debug("web monitor: nodes of %s: %s", self.name, exc)
        return list(self._nodes)

    def node_jobs(self, ip_addr: str) -> list[dict[str, Any]]:
        def jobs() -> list[dict[str, Any]]:
            engine = self.cluster.engine
            if engine is None:
                return []
            out = []
            for key in engine.nodes:
                if key[0] != ip_addr or not engine.sched.has_node(key):
                    continue
                for job in engine.node_jobs(key):
                    out.append({"uid": str(job._uid), "job_id": str(job.cid), "args": ARGS_NOT_SHOWN,
                                "kwargs": ARGS_NOT_SHOWN, "start_time": job.start_time or 0.0})
            return out

        return self._call(jobs)

    # -- actions -------------------------------------------------------------------------
    def cancel(self, uid: str) -> Any:
        """Cancel the job with that uid (the daemon's id of it, as the node page shows):
        0, or -1 if it has ended meanwhile. KeyError if it is not this cluster's."""
        try:
            number = int(uid)
        except (TypeError, ValueError):
            raise KeyError(uid) from None

        def cancel() -> int:
            engine = self._engine()
            job = None if engine is None else engine._jobs.get(number)
            if engine is None or job is None or job.engine is not engine:
                raise KeyError(uid)
            return engine.cancel(job)

        return self._call(cancel)

    def set_node_cpus(self, node: str, cpus: int) -> Any:
        """The node's CPUs the scheduler uses from now on (for every cluster: see the
        module docstring); -1 if the node does not serve this cluster or ``cpus`` is
        not valid for it."""
        text = _node_text(node)
        ips = _addresses(text)

        def set_cpus() -> int:
            engine = self._engine()
            key = None if engine is None else self._key(engine, text, ips)
            if engine is None or key is None:
                return -1
            return engine.set_node_cpus(key, cpus)

        return self._call(set_cpus)

    def allocate_node(self, node: str) -> Any:
        """Use the node again for this cluster (deallocated or closed), or contact it (a
        node not serving it yet: ``host`` or ``host:port``, as :meth:`add_node`); 0, or -1."""
        text = _node_text(node)
        ips = _addresses(text)

        def allocate() -> int | None:
            engine = self._engine()
            if engine is None:
                return -1
            key = self._key(engine, text, ips)
            return None if key is None else engine.allocate(text, key)

        status = self._call(allocate)
        if status is not None:
            return status
        try:
            host, port = split_host_port(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self.add_node(host, port, 0)

    def deallocate_node(self, node: str) -> Any:
        """No new jobs of this cluster go to the node (its jobs there finish); 0, or -1."""
        text = _node_text(node)
        ips = _addresses(text)

        def deallocate() -> int:
            engine = self._engine()
            key = None if engine is None else self._key(engine, text, ips)
            if engine is None or key is None:
                return -1
            return engine.deallocate(key)

        return self._call(deallocate)

    def close_node(self, node: str) -> Any:
        """Close the cluster's computation on the node (its jobs there finish first);
        0 when done, -1 if the node does not serve the cluster, or a text saying it is
        still closing after :data:`CLOSE_TIMEOUT` seconds."""
        text = _node_text(node)
        ips = _addresses(text)

        async def close() -> int:
            engine = self._engine()
            key = None if engine is None else self._key(engine, text, ips)
            if engine is None or key is None:
                return -1
            return await engine.close_node(key, False)

        try:
            return self._await(close, CLOSE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            return f"closing: the jobs running on {text} finish first"

    def add_node(self, host: str, port: int | None, cpus: int) -> Any:
        """Contact a node for this cluster (``port``: the scheduler's --node_port if
        None; ``cpus``: 0 for all, negative for all but that many); 0, or -1."""
        text = _node_text(host)
        ips = _addresses(text)

        def add() -> int:
            engine = self._engine()
            if engine is None:
                return -1
            node_port = port or self._daemon.cfg.node_port
            key = self._key(engine, text, ips)
            if key is not None and key[1] != node_port:
                key = None  # another node on that host
            like = self._template(ips | {canonical(text)})
            item = NodeAllocate(text, node_port, cpus) if like is None else \
                SharedSpec(text, node_port, cpus, like.files, like.setup_payload)
            return engine.allocate(item, key)

        return self._call(add)

    def _template(self, ips: set[str]) -> SharedSpec | None:
        """(In the loop.) The client's node spec a node added by hand is set up as: the
        first that matches one of its addresses, else the first (its depends files and
        setup arguments: the client's setup function expects them)."""
        data = self.cluster.node_data
        if not isinstance(data, list):
            return None
        specs = []
        for d in data:
            try:
                specs.append(spec_from_data(d, self._daemon.cfg.node_port))
            except ConfigError:
                continue
        for spec in specs:
            if any(spec.matches(ip) for ip in ips):
                return spec
        return specs[0] if specs else None


class SchedulerWeb:
    """The web monitor of a :class:`~dispy_scheduler.daemon.Daemon` (``--httpd``);
    created and told of clusters in the daemon's loop."""

    def __init__(self, daemon: Daemon) -> None:
        # Imported here: the daemon imports this module only with --httpd.
        from dispy_core.web import MonitorBackend, WebServer

        cfg = daemon.cfg
        self.daemon = daemon
        self.backend = MonitorBackend(title="dispyscheduler", show_job_args=True)
        self.server = WebServer(self.backend, host=cfg.http_host, port=cfg.http_port, token=cfg.http_token,
                                certfile=cfg.http_certfile, keyfile=cfg.http_keyfile, poll_sec=POLL_SEC)
        self.views: dict[str, SchedulerView] = {}  # loop only: by compute id

    @property
    def url(self) -> str:
        """Ready to open (with ``?token=`` when a token is in force)."""
        return self.server.url

    def start(self) -> None:
        """Listen now: OSError (the port is taken ...) or ConfigError (certificate)."""
        self.server.start()

    def cluster_started(self, cluster: SharedCluster) -> None:
        """(In the loop.) Show the cluster: named ``name @ client address``, with
        ``#2``, ``#3`` ... after a name another shown cluster has."""
        base = view_name(cluster)
        taken = {v.name for v in self.views.values()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base} #{n}"
        view = SchedulerView(self.daemon, cluster, name)
        self.views[cluster.compute_id] = view
        self.backend.add(view)
        self.server.notify()

    def cluster_closed(self, cluster: SharedCluster) -> None:
        """(In the loop.) The cluster is gone: its view too."""
        view = self.views.pop(cluster.compute_id, None)
        if view is not None:
            self.backend.remove(view)
            self.server.notify()

    def notify(self) -> None:
        """Something the pages show changed (cheap: the server samples at most once a second)."""
        self.server.notify()

    def shutdown(self, wait: bool = True) -> None:
        """Stop serving (not in the loop's thread when ``wait``: see WebServer.shutdown)."""
        self.server.shutdown(wait)
