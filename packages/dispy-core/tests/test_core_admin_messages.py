"""The admin protocol's messages (dispyadmin <-> dispynode): field bounds checked where a
frame is decoded, and the handshake keyed by the admin secret (Hello.key_id
ADMIN_KEY_ID): another secret, or a responder without one, is refused before any
request is read, and a replayed or altered request frame is refused too."""

import struct

import pytest

from dispy_core import codec
from dispy_core import messages as m
from dispy_core.connection import Connection
from dispy_core.errors import AuthenticationError, ProtocolError
from dispy_core.testing import pump, received


def body_of(fields: dict) -> memoryview:
    parts, _ = codec.encode_body(fields)
    return memoryview(b"".join(bytes(memoryview(p).cast("B")) for p in parts))


def test_admin_types_are_80_to_89():
    for cls in (m.AdminInfoRequest, m.AdminNodeInfo, m.AdminSetCpus, m.AdminSetServiceTimes,
                m.AdminSetServe, m.AdminRefused):
        assert 80 <= cls.TYPE <= 89
        assert cls.__name__ in m.__all__


@pytest.mark.parametrize("text", ["8:00", "08:00", "23:59", "00:00"])
def test_service_times_take_hh_mm(text):
    msg = m.decode(m.AdminSetServiceTimes.TYPE, body_of({"start": text, "stop": None, "end": "23:59"}))
    assert msg == m.AdminSetServiceTimes(text, None, "23:59")


@pytest.mark.parametrize("text", ["24:00", "12:60", "1200", "12:5", "", "12:00 ", "x" * 1000])
def test_service_times_refuse_other_text(text):
    with pytest.raises(ProtocolError, match=r"malformed AdminSetServiceTimes message: .*start.*HH:MM"):
        m.decode(m.AdminSetServiceTimes.TYPE, body_of({"start": text}))


@pytest.mark.parametrize("fields,name", [
    ({"cpus": 10**9}, "cpus"), ({"cpus": "2"}, "cpus"), ({"cpus": True}, "cpus"), ({}, "cpus"),
])
def test_set_cpus_bounds(fields, name):
    with pytest.raises(ProtocolError, match=f"malformed AdminSetCpus message: .*{name}"):
        m.decode(m.AdminSetCpus.TYPE, body_of(fields))


@pytest.mark.parametrize("serve", [-2, -(2**40), 2**64, 1.5])
def test_set_serve_bounds(serve):
    with pytest.raises(ProtocolError, match="malformed AdminSetServe message: .*serve"):
        m.decode(m.AdminSetServe.TYPE, body_of({"serve": serve}))
    assert m.decode(m.AdminSetServe.TYPE, body_of({"serve": -1})) == m.AdminSetServe(-1)


def test_node_info_round_trips_and_bounds_hold():
    info = m.AdminNodeInfo("n", "127.0.0.2", 9701, 2, 4, service_start="08:00", serve=3, clients=["1.2.3.4:5"],
                           avail_info=m.AvailInfo(50.0, 1 << 30, 1 << 31, 100.0), cpu_time=1.5)
    parts, _ = m.encode(info)
    assert m.decode(info.TYPE, memoryview(b"".join(bytes(memoryview(p).cast("B")) for p in parts))) == info
    for bad in ({"cpu_time": "1"}, {"port": 70000}, {"cpus": -1}, {"service_end": "25:00"}):
        fields = {"name": "n", "ip_addr": "x", "port": 1, "cpus": 1, "max_cpus": 1, **bad}
        with pytest.raises(ProtocolError, match="malformed AdminNodeInfo message"):
            m.decode(m.AdminNodeInfo.TYPE, body_of(fields))


# -- the handshake keyed by the admin secret --------------------------------------------------
def _responder(admin_secret: str) -> Connection:
    """A node's end: cluster secret "cluster", admin key as dispynode serves it."""
    def keys(key_id: str):
        if key_id != m.ADMIN_KEY_ID:
            return None
        if not admin_secret:
            raise AuthenticationError("node n takes no admin requests: it was started without --admin_secret")
        return admin_secret, True
    return Connection(initiator=False, secret="cluster", keys=keys)


def _admin(secret: str) -> Connection:
    return Connection(initiator=True, secret=secret, key_id=m.ADMIN_KEY_ID, frame_macs=True)


def test_admin_secret_authenticates_and_frames_carry_macs():
    a, b = _admin("adm"), _responder("adm")
    pump(a, b)
    assert [type(x) for x in received(a)] == [m.Welcome]
    assert [type(x) for x in received(b)] == [m.Welcome] and b.key_id == m.ADMIN_KEY_ID
    frame = b"".join(bytes(memoryview(p).cast("B")) for p in a.send(m.AdminSetCpus(1)))
    b.feed(frame)
    assert received(b) == [m.AdminSetCpus(1)]
    # the same frame again (a replay) is refused: its MAC is for an earlier sequence number
    with pytest.raises(AuthenticationError, match="MAC"):
        b.feed(frame)


def test_an_altered_request_is_refused():
    a, b = _admin("adm"), _responder("adm")
    pump(a, b)
    received(a), received(b)
    frame = bytearray(b"".join(bytes(memoryview(p).cast("B")) for p in a.send(m.AdminSetCpus(1))))
    at = frame.index(b"1}") if b"1}" in frame else len(frame) - 20
    frame[at] ^= 0x01  # cpus 1 -> 0
    with pytest.raises(AuthenticationError, match="MAC"):
        b.feed(bytes(frame))


def test_the_cluster_secret_is_not_the_admin_secret():
    a, b = _admin("cluster"), _responder("adm")
    with pytest.raises(AuthenticationError, match="secrets differ"):
        pump(a, b)
    assert received(b) == []


def test_a_node_without_admin_secret_says_so():
    a, b = _admin("adm"), _responder("")
    with pytest.raises(AuthenticationError, match="without --admin_secret"):
        pump(a, b)
    with pytest.raises(AuthenticationError, match="peer refused the connection: .*without --admin_secret"):
        a.feed(b"".join(bytes(memoryview(p).cast("B")) for p in b.data_to_send()))
        received(a)


def test_length_prefix_is_what_the_codec_makes():  # guards body_of above against codec changes
    assert struct.unpack("!I", bytes(body_of({"cpus": 1})[:4]))[0] > 0
