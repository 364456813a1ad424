"""The node's settings (:class:`NodeConfig`) and the rules that validate them.

Everything here is pure: the CLI turns its arguments into a :class:`NodeConfig` through
these functions, and the server only ever reads a finished, valid config. Validation
errors are :class:`~dispy_core.errors.ConfigError` with a message that names the allowed
range, so the CLI can show them to the user verbatim.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field

from dispy_core import config
from dispy_core.errors import ConfigError
from dispy_core.netif import announced_addr, check_ext_addrs, default_ip_addr

from .service import ServiceWindow

__all__ = ["NodeConfig", "NODE_PING_INTERVAL_MIN", "machine_cpus", "resolve_cpus", "default_dest_path_prefix", "default_ip_addr"]


#: Least --ping_interval (seconds), as in dispy.
NODE_PING_INTERVAL_MIN = 10.0


def machine_cpus() -> int:
    """The CPUs this machine has (what ``--cpus`` is checked against)."""
    return os.cpu_count() or 1


def resolve_cpus(requested: int | None, available: int) -> int:
    """The CPUs the node offers for ``-c/--cpus requested`` on a machine with ``available``.

    None means all of them; a positive number is used as is (1..available); a negative
    number leaves that many unused and must leave at least one.
    """
    if requested is None:
        return available
    low = -(available - 1)
    if requested == 0 or requested > available or requested < low:
        allowed = f"1..{available}" if low == 0 else f"1..{available} or {low}..-1"
        raise ConfigError(
            f"invalid CPU count {requested}: this machine has {available} CPUs, so "
            f"--cpus must be in {allowed} (a negative number leaves that many CPUs unused)"
        )
    return requested if requested > 0 else available + requested


def default_dest_path_prefix() -> str:
    return os.path.join(tempfile.gettempdir(), "dispy", "node")


@dataclass(frozen=True)
class NodeConfig:
    """A validated node configuration (see ``dispynode --help`` for each field)."""

    ip_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = field(default_factory=config.node_port)
    name: str = field(default_factory=socket.gethostname)
    cpus: int = field(default_factory=machine_cpus)
    secret: str = ""
    dest_path_prefix: str = field(default_factory=default_dest_path_prefix)
    clean: bool = False
    msg_timeout: float = config.MsgTimeout
    max_file_size: int = config.MaxFileSize
    debug: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    serve: int = -1  # clients to serve before quitting; -1: no limit
    client_shutdown: bool = False
    force_cleanup: bool = False  # remove computations' files at close even with cleanup=False
    zombie_interval: float = 60.0  # minutes
    # --service_start/--service_stop/--service_end as given (HH:MM); see service.py.
    service_start: str | None = None
    service_stop: str | None = None
    service_end: str | None = None
    # --ext_ip_addr: announced instead of ip_addrs[i] (NAT); at most one per -i address.
    ext_ip_addrs: list[str] = field(default_factory=list)
    ipv4_udp_multicast: bool = False  # join config.IPv4MulticastGroup for discovery
    scheduler_node: str | None = None  # announce this node there (NodeAnnounce datagrams)
    scheduler_port: int = field(default_factory=config.client_port)
    # --ping_interval: seconds between announcements to scheduler_node while idle (None:
    # announce.ANNOUNCE_INTERVAL).
    ping_interval: float | None = None
    # --admin_secret: dispyadmin connections authenticate with it (not with ``secret``);
    # "" (the default): the node refuses every admin request. Kept out of repr().
    admin_secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.ip_addrs:
            raise ConfigError("at least one address to serve on is needed")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port}: must be in 0..65535 (0 picks a free port)")
        if self.cpus < 1:
            raise ConfigError(f"invalid CPU count {self.cpus}: must be at least 1")
        if not self.msg_timeout > 0:
            raise ConfigError(f"invalid --msg_timeout {self.msg_timeout}: must be > 0 seconds")
        if self.max_file_size < 0:
            raise ConfigError(f"invalid --max_file_size {self.max_file_size}: must be >= 0")
        if not self.name:
            raise ConfigError("the node name must not be empty")
        if self.serve == 0 or self.serve < -1:
            raise ConfigError(f"invalid --serve {self.serve}: must be a positive number of clients, "
                              "or -1 for no limit")
        if not self.zombie_interval > 0:
            raise ConfigError(f"invalid --zombie_interval {self.zombie_interval}: must be > 0 minutes")
        # ConfigError naming the option if the window is not valid:
        ServiceWindow.from_options(self.service_start, self.service_stop, self.service_end)
        check_ext_addrs(self.ip_addrs, self.ext_ip_addrs)
        if not 0 < self.scheduler_port <= 65535:
            raise ConfigError(f"invalid --scheduler_port {self.scheduler_port}: must be in 1..65535")
        if self.keyfile is not None and self.certfile is None:
            raise ConfigError("--keyfile needs --certfile (the certificate that goes with the key)")
        if self.admin_secret and self.admin_secret == self.secret:
            raise ConfigError("--admin_secret must differ from --secret: every client of the node "
                              "knows the cluster secret, and only dispyadmin should manage the node")
        if self.ping_interval is not None and not NODE_PING_INTERVAL_MIN <= self.ping_interval <= 1e6:
            raise ConfigError(f"invalid --ping_interval {self.ping_interval:g}: must be at least "
                              f"{NODE_PING_INTERVAL_MIN:g} seconds")

    @property
    def service_window(self) -> ServiceWindow | None:
        """The daily service window, or None when the node always serves."""
        return ServiceWindow.from_options(self.service_start, self.service_stop, self.service_end)

    def announced_addr(self, ip: str) -> str:
        """The address peers are told for served address ``ip``: its ``--ext_ip_addr``
        (paired with the ``-i`` addresses in order) or ``ip`` itself."""
        return announced_addr(self.ip_addrs, self.ext_ip_addrs, ip)
