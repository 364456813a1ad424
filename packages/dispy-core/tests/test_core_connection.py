"""Handshake, per-frame MACs and error reporting, with two connections piped in memory."""

import pytest

from dispy_core import messages as m
from dispy_core import serialization
from dispy_core.connection import HANDSHAKE_FRAME_LIMIT, Connection
from dispy_core.errors import AuthenticationError, FrameTooLarge, ProtocolError, ProtocolVersionError
from dispy_core.framing import pack_header
from dispy_core.testing import connected_pair, pump, received


def wire(parts) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in parts)


@pytest.mark.parametrize("secret", ["", "s3cret"])
def test_handshake_then_messages_both_ways(secret):
    a, b = connected_pair(secret)
    assert a.established and b.established
    assert a.peer_software == "test-responder" and b.peer_software == "test-initiator"
    b.feed(wire(a.send(m.InfoRequest())))
    assert received(b) == [m.InfoRequest()]
    info = m.NodeInfo("n", "127.0.0.1", 9701, 2, 2, "Linux", "3.11.7", "dispy-node",
                      m.AvailInfo(50.0, 1 << 30, 1 << 32, 100.0))
    a.feed(wire(b.send(info)))
    assert received(a) == [info]


def test_welcome_is_first_message_on_both_sides():
    a = Connection(initiator=True, secret="x")
    b = Connection(initiator=False, secret="x")
    pump(a, b)
    assert [type(x) for x in received(a)] == [m.Welcome]
    assert [type(x) for x in received(b)] == [m.Welcome]


def test_wrong_secret_fails_on_both_sides_and_secret_never_sent():
    a = Connection(initiator=True, secret="right-secret")
    b = Connection(initiator=False, secret="wrong-secret")
    hello = wire(a.data_to_send())
    assert b"secret" not in hello
    b.feed(hello)
    challenge = wire(b.data_to_send())
    assert b"wrong-secret" not in challenge
    with pytest.raises(AuthenticationError, match="secrets differ"):
        a.feed(challenge)
    with pytest.raises(AuthenticationError):
        a.next_message()


def test_responder_tells_initiator_why_it_refuses():
    # An initiator that skips the proof check (an attacker) still gets refused.
    a = Connection(initiator=True, secret="a")
    b = Connection(initiator=False, secret="b")
    b.feed(wire(a.data_to_send()))
    b.data_to_send()
    bogus = m.Proof("00" * 32)
    parts, n = m.encode(bogus)
    with pytest.raises(AuthenticationError):
        b.feed(pack_header(m.Proof.TYPE, n) + wire(parts))
    denied = wire(b.data_to_send())
    c = Connection(initiator=True, secret="a")
    c.data_to_send()
    with pytest.raises(AuthenticationError, match="refused"):
        c.feed(denied)


def test_nothing_but_handshake_before_auth():
    b = Connection(initiator=False, secret="x")
    parts, n = m.encode(m.SubmitJobs("c", []))
    with pytest.raises(ProtocolError, match="unexpected SubmitJobs"):
        b.feed(pack_header(m.SubmitJobs.TYPE, n) + wire(parts))


def test_handshake_frames_are_small():
    b = Connection(initiator=False)
    with pytest.raises(FrameTooLarge):
        b.feed(pack_header(m.Hello.TYPE, HANDSHAKE_FRAME_LIMIT + 1))


def test_tampered_frame_is_rejected():
    a, b = connected_pair("k")
    data = bytearray(wire(a.send(m.ErrorReport("hello"))))
    data[-20] ^= 1  # flip a body bit
    with pytest.raises(AuthenticationError, match="MAC"):
        b.feed(bytes(data))


def test_replayed_frame_is_rejected():
    a, b = connected_pair("k")
    data = wire(a.send(m.ErrorReport("once")))
    b.feed(data)
    assert received(b) == [m.ErrorReport("once")]
    with pytest.raises(AuthenticationError):
        b.feed(data)


def test_version_mismatch_is_explained_to_the_peer():
    # A Hello framed with version 2 states that its sender speaks 2 or newer.
    a = Connection(initiator=True, software="dispy-client 9.0.0")
    hello = bytearray(wire(a.data_to_send()))
    hello[4] = 2
    b = Connection(initiator=False, software="dispy-node 0.5.0")
    with pytest.raises(ProtocolVersionError, match=r"dispy-client 9\.0\.0 \(protocol 2\).*"
                                                   r"dispy-node 0\.5\.0 speaks protocol 1"):
        b.feed(bytes(hello))
    assert b"dispy-node 0.5.0" in wire(b.data_to_send())


