"""Answering discovery datagrams (UDP, on the node's port).

Clients broadcast, so the node listens on the wildcard address (only such a socket
receives broadcasts), with SO_REUSEADDR so that several nodes on one machine, each on
its own address, all hear them. A request there is answered only when it comes from a
network of one of the addresses the node serves (``-i``), and the reply names that
address: a node serving 127.0.0.1 ignores requests arriving from the LAN. One more case:
a request from a loopback address (a client on this host asking 127.0.0.1) is answered
with the node's first served address of that family.

A client also asks the node port at each of its own host's addresses, unicast (a
broadcast does not reach a node on the same host in every setup). For those the node
has one more socket per served address, bound to it: the kernel hands a datagram to the
socket bound to its destination address before the wildcard one, so each of several
nodes sharing the port on one host hears the requests sent to its own addresses, and
answers them naming that address (see :func:`address_socket`).

IPv4 requests come by broadcast, or to :data:`dispy_core.config.IPv4MulticastGroup` with
``--ipv4_udp_multicast`` (then the socket joins that group on the interface of each
served IPv4 address); IPv6 requests always come to
:data:`dispy_core.config.IPv6MulticastGroup`, which an IPv6 socket (bound to ``::``) joins
on the interface of each served IPv6 address. Groups are never joined on loopback
addresses: there is nothing to discover there that a unicast request can't reach, and
joining would make the kernel send membership reports.

A client looking for nodes sends a sealed DiscoverRequest (see
:func:`dispy_core.auth.seal_datagram`); the node answers the sender, and only the sender,
with a sealed DiscoverReply echoing the request's nonce and naming the served address
(or its ``--ext_ip_addr``). The node sends nothing else on its own here: no broadcast, no
multicast (``--scheduler_node`` announcements are unicast, see :mod:`.announce`).
dispyadmin (without named nodes) seals its requests with the admin secret instead: the
node answers those too, sealed with that secret, while it has an admin secret
(``--admin_secret``), and even when it takes no computations (outside its service
window), since dispyadmin manages such nodes as well.
Datagrams that are not dispy's, are sealed with another secret, or are older than
:data:`MAX_AGE` seconds (replays) are dropped with a debug log line; nothing in a
datagram is ever unpickled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import psutil

from dispy_core import auth, config, messages
from dispy_core.errors import AuthenticationError, DispyError
from dispy_core.messages import DiscoverReply, DiscoverRequest
from dispy_core.refusals import RefusalLog, once_key, reason_of

__all__ = ["DiscoveryProtocol", "MAX_AGE", "discovery_socket", "address_socket", "local_requester", "join_groups", "pick_address",
           "served_networks", "interface_index"]

log = logging.getLogger(__name__)

#: Requests whose timestamp is further than this from the node's clock are dropped.
MAX_AGE = 60.0


def discovery_socket(port: int, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A UDP socket on the wildcard address of ``family`` (IPv6: IPv6 only)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", port))
        else:
            sock.bind(("", port))
    except OSError:
        sock.close()
        raise
    return sock


def address_socket(ip: str, port: int) -> socket.socket | None:
    """A UDP socket bound to served address ``ip`` (the unicast requests sent to it
    arrive here, not on the wildcard socket); None where it can't be bound (an IPv6
    link-local address, which needs an interface scope: clients don't ask those)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # as the wildcard socket: both are this node's, and other nodes may share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
    except OSError as exc:
        sock.close()
        if ipaddress.ip_address(_bare(ip)).is_link_local:
            log.debug("no discovery socket on %s: %s", ip, exc.strerror or exc)
            return None
        raise
    return sock


def local_requester(source: str, served: list[str]) -> str | None:
    """For a request from a loopback address (a client on this host that asked the
    node port at 127.0.0.1 or ::1): the first served address of its family, else None."""
    try:
        if not ipaddress.ip_address(_bare(source)).is_loopback:
            return None
    except ValueError:
        return None
    return next((ip for ip in served if (":" in ip) == (":" in source)), None)


def _bare(ip: str) -> str:
    return ip.split("%", 1)[0]  # fe80::1%eth0 -> fe80::1


