"""Nodes as the user sees them: ``DispyNode``, ``DispyNodeAvailInfo``, ``NodeAllocate``.

Also the parsing of a cluster's ``nodes`` argument into :class:`NodeAllocate` objects
(:func:`parse_nodes`) and wildcard matching: a spec whose host contains ``*`` matches node
IP addresses (``'192.168.3.*'``) and is resolved by discovery; any other spec names one
node, which is contacted directly over TCP.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from typing import Any

from dispy_core import config
from dispy_core.errors import ConfigError
from dispy_core.status import NodeStatus

from .computation import file_data, setup_args_payload
from .netif import canonical

__all__ = ["DispyNode", "DispyNodeAvailInfo", "NodeAllocate", "parse_nodes", "is_wildcard"]


class DispyNodeAvailInfo:
    """A node's availability when it reported (psutil on the node).

    ``cpu``: available CPU in percent (100 = idle); ``memory``: available memory in bytes;
    ``disk``: free bytes where the node keeps computations' files; ``swap``: available swap
    in percent (100 minus the percentage in use, as dispy 4 sends it).
    """

    __slots__ = ("cpu", "memory", "disk", "swap")

    def __init__(self, cpu: float, memory: int, disk: int, swap: float) -> None:
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
        self.swap = swap

    def __repr__(self) -> str:
        return (f"DispyNodeAvailInfo(cpu={self.cpu}, memory={self.memory}, "
                f"disk={self.disk}, swap={self.swap})")


class DispyNode:
    """The client's view of a node serving the cluster (given to ``cluster_status``).

    ``ip_addr``, ``name``, ``cpus`` (CPUs this cluster uses there), ``avail_cpus`` (CPUs
    the node offered), ``busy`` (jobs sent there and not yet returned), ``jobs_done``,
    ``cpu_time`` (seconds of job time on the node), ``tx``/``rx`` (serialized bytes sent
    to / received from it), ``update_time``, ``avail_info`` (:class:`DispyNodeAvailInfo`
    or None) and ``platform``.
    """

    Initialized = NodeStatus.Initialized
    Closed = NodeStatus.Closed
    AvailInfo = NodeStatus.AvailInfo

    def __init__(self, ip_addr: str, name: str = "", cpus: int = 0, platform: str = "") -> None:
        self.ip_addr = ip_addr
        self.name = name
        self.cpus = cpus
        self.avail_cpus = cpus
        self.busy = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        self.tx = 0
        self.rx = 0
        self.update_time = 0.0
        self.avail_info: DispyNodeAvailInfo | None = None
        self.platform = platform

    def __repr__(self) -> str:
        return f"<DispyNode {self.ip_addr} {self.name!r} cpus={self.cpus} busy={self.busy}>"


class NodeAllocate:
    """Which nodes to use and how: host (name, IP or wildcard), port, CPUs, per-node
    ``depends`` files and ``setup_args``.

    Subclass and override :meth:`allocate` to choose nodes (and set ``depends`` /
    ``setup_args``) from what each node reports. ``allocate`` runs in the cluster's
    networking thread: keep it quick.
    """

    def __init__(self, host: str, port: int | None = None, cpus: int = 0,
                 depends: list[str] | None = None, setup_args: tuple[Any, ...] = ()) -> None:
        if not isinstance(host, str) or not host.strip():
            raise ConfigError(f"NodeAllocate host must be a host name, IP address or wildcard, not {host!r}")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                                 or not 0 < port < 65536):
            raise ConfigError(f"NodeAllocate port must be an int in 1-65535 or None, not {port!r}")
        if not isinstance(cpus, int) or isinstance(cpus, bool):
            raise ConfigError(f"NodeAllocate cpus must be an int, not {cpus!r}")
        if depends is None:
            depends = []
        if not isinstance(depends, (list, tuple)):
            raise ConfigError(f"NodeAllocate depends must be a list of file paths, not {depends!r}")
        if not isinstance(setup_args, tuple):
            setup_args = tuple(setup_args) if isinstance(setup_args, list) else (setup_args,)
        self.host = host.strip() if is_wildcard(host) else canonical(host)  # '[::1]' -> '::1'
        self.port = port
        self.cpus = cpus
        self.depends = list(depends)
        self.setup_args = setup_args

    def allocate(self, cluster: Any, ip_addr: str, name: str, cpus: int,
                 avail_info: DispyNodeAvailInfo | None = None, platform: str = "") -> int:
        """How many of the node's ``cpus`` this cluster uses; 0 means "don't use it".

        The default: all of them if ``self.cpus`` is 0, at most ``self.cpus`` if it is
        positive, and all but ``-self.cpus`` if it is negative.
        """
        if self.cpus > 0:
            return min(cpus, self.cpus)
        if self.cpus < 0:
            return max(0, cpus + self.cpus)
        return cpus

    def _depends_data(self) -> list[Any]:
        """The ``depends`` files read (FileData), as they go to the node; ConfigError if
        one can't be read."""
        return [file_data(p) for p in depends_files(self.depends)]

    def _setup_payload(self) -> list[Any]:
        """``setup_args`` serialized, as they go to the node."""
        return setup_args_payload(self.setup_args)

    # -- used by the cluster ---------------------------------------------------------
    @property
    def wildcard(self) -> bool:
        return is_wildcard(self.host)

    def matches(self, ip_addr: str) -> bool:
        """Whether a node at ``ip_addr`` is one this spec describes."""
        if self.wildcard:
            return fnmatch.fnmatchcase(ip_addr, self.host)
        return ip_addr == self.host

    def __repr__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"NodeAllocate({self.host}{port}, cpus={self.cpus})"


