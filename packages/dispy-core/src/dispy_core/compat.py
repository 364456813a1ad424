"""Which dispy protocol versions this release speaks, and how two peers agree on one.

Nodes, clients, schedulers and relays are upgraded one machine at a time, so every
connection starts by agreeing on a protocol version both ends speak. This module is the one
place that says which versions this tree speaks (:data:`PROTOCOL_LOWEST` ..
:data:`PROTOCOL_HIGHEST`), how a version is agreed (:func:`agree`) and what a refusal says
(:func:`incompatibility`); :class:`dispy_core.connection.Connection` applies it.

Protocol history (the ``ver`` byte of every frame header, see :mod:`dispy_core.framing`):

=====  =====================================================================================
ver    what changed
=====  =====================================================================================
1      the first protocol (dispy-core 0.1.0, with dispy-client, dispy-node, dispy-scheduler
       and dispy-relay 0.1.0). Releases after 0.1.0 still speak it: they state their version
       range and package in the handshake without any new field (see below), so 0.1.0 peers
       and newer ones work together.
=====  =====================================================================================

How the handshake carries the versions (rules every future protocol version keeps):

* The frame header and the handshake messages (Hello, Challenge, Proof, Welcome, Denied)
  keep their encoding in every protocol version, so any two releases can at least read
  each other's handshake.
* The initiator frames its Hello with the *lowest* version it speaks and puts the
  *highest* in ``Hello.protocol``. A 0.1.0 peer frames with 1 and says 1: it states 1..1.
  ``Hello.software`` and ``Welcome.software`` name the package and its version
  ("dispy-client 0.2.0 / Python 3.11.7").
* The responder agrees on the highest version both speak (:func:`agree`) and frames its
  Challenge and every later frame with it; the initiator takes the Challenge's version.
  A 0.1.0 responder does not read ``Hello.protocol`` and answers in version 1, which a
  newer initiator accepts as long as it still speaks 1.
* With no version in common, the responder sends a Denied framed with the initiator's
  lowest version (which the initiator reads, whatever its release), whose reason is the
  refusal worded for the initiator's user, followed by :func:`tag` (the responder's range
  and package), from which a newer initiator words its own message. An initiator whose
  lowest version a 0.1.0 responder doesn't speak gets that responder's old Denied, framed
  with version 1: the frame's version then says what the responder speaks.
* Discovery datagrams (DiscoverRequest/Reply, NodeAnnounce, a relay's announcements) have
  no room for versions: 0.1.0 receivers refuse unknown fields. Their magic ends with the
  datagram format (``DSPYD1``); a receiver logs a datagram of another format as from
  another release (``auth.open_datagram``) instead of as garbage. Every datagram is
  followed by a TCP connection, whose handshake agrees on a version or refuses loudly.
* 0.1.0 decoders refuse messages with unknown fields (``_fieldcheck``): new fields in a
  message sent to a peer that might be 0.1.0 need a new protocol version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "PROTOCOL_LOWEST",
    "PROTOCOL_HIGHEST",
    "PROTOCOL_HISTORY",
    "Speaker",
    "agree",
    "incompatibility",
    "tag",
    "parse_tag",
]

#: The oldest protocol version this release speaks.
PROTOCOL_LOWEST = 1
#: The newest protocol version this release speaks (what it uses with a peer that speaks it).
PROTOCOL_HIGHEST = 1
#: Each protocol version and the releases that introduced it (see the module docstring).
PROTOCOL_HISTORY: dict[int, str] = {
    1: "dispy-core 0.1.0 and the 0.1.0 releases of every dispy package",
}

# Program names in Hello.software and the distribution that installs each one.
_DISTRIBUTIONS = {
    "dispy-client": ("client", "dispy-client"),
    "dispyadmin": ("dispyadmin", "dispy-client"),
    "dispy-node": ("node", "dispy-node"),
    "dispynode": ("node", "dispy-node"),
    "dispyscheduler": ("dispyscheduler", "dispy-scheduler"),
    "dispy-scheduler": ("dispyscheduler", "dispy-scheduler"),
    "dispynetrelay": ("relay", "dispy-relay"),
    "dispy-relay": ("relay", "dispy-relay"),
}


@dataclass(frozen=True)
class Speaker:
    """One end of a connection: its software string and the protocol versions it speaks."""

    software: str  # as sent in Hello/Welcome: "dispy-node 0.2.0" or "dispy-client 0.2.0 / Python 3.11.7"
    lowest: int
    highest: int

    @property
    def package(self) -> str:
        """The program and its version ("dispy-node 0.2.0"), or words for an unknown one."""
        name = self.software.split(" / ")[0].strip()
        return name or "an older dispy release"

    @property
    def role(self) -> str:
        """What the peer is ("node", "client", "dispyscheduler"...), "peer" if unknown."""
        return _DISTRIBUTIONS.get(self.package.split(" ")[0], ("peer", ""))[0]

    @property
    def distribution(self) -> str:
        """The distribution to upgrade ("dispy-node"); "dispy" when the program is unknown."""
        return _DISTRIBUTIONS.get(self.package.split(" ")[0], ("", "dispy"))[1]

    @property
    def protocols(self) -> str:
        if self.lowest == self.highest:
            return f"protocol {self.lowest}"
        return f"protocols {self.lowest} to {self.highest}"


def agree(ours: tuple[int, int], theirs: tuple[int, int]) -> int | None:
    """The highest version in both ranges (lowest, highest), or None if they don't meet."""
    version = min(ours[1], theirs[1])
    return version if version >= max(ours[0], theirs[0]) else None


def incompatibility(ours: Speaker, peer: Speaker, peer_host: str = "") -> str:
    """Why ``ours`` and ``peer`` can't talk, for the user of ``ours``: both packages and
    protocol versions, and which to upgrade where. ``peer_host`` names the peer's machine."""
    where = peer_host or "the peer's machine"
    who = f"{peer.role} {peer_host}" if peer_host else f"the {peer.role}"
    if peer.highest < ours.lowest:
        return (f"{who} runs {peer.package} ({peer.protocols}); this {ours.package} needs "
                f"protocol {ours.lowest} or newer: upgrade {peer.distribution} on {where}")
    return (f"{who} runs {peer.package} ({peer.protocols}), which needs protocol {peer.lowest} "
            f"or newer; this {ours.package} speaks {ours.protocols}: upgrade {ours.distribution} "
            f"on this machine")


_TAG = re.compile(r" \[dispy handshake: protocols (\d{1,3})-(\d{1,3}), software (.{0,200})\]\Z")


def tag(speaker: Speaker) -> str:
    """What a refusing responder appends to its Denied reason: its range and package (not
    the rest of its software string: the peer has not authenticated)."""
    software = speaker.package.replace("]", ")")[:200]
    return f" [dispy handshake: protocols {speaker.lowest}-{speaker.highest}, software {software}]"


def parse_tag(reason: str) -> Speaker | None:
    """The responder described by a Denied reason's :func:`tag`, or None if it has none."""
    found = _TAG.search(reason)
    if found is None:
        return None
    return Speaker(found.group(3), int(found.group(1)), int(found.group(2)))
