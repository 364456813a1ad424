"""Accepting dispy connections: a TCP (or TLS) listener that hands each peer to a
:class:`~dispy_core.aio.Channel` and gives it ``timeout`` seconds to authenticate.

TLS handshakes are run here with ``loop.start_tls`` rather than by
``create_server(ssl=...)``, which drops failed handshakes silently: a peer without the
right certificate is logged, with what to do about it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

from .aio import Channel
from .refusals import RefusalLog

__all__ = ["ChannelServer", "peer_text", "BACKLOG", "ACCEPT_BATCH", "deepen_backlog"]

#: Connections the kernel queues for a listener until they are accepted. asyncio's default
#: (100) made hundreds of a burst of 2,000 connections wait 10-25 s for a retransmitted
#: SYN; the kernel caps this at net.core.somaxconn (4096 on current Linux).
BACKLOG = max(socket.SOMAXCONN, 4096)
#: Connections accepted per turn of the event loop (asyncio's default). The rest of a
#: burst waits, connected, in the kernel's queue, costing this process nothing: accepting
#: thousands at once would hold them all in memory together, and the heap they grew
#: stays with the process after they are gone.
ACCEPT_BATCH = 100


def deepen_backlog(server: asyncio.AbstractServer) -> None:
    """Give ``server``'s listening sockets a queue of :data:`BACKLOG` connections.

    asyncio uses its ``backlog`` argument both for ``listen()`` and as the number of
    connections accepted per turn of the loop; it is given :data:`ACCEPT_BATCH`, and the
    queue is lengthened here by a second ``listen()`` on the same socket (through a
    duplicate descriptor), which Linux and the BSDs take as a new queue length."""
    for transport_socket in getattr(server, "sockets", ()):
        with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
            sock.listen(BACKLOG)


def peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _TlsAccept(asyncio.Protocol):
    """Holds a new TCP connection until ``loop.start_tls`` takes it over."""

    def __init__(self, accept: Callable[[asyncio.Transport], None]) -> None:
        self._accept = accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello is for the TLS layer that start_tls adds
        self._accept(transport)

    def data_received(self, data: bytes) -> None:  # not while paused; never before TLS
        pass


class ChannelServer:
    """Listens for peers; ``new_channel()`` makes the (responder) Channel for each one.

    ``log`` and ``tls_hint`` word the warnings: ``tls_hint`` tells a user whose peer
    failed the TLS handshake which certificate it needs. Peers refused here (no handshake
    in time, a failed TLS handshake) are logged through ``refusals`` (by default one of
    its own on ``log``), which summarises floods.
    """

    def __init__(self, new_channel: Callable[[], Channel], *, ssl: ssl_module.SSLContext | None,
                 timeout: float, log: logging.Logger, tls_hint: str = "", timeout_option: str = "",
                 refusals: RefusalLog | None = None) -> None:
        self.new_channel = new_channel
        self.ssl = ssl
        self.timeout = timeout
        self.log = log
        self.refusals = refusals if refusals is not None else RefusalLog(log)
        self.tls_hint = tls_hint
        self.timeout_option = f" ({timeout_option})" if timeout_option else ""
        self.closing = False
        self._servers: list[asyncio.base_events.Server] = []
        self._handshakes: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); returns the port."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol] = (
            self._plain if self.ssl is None else lambda: _TlsAccept(self._accept_tls))
        server = await loop.create_server(factory, host=host, port=port, reuse_address=True,
                                          backlog=ACCEPT_BATCH)
        deepen_backlog(server)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop listening (connections already accepted stay)."""
        self.closing = True
        for server in self._servers:
            server.close()
        for task in list(self._handshakes):
            task.cancel()

    def _plain(self) -> Channel:
        ch = self.new_channel()
        ch.handshake_deadline(self.timeout, self._deadline)
        return ch

    def _deadline(self, ch: Channel) -> None:
        if not ch.closed and not ch.established.done():
            self.refusals.refused("no handshake in time", "closing connection from %s: no handshake within %.1f s%s",
                                  peer_text(ch.peer), self.timeout, self.timeout_option)
            ch.abort()

    def _accept_tls(self, transport: asyncio.Transport) -> None:
        task = asyncio.get_running_loop().create_task(self._tls_handshake(transport))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _tls_handshake(self, transport: asyncio.Transport) -> None:
        assert self.ssl is not None
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername") or "?"
        ch = self.new_channel()
        on_close, ch.on_close = ch.on_close, None  # a failed handshake is logged here, once
        try:
            tls_transport = await loop.start_tls(transport, ch, self.ssl, server_side=True,
                                                 ssl_handshake_timeout=self.timeout)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception as exc:
            transport.abort()
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                reason = f"no TLS handshake within {self.timeout:g} s{self.timeout_option}"
            elif isinstance(exc, (ConnectionResetError, BrokenPipeError)) or (
                    isinstance(exc, ConnectionError) and not str(exc)):
                reason = "the peer closed the connection (it may not accept our certificate)"
            elif isinstance(exc, OSError):
                reason = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc)) or type(exc).__name__
            else:
                reason = f"{type(exc).__name__}: {exc}"
            self.refusals.refused("TLS handshake failed", "TLS handshake with %s failed: %s%s", peer_text(peer),
                                  reason, f" ({self.tls_hint})" if self.tls_hint else "")
            return
        if tls_transport is None or self.closing:
            (tls_transport or transport).abort()
            return
        ch.on_close = on_close
        ch.connection_made(tls_transport)
        ch.handshake_deadline(self.timeout, self._deadline)
