"""dispyadmin's Python API: the nodes it manages, their state, and the changes it makes.

:class:`NodeAdmin` keeps one record per node (``host:port``): the node's state from its
last answer (:class:`~dispy_core.messages.AdminNodeInfo`), or why there is none (the
node's admin secret differs, it has none, it can't be reached). It asks every node
again each ``poll_interval`` seconds (:meth:`NodeAdmin.start`), and on demand
(:meth:`NodeAdmin.refresh`). Changes (:meth:`NodeAdmin.set_cpus`,
:meth:`NodeAdmin.set_service_times`, :meth:`NodeAdmin.set_serve`) go to the node at once,
over a connection authenticated with the admin secret (see :mod:`._admin_wire`), and
return the node's state after the change, or raise :class:`AdminError` saying why not.

Which nodes: those named (``nodes``, :meth:`NodeAdmin.add_node`). Only when none is
named at all does :meth:`NodeAdmin.start` look for nodes by UDP discovery (requests
sealed with the admin secret; nodes whose admin secret differs don't answer), again
every ``ping_interval`` seconds and on :meth:`NodeAdmin.scan`. Named nodes never cause a
datagram to be sent.

Thread-safe: the web server calls it from its request threads while the poll thread
runs. ``on_change`` is called (from whichever thread) after a node's record changed.
The ``dispyadmin`` command (:mod:`._admin_cli`) serves it on web pages
(:mod:`._admin_web`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from dispy_core import config, tls
from dispy_core.errors import ConfigError
from dispy_core.messages import (
    AdminInfoRequest,
    AdminNodeInfo,
    AdminSetCpus,
    AdminSetServe,
    AdminSetServiceTimes,
    DiscoverReply,
    Message,
)

from ._admin_wire import AdminError, request

__all__ = ["NodeAdmin", "AdminNode", "AdminError", "parse_node"]

log = logging.getLogger("dispy.admin")


def parse_node(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a v6 address -> (IP address, port);
    ConfigError naming the text when the host is unknown or the port is wrong."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    if not host:
        raise ConfigError(f"invalid node {text!r}: no host")
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            ip = str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
        except OSError as exc:
            raise ConfigError(f"invalid node {text!r}: not an IP address or known host name ({exc})") from None
    return ip, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port <= 65535:
        raise ConfigError(f"invalid node {whole!r}: the port must be a number in 1..65535")
    return port


@dataclass
class AdminNode:
    """What dispyadmin knows of one node. ``info``: its state from its last answer
    (None until it answered, or when it refuses: then ``error`` says why and
    ``refused`` is True); ``updated``: when it last answered (time.time())."""

    host: str
    port: int
    info: AdminNodeInfo | None = None
    error: str = ""
    refused: bool = False
    updated: float = 0.0

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: key, host, port, error, refused, updated, and ``info`` (a dict of
        AdminNodeInfo's fields, avail_info as a dict; None without details)."""
        info = None
        if self.info is not None:
            info = {name: getattr(self.info, name) for name in self.info.__dispy_fields__}  # type: ignore[attr-defined]
            avail = self.info.avail_info
            info["avail_info"] = asdict(avail) if avail is not None else None  # type: ignore[call-overload]
        # the node's address starts every AdminError's text: the record names it already
        error = self.error.removeprefix(f"{self.host}:{self.port}: ")
        return {"key": self.key, "host": self.host, "port": self.port, "info": info,
                "error": error, "refused": self.refused, "updated": self.updated}


