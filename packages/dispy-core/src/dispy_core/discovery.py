"""Finding nodes by UDP broadcast or multicast, for ``nodes=None`` and wildcard specs only.

Nodes named explicitly are contacted directly over TCP and never cause a datagram to be
sent: :func:`needs_discovery` is the single place that decides, and the cluster asks it
before it creates a UDP socket at all.

A discovery round: the client broadcasts a sealed :class:`DiscoverRequest` (a fresh
nonce and the time) to the node port; each node that shares the secret answers with a
sealed :class:`DiscoverReply` echoing the nonce and naming its TCP port, and the cluster
then connects to it over TCP like to an explicit node. Datagrams are sealed with
:func:`dispy_core.auth.seal_datagram` under the cluster's secret, nothing in them is ever
unpickled, and replies with another nonce, a bad seal or a stale time are dropped.

Where requests go: one UDP socket per local address (``JobCluster(host=...)``, else the
IPv4 wildcard address, plus the IPv6 one when a wildcard spec is an IPv6 pattern), bound
to the client port when it is free. IPv4 sockets broadcast to 255.255.255.255, or send to
:data:`dispy_core.config.IPv4MulticastGroup` with ``ipv4_udp_multicast=True``; IPv6
sockets always send to :data:`dispy_core.config.IPv6MulticastGroup`. Multicasts leave
through the interface of the socket's address, with a hop limit of 1. With a
``ping_interval`` the request is repeated every that many seconds, for nodes started
later or that missed it.

255.255.255.255 (and a multicast from the wildcard address) follows the default route:
on a LAN without one (an isolated cluster network) it can't be sent at all, and with
one it reaches the default route's network only. So the request also goes to each local
IPv4 network whose interface address a wildcard spec matches
(:func:`interface_targets`, from :func:`dispy_core.netif.ipv4_networks`): to the
network's directed broadcast address, or to the multicast group through that interface
(``IP_MULTICAST_IF``), from a socket bound to the interface's address so the request
leaves through it and the node's reply comes back to it. With ``host=`` only the given
addresses' networks are used, from their own sockets. A send that fails (no route to
one target) is logged at DEBUG level and the others go on; when no request could leave
this host at all, an INFO line says so once, and :attr:`Discovery.stranded` tells why
(the cluster's warning that no node serves it repeats that).

Each request also goes, unicast, to the node port at each of this host's own addresses
(:func:`dispy_core.netif.local_addresses`: loopback and every interface's) that some
wildcard spec matches: a broadcast does not reach a node on the same host when there is
no route for 255.255.255.255 (a laptop offline, a LAN without a default route) or when
the node serves loopback. These datagrams never leave the host. A node hears the one
sent to an address it serves on a socket bound to that address, and names it in its
reply (see :mod:`dispy_node.discovery`), so several nodes on one host sharing the port
are each found.

The same sockets receive :class:`NodeAnnounce` datagrams, sent unicast by nodes started
with ``--scheduler_node`` to the client port; a fresh one sealed with the cluster's secret
counts as a reply (no nonce: the node speaks first).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from dispy_core import auth, config, messages
from dispy_core.errors import DispyError
from dispy_core.messages import DiscoverReply, DiscoverRequest, NodeAnnounce

from .refusals import RefusalLog, reason_of
from .netif import Network, interface_index, ipv4_networks, is_ipv6, local_addresses
from .nodes import NodeAllocate

__all__ = ["needs_discovery", "build_request", "parse_reply", "parse_announce", "Discovery",
           "BROADCAST_ADDR", "bind_addresses", "destination", "host_targets", "interface_targets"]

# Under "dispy": what a cluster does with nodes is the cluster's to log (its loglevel).
log = logging.getLogger("dispy.discovery")
# Datagrams refused (another cluster's secret, not dispy): DEBUG, a flood summarised.
_refusals = RefusalLog(log, "datagrams", level=logging.DEBUG)

BROADCAST_ADDR = "255.255.255.255"
#: Replies whose time differs from ours by more than this (seconds) are dropped.
REPLY_WINDOW = 120.0
#: Seconds after the first request at which it is sent again (UDP may drop it).
RESEND_AFTER = (1.0, 3.0)


def needs_discovery(specs: Iterable[NodeAllocate]) -> bool:
    """Whether the cluster must broadcast: only if some spec is a wildcard."""
    return any(spec.wildcard for spec in specs)


def _encode(msg: messages.Message) -> bytes:
    buffers, _ = messages.encode(msg)
    return b"".join(bytes(memoryview(b).cast("B")) for b in buffers)


def build_request(secret: str | bytes, nonce: str | None = None, now: float | None = None) -> tuple[str, bytes]:
    """A sealed discovery request; returns (nonce, datagram)."""
    nonce = nonce or auth.new_nonce()
    msg = DiscoverRequest(nonce=nonce, time=time.time() if now is None else now)
    return nonce, auth.seal_datagram(auth.derive_key(secret), DiscoverRequest.TYPE, _encode(msg))


def _open(secret: str | bytes, data: bytes, refusals: RefusalLog | None = None) -> messages.Message | None:
    try:
        type_, body = auth.open_datagram(auth.derive_key(secret), data)
        return messages.decode(type_, memoryview(body))
    except DispyError as exc:
        (refusals or _refusals).refused(reason_of(exc), "ignoring datagram: %s", exc)
        return None


def parse_announce(secret: str | bytes, data: bytes, now: float | None = None) -> NodeAnnounce | None:
    """The node announcement in ``data`` if it is sealed with ``secret`` and recent."""
    msg = _open(secret, data)
    if not isinstance(msg, NodeAnnounce) or not _fresh(msg, now, "announcement"):
        return None
    return msg


def _fresh(msg: NodeAnnounce | DiscoverReply, now: float | None, what: str) -> bool:
    """Whether a datagram's time is within REPLY_WINDOW of ours (else logged, dropped)."""
    now = time.time() if now is None else now
    if not isinstance(msg.time, (int, float)) or abs(now - msg.time) > REPLY_WINDOW:
        log.debug("ignoring stale %s from %s", what, msg.ip_addr)
        return False
    return True


