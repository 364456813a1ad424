"""The relay itself: finding the nodes of its own network and telling clients where they are.

A client (``JobCluster``) or a dispyscheduler on another network never hears the nodes
here: UDP broadcasts stop at the router. The relay runs on this network and:

* finds the nodes: it asks with sealed discovery requests (:class:`dispy_core.discovery.Discovery`,
  from each served address that is not loopback, to its network's broadcast address, or
  the multicast group with ``--ipv4_udp_multicast``; again every ``--ping_interval``), and
  listens on ``--scheduler_port`` (UDP, the client port, 9700) of each served address for
  the :class:`~dispy_core.messages.NodeAnnounce` a node started with
  ``dispynode --scheduler_node RELAY`` sends at start and while it is idle;
* tells clients: it listens on ``--relay_port`` (TCP, the node port, 9701) of each served
  address with dispy's handshake under the cluster's secret, so that a client names the
  relay like a node. Its answer to ``InfoRequest`` is :class:`~dispy_core.messages.RelayNodes`
  (the nodes it knows) instead of a node's ``NodeInfo``; the connection stays open and
  every time the relay hears of a node (a late one, or one heard again) it sends that node
  in another ``RelayNodes``. The client connects to each node itself, over TCP;
* with ``--scheduler_node ADDR`` (repeatable), it also sends one ``NodeAnnounce`` per node
  it knows, unicast to ``ADDR:--scheduler_port``, at start, whenever it hears of a node and
  every ``--ping_interval``: a client or dispyscheduler discovering nodes (a wildcard
  ``nodes`` such as ``'10.2.0.*'``, or dispyscheduler without ``-n``) connects to them as
  if they had answered its broadcast.

It tells where nodes are and nothing more: it takes no computation, job or file, and
nothing it sends makes a node run code. Every exchange is authenticated with the secret:
a connection with another secret fails the handshake; a datagram sealed with another
secret, malformed, stale (older than :data:`dispy_core.discovery.REPLY_WINDOW`), seen
before (a replay), or naming another address than the one it came from is dropped. Each
refusal is logged with its reason at WARNING level through a
:class:`dispy_core.refusals.RefusalLog` (a flood is summarised).

Jobs never pass through the relay: one that stops harms no running job, and clients
connect to it again (as to a named node that went away) and use it once it is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import platform
import socket
import time
from collections.abc import Callable
from typing import Any

from dispy_core import auth, config, messages, tls
from dispy_core.aio import Channel
from dispy_core.connection import Connection
from dispy_core.discovery import REPLY_WINDOW, Discovery
from dispy_core.errors import DispyError
from dispy_core.listen import ChannelServer, peer_text
from dispy_core.messages import (
    DiscoverReply,
    ErrorReport,
    InfoRequest,
    Message,
    NodeAnnounce,
    Ping,
    Pong,
    RelayedNode,
    RelayNodes,
    Welcome,
)
from dispy_core.refusals import RefusalLog, once_key, reason_of

from .__about__ import __version__

__all__ = ["Relay", "RelayConfig", "KnownNode", "SOFTWARE", "DEFAULT_PING_INTERVAL"]

log = logging.getLogger(__name__)

SOFTWARE = f"dispynetrelay {__version__} / Python {platform.python_version()}"
#: Seconds between discovery requests and --scheduler_node announcements by default.
DEFAULT_PING_INTERVAL = 30.0


@dataclasses.dataclass
class RelayConfig:
    """The relay's settings (from the command line, see :mod:`dispy_relay.cli`)."""

    ip_addrs: list[str]
    relay_port: int  # TCP: clients and schedulers connect here (the node port by default)
    scheduler_port: int  # UDP: node announcements arrive here; --scheduler_node's port
    node_port: int  # where nodes listen: discovery requests go there
    scheduler_nodes: list[str] = dataclasses.field(default_factory=list)
    secret: str = ""
    certfile: str | None = None
    keyfile: str | None = None
    ipv4_udp_multicast: bool = False
    ping_interval: float = DEFAULT_PING_INTERVAL
    debug: bool = False


