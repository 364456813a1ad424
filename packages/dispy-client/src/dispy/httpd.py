"""Watch and steer clusters in a browser: :class:`DispyHTTPServer`.

::

    import dispy, dispy.httpd

    cluster = dispy.JobCluster(compute, nodes=["192.168.1.10"])
    server = dispy.httpd.DispyHTTPServer(cluster)   # open http://127.0.0.1:8181/
    jobs = [cluster.submit(i) for i in range(100)]
    cluster.wait()
    server.shutdown()   # the browsers get the final state first
    cluster.close()

The pages (monitor, node, manage) and the server are :mod:`dispy_core.web`'s; this module
puts a :class:`dispy_core.web.ClusterView` over each JobCluster or SharedJobCluster (its
counts are the client's own: ``Engine.job_counts()`` of the cluster's runtime) and
watches them so that changes reach the browsers within a second or two.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from dispy_core import config
from dispy_core.nodes import DispyNode, NodeAllocate
from dispy_core.web import MonitorBackend, WebServer

from ._cluster import JobCluster

__all__ = ["DispyHTTPServer"]

log = logging.getLogger(__name__)

#: Seconds between looks at the clusters for changes (pushed to the browsers at once).
WATCH_SEC = 1.0

_ZERO = {"submitted": 0, "running": 0, "done": 0, "failed": 0, "pending": 0}


class _ClusterView:
    """A JobCluster (or SharedJobCluster) as the monitor sees it (dispy_core.web.ClusterView)."""

    def __init__(self, cluster: JobCluster) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self._counts = dict(_ZERO)  # the last counts read (kept once the cluster is closed)

    def job_counts(self) -> dict[str, int]:
        runtime = self.cluster._runtime
        if runtime is not None:
            self._counts = runtime.job_counts()
        return dict(self._counts)

    def nodes(self) -> list[DispyNode]:
        return list(self.cluster.status().nodes)

    def node_jobs(self, ip_addr: str) -> list[dict[str, Any]]:
        return [{"uid": str(job._uid), "job_id": str(job.id), "args": str(job.args), "kwargs": str(job.kwargs),
                 "start_time": job.start_time} for job in self.cluster.node_jobs(ip_addr)]

    def _job(self, uid: str) -> Any:
        runtime = self.cluster._runtime
        try:
            number = int(uid)
        except ValueError:
            raise KeyError(uid) from None
        if runtime is None or not runtime.thread.alive:
            raise KeyError(uid)
        job = runtime.call(lambda: runtime._jobs.get(number), timeout=config.MsgTimeout)
        if job is None:
            raise KeyError(uid)
        return job

    def cancel(self, uid: str) -> Any:
        return self.cluster.cancel(self._job(uid))

    def set_node_cpus(self, node: str, cpus: int) -> Any:
        return self.cluster.set_node_cpus(node, cpus)

    def allocate_node(self, node: str) -> Any:
        return self.cluster.allocate_node(node)

    def deallocate_node(self, node: str) -> Any:
        return self.cluster.deallocate_node(node)

    def close_node(self, node: str) -> Any:
        return self.cluster.close_node(node)

    def add_node(self, host: str, port: int | None, cpus: int) -> Any:
        return self.cluster.allocate_node(NodeAllocate(host, port, cpus))

    def fingerprint(self) -> tuple[Any, ...]:
        """Cheap to compute; changes whenever the monitor would show something new."""
        counts = self.job_counts()
        return (tuple(sorted(counts.items())),
                tuple((n.ip_addr, n.cpus, n.busy, n.jobs_done, n.update_time) for n in self.nodes()))


class DispyHTTPServer:
    """Serve the monitor pages of one or more clusters (JobCluster, SharedJobCluster).

    ``host``: the address to listen on. The default ``''`` means **127.0.0.1 only** (safe
    by default: dispy 4 listened on every address, without authentication); give an
    address, or ``'0.0.0.0'`` for all, to let other computers in. Beyond loopback a token
    is required of every browser: ``token`` or, when not given, a random one; the URL to
    open (with ``?token=...``) is :attr:`url` and is printed to standard error when the
    token was made up here. ``port``: default ``dispy.config.HTTPServerPort`` (8181); 0
    picks a free one (:attr:`port`). ``poll_sec``: the browsers' fallback refresh period
    (changes are pushed to them within a second or two anyway). ``DocumentRoot``: a directory
    whose files are served instead of the shipped pages (``/`` serves its
    ``monitor.html``, ``/static/<name>`` its files; ``.html`` files get ``{{csrf}}``,
    ``{{title}}`` and ``{{poll_ms}}`` filled in). ``certfile``/``keyfile``: serve HTTPS.
    ``show_job_args``: the node page shows ``str()`` of running jobs' arguments.
    """

    def __init__(self, cluster: JobCluster | None, host: str = "", port: int | None = None,
                 poll_sec: float = 10, DocumentRoot: str | None = None, keyfile: str | None = None,
                 certfile: str | None = None, show_job_args: bool = True, token: str | None = None) -> None:
        self._lock = threading.Lock()
        self._views: dict[int, _ClusterView] = {}
        self._backend = MonitorBackend(title="dispy", show_job_args=show_job_args)
        self._web = WebServer(self._backend, host=host or "127.0.0.1",
                              port=config.HTTPServerPort if port is None else port, token=token,
                              certfile=certfile, keyfile=keyfile, poll_sec=poll_sec,
                              document_root=DocumentRoot)
        if cluster is not None:
            self.add_cluster(cluster)
        self._web.start()
        if token is None and self._web.token is not None:
            print(f"dispy monitor: open {self._web.url}", file=sys.stderr)
        log.info("dispy monitor at %s", self._web.url)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="dispy-httpd-watch", daemon=True)
        self._watcher.start()

    @property
    def url(self) -> str:
        """The URL to open (with ``?token=...`` when a token is required)."""
        return self._web.url

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._web.port

    @property
    def token(self) -> str | None:
        """The token browsers need, or None (loopback without a token)."""
        return self._web.token

    def add_cluster(self, cluster: JobCluster) -> None:
        """Show this cluster too."""
        if not isinstance(cluster, JobCluster):
            raise TypeError(f"add_cluster() takes a JobCluster or SharedJobCluster, not {type(cluster).__name__}")
        with self._lock:
            if id(cluster) in self._views:
                return
            view = self._views[id(cluster)] = _ClusterView(cluster)
        self._backend.add(view)
        self._web.notify()

    def del_cluster(self, cluster: JobCluster) -> None:
        """Stop showing this cluster."""
        with self._lock:
            view = self._views.pop(id(cluster), None)
        if view is not None:
            self._backend.remove(view)
            self._web.notify()

    def cluster_status(self, status: int, node: DispyNode | None, job: Any) -> None:
        """dispy 4's hook (a program's own ``cluster_status`` callback may call it): the
        state is sampled at once. Not needed: the server watches the clusters itself."""
        self._web.notify()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the server. With ``wait`` (the default), every open browser first gets
        the final state (then shows that the server stopped)."""
        self._stop.set()
        self._watcher.join(5)
        self._web.shutdown(wait=wait)

    def _watch(self) -> None:
        """Notify the server when a cluster changed (checked every WATCH_SEC)."""
        last: dict[int, tuple[Any, ...]] = {}
        while not self._stop.wait(WATCH_SEC):
            with self._lock:
                views = dict(self._views)
            changed = set(last) != set(views)
            seen: dict[int, tuple[Any, ...]] = {}
            for key, view in views.items():
                try:
                    seen[key] = view.fingerprint()
                except Exception:
                    log.debug("httpd: looking at cluster %s failed", view.name, exc_info=True)
                    continue
                if last.get(key) != seen[key]:
                    changed = True
            last = seen
            if changed:
                self._web.notify()
