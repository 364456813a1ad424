"""Configuration shared by every dispy program: ports, timeouts and size limits.

The port numbers form the "9700 family": one base number, :data:`DispyPort`, from which the
client (base), node (base + 1) and shared scheduler (base + 2) ports are derived. Change
the base with ``dispy.config.DispyPort = n`` before creating a cluster, or pass
``dispy_port=n``; :func:`client_port`, :func:`node_port` and :func:`scheduler_port` read it
at call time so the change is seen everywhere.

dispy's derived names :data:`ClientPort`, :data:`NodePort` and :data:`SharedSchedulerPort`
are computed from :data:`DispyPort` when read (a module ``__getattr__``), so they follow
it; a program that assigns one (``dispy.config.NodePort = 9801``) fixes that port instead,
and :func:`client_port`, :func:`node_port` and :func:`scheduler_port` honour the
assignment wherever no ``dispy_port`` is given.

:data:`HTTPServerPort` is the default port of the web monitor (``dispy.httpd``).
"""

from __future__ import annotations

import re

from .errors import ConfigError

__all__ = [
    "DispyPort",
    "ClientPort",
    "NodePort",
    "SharedSchedulerPort",
    "HTTPServerPort",
    "IPv4MulticastGroup",
    "IPv6MulticastGroup",
    "MsgTimeout",
    "MaxFileSize",
    "MaxFrameSize",
    "SharedSchedulerClientPort",
    "client_port",
    "node_port",
    "scheduler_port",
    "parse_size",
    "format_size",
    "valid_timeout",
]

#: Base of the port family (client port; nodes listen on base + 1, dispyscheduler on base + 2).
DispyPort: int = 9700
#: Default port of dispy's web monitor (``dispy.httpd.DispyHTTPServer``, dispyscheduler
#: ``--httpd``) and of dispyadmin's pages (their ``--http_port``).
HTTPServerPort: int = 8181
#: IPv4 group that discovery requests go to with ``JobCluster(ipv4_udp_multicast=True)``
#: and that ``dispynode --ipv4_udp_multicast`` joins (otherwise IPv4 discovery broadcasts).
IPv4MulticastGroup: str = "239.255.61.59"
#: IPv6 group of discovery (IPv6 has no broadcast, so IPv6 discovery always multicasts);
#: every node serving an IPv6 address joins it. Read at the time a socket is opened.
IPv6MulticastGroup: str = "ff05::b409:3171:9705:5134:6159"
#: Seconds to wait for a peer to answer before a connection attempt or a request fails.
MsgTimeout: float = 10.0
#: Largest file a client accepts from its jobs (``dispy_send_file``), in bytes; 0 means no
#: limit. A cluster tells its nodes the value it had when it was created, and a job's
#: ``dispy_send_file`` of a larger file returns -1 without sending it (the node's own
#: ``--max_file_size`` applies too). Nodes and dispyscheduler take their limit from
#: ``--max_file_size``.
MaxFileSize: int = 0
#: Largest frame accepted after authentication (a job's arguments or result travel in one
#: frame). Frames before authentication are limited to a few kilobytes regardless.
MaxFrameSize: int = 1 << 30
#: The local port of a SharedJobCluster's connection to dispyscheduler when its
#: ``client_port`` (or ``port``) is not given; 0 picks a free port.
SharedSchedulerClientPort: int = 0

# ClientPort, NodePort, SharedSchedulerPort: derived from DispyPort when read (see
# __getattr__ below) unless a program assigned them, which puts them in this module's
# namespace, where Python finds them before it calls __getattr__.
_DERIVED = {"ClientPort": 0, "NodePort": 1, "SharedSchedulerPort": 2}


def __getattr__(name: str) -> int:
    offset = _DERIVED.get(name)
    if offset is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return DispyPort + offset


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DERIVED))


def _port(name: str, base: int | None) -> int:
    if base is not None:
        return base + _DERIVED[name]
    assigned = globals().get(name)  # dispy.config.<name> = n
    if assigned is None:
        return DispyPort + _DERIVED[name]
    try:  # (dispy kept these as text: "9801" is taken too)
        port = int(assigned)
    except (TypeError, ValueError):
        port = -1
    if isinstance(assigned, bool) or not 0 <= port < 65536:
        raise ConfigError(f"dispy.config.{name} must be a port number, not {assigned!r}")
    return port


def client_port(base: int | None = None) -> int:
    """The client's port: ``base`` if given, else :data:`ClientPort` (:data:`DispyPort`
    unless assigned)."""
    return _port("ClientPort", base)


def node_port(base: int | None = None) -> int:
    """The node's port: ``base + 1`` if given, else :data:`NodePort` (:data:`DispyPort` + 1
    unless assigned)."""
    return _port("NodePort", base)


def scheduler_port(base: int | None = None) -> int:
    """The shared scheduler's client-facing port: ``base + 2`` if given, else
    :data:`SharedSchedulerPort` (:data:`DispyPort` + 2 unless assigned)."""
    return _port("SharedSchedulerPort", base)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def valid_timeout(value: object) -> bool:
    """A job timeout (JobSpec.timeout, job_timeout): a positive number of seconds."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value < 1e9)  # (NaN fails too)


def parse_size(text: str | int) -> int:
    """Parse a size such as ``"10m"``, ``"512k"``, ``"1.5g"`` or ``4096`` into bytes.

    Raises ValueError, with the offending text, for anything else or a negative number.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must be >= 0, not {text}")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(
            f"invalid size {text!r}: expected a number >= 0 with an optional k, m, g or t suffix"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def format_size(n: float) -> str:
    """Render a byte count the way dispy's status table does (``1.5 MB``)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - loop always returns
