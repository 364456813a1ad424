"""``--scheduler_node``: announcing the node to a client that discovery can't reach.

A client on another network never hears this node answer its broadcasts. Given
``--scheduler_node ADDR``, the node sends a sealed :class:`~dispy_core.messages.NodeAnnounce`
datagram, by unicast only, to ``ADDR:--scheduler_port`` (the client port, 9700 by default):
at start (twice, a moment apart, as UDP may drop one) and then every
``--ping_interval`` (default :data:`ANNOUNCE_INTERVAL`) seconds, plus a little random jitter so that nodes started
together don't stay in step, for as long as no client has a computation set up here. A
JobCluster discovering nodes (wildcard ``nodes``) listens on its client port and connects
to the announced address as if the node had answered its request.

The datagram is sent from the served address on ADDR's network (else the first served
address of ADDR's family) and names that address, or its ``--ext_ip_addr``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable

from dispy_core import auth, messages
from dispy_core.messages import NodeAnnounce

from .discovery import pick_address, served_networks
from .options import NodeConfig

__all__ = ["Announcer", "ANNOUNCE_INTERVAL", "announce_datagram", "source_address"]

log = logging.getLogger(__name__)

#: Seconds between announcements while the node serves no computation.
ANNOUNCE_INTERVAL = 30.0
#: Largest random delay (seconds) added to each interval.
JITTER = 3.0
#: Seconds after the first announcement at which it is repeated once.
REPEAT_AFTER = 1.5


def announce_datagram(secret: str, ip_addr: str, port: int, name: str, cpus: int,
                      now: float | None = None) -> bytes:
    msg = NodeAnnounce(time=time.time() if now is None else now, ip_addr=ip_addr, port=port,
                       name=name, cpus=cpus)
    parts, _ = messages.encode(msg)
    return auth.seal_datagram(auth.derive_key(secret), NodeAnnounce.TYPE, b"".join(bytes(p) for p in parts))


def source_address(ip_addrs: list[str], target: str) -> str | None:
    """The served address to announce from: the one on ``target``'s network, else the
    first of ``target``'s address family; None if no served address has that family."""
    same_family = [ip for ip in ip_addrs if (":" in ip) == (":" in target)]
    if not same_family:
        return None
    return pick_address(served_networks(same_family), target) or same_family[0]


class Announcer:
    """Sends the announcements; ``idle()`` says whether the node serves no computation."""

    def __init__(self, cfg: NodeConfig, port: int, idle: Callable[[], bool]) -> None:
        assert cfg.scheduler_node is not None
        self.cfg = cfg
        self.port = port
        self.idle = idle
        self.target = (cfg.scheduler_node, cfg.scheduler_port)
        self.interval = cfg.ping_interval or ANNOUNCE_INTERVAL
        self.sent = 0

    async def run(self) -> None:
        cfg = self.cfg
        target = self.target[0]
        local = source_address(cfg.ip_addrs, target)
        if local is None:
            log.warning("--scheduler_node %s: this node serves no %s address to announce itself from",
                        target, "IPv6" if ":" in target else "IPv4")
            return
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((local, 0))
            announced = cfg.announced_addr(local)
            log.info("announcing %s:%s to %s:%s (--scheduler_node) every %g s while no client uses this node",
                     announced, self.port, *self.target, self.interval)
            delays = [REPEAT_AFTER]
            while True:
                if self.idle():
                    self._send(sock, announced)
                delay = delays.pop() if delays else self.interval + random.uniform(0, JITTER)
                await asyncio.sleep(delay)
        finally:
            sock.close()

    def _send(self, sock: socket.socket, announced: str) -> None:
        data = announce_datagram(self.cfg.secret, announced, self.port, self.cfg.name, self.cfg.cpus)
        try:
            sock.sendto(data, self.target)
            self.sent += 1
        except OSError as exc:  # e.g. no route: try again next time
            log.debug("announcement to %s:%s failed: %s", *self.target, exc)