def parse_reply(secret: str | bytes, data: bytes, nonce: str, now: float | None = None) -> DiscoverReply | None:
    """The reply in ``data`` if it is sealed with ``secret``, answers ``nonce`` and is
    recent; None otherwise (the reason is logged at DEBUG level)."""
    msg = _open(secret, data)
    if msg is None:
        return None
    if not isinstance(msg, DiscoverReply):
        log.debug("ignoring %s datagram", type(msg).__name__)
        return None
    if msg.nonce != nonce:
        log.debug("ignoring discovery reply from %s: not an answer to our request", msg.ip_addr)
        return None
    return msg if _fresh(msg, now, "discovery reply") else None


def bind_addresses(hosts: list[str], ipv6: bool) -> list[str]:
    """The local addresses discovery sends from: the given hosts, else the IPv4 wildcard
    address (and the IPv6 one if ``ipv6``, i.e. some wildcard spec is an IPv6 pattern)."""
    if hosts:
        return list(dict.fromkeys(hosts))
    return ["0.0.0.0", "::"] if ipv6 else ["0.0.0.0"]


def destination(bind: str, node_port: int, ipv4_multicast: bool) -> tuple[str, int]:
    """Where a socket bound to ``bind`` sends requests."""
    if is_ipv6(bind):
        return (config.IPv6MulticastGroup, node_port)
    return (config.IPv4MulticastGroup if ipv4_multicast else BROADCAST_ADDR, node_port)


def host_targets(bind: str, addresses: Iterable[str], match: Callable[[str], bool] | None) -> list[str]:
    """The addresses of this host (``addresses``) a socket bound to ``bind`` asks
    directly: those of its family that ``match`` (a wildcard spec's pattern) accepts."""
    return [ip for ip in addresses if is_ipv6(ip) == is_ipv6(bind) and (match is None or match(ip))]


def interface_targets(networks: Iterable[Network], hosts: list[str], match: Callable[[str], bool] | None,
                      ipv4_multicast: bool) -> list[tuple[str, str]]:
    """Where requests go besides 255.255.255.255 (or the multicast group from the
    wildcard address), as (source address, destination address) pairs: for each local
    IPv4 network (``networks``) whose interface address ``match`` (a wildcard spec's
    pattern; None: any) accepts and, if ``hosts`` are given, is one of them: its
    directed broadcast address, or the IPv4 multicast group with ``ipv4_multicast``.
    Networks without a broadcast address (point-to-point links) get only the multicast.
    Each broadcast address, and the group on each interface, is sent to once (from the
    first address that has it): a node there would answer each copy."""
    targets = []
    seen: set[str] = set()
    for net in networks:
        if (hosts and net.address not in hosts) or (match is not None and not match(net.address)):
            continue
        if ipv4_multicast:
            dest, key = config.IPv4MulticastGroup, f"interface {net.interface}"
        elif net.broadcast is not None:
            dest, key = net.broadcast, net.broadcast
        else:
            continue
        if key not in seen:
            seen.add(key)
            targets.append((net.address, dest))
    return targets


