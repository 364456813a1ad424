"""The asyncio transport for :class:`~dispy_core.connection.Connection`.

This is the one module of dispy_core that touches I/O. It lives here rather than in each
program because the client, the node and the scheduler all need exactly this adapter;
three copies would drift. It holds no protocol logic: bytes go into the Connection, and
messages come out to a callback.

:class:`Channel` is an ``asyncio.BufferedProtocol``: the kernel writes received bytes
straight into the frame decoder's buffer (no intermediate ``bytes`` objects), and sends
go out with ``writelines`` (scatter-gather on Python 3.12+).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .errors import ConnectionClosed, DispyError
from .messages import Message, Welcome

__all__ = ["Channel", "open_channel"]

log = logging.getLogger(__name__)

MessageHandler = Callable[["Channel", Message], None]
CloseHandler = Callable[["Channel", BaseException | None], None]


class Channel(asyncio.BufferedProtocol):
    """A framed, authenticated, message-oriented connection driven by asyncio.

    ``on_message(channel, msg)`` runs in the event loop for every message after the
    handshake (a :class:`Welcome` first). ``on_close(channel, exc)`` runs once, with the
    error that ended the connection (None for a clean local close).
    """

    def __init__(
        self,
        conn: Connection,
        on_message: MessageHandler | None = None,
        on_close: CloseHandler | None = None,
    ) -> None:
        self.conn = conn
        self.on_message = on_message
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[Any, ...] | str = ""
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.user: Any = None  # free slot for the owner (node/computation state)

    # -- asyncio.BufferedProtocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.conn.buffer_updated(nbytes)
        except DispyError:
            pass  # raised again by next_message after earlier messages are delivered
        self._dispatch()

    def eof_received(self) -> bool | None:
        self.conn.eof()
        self._dispatch()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.eof()
        self._finish(exc or self.conn.error)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- API ------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Queue ``msg`` for sending; raises ConnectionClosed if the channel is closed."""
        if self.closed or self.transport is None:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        self.transport.writelines(self.conn.send(msg))

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()
        self._finish(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._finish(None)

    # -- internals ------------------------------------------------------------------
    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            out = self.conn.data_to_send()
            if out:
                self.transport.writelines(out)

    def _dispatch(self) -> None:
        try:
            while (msg := self.conn.next_message()) is not None:
                if isinstance(msg, Welcome) and not self.established.done():
                    self.established.set_result(None)
                if self.on_message is not None:
                    self.on_message(self, msg)
            self._flush()
        except DispyError as exc:
            self._flush()  # a Denied notice for the peer, if one is owed
            log.debug("connection with %s ended: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.established.done():
            self.established.set_exception(
                exc if exc is not None else ConnectionClosed("connection closed before the handshake")
            )
            self.established.exception()  # mark retrieved; owners await it if they care
        if self.on_close is not None:
            self.on_close(self, exc)


async def open_channel(
    host: str,
    port: int,
    *,
    secret: str | bytes = "",
    software: str = "dispy",
    on_message: MessageHandler | None = None,
    on_close: CloseHandler | None = None,
    timeout: float | None = None,
    local_addr: tuple[str, int] | None = None,
    ssl: Any = None,
) -> Channel:
    """Connect to ``host:port`` and complete the handshake; raises on failure.

    Raises OSError (refused, unreachable), TimeoutError, AuthenticationError (secrets
    differ) or ProtocolVersionError.
    """
    loop = asyncio.get_running_loop()

    def factory() -> Channel:
        return Channel(Connection(initiator=True, secret=secret, software=software), on_message, on_close)

    async def connect() -> Channel:
        _, channel = await loop.create_connection(factory, host, port, local_addr=local_addr, ssl=ssl)
        await channel.established
        return channel

    return await asyncio.wait_for(connect(), timeout)
