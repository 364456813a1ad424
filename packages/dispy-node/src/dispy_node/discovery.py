"""Answering discovery datagrams (UDP, on the node's address and port).

A client looking for nodes sends a sealed DiscoverRequest (see
:func:`dispy_core.auth.seal_datagram`); the node answers the sender, and only the sender,
with a sealed DiscoverReply echoing the request's nonce. The node never sends a datagram
on its own: no broadcast, no multicast, no announcement at start. Datagrams that are not
dispy's, are sealed with another secret, or are older than :data:`MAX_AGE` seconds
(replays) are dropped with a debug log line; nothing in a datagram is ever unpickled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from dispy_core import auth, messages
from dispy_core.errors import DispyError
from dispy_core.messages import DiscoverReply, DiscoverRequest

__all__ = ["DiscoveryProtocol", "MAX_AGE"]

log = logging.getLogger(__name__)

#: Requests whose timestamp is further than this from the node's clock are dropped.
MAX_AGE = 60.0


class DiscoveryProtocol(asyncio.DatagramProtocol):
    """Answers DiscoverRequests; ``make_reply(nonce)`` builds the reply for this address."""

    def __init__(self, secret: str, make_reply: Callable[[str], DiscoverReply]) -> None:
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
        reply = self.make_reply(msg.nonce)
        parts, _ = messages.encode(reply)
        body = b"".join(bytes(p) for p in parts)
        if self.transport is not None:
            self.transport.sendto(auth.seal_datagram(self.key, DiscoverReply.TYPE, body), addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("discovery socket error: %s", exc)
