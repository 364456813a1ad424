"""The monitor's backend: clusters (through :class:`ClusterView`) as the pages show them.

:class:`MonitorBackend` is the :class:`~dispy_core.web.Backend` of ``dispy.httpd`` and
``dispyscheduler --httpd``: its snapshot lists each cluster's job counts, its nodes and
the history of finished jobs (for the chart); its actions (cancel jobs, set a node's
CPUs, allocate / deallocate / close / add a node) call the views' methods and return
what they returned, per cluster and per node or job.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from dispy_core.nodes import DispyNode

from ._server import WebInputError

__all__ = ["ClusterView", "MonitorBackend", "node_dict"]

#: Points kept per cluster for the "jobs finished over time" chart.
HISTORY_POINTS = 360

#: The keys of ClusterView.job_counts().
COUNT_KEYS = ("submitted", "running", "done", "failed", "pending")


class ClusterView(Protocol):
    """One cluster as the monitor sees it.

    ``name``: JobCluster: the computation's name; dispyscheduler: ``"name @ client
    address"``. The methods are called from the web server's threads.
    """

    name: str

    def job_counts(self) -> dict[str, int]:
        """submitted, running, done, failed, pending (see Engine.job_counts)."""

    def nodes(self) -> list[DispyNode]:
        """The nodes serving (or that served) the cluster."""

    def node_jobs(self, ip_addr: str) -> list[dict[str, Any]]:
        """The jobs running on that node: ``{"uid", "job_id", "args", "kwargs",
        "start_time"}`` (uid, job_id, args and kwargs as strings)."""

    def cancel(self, uid: str) -> Any:
        """Cancel the job with that uid; KeyError if it is not this cluster's."""

    def set_node_cpus(self, node: str, cpus: int) -> Any: ...

    def allocate_node(self, node: str) -> Any: ...

    def deallocate_node(self, node: str) -> Any: ...

    def close_node(self, node: str) -> Any: ...

    def add_node(self, host: str, port: int | None, cpus: int) -> Any: ...


def node_dict(node: DispyNode) -> dict[str, Any]:
    """A DispyNode as JSON: its fields, ``sec_per_job`` and ``avail_info`` as a dict."""
    avail = node.avail_info
    return {
        "ip_addr": node.ip_addr,
        "name": node.name,
        "cpus": node.cpus,
        "avail_cpus": node.avail_cpus,
        "busy": node.busy,
        "jobs_done": node.jobs_done,
        "cpu_time": round(node.cpu_time, 6),
        "sec_per_job": round(node.cpu_time / node.jobs_done, 6) if node.jobs_done else 0.0,
        "tx": node.tx,
        "rx": node.rx,
        "update_time": node.update_time,
        "platform": node.platform,
        "avail_info": None if avail is None else {
            "cpu": avail.cpu, "memory": avail.memory, "disk": avail.disk, "swap": avail.swap},
    }


def _one(fields: dict[str, list[str]], name: str, *, required: bool = True) -> str | None:
    values = [v.strip() for v in fields.get(name, []) if v.strip()]
    if not values:
        if required:
            raise WebInputError(f"the field {name!r} is missing")
        return None
    if len(values) > 1:
        raise WebInputError(f"the field {name!r} is given {len(values)} times; give it once")
    return values[0]


def _many(fields: dict[str, list[str]], name: str) -> list[str]:
    values = [v.strip() for v in fields.get(name, []) if v.strip()]
    if not values:
        raise WebInputError(f"the field {name!r} is missing (give it once or more)")
    return values