class NodeAdmin:
    """Manages dispynodes started with ``--admin_secret`` equal to ``secret`` (see the
    module's doc). ``nodes``: "host", "host:port" (``node_port`` when none is given);
    ``certfile``/``keyfile``: for nodes serving TLS (their --certfile)."""

    def __init__(self, secret: str = "", nodes: Iterable[str] = (), *, node_port: int | None = None,
                 certfile: str | None = None, keyfile: str | None = None, poll_interval: float = 60.0,
                 ping_interval: float = 600.0, timeout: float = 10.0,
                 on_change: Callable[[], None] | None = None) -> None:
        if not poll_interval > 0:
            raise ConfigError(f"invalid poll_interval {poll_interval}: must be > 0 seconds")
        if not ping_interval > 0:
            raise ConfigError(f"invalid ping_interval {ping_interval}: must be > 0 seconds")
        self.node_port = config.node_port() if node_port is None else node_port
        self.poll_interval = poll_interval
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.on_change = on_change
        self._secret = secret
        self._ssl: ssl.SSLContext | None = tls.client_context(certfile, keyfile) if certfile else None
        self._lock = threading.Lock()
        self._nodes: dict[str, AdminNode] = {}
        self.named = False  # nodes were named: never discover
        for text in nodes:
            self._record(*parse_node(text, self.node_port))
            self.named = True
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="dispyadmin")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._discovery: Any = None
        self._discovery_loop: asyncio.AbstractEventLoop | None = None

    # -- the secret --------------------------------------------------------------
    @property
    def secret(self) -> str:
        return self._secret

    def set_secret(self, secret: str) -> None:
        """Use ``secret`` from now on (the ``secret`` command), and ask every node again."""
        self._secret = secret
        if self._discovery is not None:
            self._discovery.secret = secret  # its next round is sealed with this one
        self.refresh()

    # -- nodes -------------------------------------------------------------------
    def _record(self, host: str, port: int) -> AdminNode:
        with self._lock:
            node = AdminNode(host, port)
            return self._nodes.setdefault(node.key, node)

    def add_node(self, host: str, port: int | None = None) -> dict[str, Any]:
        """Manage the node at ``host`` (``host:port`` too); asks it now and returns its
        record (see AdminNode.as_dict). ConfigError for an unknown host or bad port."""
        if port is not None and not 0 < port <= 65535:
            raise ConfigError(f"invalid port {port}: must be in 1..65535")
        ip, p = parse_node(host, self.node_port if port is None else port)
        if port is not None:
            p = port
        node = self._record(ip, p)
        self._poll(node)
        return node.as_dict()

    def remove_node(self, key: str) -> None:
        with self._lock:
            del self._nodes[self._find(key)]
        self._changed()

    def nodes(self) -> list[dict[str, Any]]:
        """Every node's record, sorted by address."""
        with self._lock:
            nodes = sorted(self._nodes.values(), key=lambda n: (_sort_ip(n.host), n.port))
            return [n.as_dict() for n in nodes]

    def node(self, key: str) -> dict[str, Any]:
        """One node's record; ``key`` as in ``nodes()`` ("ip:port") or a host when only one
        node has it. KeyError when there is no such node."""
        with self._lock:
            return self._nodes[self._find(key)].as_dict()

    def _find(self, key: str) -> str:
        """The key of the node ``key`` names (lock held)."""
        if key in self._nodes:
            return key
        try:
            ip, port = parse_node(key, 0)
        except ConfigError:
            raise KeyError(key) from None
        hits = [k for k, n in self._nodes.items() if n.host == ip and (port == 0 or n.port == port)]
        if len(hits) != 1:
            raise KeyError(key)
        return hits[0]

    def _get(self, key: str) -> AdminNode:
        with self._lock:
            return self._nodes[self._find(key)]

    # -- asking nodes -------------------------------------------------------------
    def refresh(self, key: str | None = None) -> None:
        """Ask every node (or the one ``key`` names) for its state now; returns when all
        answered or failed."""
        with self._lock:
            targets = list(self._nodes.values()) if key is None else [self._nodes[self._find(key)]]
        list(self._pool.map(self._poll, targets))

    def _ask(self, node: AdminNode, msg: Message) -> AdminNodeInfo:
        return request(node.host, node.port, self._secret, msg, timeout=self.timeout, ssl_context=self._ssl)

    def _poll(self, node: AdminNode) -> None:
        try:
            info = self._ask(node, AdminInfoRequest())
        except AdminError as exc:
            with self._lock:
                changed = node.error != str(exc) or node.info is not None
                node.info, node.error, node.refused = None, str(exc), exc.refused
            if changed:
                log.info("%s", exc)
        else:
            with self._lock:
                node.info, node.error, node.refused, node.updated = info, "", False, time.time()
        self._changed()

    def _change(self, key: str, msg: Message) -> dict[str, Any]:
        node = self._get(key)
        try:
            info = self._ask(node, msg)
        except AdminError as exc:
            if "refused: " not in str(exc):  # not the request refused: the node is (or is gone)
                with self._lock:
                    node.info, node.error, node.refused = None, str(exc), exc.refused
                self._changed()
            raise
        with self._lock:
            node.info, node.error, node.refused, node.updated = info, "", False, time.time()
        self._changed()
        return node.as_dict()

    def set_cpus(self, key: str, cpus: int) -> dict[str, Any]:
        """Make the node use ``cpus`` CPUs (as ``dispynode -c``: negative leaves that many
        unused); returns its record after the change; AdminError saying why not."""
        _check_int(cpus, "cpus")
        if not -65536 <= cpus <= 65536:
            raise ConfigError(f"invalid CPU count {cpus}")
        return self._change(key, AdminSetCpus(cpus))

    def set_service_times(self, key: str, start: str | None = None, stop: str | None = None,
                          end: str | None = None) -> dict[str, Any]:
        """Give the node this daily service window (each "HH:MM" or None/"" for none; all
        none: always serve), as ``dispynode --service_start/stop/end``."""
        times = []
        for name, value in (("start", start), ("stop", stop), ("end", end)):
            value = (value or "").strip() or None
            if value is not None and not _is_hhmm(value):
                raise ConfigError(f"invalid service {name} time {value!r}: expected HH:MM (00:00 to 23:59)")
            times.append(value)
        return self._change(key, AdminSetServiceTimes(*times))

    def set_serve(self, key: str, serve: int) -> dict[str, Any]:
        """Make the node serve ``serve`` clients in all, then quit (-1: no limit), as
        ``dispynode --serve``."""
        _check_int(serve, "serve")
        if serve == 0 or serve < -1 or serve >= 2**63:
            raise ConfigError(f"invalid serve count {serve}: a positive number of clients, or -1 for no limit")
        return self._change(key, AdminSetServe(serve))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- running -------------------------------------------------------------------
    def start(self) -> None:
        """Poll every node each poll_interval seconds in a thread (the first poll now);
        without named nodes, also look for nodes by discovery."""
        t = threading.Thread(target=self._poll_loop, name="dispyadmin-poll", daemon=True)
        t.start()
        self._threads.append(t)
        if not self.named:
            d = threading.Thread(target=self._discover, name="dispyadmin-discovery", daemon=True)
            d.start()
            self._threads.append(d)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a bug must not end polling; say it
                log.exception("polling the nodes failed")
            self._stop.wait(self.poll_interval)

    def scan(self) -> None:
        """Look for nodes again now (discovery; nothing to do when nodes were named),
        and ask every node known for its state."""
        loop, disc = self._discovery_loop, self._discovery
        if loop is not None and disc is not None:
            loop.call_soon_threadsafe(disc.refresh)
        self.refresh()

    def _discover(self) -> None:
        """Discovery (only without named nodes): requests sealed with the admin secret."""
        from dispy_core.discovery import Discovery

        def found(reply: DiscoverReply) -> None:
            node = self._record(reply.ip_addr, reply.port)
            self._pool.submit(self._poll, node)

        async def run() -> None:
            self._discovery_loop = asyncio.get_running_loop()
            self._discovery = Discovery(self._secret, self.node_port, found, ping_interval=self.ping_interval)
            task = asyncio.create_task(self._discovery.run())
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            task.cancel()

        try:
            asyncio.run(run())
        except Exception:
            log.exception("discovery failed")

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> NodeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sort_ip(host: str) -> tuple[int, int]:
    try:
        a = ipaddress.ip_address(host)
        return a.version, int(a)
    except ValueError:
        return 9, 0


def _check_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"invalid {name} {value!r}: must be an integer")


def _is_hhmm(text: str) -> bool:
    parts = text.split(":")
    return (len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == 2 and parts[1].isdigit()
            and int(parts[0]) <= 23 and int(parts[1]) <= 59 and len(parts[0]) <= 2)