def _socket(bind: str, port: int, ipv4_multicast: bool) -> socket.socket:
    """A UDP socket bound to ``bind:port`` and set up to send discovery requests."""
    v6 = is_ipv6(bind)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            if bind != "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_index(bind))
        elif ipv4_multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            if bind != "0.0.0.0":
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(bind))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _describe(dest: tuple[str, int]) -> str:
    if dest[0] == BROADCAST_ADDR:
        return "broadcast"
    if dest[0] in (config.IPv4MulticastGroup, config.IPv6MulticastGroup):
        return f"multicast {dest[0]}"
    return f"broadcast {dest[0]}"


def _sendto(sock: socket.socket, datagram: bytes, dest: tuple[str, int]) -> str | None:
    """Send one datagram (the socket is non-blocking); None, or why it could not be
    sent (logged at DEBUG level: no route to one target does not stop the others)."""
    try:
        sock.sendto(datagram, dest)
    except OSError as exc:  # ENETUNREACH: no route there; EAGAIN: a full buffer, sent again later
        reason = exc.strerror or str(exc)
        log.debug("discovery request to %s:%s from %s not sent: %s", *dest, sock.getsockname()[0], reason)
        return reason
    return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)


@dataclasses.dataclass
class _Sender:
    """One discovery socket and where its requests go off this host (broadcast,
    multicast); ``asks_host``: it also asks this host's own addresses."""
    sock: socket.socket
    transport: asyncio.DatagramTransport
    dests: list[tuple[str, int]]
    asks_host: bool