def interface_index(ip: str) -> int:
    """The index of the interface that has address ``ip``; 0 if none has it."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(_bare(a.address) == ip for a in addrs):
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return 0
    return 0


def join_groups(sock: socket.socket, ips: list[str]) -> list[str]:
    """Join the discovery multicast group of ``sock``'s family on the interface of each
    address in ``ips`` (loopback addresses are skipped); returns the addresses joined on."""
    joined = []
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        if addr.is_loopback:
            continue
        try:
            if addr.version == 4:
                mreq = socket.inet_aton(config.IPv4MulticastGroup) + socket.inet_aton(ip)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:
                mreq = socket.inet_pton(socket.AF_INET6, config.IPv6MulticastGroup) + \
                    struct.pack("@I", interface_index(ip))
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except OSError as exc:
            log.warning("can't join the discovery multicast group on %s: %s", ip, exc.strerror or exc)
            continue
        joined.append(ip)
    return joined


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = list[tuple[str, Network]]


def _prefix(netmask: str) -> int:
    """Prefix length of a netmask in either notation (psutil gives IPv6 ones as addresses)."""
    if netmask.isdigit():
        return int(netmask)
    return bin(int(ipaddress.ip_address(netmask))).count("1")


def served_networks(ips: list[str]) -> Networks:
    """Each served address (IPv4 or IPv6) with its interface's network (from psutil); an
    address no interface has gets a host-sized network."""
    masks = {_bare(a.address): a.netmask for addrs in psutil.net_if_addrs().values() for a in addrs
             if a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask}
    networks: Networks = []
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        mask = masks.get(ip)
        bits = _prefix(mask) if mask else addr.max_prefixlen
        networks.append((ip, ipaddress.ip_network(f"{ip}/{bits}", strict=False)))
    return networks


def pick_address(networks: Networks, source: str) -> str | None:
    """The served address on the requester's network, or None (then don't answer)."""
    try:
        src = ipaddress.ip_address(_bare(source))
    except ValueError:
        return None
    for ip, net in networks:
        if src.version == net.version and src in net:
            return ip
    return None


# Datagrams refused (another secret, not dispy, stale): at DEBUG level, as a node hears
# other clusters' broadcasts too; a flood of them is summarised (see dispy_core.refusals).
_refusals = RefusalLog(log, "datagrams", level=logging.DEBUG)


class DiscoveryProtocol(asyncio.DatagramProtocol):
    """Answers DiscoverRequests; ``make_reply(nonce, source_ip, admin)`` builds the reply,
    or returns None when the requester is not on a network this node serves.

    A request sealed with the node's admin secret (``admin_secret()``, when it returns
    one) comes from dispyadmin: it is answered (sealed with that secret) with ``admin``
    True, whether or not the node takes computations now."""

    def __init__(self, secret: str, make_reply: Callable[[str, str, bool], DiscoverReply | None],
                 admin_secret: Callable[[], str] | None = None) -> None:
        self.key = auth.derive_key(secret)
        self.make_reply = make_reply
        self.admin_secret = admin_secret
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        key, admin = self.key, False
        try:
            try:
                type_, body = auth.open_datagram(key, data)
            except AuthenticationError:
                other = self.admin_secret() if self.admin_secret is not None else ""
                if not other:
                    raise
                key, admin = auth.derive_key(other), True
                type_, body = auth.open_datagram(key, data)
            msg = messages.decode(type_, memoryview(body))
            if not isinstance(msg, DiscoverRequest):
                raise DispyError(f"unexpected {type(msg).__name__} datagram")
            if not isinstance(msg.time, (int, float)) or abs(time.time() - msg.time) > MAX_AGE:
                raise DispyError("stale discovery request (clock skew or a replay)")
            if not isinstance(msg.nonce, str):
                raise DispyError("malformed discovery request")
        except DispyError as exc:
            _refusals.refused(reason_of(exc), "dropped datagram from %s: %s", addr, exc,
                              once=once_key(exc, addr[0] if isinstance(addr, tuple) else addr))
            return
        reply = self.make_reply(msg.nonce, addr[0], admin)
        if reply is None:
            log.debug("ignored discovery request from %s: not on a network this node serves", addr)
            return
        parts, _ = messages.encode(reply)
        body = b"".join(bytes(p) for p in parts)
        if self.transport is not None:
            self.transport.sendto(auth.seal_datagram(key, DiscoverReply.TYPE, body), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)
