"""The asyncio transport for :class:`~dispy_core.connection.Connection`.

This is the one module of dispy_core that touches I/O. It lives here rather than in each
program because the client, the node and the scheduler all need exactly this adapter;
three copies would drift. It holds no protocol logic: bytes go into the Connection, and
messages come out to a callback.

:class:`Channel` is an ``asyncio.BufferedProtocol``: the kernel writes received bytes
straight into the frame decoder's buffer (no intermediate ``bytes`` objects), and sends
go out through :class:`_Writer`: a queue of the caller's own buffers handed to
``socket.sendmsg`` (scatter-gather), so a 10 MB argument is never joined, sliced or
copied into a transport buffer on its way out. asyncio's transports copy on 3.11 (and
TLS transports always do), so the transport writes only for TLS.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .errors import ConnectionClosed, DispyError
from .messages import Message, Welcome

__all__ = ["Channel", "open_channel", "StallWatch"]

log = logging.getLogger(__name__)

MessageHandler = Callable[["Channel", Message], None]
CloseHandler = Callable[["Channel", BaseException | None], None]

#: Unsent bytes above which ``drain()`` waits, and below which it is released again.
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
_IOV_MAX = 512  # buffers per sendmsg call (Linux allows 1024)


class _Writer:
    """Zero-copy output for a plain (non-TLS) stream socket.

    Owns a duplicate of the transport's socket, used only for sending; the transport
    keeps reading from the original. Buffers are queued as they are (memoryviews of the
    caller's objects) and sent with ``sendmsg``; a partial send only advances a view.
    It lets go of its channel when closed, so that the two don't keep each other alive
    once the connection is over (a cycle only the cyclic collector would free, much later).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, channel: Channel) -> None:
        self._loop = loop
        self._sock = sock
        self._sock.setblocking(False)
        self._channel: Channel | None = channel
        self._queue: deque[memoryview] = deque()
        self.size = 0
        self.sent = 0  # bytes handed to the kernel so far
        self._watching = False
        self.close_when_done = False

    def write(self, parts: list[Any]) -> None:
        queue = self._queue
        for part in parts:
            view = part if type(part) is memoryview else memoryview(part)
            if view.nbytes:
                if view.format != "B" or view.ndim != 1:
                    view = view.cast("B")
                queue.append(view)
                self.size += view.nbytes
        if not self._watching:
            self._send()
            if queue:
                self._loop.add_writer(self._sock.fileno(), self._send)
                self._watching = True
        if self.size > HIGH_WATER and self._channel is not None:
            self._channel._set_writable(False)

    def _send(self) -> None:
        queue = self._queue
        channel = self._channel
        if channel is None:  # closed
            return
        try:
            while queue:
                batch = [queue[i] for i in range(min(len(queue), _IOV_MAX))]
                sent = self._sock.sendmsg(batch)
                self.size -= sent
                self.sent += sent
                while sent:
                    head = queue[0]
                    if sent >= head.nbytes:
                        sent -= head.nbytes
                        queue.popleft()
                    else:
                        queue[0] = head[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._stop()
            channel._write_failed(exc)
            return
        if self.size < LOW_WATER:
            channel._set_writable(True)
        if not queue:
            self._stop()
            if self.close_when_done:
                channel._close_transport()

    def _stop(self) -> None:
        if self._watching:
            self._loop.remove_writer(self._sock.fileno())
            self._watching = False

    def close(self) -> None:
        self._stop()
        self._queue.clear()
        self.size = 0
        self._sock.close()
        self._channel = None


class Channel(asyncio.BufferedProtocol):
    """A framed, authenticated, message-oriented connection driven by asyncio.

    ``on_message(channel, msg)`` runs in the event loop for every message after the
    handshake (a :class:`Welcome` first). ``on_close(channel, exc)`` runs once, with the
    error that ended the connection (None for a clean local close).

    A closed channel holds nothing that refers back to it (its writer, its handshake
    deadline, the traceback of the error that ended it), so it is freed as soon as its
    owner lets go of it, without waiting for the cyclic garbage collector: a flood of
    connections must not leave memory behind.
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
        # Made when first needed: most connections never wait to write, and a flood of
        # them that never write at all should cost no descriptor, queue or event.
        self._writable: asyncio.Event | None = None  # see _set_writable
        self._plain = False  # writes go out through a _Writer (see _write)
        self._writer: _Writer | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.user: Any = None  # free slot for the owner (node/computation state)

    # -- asyncio.BufferedProtocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ""
        # Version refusals name the hosts (see dispy_core.compat).
        if not self.conn.peer_name and isinstance(self.peer, tuple) and self.peer:
            self.conn.peer_name = str(self.peer[0])
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and local:
            self.conn.local_name = str(local[0])
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._plain = sock is not None and transport.get_extra_info("sslcontext") is None
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
        if self._writer is not None:
            self._writer.close()
        for name in ("_read_ready_cb", "_write_ready"):
            # asyncio's socket transport holds bound methods of its own (3.11: both; 3.12
            # and 3.13 clear them in close(), but not when the transport is aborted): a
            # cycle that keeps it and its socket object until the cyclic collector runs.
            # Nothing is read from or written to a lost transport again.
            if getattr(self.transport, name, None) is not None:
                setattr(self.transport, name, None)
        self._finish(exc or self.conn.error)

    def pause_writing(self) -> None:  # TLS transports only
        self._set_writable(False)

    def resume_writing(self) -> None:
        self._set_writable(True)

    # -- API ------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Queue ``msg`` for sending; raises ConnectionClosed if the channel is closed."""
        if self.closed or self.transport is None:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        self._write(self.conn.send(msg))

    async def drain(self) -> None:
        """Wait until fewer than HIGH_WATER bytes are waiting to be sent."""
        if self._writable is not None:
            await self._writable.wait()

    def write_buffer_size(self) -> int:
        """Bytes queued and not yet handed to the kernel."""
        if self._writer is not None:
            return self._writer.size
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def bytes_sent(self) -> int | None:
        """Bytes handed to the kernel so far; None where that is not counted (TLS: there
        only :meth:`write_buffer_size` tells whether sending moves on)."""
        return self._writer.sent if self._writer is not None else None

    def pause_reading(self) -> None:
        """Stop reading from the peer (TCP flow control pushes back on it)."""
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.resume_reading()

    def handshake_deadline(self, timeout: float, expired: Callable[[Channel], None]) -> None:
        """Call ``expired(self)`` in ``timeout`` seconds unless the handshake completes or
        the channel closes first: then the timer is cancelled, and with it the loop's
        reference to this channel."""
        self._cancel_deadline()
        if not self.closed and not self.established.done():
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._deadline_expired, expired)

    def close(self) -> None:
        """Close after everything queued has been sent."""
        if self.transport is not None and not self.closed:
            self._flush()
            if self._writer is not None and self._writer.size:
                self._writer.close_when_done = True
            else:
                self._close_transport()
        self._finish(None)

    def abort(self) -> None:
        """Close now, dropping anything not yet sent."""
        if self._writer is not None:
            self._writer.close()
        if self.transport is not None:
            self.transport.abort()
        self._finish(None)

    # -- internals ------------------------------------------------------------------
    def _deadline_expired(self, expired: Callable[[Channel], None]) -> None:
        self._deadline = None
        expired(self)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()  # drops the handle's reference to this channel
            self._deadline = None

    def _set_writable(self, writable: bool) -> None:
        if self._writable is None:
            if writable:
                return
            self._writable = asyncio.Event()
        if writable:
            self._writable.set()
        else:
            self._writable.clear()

    def _write(self, parts: list[Any]) -> None:
        writer = self._writer
        if writer is None and self._plain and self.transport is not None and not self.transport.is_closing():
            # Our own descriptor of the same socket, for sending; closing it is ours to do.
            sock = self.transport.get_extra_info("socket")
            dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            writer = self._writer = _Writer(asyncio.get_running_loop(), dup, self)
        if writer is not None:
            writer.write(parts)
        elif self.transport is not None:
            self.transport.writelines(parts)

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            out = self.conn.data_to_send()
            if out:
                self._write(out)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _write_failed(self, exc: OSError) -> None:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            log.debug("send to %s failed: %s", self.peer, exc)
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows and finishes the channel

    def _dispatch(self) -> None:
        try:
            while (msg := self.conn.next_message()) is not None:
                if isinstance(msg, Welcome) and not self.established.done():
                    self.established.set_result(None)
                    self._cancel_deadline()
                if self.on_message is not None:
                    self.on_message(self, msg)
            self._flush()
        except DispyError as exc:
            log.debug("connection with %s ended: %s", self.peer, exc)
            self._flush()  # a Denied notice for the peer, if one is owed
            if self._writer is not None and self._writer.size:
                self._writer.close_when_done = True
            else:
                self._close_transport()
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_deadline()
        _drop_frames(exc)
        if not self.established.done():
            self.established.set_exception(
                exc if exc is not None else ConnectionClosed("connection closed before the handshake")
            )
            self.established.exception()  # mark retrieved; owners await it if they care
        if self.on_close is not None:
            self.on_close(self, exc)


