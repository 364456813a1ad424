"""Frames: the unit every dispy connection carries.

A frame is a fixed 16-byte header, a body, and (on authenticated sessions) a MAC tag::

    0      4     5      6        8                16
    +------+-----+------+--------+----------------+------ ... ------+-- 16 bytes --+
    | DSPY | ver | type | flags  | body length    | body            | MAC tag      |
    +------+-----+------+--------+----------------+------ ... ------+--------------+
     magic  u8    u8     u16      u64 (big-endian)                   iff flags & MAC

* ``ver`` is the protocol version the frame is encoded in (see :mod:`dispy_core.compat`:
  the handshake agrees on one). A decoder accepts the versions it is told
  (:attr:`FrameDecoder.versions`; any while a handshake runs, whose frames every version
  encodes alike); a frame with another raises :class:`ProtocolVersionError` naming both,
  before anything else is read.
* ``type`` is the message type (see :mod:`dispy_core.messages`).
* the body length is checked against the receiver's limit *from the header alone*, so an
  oversized frame is refused before any memory is set aside for it.

:class:`FrameDecoder` does no I/O. Feed it with ``feed(data)``, or, for zero-copy receipt,
write into ``get_buffer()`` and report with ``buffer_updated(n)`` (this matches
``asyncio.BufferedProtocol`` and ``socket.recv_into``). Small frames are parsed out of a
reusable staging area; a large frame gets its own buffer, filled in place, so a 10 MB
argument is copied by the kernel once and never again by us. Memory is set aside as bytes
arrive, never for what a header only announces (see :class:`FrameDecoder`).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .compat import PROTOCOL_HIGHEST
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
#: The protocol version this release uses when it can (the newest it speaks; see
#: :mod:`dispy_core.compat` for the versions it accepts and how peers agree on one).
PROTOCOL_VERSION = PROTOCOL_HIGHEST
HEADER = struct.Struct("!4sBBHQ")
MAC_SIZE = 16
FLAG_MAC = 0x0001

#: Staging area: where every connection starts (two handshake frames fit), and the most
#: an authenticated connection's grows to while data keeps coming faster than it is parsed.
_MIN_STAGING = 16 * 1024
_STAGING = 256 * 1024
_FIRST_CHUNK = 256 * 1024  # a large frame's first buffer, doubled as its bytes arrive
_ZEROS = memoryview(bytes(64 * 1024))  # what a large frame's buffer is grown with, a block at a time
_DISCARD = bytearray(4096)  # where a released decoder has bytes received (and ignored)


def _staging_cap(limit: int) -> int:
    """How large the staging area may grow when frames are at most ``limit`` bytes: room
    for two of them, between _MIN_STAGING and _STAGING."""
    return min(_STAGING, max(_MIN_STAGING, 2 * (HEADER.size + limit + MAC_SIZE)))


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``body`` may be a memoryview into a buffer owned by the frame."""

    type: int
    flags: int
    header: bytes
    body: memoryview
    mac: bytes
    version: int = PROTOCOL_VERSION


