"""The scheduler's settings (:class:`SchedulerConfig`) and the rules that validate them.

Everything here is pure: the CLI turns its arguments into a :class:`SchedulerConfig`, and
the daemon only ever reads a finished, valid config. Validation errors are
:class:`~dispy_core.errors.ConfigError` whose message names the option and its allowed
range, so the CLI can show them to the user verbatim.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from dispy_core import config
from dispy_core.errors import ConfigError
from dispy_core.netif import PING_INTERVAL_RANGE, announced_addr, check_ext_addrs, default_ip_addr
from dispy_core.nodes import split_host_port

__all__ = ["SchedulerConfig", "POLICIES", "PULSE_INTERVAL_RANGE", "HTTP_HOST", "HTTP_PORT",
           "default_dest_path_prefix", "default_ip_addr", "parse_node"]

#: Job scheduling policies: ``default`` (earliest job of any cluster that may use the
#: node), ``fair`` (--fair_cluster_scheduler: clusters in turn) and ``early``
#: (--early_cluster_scheduler: the cluster created first).
POLICIES = ("default", "fair", "early")
#: Allowed range of --pulse_interval (seconds), as dispy documents it.
PULSE_INTERVAL_RANGE = (1.0, 600.0)
#: --http_host and --http_port defaults: the web monitor listens on loopback only unless
#: told otherwise (and then needs a token), on dispy's HTTPServerPort.
HTTP_HOST = "127.0.0.1"
HTTP_PORT = config.HTTPServerPort


def default_dest_path_prefix() -> str:
    return os.path.join(tempfile.gettempdir(), "dispy", "scheduler")


def parse_node(text: str, default_port: int) -> tuple[str, int]:
    """A ``-n/--nodes`` value (``host``, ``host:port``, ``[v6]:port`` or a bare IPv6
    address) as (host, port); ConfigError naming the option if it is not one."""
    try:
        host, port = split_host_port(text)
    except ConfigError as exc:
        raise ConfigError(f"invalid --nodes {text!r}: {exc}") from None
    if not host or "*" in host or any(c.isspace() for c in host):
        raise ConfigError(f"invalid --nodes {text!r}: expected a host name or IP address, "
                          "optionally with ':port' (wildcards are not allowed)")
    if port is None:
        port = default_port
    if not 1 <= port <= 65535:
        raise ConfigError(f"invalid --nodes {text!r}: the port must be in 1..65535")
    return host, port


def _check_port(option: str, port: int, low: int = 0) -> None:
    if not low <= port <= 65535:
        free = " (0 picks a free port)" if low == 0 else ""
        raise ConfigError(f"invalid {option} {port}: must be in {low}..65535{free}")


def _check_range(option: str, value: float | None, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:  # (NaN fails too)
        raise ConfigError(f"invalid {option} {value:g}: must be from {low:g} to {high:g} seconds")


@dataclass(frozen=True)
class SchedulerConfig:
    """A validated scheduler configuration (see ``dispyscheduler --help`` for each field)."""

    # -i: the addresses to serve on; the first is the one used toward nodes and clients.
    ip_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    # --ext_ip_addr: announced instead of ip_addrs[i] (NAT); at most one per -i address.
    ext_ip_addrs: list[str] = field(default_factory=list)
    port: int = field(default_factory=config.client_port)  # UDP: discovery replies, announcements
    scheduler_port: int = field(default_factory=config.scheduler_port)  # TCP: SharedJobCluster clients
    node_port: int = field(default_factory=config.node_port)  # where dispynodes listen
    # -n: contact exactly these nodes (host or host:port) and never broadcast.
    nodes: list[str] = field(default_factory=list)
    node_secret: str = ""
    cluster_secret: str = ""
    node_certfile: str | None = None
    node_keyfile: str | None = None
    cluster_certfile: str | None = None
    cluster_keyfile: str | None = None
    pulse_interval: float | None = None  # seconds; None: not set
    ping_interval: float | None = None  # seconds; None: discovery is not repeated
    zombie_interval: float = 60.0  # minutes
    max_file_size: int = config.MaxFileSize  # bytes; 0: no limit
    cooperative: bool = False
    cleanup_nodes: bool = False
    clean: bool = False
    msg_timeout: float = config.MsgTimeout
    # Where results that could not be delivered are kept; --clean empties it at start.
    dest_path_prefix: str = field(default_factory=default_dest_path_prefix)
    policy: str = "default"
    ipv4_udp_multicast: bool = False
    debug: bool = False
    # --httpd: the web monitor of the shared clusters (dispy_scheduler.web), and where it
    # listens; http_token: required of browsers (made up when http_host is not loopback
    # and none is given); the http_ pair: serve it over HTTPS.
    httpd: bool = False
    http_host: str = HTTP_HOST
    http_port: int = HTTP_PORT
    http_token: str | None = None
    http_certfile: str | None = None
    http_keyfile: str | None = None

    def __post_init__(self) -> None:
        if not self.ip_addrs:
            raise ConfigError("at least one address to serve on (-i/--ip_addr) is needed")
        check_ext_addrs(self.ip_addrs, self.ext_ip_addrs)
        _check_port("-p/--port", self.port)
        _check_port("--scheduler_port", self.scheduler_port)
        _check_port("--node_port", self.node_port, low=1)
        for node in self.nodes:
            parse_node(node, self.node_port)
        for kind in ("node", "cluster"):
            if getattr(self, f"{kind}_keyfile") is not None and getattr(self, f"{kind}_certfile") is None:
                raise ConfigError(f"--{kind}_keyfile needs --{kind}_certfile (the certificate that goes "
                                  "with the key)")
        _check_range("--pulse_interval", self.pulse_interval, PULSE_INTERVAL_RANGE)
        _check_range("--ping_interval", self.ping_interval, PING_INTERVAL_RANGE)
        if not self.zombie_interval > 0:
            raise ConfigError(f"invalid --zombie_interval {self.zombie_interval:g}: must be > 0 minutes")
        if self.max_file_size < 0:
            raise ConfigError(f"invalid --max_file_size {self.max_file_size}: must be >= 0 (0: no limit)")
        if not self.msg_timeout > 0:
            raise ConfigError(f"invalid --msg_timeout {self.msg_timeout:g}: must be > 0 seconds")
        if not self.dest_path_prefix:
            raise ConfigError("--dest_path_prefix must not be empty")
        _check_port("--http_port", self.http_port)
        if self.http_keyfile is not None and self.http_certfile is None:
            raise ConfigError("--http_keyfile needs --http_certfile (the certificate that goes with the key)")
        token = self.http_token
        if token is not None and (not token or len(token) > 256 or not token.isprintable() or " " in token):
            raise ConfigError("invalid --http_token: give 1 to 256 printable characters without spaces")
        if not self.httpd:
            given = [option for option, value, default in (
                ("--http_host", self.http_host, HTTP_HOST), ("--http_port", self.http_port, HTTP_PORT),
                ("--http_token", token, None), ("--http_certfile", self.http_certfile, None))
                if value != default]
            if given:
                raise ConfigError(f"{', '.join(given)}: options of the web monitor, which runs only with "
                                  "--httpd (give --httpd too, or leave them out)")
        if self.policy not in POLICIES:
            raise ConfigError(f"invalid scheduling policy {self.policy!r}: must be one of "
                              f"{', '.join(POLICIES)}")

    def announced_addr(self, ip: str) -> str:
        """The address peers are told for served address ``ip``: its ``--ext_ip_addr``
        (paired with the ``-i`` addresses in order) or ``ip`` itself."""
        return announced_addr(self.ip_addrs, self.ext_ip_addrs, ip)

    def node_addresses(self) -> list[tuple[str, int]]:
        """The ``-n`` nodes as (host, port); ``--node_port`` where no port was given."""
        return [parse_node(n, self.node_port) for n in self.nodes]