@dataclasses.dataclass
class KnownNode:
    ip_addr: str
    port: int
    name: str
    cpus: int
    heard: float  # time.time() of the last announcement or discovery reply
    how: str  # "announced" or "discovery"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("announcement socket error: %s", exc)


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class Relay:
    """A running dispynetrelay. Create it in a running loop; ``await run(started)``."""

    def __init__(self, cfg: RelayConfig) -> None:
        self.cfg = cfg
        self.ssl = tls.server_context(cfg.certfile, cfg.keyfile) if cfg.certfile else None
        self.nodes: dict[tuple[str, int], KnownNode] = {}
        self.clients: set[Channel] = set()  # connections that asked which nodes there are
        self.listening: list[tuple[str, int]] = []  # (address, TCP port) clients connect to
        self.announce_ports: list[tuple[str, int]] = []  # (address, UDP port) nodes announce to
        self.closing = False
        self.told = 0  # RelayNodes messages sent
        self.announced = 0  # NodeAnnounce datagrams sent to --scheduler_node
        # Refused connections (another secret, garbage, no handshake) and datagrams:
        # each reason logged, floods summarised.
        self.refusals = RefusalLog(log, "connections")
        self.datagram_refusals = RefusalLog(log, "datagrams")
        self._seen: dict[bytes, float] = {}  # digest of each accepted announcement -> its time
        self._stop: asyncio.Event | None = None
        self._server: ChannelServer | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._discovery: Discovery | None = None
        self._targets: list[tuple[str, int]] = []  # resolved --scheduler_node addresses
        self._announce_sockets: dict[int, socket.socket] = {}  # family -> socket to send from

    # == life ==============================================================================
    async def run(self, started: Callable[[Relay], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._server = ChannelServer(self._new_channel, ssl=self.ssl, timeout=config.MsgTimeout, log=log,
                                         refusals=self.refusals,
                                         tls_hint="a client needs dispynetrelay's --certfile as its certfile")
            port = self.cfg.relay_port
            for ip in self.cfg.ip_addrs:
                port = await self._server.listen(ip, port)
                self.listening.append((ip, port))
            for ip in self.cfg.ip_addrs:
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self._datagram), local_addr=(ip, self.cfg.scheduler_port), family=family)
                self._transports.append(transport)
                self.announce_ports.append((ip, int(transport.get_extra_info("sockname")[1])))
            self._resolve_targets()
            asking = [ip for ip in self.cfg.ip_addrs if not _is_loopback(ip)]
            if asking:
                # match: only this relay's own addresses are asked directly (a node on
                # this host serving one of them); the networks of the -i addresses get
                # the broadcast (or multicast).
                self._discovery = Discovery(self.cfg.secret, self.cfg.node_port, self._replied, asking, 0,
                                            ipv4_multicast=self.cfg.ipv4_udp_multicast,
                                            ipv6=any(":" in ip for ip in asking),
                                            ping_interval=self.cfg.ping_interval,
                                            match=lambda ip: ip in asking, refusals=self.datagram_refusals)
                self._spawn(self._discovery.run())
            else:
                log.info("serving loopback addresses only: no discovery requests; nodes are known from "
                         "their announcements (dispynode --scheduler_node %s)", self.cfg.ip_addrs[0])
            if self._targets:
                self._spawn(self._announce_loop())
            log.info("dispynetrelay %s serving clients at %s; node announcements at %s (UDP)", __version__,
                     ", ".join(f"{ip}:{p}" for ip, p in self.listening),
                     ", ".join(f"{ip}:{p}" for ip, p in self.announce_ports))
            if started is not None:
                started(self)
            await self._stop.wait()
        finally:
            await self._shutdown()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dispynetrelay: %s failed: %s", task.get_coro(), task.exception())

    def stop(self) -> None:
        """Stop now (SIGTERM, ``quit``): nothing runs through the relay, so nothing is lost."""
        self.closing = True
        if self._stop is not None:
            self._stop.set()

    def drain(self) -> None:
        """Stop (SIGINT, ``exit``): the same as :meth:`stop`; a relay has nothing to finish."""
        self.stop()

    async def _shutdown(self) -> None:
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for ch in list(self.clients):
            ch.close()
        for transport in self._transports:
            transport.close()
        for sock in self._announce_sockets.values():
            sock.close()
        self.refusals.close()
        self.datagram_refusals.close()
        log.info("dispynetrelay stopped")

    def status(self) -> dict[str, Any]:
        now = time.time()
        return {
            "listening": list(self.listening),
            "announce_ports": list(self.announce_ports),
            "nodes": [{"ip_addr": n.ip_addr, "port": n.port, "name": n.name, "cpus": n.cpus,
                       "heard": now - n.heard, "how": n.how} for n in self.nodes.values()],
            "clients": sorted(peer_text(ch.peer) for ch in self.clients),
            "scheduler_nodes": [f"{ip}:{port}" for ip, port in self._targets],
        }

    # == nodes =============================================================================
    def _replied(self, reply: DiscoverReply) -> None:
        """A node answered a discovery request (sealed, fresh, with our nonce)."""
        self._heard(reply.ip_addr, reply.port, reply.name, reply.cpus, "discovery")

    def _datagram(self, data: bytes, addr: Any) -> None:
        """A datagram on the announcement port: a node's NodeAnnounce, or refused."""
        sender = str(addr[0])
        try:
            type_, body = auth.open_datagram(auth.derive_key(self.cfg.secret), data)
            msg = messages.decode(type_, memoryview(body))
        except DispyError as exc:
            self.datagram_refusals.refused(reason_of(exc), "ignoring datagram from %s: %s", sender, exc,
                                           once=once_key(exc, sender[0] if isinstance(sender, tuple) else sender))
            return
        if not isinstance(msg, NodeAnnounce):
            self.datagram_refusals.refused("not an announcement", "ignoring %s datagram from %s: only node "
                                           "announcements come to this port", type(msg).__name__, sender)
            return
        now = time.time()
        if abs(now - msg.time) > REPLY_WINDOW:
            self.datagram_refusals.refused("stale datagram", "ignoring announcement from %s: its time is %.0f s "
                                           "from ours (a replay, or a clock that is off)", sender, now - msg.time)
            return
        digest = hashlib.sha256(data).digest()
        for old in [d for d, t in self._seen.items() if abs(now - t) > REPLY_WINDOW]:
            del self._seen[old]
        if digest in self._seen:
            self.datagram_refusals.refused("replayed datagram", "ignoring announcement from %s: the same "
                                           "datagram came before (a replay)", sender)
            return
        self._seen[digest] = msg.time
        if msg.ip_addr and msg.ip_addr != sender:
            self.datagram_refusals.refused("another address", "ignoring announcement from %s: it names node "
                                           "address %s, not its own", sender, msg.ip_addr)
            return
        self._heard(sender, msg.port, msg.name, msg.cpus, "announced")

    def _heard(self, ip: str, port: int, name: str, cpus: int, how: str) -> None:
        key = (ip, port)
        node = self.nodes.get(key)
        if node is None:
            log.info("node %s:%s (%s, %d CPUs) found (%s)", ip, port, name, cpus, how)
            node = self.nodes[key] = KnownNode(ip, port, name, cpus, time.time(), how)
            self._announce([node])  # --scheduler_node hosts: at once (all again every ping_interval)
        else:
            node.name, node.cpus, node.heard, node.how = name, cpus, time.time(), how
        # Clients are told every time it is heard: one that lost the node, or could not
        # use it before, tries it again (one serving it already ignores this).
        self._tell(RelayNodes([RelayedNode(ip, port, name, cpus)], SOFTWARE))

    def _listed(self) -> list[RelayedNode]:
        return [RelayedNode(n.ip_addr, n.port, n.name, n.cpus) for n in self.nodes.values()]

    # == clients (TCP) =====================================================================
    def _new_channel(self) -> Channel:
        return Channel(Connection(initiator=False, secret=self.cfg.secret, software=SOFTWARE),
                       self._on_message, self._on_close)

    def _on_message(self, ch: Channel, msg: Message) -> None:
        if isinstance(msg, Welcome):
            return
        if isinstance(msg, InfoRequest):
            self.clients.add(ch)
            nodes = self._listed()
            log.info("client %s asked: told of %d nodes", peer_text(ch.peer), len(nodes))
            ch.send(RelayNodes(nodes, SOFTWARE))
            self.told += 1
        elif isinstance(msg, Ping):
            ch.send(Pong(msg.nonce))
        elif isinstance(msg, Pong):
            pass
        else:  # nothing else goes through a relay: never a computation, job or file
            log.warning("client %s sent %s: a relay only tells where nodes are", peer_text(ch.peer),
                        type(msg).__name__)
            ch.send(ErrorReport(f"dispynetrelay does not take {type(msg).__name__} messages: "
                                "it only tells where nodes are"))

    def _on_close(self, ch: Channel, exc: BaseException | None) -> None:
        self.clients.discard(ch)
        if exc is not None and ch.established.exception() is not None:  # refused at the handshake
            self.refusals.refused(reason_of(exc), "closed connection from %s: %s", peer_text(ch.peer), exc, once=once_key(exc))

    def _tell(self, msg: RelayNodes) -> None:
        for ch in list(self.clients):
            if ch.closed:
                self.clients.discard(ch)
                continue
            ch.send(msg)
            self.told += 1

    # == --scheduler_node (UDP announcements) ===============================================
    def _resolve_targets(self) -> None:
        for text in self.cfg.scheduler_nodes:
            try:
                info = socket.getaddrinfo(text, self.cfg.scheduler_port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("--scheduler_node %s: can't resolve: %s", text, exc)
                continue
            ip = str(info[0][4][0])
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            if family not in self._announce_sockets:
                source = next((a for a in self.cfg.ip_addrs if (":" in a) == (":" in ip)), None)
                if source is None:
                    log.warning("--scheduler_node %s: this relay serves no %s address to send from", text,
                                "IPv6" if family == socket.AF_INET6 else "IPv4")
                    continue
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.bind((source, 0))
                self._announce_sockets[family] = sock
            self._targets.append((ip, self.cfg.scheduler_port))
        if self._targets:
            log.info("telling %s of the nodes (--scheduler_node), every %g s and whenever a node is found",
                     ", ".join(f"{ip}:{port}" for ip, port in self._targets), self.cfg.ping_interval)

    async def _announce_loop(self) -> None:
        while True:
            self._announce(list(self.nodes.values()))
            await asyncio.sleep(self.cfg.ping_interval)

    def _announce(self, nodes: list[KnownNode]) -> None:
        if not self._targets or not nodes:
            return
        key = auth.derive_key(self.cfg.secret)
        for ip, port in self._targets:
            sock = self._announce_sockets.get(socket.AF_INET6 if ":" in ip else socket.AF_INET)
            if sock is None:
                continue
            for node in nodes:
                msg = NodeAnnounce(time.time(), node.ip_addr, node.port, node.name, node.cpus)
                parts, _ = messages.encode(msg)
                data = auth.seal_datagram(key, NodeAnnounce.TYPE, b"".join(bytes(p) for p in parts))
                try:
                    sock.sendto(data, (ip, port))
                    self.announced += 1
                except OSError as exc:  # no route now: next time
                    log.debug("announcement to %s:%s failed: %s", ip, port, exc)