def test_large_payload_survives_with_mac():
    a, b = connected_pair("k")
    big = bytes(range(256)) * 40000  # ~10 MB
    msg = m.SubmitJobs("c", [m.JobSpec(1, serialization.dumps(((big,), {})))])
    b.feed(wire(a.send(msg)))
    (got,) = received(b)
    (args, kwargs) = serialization.loads(got.jobs[0].args)
    assert args[0] == big and kwargs == {}


def test_unknown_message_type_is_a_protocol_error():
    a, b = connected_pair()
    with pytest.raises(ProtocolError, match="unknown message type 250"):
        b.feed(pack_header(250, 8) + b"\0" * 8)


def test_frame_macs_can_be_turned_off_but_the_handshake_still_checks_the_secret():
    a = Connection(initiator=True, secret="token", frame_macs=False)
    b = Connection(initiator=False, secret="token", frame_macs=False)
    pump(a, b)
    received(a), received(b)
    data = wire(a.send(m.ErrorReport("x")))
    assert len(data) == 16 + len(wire(m.encode(m.ErrorReport("x"))[0]))  # no MAC tag
    b.feed(data)
    assert received(b) == [m.ErrorReport("x")]
    c = Connection(initiator=True, secret="guess", frame_macs=False)
    d = Connection(initiator=False, secret="token", frame_macs=False)
    with pytest.raises(AuthenticationError):
        pump(c, d)


def test_a_key_id_authenticates_with_the_key_it_names_instead_of_the_secret():
    keys = {"comp-1": ("key one", True)}
    a = Connection(initiator=True, secret="key one", software="attacher", key_id="comp-1")
    b = Connection(initiator=False, secret="node secret", software="node", keys=keys.get)
    pump(a, b)
    assert a.established and b.established and b.key_id == "comp-1"
    received(a), received(b)
    b.feed(wire(a.send(m.Attach("comp-1"))))
    assert received(b) == [m.Attach("comp-1")]
    plain = Connection(initiator=False, secret="node secret", software="node", keys=keys.get)
    c = Connection(initiator=True, secret="node secret", software="client")
    pump(c, plain)
    assert plain.established and plain.key_id == ""  # the secret still works without a key_id


@pytest.mark.parametrize("key_id,key,keys", [
    ("comp-1", "not key one", {"comp-1": ("key one", True)}.get),  # the wrong key
    ("comp-2", "key one", {"comp-1": ("key one", True)}.get),  # nothing by that name
    ("comp-1", "key one", None),  # a responder that takes no keys
    ("comp-1", "node secret", {"comp-1": ("key one", True)}.get),  # the responder's secret is not the key
])
def test_a_key_id_with_the_wrong_key_or_no_such_key_is_refused(key_id, key, keys):
    a = Connection(initiator=True, secret=key, key_id=key_id)
    b = Connection(initiator=False, secret="node secret", keys=keys)
    with pytest.raises(AuthenticationError):
        pump(a, b)
    assert not b.established


def test_a_key_may_come_without_frame_macs_when_both_ends_say_so():
    a = Connection(initiator=True, secret="key one", key_id="comp-1", frame_macs=False)
    b = Connection(initiator=False, secret="node secret", keys={"comp-1": ("key one", False)}.get)
    pump(a, b)
    received(a), received(b)
    sent = wire(a.send(m.Attach("comp-1")))
    assert len(sent) == len(wire(m.encode(m.Attach("comp-1"))[0])) + len(pack_header(m.Attach.TYPE, 0))  # no MAC
    b.feed(sent)
    assert received(b) == [m.Attach("comp-1")]


@pytest.mark.parametrize("secret", ["", "k"])
def test_a_large_frame_in_the_same_read_as_the_welcome_is_taken(secret):
    # The responder's Welcome and its first message may reach the initiator in one read;
    # that message is judged by the limit of an established connection, not the
    # handshake's 4 KiB.
    a = Connection(initiator=True, secret=secret)
    b = Connection(initiator=False, secret=secret)
    b.feed(wire(a.data_to_send()))  # Hello
    a.feed(wire(b.data_to_send()))  # Challenge
    b.feed(wire(a.data_to_send()))  # Proof
    welcome = wire(b.data_to_send())
    assert b.established
    big = m.ErrorReport("x" * (4 * HANDSHAKE_FRAME_LIMIT))
    a.feed(welcome + wire(b.send(big)))
    assert [type(x) for x in received(a)] == [m.Welcome, m.ErrorReport]
