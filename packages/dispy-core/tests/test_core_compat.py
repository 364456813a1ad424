"""Protocol version negotiation in the handshake (dispy_core.compat), with connections
of other releases played by Connections given other protocol ranges."""

import pytest

from dispy_core import compat
from dispy_core import messages as m
from dispy_core.connection import Connection
from dispy_core.errors import AuthenticationError, ProtocolVersionError
from dispy_core.framing import HEADER, pack_header
from dispy_core.testing import pump, received


def wire(parts) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in parts)


def frame_versions(parts) -> list[int]:
    """The version byte of each frame in ``parts`` (one buffer per header, as queued)."""
    return [bytes(p)[4] for p in parts if len(p) == HEADER.size and bytes(p)[:4] == b"DSPY"]


def handshake(initiator: tuple[int, int], responder: tuple[int, int], secret: str = "s"):
    a = Connection(initiator=True, secret=secret, software="dispy-client 0.3.0 / Python 3.13.0",
                   protocols=initiator, peer_name="127.0.0.2")
    b = Connection(initiator=False, secret=secret, software="dispy-node 0.2.0",
                   protocols=responder, peer_name="127.0.0.1")
    b.local_name = "127.0.0.2"
    return a, b


def test_agree_picks_the_highest_common_version():
    assert compat.agree((1, 1), (1, 1)) == 1
    assert compat.agree((1, 3), (2, 5)) == 3
    assert compat.agree((2, 2), (1, 4)) == 2
    assert compat.agree((1, 1), (2, 3)) is None
    assert compat.agree((4, 6), (1, 3)) is None


def test_this_release_speaks_protocol_1_which_0_1_0_speaks():
    # 0.1.0 releases speak exactly 1: dropping it breaks every baseline peer.
    assert compat.PROTOCOL_LOWEST <= 1 <= compat.PROTOCOL_HIGHEST
    assert set(compat.PROTOCOL_HISTORY) == set(range(1, compat.PROTOCOL_HIGHEST + 1))


@pytest.mark.parametrize("initiator, responder, agreed", [
    ((1, 1), (1, 1), 1),
    ((1, 2), (1, 1), 1),  # a newer client, an older node
    ((1, 1), (1, 2), 1),  # an older client, a newer node
    ((1, 3), (2, 4), 3),
    ((2, 4), (1, 3), 3),
])
def test_peers_of_other_releases_agree_and_use_the_version(initiator, responder, agreed):
    a, b = handshake(initiator, responder)
    hello = a.data_to_send()
    assert frame_versions(hello) == [initiator[0]]  # framed with its lowest
    b.feed(wire(hello))
    pump(a, b)
    assert a.established and b.established
    assert a.protocol == b.protocol == agreed
    assert b.peer_protocols == initiator
    assert isinstance(received(a)[0], m.Welcome) and isinstance(received(b)[0], m.Welcome)
    assert a.peer_software == "dispy-node 0.2.0"
    assert b.peer_software == "dispy-client 0.3.0 / Python 3.13.0"
    out = a.send(m.InfoRequest())
    assert frame_versions(out) == [agreed]
    b.feed(wire(out))
    assert received(b) == [m.InfoRequest()]


def test_a_frame_of_another_version_after_agreeing_is_refused():
    a, b = handshake((1, 2), (1, 2))
    pump(a, b)
    received(a), received(b)
    data = bytearray(wire(a.send(m.InfoRequest())))
    data[4] = 1
    with pytest.raises(ProtocolVersionError, match="version 1 where version 2 was expected"):
        b.feed(bytes(data))


def test_peer_too_old_is_refused_on_both_sides_naming_both_versions():
    # A client that needs protocol 2 or newer, a node that speaks only 1.
    a, b = handshake((2, 3), (1, 1))
    with pytest.raises(ProtocolVersionError) as node_side:
        b.feed(wire(a.data_to_send()))  # the responder refuses at the Hello
    assert str(node_side.value) == (
        "client 127.0.0.1 runs dispy-client 0.3.0 (protocols 2 to 3), which needs protocol 2 or "
        "newer; this dispy-node 0.2.0 speaks protocol 1: upgrade dispy-node on this machine")
    denied = b.data_to_send()
    assert frame_versions(denied) == [2]  # the version the initiator reads
    with pytest.raises(ProtocolVersionError) as client_side:
        a.feed(wire(denied))
    assert str(client_side.value) == (
        "node 127.0.0.2 runs dispy-node 0.2.0 (protocol 1); this dispy-client 0.3.0 needs "
        "protocol 2 or newer: upgrade dispy-node on 127.0.0.2")
    assert not a.established and not b.established