def is_wildcard(host: str) -> bool:
    return "*" in host


def split_host_port(text: str) -> tuple[str, int | None]:
    """``'host'``, ``'host:port'``, ``'[v6addr]:port'``, ``'[v6addr]'`` or a bare IPv6
    address (more than one colon: no port) as (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"invalid node {text!r}: expected '[IPv6 address]' or '[IPv6 address]:port'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        return text, None
    if port_text is None:
        return host, None
    if not port_text.isdigit():
        raise ConfigError(f"invalid node {text!r}: the port after ':' must be a number")
    return host, int(port_text)


def _from_item(item: Any) -> NodeAllocate:
    if isinstance(item, NodeAllocate):
        return item
    if isinstance(item, str):
        return NodeAllocate(*split_host_port(item))
    if isinstance(item, DispyNode):
        return NodeAllocate(item.ip_addr)
    if isinstance(item, (tuple, list)):
        if not 1 <= len(item) <= 5:
            raise ConfigError(f"node tuple must be (host[, port[, cpus[, depends[, setup_args]]]]), not {item!r}")
        return NodeAllocate(*item)
    if isinstance(item, dict):
        try:
            return NodeAllocate(**item)
        except TypeError as exc:
            raise ConfigError(f"invalid node dict {item!r}: {exc}") from None
    raise ConfigError(
        f"a node must be a host name, IP address, wildcard, (host, port) tuple or "
        f"NodeAllocate, not {type(item).__name__} {item!r}"
    )


def parse_nodes(nodes: Any, dispy_port: int | None = None, *, node_port: int | None = None) -> list[NodeAllocate]:
    """The ``nodes`` argument as NodeAllocate objects with ports filled in.

    None (or an empty list) means ``['*']``: every node that answers discovery. A single
    string or NodeAllocate is taken as a list of one. Ports left out are ``node_port``
    if given, else the node port of ``dispy_port`` (``dispy.config.NodePort`` when that
    is None). Given NodeAllocate objects are not modified: copies carry the filled-in port.
    """
    if nodes is None:
        items: Iterable[Any] = ["*"]
    elif isinstance(nodes, (str, NodeAllocate, DispyNode)):
        items = [nodes]
    elif isinstance(nodes, (list, tuple, set, frozenset)):
        items = list(nodes) or ["*"]
    else:
        raise ConfigError(f"nodes must be a list of nodes, not {type(nodes).__name__}")
    port = node_port or config.node_port(dispy_port or None)
    specs = []
    for item in items:
        spec = _from_item(item)
        if spec.port is None:
            if type(spec) is NodeAllocate:
                spec = NodeAllocate(spec.host, port, spec.cpus, spec.depends, spec.setup_args)
            else:  # a subclass: keep the user's object (and its allocate), set the port
                spec.port = port
        specs.append(spec)
    return specs


def depends_files(paths: Iterable[Any]) -> list[str]:
    """Validate NodeAllocate.depends entries: paths of existing regular files."""
    files = []
    for path in paths:
        if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
            raise ConfigError(f"NodeAllocate depends must be paths of existing files; {path!r} is not")
        files.append(os.fspath(path))
    return files
