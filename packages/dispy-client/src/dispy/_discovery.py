"""Finding nodes by UDP broadcast, for ``nodes=None`` and wildcard specs only.

Nodes named explicitly are contacted directly over TCP and never cause a datagram to be
sent: :func:`needs_discovery` is the single place that decides, and the cluster asks it
before it creates a UDP socket at all.

A discovery round: the client broadcasts a sealed :class:`DiscoverRequest` (a fresh
nonce and the time) to the node port; each node that shares the secret answers with a
sealed :class:`DiscoverReply` echoing the nonce and naming its TCP port, and the cluster
then connects to it over TCP like to an explicit node. Datagrams are sealed with
:func:`dispy_core.auth.seal_datagram` under the cluster's secret, nothing in them is ever
unpickled, and replies with another nonce, a bad seal or a stale time are dropped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from dispy_core import auth, messages
from dispy_core.errors import DispyError
from dispy_core.messages import DiscoverReply, DiscoverRequest

from ._node import NodeAllocate

__all__ = ["needs_discovery", "build_request", "parse_reply", "Discovery", "BROADCAST_ADDR"]

log = logging.getLogger(__name__)

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


def parse_reply(secret: str | bytes, data: bytes, nonce: str, now: float | None = None) -> DiscoverReply | None:
    """The reply in ``data`` if it is sealed with ``secret``, answers ``nonce`` and is
    recent; None otherwise (the reason is logged at DEBUG level)."""
    try:
        type_, body = auth.open_datagram(auth.derive_key(secret), data)
        msg = messages.decode(type_, memoryview(body))
    except DispyError as exc:
        log.debug("ignoring datagram: %s", exc)
        return None
    if not isinstance(msg, DiscoverReply):
        log.debug("ignoring %s datagram", type(msg).__name__)
        return None
    if msg.nonce != nonce:
        log.debug("ignoring discovery reply from %s: not an answer to our request", msg.ip_addr)
        return None
    now = time.time() if now is None else now
    if abs(now - msg.time) > REPLY_WINDOW:
        log.debug("ignoring stale discovery reply from %s", msg.ip_addr)
        return None
    return msg


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)


class Discovery:
    """One cluster's discovery: broadcast requests, hand valid replies to ``on_reply``."""

    def __init__(self, secret: str | bytes, node_port: int, on_reply: Callable[[DiscoverReply], None],
                 bind_host: str | None = None, client_port: int = 0) -> None:
        self.secret = secret
        self.node_port = node_port
        self.on_reply = on_reply
        self.bind_host = bind_host or "0.0.0.0"
        self.client_port = client_port
        self.nonce = ""
        self.replies = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def run(self) -> None:
        """Broadcast (and resend a couple of times), then keep listening for late replies
        until cancelled."""
        loop = asyncio.get_running_loop()
        protocol = _Protocol(self._datagram)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, local_addr=(self.bind_host, self.client_port), allow_broadcast=True)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not self.client_port:
                log.warning("can't discover nodes: no UDP socket on %s:%s: %s",
                            self.bind_host, self.client_port, exc.strerror or exc)
                return
            transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, local_addr=(self.bind_host, 0), allow_broadcast=True)
        try:
            self.nonce, datagram = build_request(self.secret)
            self._transport = transport
            log.info("looking for nodes: broadcasting to UDP port %s", self.node_port)
            started = loop.time()
            for delay in (0.0, *RESEND_AFTER):
                await asyncio.sleep(max(0.0, started + delay - loop.time()))
                transport.sendto(datagram, (BROADCAST_ADDR, self.node_port))
            await asyncio.Future()  # listen until cancelled
        finally:
            self._transport = None
            transport.close()

    def refresh(self) -> None:
        """Broadcast the request once more (nodes started since answer it)."""
        if self._transport is not None and self.nonce:
            _, datagram = build_request(self.secret, self.nonce)  # same nonce, current time
            log.info("looking for nodes again: broadcasting to UDP port %s", self.node_port)
            self._transport.sendto(datagram, (BROADCAST_ADDR, self.node_port))

    def _datagram(self, data: bytes, addr: Any) -> None:
        reply = parse_reply(self.secret, data, self.nonce)
        if reply is None:
            return
        self.replies += 1
        if not reply.ip_addr:
            reply = DiscoverReply(reply.nonce, reply.time, addr[0], reply.port, reply.name, reply.cpus)
        self.on_reply(reply)
