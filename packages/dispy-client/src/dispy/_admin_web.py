"""dispyadmin's web pages: the :class:`AdminBackend` that :class:`dispy_core.web.WebServer`
shows (``page = "admin"``: ``static/admin.html``, ``admin_node.html``).

Snapshot: ``{"nodes": [record, ...], "secret_set": bool, "discovery": bool,
"poll_interval": float}``, each record as :meth:`dispy.admin.AdminNode.as_dict` makes it
(``info`` None and ``error`` saying why for a node whose admin secret differs, has none,
or can't be reached). Detail: one node's record by key ("ip:port").

Actions (POST /api/act/<action>); ``node`` is a record's key and may repeat:

=====================  ===========================================================
``add_node``           ``host``, ``port`` (optional): manage that node too
``set_cpus``           ``node``, ``cpus``
``set_service_times``  ``node``, ``start``, ``stop``, ``end`` ("HH:MM" or empty: none)
``set_serve``          ``node``, ``serve`` (-1: no limit)
``refresh``            ``node`` (optional: all): ask now
``scan``               look for nodes again (discovery, when no node was named)
=====================  ===========================================================

Each change returns, per node, what came back: ``{"node": key, "ok": true, "info":
{...}}`` with the node's state after it, or ``{"node": key, "ok": false, "error": why}``.
A missing or malformed field is a WebInputError (HTTP 400 naming the field).
"""

from __future__ import annotations

from typing import Any

from dispy_core.errors import ConfigError
from dispy_core.web import WebInputError

from ._admin_wire import AdminError
from .admin import NodeAdmin

__all__ = ["AdminBackend"]


def _one(fields: dict[str, list[str]], name: str, *, required: bool = True) -> str:
    values = fields.get(name) or []
    if not values or not values[0].strip():
        if required:
            raise WebInputError(f"missing field {name!r}")
        return ""
    if len(values) > 1:
        raise WebInputError(f"field {name!r} given {len(values)} times; one value expected")
    return values[0].strip()


def _int(fields: dict[str, list[str]], name: str) -> int:
    text = _one(fields, name)
    try:
        return int(text)
    except ValueError:
        raise WebInputError(f"field {name!r} must be a whole number, not {text!r}") from None


class AdminBackend:
    """The admin pages' backend over a :class:`NodeAdmin` (see the module's doc)."""

    page = "admin"

    def __init__(self, admin: NodeAdmin, title: str = "dispyadmin") -> None:
        self.admin = admin
        self.title = title

    def snapshot(self) -> dict[str, Any]:
        return {"nodes": self.admin.nodes(), "secret_set": bool(self.admin.secret),
                "discovery": not self.admin.named, "poll_interval": self.admin.poll_interval}

    def detail(self, key: str) -> dict[str, Any]:
        return self.admin.node(key)  # KeyError: 404

    def act(self, action: str, fields: dict[str, list[str]]) -> Any:
        admin = self.admin
        if action == "add_node":
            host = _one(fields, "host")
            port = _int(fields, "port") if _one(fields, "port", required=False) else None
            try:
                return admin.add_node(host, port)
            except ConfigError as exc:
                raise WebInputError(str(exc)) from None
        if action == "scan":
            admin.scan()
            return f"asked {len(admin.nodes())} nodes" + ("; looking for more" if not admin.named else "")
        if action == "refresh":
            keys = [k.strip() for k in fields.get("node", []) if k.strip()]
            if not keys:
                admin.refresh()
                return f"asked {len(admin.nodes())} nodes"
            for key in keys:
                try:
                    admin.refresh(key)
                except KeyError:
                    raise WebInputError(f"no node {key!r} here") from None
            return [admin.node(k) for k in keys]
        if action == "set_cpus":
            cpus = _int(fields, "cpus")
            return self._each(fields, lambda key: admin.set_cpus(key, cpus))
        if action == "set_serve":
            serve = _int(fields, "serve")
            return self._each(fields, lambda key: admin.set_serve(key, serve))
        if action == "set_service_times":
            times = [_one(fields, name, required=False) or None for name in ("start", "stop", "end")]
            return self._each(fields, lambda key: admin.set_service_times(key, *times))
        raise KeyError(action)

    def _each(self, fields: dict[str, list[str]], change: Any) -> list[dict[str, Any]]:
        keys = [k.strip() for k in fields.get("node", []) if k.strip()]
        if not keys:
            raise WebInputError("missing field 'node': which nodes to change")
        for key in keys:
            try:
                self.admin.node(key)
            except KeyError:
                raise WebInputError(f"no node {key!r} here (add it first)") from None
        out: list[dict[str, Any]] = []
        for key in keys:
            try:
                record = change(key)
            except ConfigError as exc:  # the value itself: nothing was sent
                raise WebInputError(str(exc)) from None
            except AdminError as exc:  # its text starts with the node's address: named already
                where = self.admin.node(key)
                error = str(exc).removeprefix(f"{where['host']}:{where['port']}: ")
                out.append({"node": key, "ok": False, "error": error})
            else:
                out.append({"node": key, "ok": True, "info": record["info"]})
        return out