def _drop_frames(exc: BaseException | None) -> None:
    """Clear the tracebacks of ``exc`` and of the errors it was raised from. They hold the
    frames the errors passed through, among them the channel's own (and its connection
    holds the error too): a cycle. The message says what happened."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += (e.__cause__, e.__context__)


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
    key_id: str = "",
    frame_macs: bool | None = None,
) -> Channel:
    """Connect to ``host:port`` and complete the handshake; raises on failure.

    Raises OSError (refused, unreachable), TimeoutError, AuthenticationError (secrets
    differ) or ProtocolVersionError.
    """
    loop = asyncio.get_running_loop()

    def factory() -> Channel:
        return Channel(Connection(initiator=True, secret=secret, software=software, key_id=key_id,
                                  frame_macs=frame_macs, peer_name=host), on_message, on_close)

    async def connect() -> Channel:
        _, channel = await loop.create_connection(factory, host, port, local_addr=local_addr, ssl=ssl)
        await channel.established
        return channel

    return await asyncio.wait_for(connect(), timeout)


class StallWatch:
    """Finds connections whose peer takes none of the data waiting for it (the daemons'
    ``--msg_timeout`` on socket I/O): call :meth:`stuck` every so often with the open
    channels; a channel that had bytes waiting and sent none of them for ``timeout``
    seconds is returned (the caller closes it). Progress is the count of bytes handed
    to the kernel (:meth:`Channel.bytes_sent`), or, where that is not counted (TLS), a
    shrinking write buffer. A channel with nothing waiting is never stuck: an idle
    connection is not a dead one."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._marks: dict[Channel, tuple[int | None, int, float]] = {}  # sent, waiting, since

    def stuck(self, channels: Any, now: float) -> list[tuple[Channel, int, float]]:
        """(channel, bytes waiting, seconds without progress) for each stuck channel."""
        marks: dict[Channel, tuple[int | None, int, float]] = {}
        out = []
        for ch in channels:
            waiting = ch.write_buffer_size()
            if ch.closed or waiting <= 0:
                continue
            sent = ch.bytes_sent()
            last = self._marks.get(ch)
            if last is None or (sent is not None and sent != last[0]) or (sent is None and waiting < last[1]):
                marks[ch] = (sent, waiting, now)  # it moved on
            elif now - last[2] < self.timeout:
                marks[ch] = last
            else:
                out.append((ch, waiting, now - last[2]))
        self._marks = marks
        return out