def pack_header(type_: int, body_length: int, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(MAGIC, version, type_, flags, body_length)


class FrameDecoder:
    """Turns a byte stream into frames; raises ProtocolError on the first bad header.

    Memory follows what has arrived, never what a header announces: the staging area is
    set aside when the first bytes arrive (an idle connection has none), starts at
    _MIN_STAGING bytes, grows (up to :func:`_staging_cap` of the frame limit, so
    not before the handshake has raised that limit) only when a read fills it, and shrinks
    back once a burst is over; a large frame's own buffer starts at _FIRST_CHUNK and
    doubles as its bytes arrive. A peer thus holds at most its frame limit (plus the
    header and MAC) in a partial frame, and about twice what it actually sent.
    """

    def __init__(self, max_frame_size: int) -> None:
        self._limit = max_frame_size
        self._cap = _staging_cap(max_frame_size)
        self._buf = bytearray()  # the staging area, once bytes arrive
        self._start = 0  # first unparsed byte in _buf
        self._end = 0  # one past the last received byte in _buf
        self._offered = 0  # bytes of room the last get_buffer() view offered
        self._grow = False  # a read filled that room: grow the staging area before the next
        # A frame too large for the staging area is received straight into its own buffer,
        # grown as it fills; _big_need is its body and MAC, the bytes it will hold at the end.
        self._big: bytearray | None = None
        self._big_filled = 0
        self._big_need = 0
        self._big_header: tuple[bytes, int, int, int, int] | None = None
        self._frames: deque[Frame] | None = None  # made for the first frame (see _emit)
        self._released = False
        #: Parse one frame at a time (see :meth:`parse_pending`): during a handshake the
        #: frames after the current one must be judged by the limit that holds once it
        #: has been handled, which may be larger.
        self.stepwise = False
        #: Protocol versions accepted in frame headers (lowest, highest); None: any (a
        #: handshake, whose frames every version encodes alike, sets it when it agrees).
        self.versions: tuple[int, int] | None = (PROTOCOL_VERSION, PROTOCOL_VERSION)

    @property
    def max_frame_size(self) -> int:
        return self._limit

    @max_frame_size.setter
    def max_frame_size(self, limit: int) -> None:
        # The handshake's small limit is raised once the peer is authenticated; the
        # staging area may then grow, but only as reads fill it.
        self._limit = limit
        self._cap = _staging_cap(limit)

    # -- receiving ------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view where the next received bytes must be written. (It must be
        released before the next call: the buffer behind it may be resized then.)"""
        if self._released:
            return memoryview(_DISCARD)
        big = self._big
        if big is not None:
            if self._big_filled == len(big):
                self._grow_big(big)
            return memoryview(big)[self._big_filled :]
        if not self._buf:
            self._buf = bytearray(_MIN_STAGING)
        elif self._end == len(self._buf) or self._grow:
            self._make_room()
        self._offered = len(self._buf) - self._end
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Report that ``nbytes`` were written into the last :meth:`get_buffer` view."""
        if self._released:
            return
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled == self._big_need:
                self._finish_big()
            return
        self._end += nbytes
        self._grow = nbytes == self._offered and len(self._buf) < self._cap
        self._parse()
        if self._end == 0 and len(self._buf) > _MIN_STAGING and nbytes < _MIN_STAGING // 2:
            # A small read that left nothing pending: the burst is over.
            self._buf = bytearray(_MIN_STAGING)
            self._grow = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Convenience for tests and blocking code: copy ``data`` in and parse it."""
        view = memoryview(data).cast("B")
        while view:
            with self.get_buffer() as target:
                n = min(len(target), len(view))
                target[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def parse_pending(self) -> None:
        """Parse what was received but not parsed yet (after a frame parsed stepwise)."""
        if not self._released and self._big is None:
            self._parse()

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed."""
        frames = self._frames
        return frames.popleft() if frames else None

    def release(self) -> None:
        """Drop the buffers: nothing more will be parsed (the connection failed or ended).
        A flood of bad connections then holds a staging area only while one is parsed,
        not until each connection's end has gone through the event loop."""
        self._released = True
        self._buf, self._start, self._end = bytearray(), 0, 0
        self._big, self._big_filled, self._big_need, self._big_header = None, 0, 0, None

    @property
    def idle(self) -> bool:
        """True when no partial frame is buffered (a clean place for the peer to stop)."""
        return self._big is None and self._start == self._end

    # -- internals ------------------------------------------------------------------
    def _make_room(self) -> None:
        pending = self._end - self._start
        if self._grow or pending == len(self._buf):
            # Data comes faster than the staging area holds, or a mid-size frame (at most
            # half the cap, see _parse) needs more room: grow to the cap at once.
            size = max(self._cap, len(self._buf))
            if size > len(self._buf):
                buf = bytearray(size)
                buf[:pending] = self._buf[self._start : self._end]
                self._buf, self._start, self._end = buf, 0, pending
            self._grow = False
        if self._start:
            self._buf[:pending] = self._buf[self._start : self._end]
            self._start, self._end = 0, pending

    def _emit(self, frame: Frame) -> None:
        # The queue is made on first use: an empty deque already holds a 0.5 KiB block,
        # and a connection that never sends a whole frame (idle, or a flood's) needs none.
        if self._frames is None:
            self._frames = deque()
        self._frames.append(frame)

    def _grow_big(self, big: bytearray) -> None:
        # Double, up to what the frame needs. Appending zeros from a small block (rather
        # than bytearray(n) or bytes(n)) lets realloc move no data and touches each new
        # page once, as bytearray(n)'s memset did; received bytes are never copied.
        target = min(self._big_need, 2 * len(big))
        while len(big) < target:
            big += _ZEROS[: target - len(big)]

    def _parse(self) -> None:
        if self.stepwise and self._frames:
            return  # the frame before must be handled first (parse_pending follows)
        buf = self._buf
        while self._end - self._start >= HEADER.size:
            start = self._start
            magic, version, type_, flags, length = HEADER.unpack_from(buf, start)
            if magic != MAGIC:
                raise ProtocolError(
                    f"not a dispy frame (got {bytes(buf[start:start + 4])!r} where "
                    f"{MAGIC!r} was expected); is something else talking to this port?"
                )
            versions = self.versions
            if versions is not None and not versions[0] <= version <= versions[1]:
                spoken = (f"version {versions[0]}" if versions[0] == versions[1]
                          else f"versions {versions[0]} to {versions[1]}")
                raise ProtocolVersionError(
                    f"peer sent a frame of dispy protocol version {version} where {spoken} "
                    f"was expected"
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
                self._emit(Frame(type_, flags, header, body, mac, version))
                self._start += total
                if self.stepwise:
                    break
                continue
            if total > self._cap // 2:
                # Large frame: a buffer of its own, sized by what has arrived so far (a
                # header alone announces the rest, which may never come), holding what
                # already arrived; the rest is received into it in place.
                need = total - HEADER.size
                got = have - HEADER.size
                big = bytearray(min(need, max(_FIRST_CHUNK, got)))
                big[:got] = buf[start + HEADER.size : self._end]
                self._big, self._big_filled, self._big_need = big, got, need
                self._big_header = (header, type_, flags, length, version)
                self._start = self._end = 0
            break
        if self._start == self._end:
            self._start = self._end = 0

    def _finish_big(self) -> None:
        assert self._big is not None and self._big_header is not None
        header, type_, flags, length, version = self._big_header
        view = memoryview(self._big)
        self._emit(Frame(type_, flags, header, view[:length], bytes(view[length:]), version))
        self._big, self._big_filled, self._big_need, self._big_header = None, 0, 0, None
