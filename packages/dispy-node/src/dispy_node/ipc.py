"""The node's internal transport: a blocking socket around a sans-I/O Connection.

The node's main process listens on an abstract Unix socket (no file on disk; the name
includes the main process's pid and a random part) and authenticates every peer with a
per-node random token used as the Connection secret. The zygote, hosts and workers are
single-threaded, blocking programs, so they talk through :class:`BlockingChannel` rather
than asyncio: receiving is ``recv_into`` straight into the frame decoder's buffer, and
sending is ``sendmsg`` of the Connection's buffer list (no joining of large payloads).

:class:`BlockingChannel` is also what a test can use to speak to the main process as a
fake worker.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from typing import Any

from dispy_core.connection import Connection
from dispy_core.errors import ConnectionClosed, ProtocolError
from dispy_core.messages import Message, Welcome

__all__ = ["BlockingChannel", "internal_connection", "peer_is_same_user", "new_address",
           "new_token", "send_buffers"]

# Linux refuses sendmsg with more than UIO_MAXIOV (1024) buffers; stay well below it.
_MAX_IOV = 512


def new_address() -> str:
    """A fresh abstract Unix socket name for this node's internal listener."""
    return f"\0dispynode-{os.getpid()}-{secrets.token_hex(8)}"


def internal_connection(*, initiator: bool, token: str, software: str) -> Connection:
    """A Connection for the node's own Unix socket.

    The handshake proves knowledge of the per-node token (abstract Unix sockets have no
    file permissions, so any local user could connect); per-frame MACs are off because
    nothing can alter bytes in transit on a local socket, and they cost a fifth of the
    tiny-job throughput. The main process also checks the peer's uid (SO_PEERCRED).
    """
    return Connection(initiator=initiator, secret=token, software=software, frame_macs=False)


def peer_is_same_user(sock: socket.socket) -> bool:
    """True when the process at the other end of a Unix socket runs as our uid."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def new_token() -> str:
    """The per-node secret that internal peers must know."""
    return secrets.token_hex(32)


def send_buffers(sock: socket.socket, buffers: list[Any]) -> None:
    """Write every buffer to a blocking socket, coping with partial writes."""
    views = [memoryview(b).cast("B") for b in buffers]
    views = [v for v in views if v.nbytes]
    while views:
        sent = sock.sendmsg(views[:_MAX_IOV])
        while sent:
            head = views[0]
            if sent >= head.nbytes:
                sent -= head.nbytes
                views.pop(0)
            else:
                views[0] = head[sent:]
                sent = 0


class BlockingChannel:
    """A connected, authenticated internal channel (the initiator's side)."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self._eof = False

    @classmethod
    def connect(cls, address: str, token: str, software: str, timeout: float = 30.0) -> BlockingChannel:
        """Connect to the main process and complete the handshake (its Welcome is eaten)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            chan = cls(sock, internal_connection(initiator=True, token=token, software=software))
            chan._flush()
            msg = chan.recv()
            if not isinstance(msg, Welcome):
                raise ProtocolError(f"expected Welcome from the node, got {type(msg).__name__}")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return chan

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, msg: Message) -> None:
        send_buffers(self.sock, self.conn.send(msg))

    def recv(self) -> Message:
        """The next message, blocking; raises ConnectionClosed (or the Connection's error)
        once the peer has closed and every earlier message was handed out."""
        while True:
            msg = self.conn.next_message()
            if msg is not None:
                return msg
            self._read(block=True)

    def recv_available(self) -> list[Message]:
        """Every message that can be had without blocking (possibly none)."""
        while self._read(block=False):
            pass
        out = []
        while (msg := self.conn.next_message()) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- internals ------------------------------------------------------------------
    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            send_buffers(self.sock, out)

    def _read(self, *, block: bool) -> bool:
        """One recv into the decoder; True if bytes arrived. At EOF the Connection is told,
        so that next_message raises after the last complete message."""
        if self._eof:
            raise self.conn.error or ConnectionClosed("the node closed the connection")
        buf = self.conn.get_buffer()
        try:
            n = self.sock.recv_into(buf, len(buf), 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            n = 0
            if not isinstance(exc, ConnectionResetError):
                raise ConnectionClosed(f"internal connection failed: {exc}") from exc
        if n == 0:
            self._eof = True
            self.conn.eof()
            return False
        self.conn.buffer_updated(n)
        self._flush()
        return True