def _int(fields: dict[str, list[str]], name: str, *, low: int | None = None, high: int | None = None,
         default: int | None = None) -> int | None:
    text = _one(fields, name, required=default is None)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise WebInputError(f"the field {name!r} must be a whole number, not {text!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise WebInputError(f"the field {name!r} must be in {low}-{high}, not {value}")
    return value


class MonitorBackend:
    """The monitor pages' backend (``page = "monitor"``) over any number of clusters.

    ``show_job_args``: the node page shows ``str()`` of running jobs' arguments; with
    False they are blank.
    """

    page = "monitor"

    def __init__(self, title: str = "dispy", show_job_args: bool = True) -> None:
        self.title = title
        self.show_job_args = bool(show_job_args)
        self._lock = threading.Lock()
        self._views: list[ClusterView] = []
        # per cluster name: [(time, jobs finished)] when the number changed (the chart)
        self._history: dict[str, list[tuple[float, int]]] = {}

    def add(self, view: ClusterView) -> None:
        """Show this cluster too (a second view of the same name replaces nothing: both show)."""
        with self._lock:
            if view not in self._views:
                self._views.append(view)

    def remove(self, view: ClusterView) -> None:
        """Stop showing this cluster (no error if it is not shown)."""
        with self._lock:
            if view in self._views:
                self._views.remove(view)
                if all(v.name != view.name for v in self._views):
                    self._history.pop(view.name, None)

    def views(self) -> list[ClusterView]:
        with self._lock:
            return list(self._views)

    # -- Backend ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        clusters = []
        now = time.time()
        for view in self.views():
            counts = {key: int(view.job_counts().get(key, 0)) for key in COUNT_KEYS}
            finished = counts["done"] + counts["failed"]
            with self._lock:
                history = self._history.setdefault(view.name, [])
                if not history or history[-1][1] != finished:
                    history.append((round(now, 3), finished))
                    del history[:-HISTORY_POINTS]
                points = [list(p) for p in history]
            nodes = sorted((node_dict(n) for n in view.nodes()), key=lambda d: str(d["ip_addr"]))
            clusters.append({"name": view.name, "jobs": counts, "nodes": nodes, "history": points})
        return {"title": self.title, "page": self.page, "show_job_args": self.show_job_args,
                "clusters": clusters}

    def detail(self, key: str) -> dict[str, Any]:
        """A node (by IP address or name): its record in each cluster it serves and the
        jobs running there. KeyError if no cluster has it."""
        found = []
        for view in self.views():
            for node in view.nodes():
                if key in (node.ip_addr, node.name):
                    jobs = view.node_jobs(node.ip_addr)
                    if not self.show_job_args:
                        jobs = [dict(job, args="", kwargs="") for job in jobs]
                    found.append({"name": view.name, "node": node_dict(node), "jobs": jobs})
                    break
        if not found:
            raise KeyError(key)
        return {"key": key, "show_job_args": self.show_job_args, "clusters": found}

    def act(self, action: str, fields: dict[str, list[str]]) -> Any:
        handler = {
            "cancel_jobs": self._cancel_jobs,
            "set_cpus": self._set_cpus,
            "allocate_node": self._node_action,
            "deallocate_node": self._node_action,
            "close_node": self._node_action,
            "add_node": self._add_node,
        }[action]  # KeyError: unknown action (404)
        return handler(action, fields)

    # -- actions ----------------------------------------------------------------------------
    def _chosen(self, fields: dict[str, list[str]]) -> list[ClusterView]:
        name = _one(fields, "cluster", required=False) or "*"
        views = self.views()
        if name == "*":
            return views
        chosen = [v for v in views if v.name == name]
        if not chosen:
            known = ", ".join(repr(v.name) for v in views) or "none"
            raise WebInputError(f"no cluster named {name!r} (clusters: {known})")
        return chosen

    @staticmethod
    def _call(func: Any, *args: Any) -> Any:
        """What the method returned, or what it raised as ``{"error": ...}``."""
        try:
            return func(*args)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _cancel_jobs(self, action: str, fields: dict[str, list[str]]) -> Any:
        uids = _many(fields, "uid")
        views = self._chosen(fields)
        results: dict[str, dict[str, Any]] = {}
        for uid in uids:
            for view in views:
                try:
                    value = view.cancel(uid)
                except KeyError:
                    continue  # not this cluster's job
                except Exception as exc:
                    value = {"error": f"{type(exc).__name__}: {exc}"}
                results.setdefault(view.name, {})[uid] = value
                break
            else:
                results.setdefault("(none)", {})[uid] = "no running or queued job has this uid"
        return results

    def _set_cpus(self, action: str, fields: dict[str, list[str]]) -> Any:
        node = _one(fields, "node")
        cpus = _int(fields, "cpus", low=-100000, high=100000)
        return {view.name: {node: self._call(view.set_node_cpus, node, cpus)} for view in self._chosen(fields)}

    def _node_action(self, action: str, fields: dict[str, list[str]]) -> Any:
        nodes = _many(fields, "node")
        views = self._chosen(fields)
        return {view.name: {node: self._call(getattr(view, action), node) for node in nodes} for view in views}

    def _add_node(self, action: str, fields: dict[str, list[str]]) -> Any:
        host = _one(fields, "host")
        assert host is not None
        if any(c.isspace() for c in host) or len(host) > 255:
            raise WebInputError(f"the field 'host' must be a host name or IP address, not {host!r}")
        port = _int(fields, "port", low=1, high=65535, default=0) or None
        cpus = _int(fields, "cpus", low=-100000, high=100000, default=0)
        assert cpus is not None
        return {view.name: {host: self._call(view.add_node, host, port, cpus)} for view in self._chosen(fields)}
