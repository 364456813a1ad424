"""Test helpers shared by every dispy package's tests (no sockets)."""

from __future__ import annotations

from .connection import Connection
from .messages import Message

__all__ = ["connected_pair", "pump", "received"]


def pump(a: Connection, b: Connection) -> None:
    """Move bytes both ways until neither side has anything to send."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            out = src.data_to_send()
            if out:
                dst.feed(b"".join(bytes(memoryview(p).cast("B")) for p in out))
                moved = True
        if not moved:
            return


def received(conn: Connection) -> list[Message]:
    msgs = []
    while (m := conn.next_message()) is not None:
        msgs.append(m)
    return msgs


def connected_pair(secret: str = "", responder_secret: str | None = None) -> tuple[Connection, Connection]:
    """An initiator and a responder with the handshake done (Welcome consumed)."""
    a = Connection(initiator=True, secret=secret, software="test-initiator")
    b = Connection(initiator=False, secret=secret if responder_secret is None else responder_secret,
                   software="test-responder")
    pump(a, b)
    received(a), received(b)
    return a, b