def test_peer_speaking_only_a_future_protocol_is_refused():
    a, b = handshake((99, 99), (1, 1))
    with pytest.raises(ProtocolVersionError, match=r"\(protocol 99\).*upgrade dispy-node on this machine"):
        b.feed(wire(a.data_to_send()))
    with pytest.raises(ProtocolVersionError) as client_side:
        a.feed(wire(b.data_to_send()))
    assert "dispy-node 0.2.0 (protocol 1)" in str(client_side.value)
    assert "upgrade dispy-node on 127.0.0.2" in str(client_side.value)


def test_an_old_initiator_reads_the_refusal_in_its_own_terms():
    # What a 0.1.0 client shows: "peer refused the connection: <reason>"; the reason is
    # worded for it (it is the one to upgrade) and names both packages.
    a, b = handshake((1, 1), (2, 2))
    with pytest.raises(ProtocolVersionError):
        b.feed(wire(a.data_to_send()))
    denied = b.data_to_send()
    assert frame_versions(denied) == [1]
    reason = m.decode(m.Denied.TYPE, memoryview(wire(denied))[HEADER.size:]).reason
    assert reason.startswith(
        "node 127.0.0.2 runs dispy-node 0.2.0 (protocol 2), which needs protocol 2 or newer; "
        "this dispy-client 0.3.0 speaks protocol 1: upgrade dispy-client on this machine")
    assert compat.parse_tag(reason) == compat.Speaker("dispy-node 0.2.0", 2, 2)


def test_refusal_of_a_responder_without_a_range_uses_its_frame_version():
    # A 0.1.0 responder refuses a Hello it can't read with its own Denied, framed with 1.
    a = Connection(initiator=True, software="dispy-client 0.4.0", protocols=(2, 2), peer_name="10.0.0.9")
    a.data_to_send()
    old = m.Denied("peer speaks dispy protocol version 2, this program speaks version 1; "
                   "install matching dispy releases")
    parts, length = m.encode(old)
    with pytest.raises(ProtocolVersionError) as exc:
        a.feed(pack_header(m.Denied.TYPE, length, 0, 1) + wire(parts))
    assert str(exc.value) == ("peer 10.0.0.9 runs an older dispy release (protocol 1); this dispy-client "
                              "0.4.0 needs protocol 2 or newer: upgrade dispy on 10.0.0.9")


def test_other_refusals_stay_authentication_errors():
    a, b = handshake((1, 1), (1, 1))
    b = Connection(initiator=False, secret="other")
    with pytest.raises(AuthenticationError):
        pump(a, b)


def test_a_responder_answering_in_a_version_never_offered_is_refused():
    a, b = handshake((2, 3), (2, 3))
    b.feed(wire(a.data_to_send()))
    challenge = bytearray(wire(b.data_to_send()))
    challenge[4] = 7
    with pytest.raises(ProtocolVersionError, match="version 7"):
        a.feed(bytes(challenge))


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError):
        Connection(initiator=True, protocols=(2, 1))
    with pytest.raises(ValueError):
        Connection(initiator=True, protocols=(0, 1))


def test_a_datagram_of_another_format_is_named_as_such():
    from dispy_core import auth
    from dispy_core.errors import ProtocolError

    key = auth.derive_key("s")
    sealed = auth.seal_datagram(key, 30, b"{}")
    assert auth.open_datagram(key, sealed) == (30, b"{}")
    with pytest.raises(ProtocolVersionError, match="format '2'.*reads format 1"):
        auth.open_datagram(key, b"DSPYD2" + sealed[6:])
    with pytest.raises(ProtocolError, match="not a dispy datagram"):
        auth.open_datagram(key, b"XXXXX1" + sealed[6:])
