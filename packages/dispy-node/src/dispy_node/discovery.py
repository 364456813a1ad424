"""Answering discovery datagrams (UDP, on the node's port).

Clients broadcast, so the node listens on the wildcard address (only such a socket
receives broadcasts), with SO_REUSEADDR so that several nodes on one machine, each on
its own address, all hear them. A request is answered only when it comes from a network
of one of the addresses the node serves (``-i``), and the reply names that address: a
node serving 127.0.0.1 ignores requests arriving from the LAN.

A client looking for nodes sends a sealed DiscoverRequest (see
:func:`dispy_core.auth.seal_datagram`); the node answers the sender, and only the sender,
with a sealed DiscoverReply echoing the request's nonce. The node never sends a datagram
on its own: no broadcast, no multicast, no announcement at start. Datagrams that are not
dispy's, are sealed with another secret, or are older than :data:`MAX_AGE` seconds
(replays) are dropped with a debug log line; nothing in a datagram is ever unpickled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil

from dispy_core import auth, messages
from dispy_core.errors import DispyError
from dispy_core.messages import DiscoverReply, DiscoverRequest

__all__ = ["DiscoveryProtocol", "MAX_AGE", "discovery_socket", "pick_address", "served_networks"]

log = logging.getLogger(__name__)

#: Requests whose timestamp is further than this from the node's clock are dropped.
MAX_AGE = 60.0


def discovery_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    return sock


Networks = list[tuple[str, ipaddress.IPv4Network]]


def served_networks(ips: list[str]) -> Networks:
    """Each served IPv4 address with its interface's network (from psutil)."""
    masks = {a.address: a.netmask for addrs in psutil.net_if_addrs().values() for a in addrs
             if a.family == socket.AF_INET and a.netmask}
    return [(ip, ipaddress.IPv4Network(f"{ip}/{masks.get(ip, '255.255.255.255')}", strict=False))
            for ip in ips]


def pick_address(networks: Networks, source: str) -> str | None:
    """The served address on the requester's network, or None (then don't answer)."""
    try:
        src = ipaddress.IPv4Address(source)
    except ValueError:
        return None
    for ip, net in networks:
        if src in net:
            return ip
    return None


class DiscoveryProtocol(asyncio.DatagramProtocol):
    """Answers DiscoverRequests; ``make_reply(nonce, source_ip)`` builds the reply, or
    returns None when the requester is not on a network this node serves."""

    def __init__(self, secret: str, make_reply: Callable[[str, str], DiscoverReply | None]) -> None:
        self.key = auth.derive_key(secret)
        self.make_reply = make_reply
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            type_, body = auth.open_datagram(self.key, data)
            msg = messages.decode(type_, memoryview(body))
            if not isinstance(msg, DiscoverRequest):
                raise DispyError(f"unexpected {type(msg).__name__} datagram")
            if not isinstance(msg.time, (int, float)) or abs(time.time() - msg.time) > MAX_AGE:
                raise DispyError("stale discovery request (clock skew or a replay)")
            if not isinstance(msg.nonce, str):
                raise DispyError("malformed discovery request")
        except DispyError as exc:
            log.debug("dropped datagram from %s: %s", addr, exc)
            return
        reply = self.make_reply(msg.nonce, addr[0])
        if reply is None:
            log.debug("ignored discovery request from %s: not on a network this node serves", addr)
            return
        parts, _ = messages.encode(reply)
        body = b"".join(bytes(p) for p in parts)
        if self.transport is not None:
            self.transport.sendto(auth.seal_datagram(self.key, DiscoverReply.TYPE, body), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)
