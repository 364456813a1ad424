"""Frames: the unit every dispy connection carries.

A frame is a fixed 16-byte header, a body, and (on authenticated sessions) a MAC tag::

    0      4     5      6        8                16
    +------+-----+------+--------+----------------+------ ... ------+-- 16 bytes --+
    | DSPY | ver | type | flags  | body length    | body            | MAC tag      |
    +------+-----+------+--------+----------------+------ ... ------+--------------+
     magic  u8    u8     u16      u64 (big-endian)                   iff flags & MAC

* ``ver`` is the protocol version (:data:`PROTOCOL_VERSION`); a frame with another version
  raises :class:`ProtocolVersionError` naming both, before anything else is read.
* ``type`` is the message type (see :mod:`dispy_core.messages`).
* the body length is checked against the receiver's limit *from the header alone*, so an
  oversized frame is refused before any memory is set aside for it.

:class:`FrameDecoder` does no I/O. Feed it with ``feed(data)``, or, for zero-copy receipt,
write into ``get_buffer()`` and report with ``buffer_updated(n)`` (this matches
``asyncio.BufferedProtocol`` and ``socket.recv_into``). Small frames are parsed out of a
reusable staging area; a large frame gets its own buffer, filled in place, so a 10 MB
argument is copied by the kernel once and never again by us.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .errors import FrameTooLarge, ProtocolError, ProtocolVersionError

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER",
    "MAC_SIZE",
    "FLAG_MAC",
    "Frame",
    "FrameDecoder",
    "pack_header",
]

MAGIC = b"DSPY"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("!4sBBHQ")
MAC_SIZE = 16
FLAG_MAC = 0x0001

_STAGING = 256 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``body`` may be a memoryview into a buffer owned by the frame."""

    type: int
    flags: int
    header: bytes
    body: memoryview
    mac: bytes


def pack_header(type_: int, body_length: int, flags: int = 0) -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, type_, flags, body_length)


class FrameDecoder:
    """Turns a byte stream into frames; raises ProtocolError on the first bad header."""

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray(_STAGING)
        self._start = 0  # first unparsed byte in _buf
        self._end = 0  # one past the last received byte in _buf
        # A frame too large for the staging area is received straight into its own buffer.
        self._big: bytearray | None = None
        self._big_filled = 0
        self._big_header: tuple[bytes, int, int, int] | None = None
        self._frames: deque[Frame] = deque()

    # -- receiving ------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view where the next received bytes must be written."""
        if self._big is not None:
            return memoryview(self._big)[self._big_filled :]
        if self._end == len(self._buf):
            self._compact()
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Report that ``nbytes`` were written into the last :meth:`get_buffer` view."""
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled == len(self._big):
                self._finish_big()
            return
        self._end += nbytes
        self._parse()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Convenience for tests and blocking code: copy ``data`` in and parse it."""
        view = memoryview(data).cast("B")
        while view:
            target = self.get_buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed."""
        return self._frames.popleft() if self._frames else None

    @property
    def idle(self) -> bool:
        """True when no partial frame is buffered (a clean place for the peer to stop)."""
        return self._big is None and self._start == self._end

    # -- internals ------------------------------------------------------------------
    def _compact(self) -> None:
        pending = self._end - self._start
        if self._start:
            self._buf[:pending] = self._buf[self._start : self._end]
            self._start, self._end = 0, pending
        if self._end == len(self._buf):  # a header and part of a mid-size body fill it
            self._buf.extend(bytes(len(self._buf)))

    def _parse(self) -> None:
        buf = self._buf
        while self._end - self._start >= HEADER.size:
            start = self._start
            magic, version, type_, flags, length = HEADER.unpack_from(buf, start)
            if magic != MAGIC:
                raise ProtocolError(
                    f"not a dispy frame (got {bytes(buf[start:start + 4])!r} where "
                    f"{MAGIC!r} was expected); is something else talking to this port?"
                )
            if version != PROTOCOL_VERSION:
                raise ProtocolVersionError(
                    f"peer speaks dispy protocol version {version}, this program speaks "
                    f"version {PROTOCOL_VERSION}; install matching dispy releases"
                )
            if length > self.max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_size} bytes"
                )
            tail = MAC_SIZE if flags & FLAG_MAC else 0
            total = HEADER.size + length + tail
            have = self._end - start
            header = bytes(buf[start : start + HEADER.size])
            if have >= total:
                body_start = start + HEADER.size
                body = memoryview(bytes(buf[body_start : body_start + length]))
                mac = bytes(buf[body_start + length : start + total])
                self._frames.append(Frame(type_, flags, header, body, mac))
                self._start += total
                continue
            if total > len(buf) // 2:
                # Large frame: give it a buffer of its own and copy what already arrived.
                big = bytearray(total - HEADER.size)
                got = have - HEADER.size
                big[:got] = buf[start + HEADER.size : self._end]
                self._big, self._big_filled = big, got
                self._big_header = (header, type_, flags, length)
                self._start = self._end = 0
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _finish_big(self) -> None:
        assert self._big is not None and self._big_header is not None
        header, type_, flags, length = self._big_header
        view = memoryview(self._big)
        self._frames.append(Frame(type_, flags, header, view[:length], bytes(view[length:])))
        self._big, self._big_filled, self._big_header = None, 0, None