class Discovery:
    """One cluster's discovery: send requests (again every ``ping_interval`` seconds if
    given), hand valid replies and node announcements to ``on_reply``. ``match`` picks
    which of this host's addresses are asked directly, and which local networks get a
    directed broadcast (None: all of them)."""

    def __init__(self, secret: str | bytes, node_port: int, on_reply: Callable[[DiscoverReply], None],
                 hosts: list[str] | None = None, client_port: int = 0, *,
                 ipv4_multicast: bool = False, ipv6: bool = False,
                 ping_interval: float | None = None, match: Callable[[str], bool] | None = None,
                 refusals: RefusalLog | None = None) -> None:
        self.secret = secret
        # Where refused datagrams are logged (another secret, malformed): the module's
        # (DEBUG) unless the owner has its own (dispynetrelay logs them as warnings).
        self.refusals = refusals
        self.node_port = node_port
        self.on_reply = on_reply
        self.hosts = list(dict.fromkeys(hosts or ()))
        self.binds = bind_addresses(self.hosts, ipv6)
        self.client_port = client_port
        self.ipv4_multicast = ipv4_multicast
        self.ping_interval = ping_interval
        self.match = match
        self.nonce = ""
        self.replies = 0
        self.rounds = 0  # requests sent (per socket)
        self._senders: list[_Sender] = []
        # (source, destination) -> the socket bound to source sending there (no host=)
        self._interfaces: dict[tuple[str, str], _Sender] = {}
        self._wake = asyncio.Event()  # refresh(): send again now
        #: Why the last round's request could go nowhere off this host ("": it could).
        self.stranded = ""
        self._told = False

    async def _open(self, bind: str, port: int, ipv4_multicast: bool) -> _Sender | None:
        loop = asyncio.get_running_loop()
        try:
            try:
                sock = _socket(bind, port, ipv4_multicast)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not port:
                    raise
                # The client port is taken (another client here): replies still come back,
                # announcements (--scheduler_node) to that port go to the other client.
                log.debug("client port %s on %s is in use; discovering from another port", port, bind)
                sock = _socket(bind, 0, ipv4_multicast)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self._datagram), sock=sock)
        except OSError as exc:
            log.warning("can't discover nodes from %s: no UDP socket on port %s: %s",
                        bind, port, exc.strerror or exc)
            return None
        return _Sender(sock, transport, [], asks_host=False)

    async def run(self) -> None:
        """Send requests (and resend a couple of times, then every ping_interval or when
        refreshed), and listen for replies and announcements until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            targets = self._targets()
            for bind in self.binds:
                sender = await self._open(bind, self.client_port, self.ipv4_multicast)
                if sender is None:
                    continue
                sender.dests.append(destination(bind, self.node_port, self.ipv4_multicast))
                if bind != "0.0.0.0" and not self.ipv4_multicast:  # host=: its own network too
                    sender.dests += [(dest, self.node_port) for src, dest in targets if src == bind]
                sender.asks_host = True
                self._senders.append(sender)
            if not self._senders:
                return
            await self._update_interfaces(targets)
            self.nonce, _ = build_request(self.secret)
            how = ", ".join(dict.fromkeys(_describe(dest) for sender in self._senders for dest in sender.dests))
            via = ", ".join(f"{_describe((dest, 0))} from {src}" for src, dest in self._interfaces)
            here = ", ".join(dict.fromkeys(ip for bind in self.binds
                                           for ip in host_targets(bind, local_addresses(), self.match)))
            log.info("looking for nodes on UDP port %s (%s%s; on this host at %s)", self.node_port, how,
                     f"; {via}" if via else "", here or "no address that a node spec matches")
            started = loop.time()
            for delay in (0.0, *RESEND_AFTER):
                await asyncio.sleep(max(0.0, started + delay - loop.time()))
                self._send()
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.ping_interval)
                    log.info("looking for nodes again on UDP port %s", self.node_port)
                except TimeoutError:
                    log.debug("looking for nodes again (ping_interval %g s)", self.ping_interval)
                self._wake.clear()
                # an interface may have come up (or gone) since, a spec been added
                await self._update_interfaces(self._targets())
                self._send()
        finally:
            for sender in self._senders:
                sender.transport.close()
            self._senders = []
            self._interfaces = {}

    def _targets(self) -> list[tuple[str, str]]:
        if not any(not is_ipv6(bind) for bind in self.binds):
            return []
        return interface_targets(ipv4_networks(), self.hosts, self.match, self.ipv4_multicast)

    async def _update_interfaces(self, targets: list[tuple[str, str]]) -> None:
        """Without host=: one socket per (interface address, destination) of ``targets``,
        bound to that address (the request leaves through its interface, the reply comes
        back to it); sockets of targets gone are closed."""
        if "0.0.0.0" not in self.binds:
            return  # host=: its sockets send to their networks' broadcast addresses
        for key in [key for key in self._interfaces if key not in targets]:
            gone = self._interfaces.pop(key)
            self._senders.remove(gone)
            gone.transport.close()
        for src, dest in targets:
            if (src, dest) in self._interfaces:
                continue
            sender = await self._open(src, 0, self.ipv4_multicast)
            if sender is None:
                continue
            sender.dests.append((dest, self.node_port))
            self._interfaces[(src, dest)] = sender
            self._senders.append(sender)

    def _send(self) -> None:
        _, datagram = build_request(self.secret, self.nonce)  # same nonce, current time
        # looked up each round: an interface may have come up (or gone) since
        addresses = local_addresses()
        left, failed = 0, []
        for sender in self._senders:
            bind = sender.sock.getsockname()[0]
            for dest in sender.dests:
                error = _sendto(sender.sock, datagram, dest)
                if error is None:
                    left += 1
                else:
                    failed.append(f"{_describe(dest)} from {bind}: {error}")
            if sender.asks_host:
                for ip in host_targets(bind, addresses, self.match):
                    _sendto(sender.sock, datagram, (ip, self.node_port))
        self.stranded = "; ".join(failed) if failed and not left else ""
        if self.stranded and not self._told:
            # INFO, once: on a machine offline the node found on this host is all there is;
            # when no node answers, the cluster's stall warning says it (why_no_node)
            self._told = True
            log.info("no discovery request could leave this host (%s): only nodes on this host can answer",
                     self.stranded)
        self.rounds += 1

    def refresh(self) -> None:
        """Send the request once more (nodes started since answer it)."""
        if self._senders and self.nonce:
            self._wake.set()

    def _datagram(self, data: bytes, addr: Any) -> None:
        msg = _open(self.secret, data, self.refusals)
        if isinstance(msg, NodeAnnounce):
            announce = parse_announce(self.secret, data)
            if announce is None:
                return
            log.debug("node %s:%s announced itself", announce.ip_addr or addr[0], announce.port)
            self.replies += 1
            self.on_reply(DiscoverReply("", announce.time, announce.ip_addr or addr[0], announce.port,
                                        announce.name, announce.cpus))
            return
        if msg is None:  # refused above
            return
        reply = parse_reply(self.secret, data, self.nonce)
        if reply is None:
            return
        self.replies += 1
        if not reply.ip_addr:
            reply = dataclasses.replace(reply, ip_addr=addr[0])
        self.on_reply(reply)
