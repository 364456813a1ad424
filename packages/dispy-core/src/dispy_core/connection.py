"""A dispy connection without I/O: handshake, framing, MACs and message codec in one object.

Usage by a transport (see :mod:`dispy_core.aio` for the asyncio one)::

    conn = Connection(initiator=True, secret="s")
    write(conn.data_to_send())                  # the initiator's Hello
    ... on bytes: conn.feed(data)  (or get_buffer()/buffer_updated(n))
    while (msg := conn.next_message()) is not None:
        handle(msg)                             # Welcome first, then the peer's messages
    write(conn.data_to_send())                  # handshake replies, Denied notices
    write(conn.send(SomeMessage(...)))          # once established

Rules this object enforces (the protocol's invariants):

* Before the handshake completes only handshake messages are accepted, frames are limited
  to :data:`HANDSHAKE_FRAME_LIMIT` bytes, and nothing but JSON is decoded.
* After it, every frame must carry a valid MAC when a secret is set (unless both ends
  chose ``frame_macs=False``); a frame with a bad MAC raises AuthenticationError and the
  connection is finished.
* Any error leaves the connection finished: every later call raises the same error.
  When the peer is owed an explanation (wrong secret, another protocol version, garbage),
  a :class:`Denied` frame is queued in :meth:`data_to_send` before the error is raised.
* The two ends agree on a protocol version in the handshake (see :mod:`dispy_core.compat`:
  the initiator's range travels in its Hello, the responder answers in the version agreed);
  every later frame must carry it. Peers with no version in common are refused with a
  :class:`ProtocolVersionError` naming both packages and versions, on both ends.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable
from typing import Any

from . import auth, compat, config, messages
from .errors import AuthenticationError, ConnectionClosed, DispyError, ProtocolError, ProtocolVersionError
from .framing import FLAG_MAC, MAC_SIZE, FrameDecoder, pack_header
from .messages import Challenge, Denied, Hello, Message, Proof, Welcome

__all__ = ["Connection", "HANDSHAKE_FRAME_LIMIT"]

HANDSHAKE_FRAME_LIMIT = 4096

_START, _SENT_HELLO, _SENT_CHALLENGE, _SENT_PROOF, _ESTABLISHED = range(5)


class Connection:
    """One end of a dispy connection. ``initiator`` is the side that connected."""

    def __init__(
        self,
        *,
        initiator: bool,
        secret: str | bytes = "",
        software: str = "dispy",
        max_frame_size: int | None = None,
        frame_macs: bool | None = None,
        key_id: str = "",
        keys: Callable[[str], tuple[str | bytes, bool] | None] | None = None,
        protocols: tuple[int, int] | None = None,
        peer_name: str = "",
    ) -> None:
        """``key_id`` (initiator): authenticate with the key of what it names, ``secret``
        being that key (see Hello.key_id). ``keys`` (responder): ``(key, frame_macs)`` for
        a Hello's key_id, or None when there is none; without it only ``secret`` is
        accepted. (Both ends must agree on frame_macs: the initiator passes it too.)
        ``protocols``: the protocol versions this end speaks (lowest, highest); by default
        those of :mod:`dispy_core.compat` (tests give other ranges, or change compat's, to
        play a peer of another release). ``peer_name``: the peer's host,
        for refusals (a transport sets it, see :attr:`peer_name`)."""
        if protocols is None:
            protocols = (compat.PROTOCOL_LOWEST, compat.PROTOCOL_HIGHEST)
        if not 0 < protocols[0] <= protocols[1] <= 255:
            raise ValueError(f"protocols must be (lowest, highest) from 1 to 255, not {protocols}")
        self.initiator = initiator
        self.software = software
        self.peer_software = ""
        self.protocols = protocols
        #: The protocol version agreed with the peer (None until the handshake agrees).
        self.protocol: int | None = None
        #: The versions the peer said it speaks (lowest, highest), once its first frame came.
        self.peer_protocols: tuple[int, int] | None = None
        #: The peer's host, named in version refusals ("upgrade dispy-node on 10.0.0.2").
        self.peer_name = peer_name
        #: This end's address as the peer knows it (named in the Denied a responder sends).
        self.local_name = ""
        self._denied = False  # the Denied frame owed to the peer is queued already
        # Frames are sent in the initiator's lowest version until a version is agreed (the
        # responder answers a Hello in the version agreed, see compat).
        self._version = protocols[0]
        self.key_id = key_id  # responder: the key_id the initiator authenticated with
        self._keys = keys
        self._frame_macs = frame_macs
        self._key = auth.derive_key(secret)
        # Per-frame MACs protect frames crossing a network. Channels that can't be tampered
        # with in transit (a node's own Unix socket) may turn them off; the handshake still
        # proves that the peer knows the secret.
        self._use_mac = bool(secret) if frame_macs is None else frame_macs
        self._session = b""
        self._max_frame_size = config.MaxFrameSize if max_frame_size is None else max_frame_size
        self._decoder = FrameDecoder(HANDSHAKE_FRAME_LIMIT)
        # Frame by frame until established: a peer's first frame after the handshake may
        # arrive in the same read as its last handshake frame, and is allowed the larger
        # limit.
        self._decoder.stepwise = True
        self._decoder.versions = None  # judged by the handshake, see _check_version
        self._out: list[Any] = []
        self._inbox: deque[Message] | None = None  # made for the first message (see _deliver)
        self._send_seq = 0
        self._recv_seq = 0
        self._nonce = auth.new_nonce()
        self._peer_nonce = ""
        self._error: DispyError | None = None
        self._state = _START
        if initiator:
            self._queue(Hello(protocols[1], self._nonce, software, key_id), mac=False)
            self._state = _SENT_HELLO

    # -- state --------------------------------------------------------------------
    @property
    def established(self) -> bool:
        return self._state == _ESTABLISHED

    @property
    def error(self) -> DispyError | None:
        return self._error

    # -- input --------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        return self._decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._check()
        try:
            self._decoder.buffer_updated(nbytes)
            self._drain_frames()
        except DispyError as exc:
            self._fail(exc)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in, read by read as a transport would deliver it (frames are
        handled between reads: a handshake frame may change how the next is judged)."""
        view = memoryview(data).cast("B")
        self._check()
        while view:
            with self.get_buffer() as target:
                n = min(len(target), len(view))
                target[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def next_message(self) -> Message | None:
        """The next message for the application, or None. Raises the connection's error
        once every message received before it has been handed out."""
        inbox = self._inbox
        if inbox:
            return inbox.popleft()
        if self._error is not None:
            raise self._error
        return None

    def eof(self) -> None:
        """The peer closed its side: a half-received frame or handshake is an error."""
        if self._error is None:
            if not self._decoder.idle:
                self._error = ProtocolError("peer closed the connection in the middle of a frame")
            elif self._state != _ESTABLISHED:
                self._error = ConnectionClosed(
                    "peer closed the connection during the handshake (another secret, "
                    "another protocol, or not a dispy peer)"
                )
            else:
                self._error = ConnectionClosed("peer closed the connection")
            self._decoder.release()  # nothing more arrives

    # -- output -------------------------------------------------------------------
    def send(self, msg: Message) -> list[Any]:
        """Frame ``msg``; returns the buffers to write, in order."""
        self._check()
        if self._state != _ESTABLISHED:
            raise ConnectionClosed("connection is not established yet")
        self._queue(msg, mac=self._use_mac)
        return self.data_to_send()

    def data_to_send(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    # -- internals ----------------------------------------------------------------
    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, exc: DispyError) -> None:
        if self._state != _ESTABLISHED and not self.initiator and not self._denied:
            # Tell the peer why, in a frame of the version it reads (its lowest, once known).
            self._queue(Denied(str(exc)), mac=False)
        self._error = exc
        self._decoder.release()  # every later call raises: what it holds is no use
        raise exc

    def _queue(self, msg: Message, *, mac: bool) -> None:
        parts, length = messages.encode(msg)
        header = pack_header(msg.TYPE, length, FLAG_MAC if mac else 0, self._version)
        self._out.append(header)
        self._out.extend(parts)
        if mac:
            self._out.append(auth.frame_mac(self._session, self._send_seq, [header, *parts]))
            self._send_seq += 1

    def _drain_frames(self) -> None:
        decoder = self._decoder
        while (frame := decoder.next_frame()) is not None:
            if self._state == _ESTABLISHED:
                self._verify_mac(frame)
                self._deliver(messages.decode(frame.type, frame.body))
            elif self._state == _SENT_PROOF and frame.type == Welcome.TYPE:
                # The responder's Welcome is its first frame under the session key.
                self._check_version(frame.version)
                self._verify_mac(frame)
                self._handshake(messages.decode(frame.type, frame.body), frame.version)
            else:
                self._handshake(messages.decode(frame.type, frame.body), frame.version)
            if decoder.stepwise:
                decoder.stepwise = self._state != _ESTABLISHED
                decoder.parse_pending()

    def _deliver(self, msg: Message) -> None:
        # Made on first use, as the decoder's frame queue: an unauthenticated connection
        # gets no message, and a flood of them should cost no more than it must.
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(msg)

    def _verify_mac(self, frame: Any) -> None:
        if not self._use_mac:
            return
        if not frame.flags & FLAG_MAC or len(frame.mac) != MAC_SIZE:
            raise AuthenticationError("frame without a MAC on an authenticated connection")
        expected = auth.frame_mac(self._session, self._recv_seq, [frame.header, frame.body])
        if not hmac.compare_digest(expected, frame.mac):
            raise AuthenticationError("frame MAC does not verify (tampered or replayed data)")
        self._recv_seq += 1

    def _check_version(self, version: int) -> None:
        if self.protocol is not None and version != self.protocol:
            raise ProtocolVersionError(
                f"peer sent a frame of dispy protocol version {version} after agreeing on "
                f"version {self.protocol}")

    def _me(self) -> compat.Speaker:
        return compat.Speaker(self.software, *self.protocols)

    def _refused(self, reason: str, version: int) -> DispyError:
        """The error for the responder's Denied (framed with ``version``)."""
        peer = compat.parse_tag(reason)
        if peer is None and not self.protocols[0] <= version <= self.protocols[1]:
            # A responder of an older release that doesn't speak our lowest version: its
            # frame's version is what it speaks.
            peer = compat.Speaker("", version, version)
        if peer is not None:
            self.peer_software = peer.software
            self.peer_protocols = (peer.lowest, peer.highest)
            if compat.agree(self.protocols, self.peer_protocols) is None:
                return ProtocolVersionError(compat.incompatibility(self._me(), peer, self.peer_name))
        return AuthenticationError(f"peer refused the connection: {reason}")

    def _agree(self, msg: Hello, version: int) -> None:
        """Responder: agree on a version with the initiator's Hello (framed with its
        lowest, naming its highest), or refuse it on both ends."""
        peer = compat.Speaker(msg.software, version, max(version, msg.protocol))
        self.peer_protocols = (peer.lowest, peer.highest)
        agreed = compat.agree(self.protocols, self.peer_protocols)
        if agreed is None:
            # The initiator's user reads the reason in its own terms, and a newer initiator
            # words its own from the tag; the Denied is framed in a version it reads.
            self._version = peer.lowest
            for_peer = compat.incompatibility(peer, self._me(), self.local_name)
            self._queue(Denied(for_peer + compat.tag(self._me())), mac=False)
            self._denied = True
            raise ProtocolVersionError(compat.incompatibility(self._me(), peer, self.peer_name))
        self.protocol = self._version = agreed
        self._decoder.versions = (agreed, agreed)

    def _handshake(self, msg: Message, version: int) -> None:
        if isinstance(msg, Denied):
            raise self._refused(msg.reason, version)
        if self._state == _START and isinstance(msg, Hello):
            self.peer_software = msg.software
            self._agree(msg, version)
            if msg.key_id:
                self._use_key(msg.key_id)
            self._peer_nonce = msg.nonce
            proof = auth.responder_proof(self._key, msg.nonce, self._nonce)
            self._queue(Challenge(self._nonce, proof), mac=False)
            self._state = _SENT_CHALLENGE
        elif self._state == _SENT_HELLO and isinstance(msg, Challenge):
            if not self.protocols[0] <= version <= self.protocols[1]:
                raise ProtocolVersionError(
                    f"the peer answered in dispy protocol version {version}, which this "
                    f"{self._me().package} doesn't speak ({self._me().protocols})")
            self.protocol = self._version = version
            self.peer_protocols = (version, version)  # at least: a responder states no range
            self._decoder.versions = (version, version)
            expected = auth.responder_proof(self._key, self._nonce, msg.nonce)
            if not auth.verify(expected, msg.proof):
                raise AuthenticationError(
                    "the peer does not know this secret (the secrets differ)"
                )
            self._peer_nonce = msg.nonce
            self._queue(Proof(auth.initiator_proof(self._key, self._nonce, msg.nonce)), mac=False)
            self._session = auth.session_key(self._key, self._nonce, msg.nonce)
            self._state = _SENT_PROOF
        elif self._state == _SENT_CHALLENGE and isinstance(msg, Proof):
            expected = auth.initiator_proof(self._key, self._peer_nonce, self._nonce)
            if not auth.verify(expected, msg.proof):
                raise AuthenticationError("authentication failed: the secrets differ")
            self._session = auth.session_key(self._key, self._peer_nonce, self._nonce)
            self._establish()
            self._queue(Welcome(self.software), mac=self._use_mac)
            self._deliver(Welcome(self.peer_software))
        elif self._state == _SENT_PROOF and isinstance(msg, Welcome):
            self._establish()
            self.peer_software = msg.software
            self._deliver(msg)
        else:
            raise ProtocolError(f"unexpected {type(msg).__name__} during the handshake")

    def _use_key(self, key_id: Any) -> None:
        found = self._keys(key_id) if self._keys is not None and isinstance(key_id, str) else None
        if not found or not found[0]:
            raise AuthenticationError(f"authentication failed: nothing here for key {key_id!r} "
                                      f"(the computation is not set up here, or was closed)")
        self.key_id = key_id
        self._key = auth.derive_key(found[0])
        self._use_mac = found[1] if self._frame_macs is None else self._frame_macs

    def _establish(self) -> None:
        self._state = _ESTABLISHED
        self._decoder.max_frame_size = self._max_frame_size
