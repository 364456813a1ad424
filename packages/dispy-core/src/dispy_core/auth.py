"""Authentication: HMAC-SHA256 challenge-response, per-frame MACs, sealed datagrams.

Handshake (the initiator is whoever opened the connection)::

    initiator                                   responder
    Hello(protocol, nonce_i, software)  ---->
                                        <----   Challenge(nonce_r, proof_r)
    checks proof_r
    Proof(proof_i)                      ---->
                                                checks proof_i
                                        <----   Welcome(software)  [first MACed frame]
                                      or <----  Denied(reason)

    K       = SHA-256("dispy-secret:" + secret)
    proof_r = HMAC(K, "responder" | nonce_i | nonce_r)
    proof_i = HMAC(K, "initiator" | nonce_i | nonce_r)
    session = HMAC(K, "session"   | nonce_i | nonce_r)

Both nonces are 32 fresh random bytes, so each side proves knowledge of the secret
against a challenge it did not choose: the secret never crosses the wire and a recorded
exchange can't be replayed. Both sides prove, so a client also learns that it talks to a
node holding the same secret. After the handshake, when a secret is set, every frame
carries ``HMAC(session, seq | header | body)`` truncated to 16 bytes, with a per-direction
sequence number (no replay, reorder or splice within a session). With an empty secret
there is nothing to authenticate against, so frames carry no MAC (the handshake still
runs, which checks protocol versions).

Discovery datagrams are sealed with ``HMAC(K, body)`` and carry a timestamp; receivers
drop datagrams older than a window. No datagram content is ever unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from .errors import AuthenticationError, ProtocolError, ProtocolVersionError
from .framing import MAC_SIZE

__all__ = [
    "derive_key",
    "new_nonce",
    "responder_proof",
    "initiator_proof",
    "session_key",
    "frame_mac",
    "verify",
    "seal_datagram",
    "open_datagram",
]

_SEQ = struct.Struct("!Q")


def derive_key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    return hashlib.sha256(b"dispy-secret:" + secret).digest()


def new_nonce() -> str:
    return os.urandom(32).hex()


def _prf(key: bytes, label: bytes, nonce_i: str, nonce_r: str) -> bytes:
    return hmac.digest(key, label + b"|" + nonce_i.encode() + b"|" + nonce_r.encode(), "sha256")


def responder_proof(key: bytes, nonce_i: str, nonce_r: str) -> str:
    return _prf(key, b"responder", nonce_i, nonce_r).hex()


def initiator_proof(key: bytes, nonce_i: str, nonce_r: str) -> str:
    return _prf(key, b"initiator", nonce_i, nonce_r).hex()


def session_key(key: bytes, nonce_i: str, nonce_r: str) -> bytes:
    return _prf(key, b"session", nonce_i, nonce_r)


def verify(expected: str, got: str) -> bool:
    return hmac.compare_digest(expected.encode(), got.encode())


def frame_mac(key: bytes, seq: int, parts: list) -> bytes:  # type: ignore[type-arg]
    """MAC of one frame: parts are the header followed by the body's buffers."""
    mac = hmac.new(key, _SEQ.pack(seq), "sha256")
    for part in parts:
        mac.update(part)
    return mac.digest()[:MAC_SIZE]


# -- datagrams ---------------------------------------------------------------------
# The magic's last byte is the datagram format (1 since dispy 0.1.0, see compat): 0.1.0
# receivers refuse unknown fields, so a datagram can't carry more without a new format.
_DGRAM_MAGIC = b"DSPYD1"
_DGRAM_TAG = 32


def seal_datagram(key: bytes, type_: int, body: bytes) -> bytes:
    """A datagram: magic, type byte, body, and HMAC(key, type | body)."""
    head = _DGRAM_MAGIC + bytes([type_])
    return head + body + hmac.digest(key, head + body, "sha256")


def open_datagram(key: bytes, data: bytes) -> tuple[int, bytes]:
    """Verify a sealed datagram; returns (type, body).

    Raises ProtocolError for something that isn't a dispy datagram and
    AuthenticationError when the tag doesn't match (another secret).
    """
    if len(data) < len(_DGRAM_MAGIC) + 1 + _DGRAM_TAG or not data.startswith(_DGRAM_MAGIC):
        if data[:5] == _DGRAM_MAGIC[:5] and len(data) > 5 and data[5:6] != _DGRAM_MAGIC[5:6]:
            raise ProtocolVersionError(
                f"a dispy datagram of format {data[5:6].decode('ascii', 'replace')!r} (this release "
                f"reads format {_DGRAM_MAGIC[5:].decode()}): the sender runs another dispy "
                f"release; upgrade the older one")
        raise ProtocolError("not a dispy datagram")
    head_body, tag = data[:-_DGRAM_TAG], data[-_DGRAM_TAG:]
    if not hmac.compare_digest(hmac.digest(key, head_body, "sha256"), tag):
        raise AuthenticationError("datagram not signed with this secret")
    return head_body[len(_DGRAM_MAGIC)], head_body[len(_DGRAM_MAGIC) + 1 :]
