"""Received fields are checked where a frame is decoded (messages.decode): wrong types,
out-of-range values and deep nesting are ProtocolErrors naming the field, never another
exception later; the handshake answers such a Hello with Denied."""

import math
import struct
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy_core import codec
from dispy_core import messages as m
from dispy_core.connection import Connection
from dispy_core.errors import DispyError, ProtocolError
from dispy_core.framing import pack_header


def wire(parts) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in parts)


def raw_body(text: bytes) -> memoryview:
    return memoryview(struct.pack("!II", len(text), 0) + text)


def body_of(fields: dict) -> memoryview:
    parts, _ = codec.encode_body(fields)
    return memoryview(wire(parts))


def frame(type_: int, fields: dict) -> bytes:
    body = bytes(body_of(fields))
    return pack_header(type_, len(body), 0) + body


MESSAGES = sorted(m.message_types().values(), key=lambda c: c.TYPE)

# Any JSON value the codec can carry, wrong types and non-finite numbers included.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _type_ok(tp, v) -> bool:
    """An independent, plain reading of what a decoded field may hold (the test's oracle)."""
    if tp is typing.Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        if args[0] is typing.Any:  # a blob or text-or-blob
            return isinstance(v, (memoryview, str))
        if origin is typing.Annotated and typing.get_origin(args[0]) is list:  # a payload
            return type(v) is list and all(isinstance(b, memoryview) for b in v)
        return _type_ok(args[0], v)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return any(_type_ok(a, v) for a in args)
    if tp is type(None):
        return v is None
    if origin is list:
        return type(v) is list and all(_type_ok(args[0], x) for x in v)
    if origin is dict:
        return type(v) is dict and all(_type_ok(args[1], x) for x in v.values())
    if tp is float:
        return type(v) in (int, float) and math.isfinite(v)
    if tp is int:
        return type(v) is int
    return type(v) is tp


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_with_random_fields_decodes_typed_or_is_a_protocol_error(cls, data):
    names = list(cls.__dispy_fields__)
    fields = data.draw(st.dictionaries(st.sampled_from([*names, "other"]), json_values, max_size=len(names) + 1))
    try:
        msg = m.decode(cls.TYPE, body_of(fields))
    except ProtocolError as exc:
        assert str(exc).startswith(f"malformed {cls.__name__} message: ")
        return
    hints = typing.get_type_hints(cls, include_extras=True)
    for name in names:
        assert _type_ok(hints[name], getattr(msg, name)), (name, getattr(msg, name))


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_a_wrong_type_in_each_field_is_named(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    for name in cls.__dispy_fields__:
        if hints[name] is typing.Any:
            continue
        wrong = [] if hints[name] in (str, int, float, bool) else 12345.5
        with pytest.raises(ProtocolError, match=f"malformed {cls.__name__} message: .*{name}"):
            m.decode(cls.TYPE, body_of({name: wrong}))


def test_the_complaint_names_message_field_and_types():
    with pytest.raises(ProtocolError, match=r"^malformed Hello message: nonce must be a string, got int$"):
        m.decode(m.Hello.TYPE, body_of({"protocol": 1, "nonce": 123, "software": "x"}))
    with pytest.raises(ProtocolError, match=r"acks\[1\] must be an integer, got str"):
        m.decode(m.SubmitJobs.TYPE, body_of({"compute_id": "c", "jobs": [], "acks": [1, "2"]}))
    with pytest.raises(ProtocolError, match="port must be an integer from 0 to 65535, got 70000"):
        m.decode(m.NodeAnnounce.TYPE, body_of({"time": 1.0, "ip_addr": "a", "port": 70000, "name": "", "cpus": 1}))
    with pytest.raises(ProtocolError, match="missing field nonce"):
        m.decode(m.Hello.TYPE, body_of({"protocol": 1, "software": "x"}))
    with pytest.raises(ProtocolError, match="unknown field 'extra'"):
        m.decode(m.Proof.TYPE, body_of({"proof": "ab", "extra": 1}))


@pytest.mark.parametrize("mtime", [math.inf, -math.inf, math.nan, 1e300, -1e300, 10**30])
def test_file_times_the_os_cant_take_are_refused(mtime):
    file = m.FileData("out.txt", b"data", 0o644, mtime)
    with pytest.raises(ProtocolError, match=r"malformed JobFile message: in a FileData record, mtime must be"):
        m.decode(m.JobFile.TYPE, body_of({"compute_id": "c", "job_id": 1, "path": "out.txt", "file": file}))
    with pytest.raises(ProtocolError, match="mtime"):
        m.decode(m.SendFile.TYPE, body_of({"compute_id": "c", "file": file}))


def test_real_file_records_still_decode():
    file = m.FileData("out.txt", b"data", 0o600, 1_700_000_000.25)
    msg = m.decode(m.JobFile.TYPE, body_of({"compute_id": "c", "job_id": 1, "path": "d/out.txt", "file": file}))
    assert isinstance(msg, m.JobFile) and msg.file.mtime == 1_700_000_000.25 and bytes(msg.file.data) == b"data"
    digest = m.FileDigest("a", 3, 0, "ab" * 32)  # an int time is a number too
    assert m.decode(m.FilesQuery.TYPE, body_of({"dest_path": "x", "files": [digest]})) == m.FilesQuery("x", [digest])


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_bodies_are_protocol_errors(opener):
    closer = "]" if opener == "[" else "}"
    deep = opener * 100_000 + "1" + closer * 100_000
    text = ('{"protocol":1,"nonce":"ab","software":' + deep + "}").encode()
    with pytest.raises(ProtocolError, match="nested too deeply"):
        m.decode(m.Hello.TYPE, raw_body(text))


def test_any_fields_are_bounded_in_depth():
    value: object = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(ProtocolError, match="arg must be a JSON value nested at most 32 deep"):
        m.decode(m.NodeRequest.TYPE, body_of({"compute_id": "c", "req_id": 1, "op": "x", "arg": value}))
    shallow = {"nodes": [{"host": "h", "port": 1, "files": []}]}
    assert m.decode(m.NodeRequest.TYPE, body_of({"compute_id": "c", "req_id": 1, "op": "x", "arg": shallow})).arg == shallow


@pytest.mark.parametrize("text", [
    b'{"proof":{"$b":0}}',  # a blob that is not there
    b'{"proof":{"$b":"0"}}',
    b'{"proof":{"$t":["Proof"]}}',
    b'{"proof":"\\ud800"}',  # a lone surrogate: not hex, and not a str os/auth can encode
    b'{"proof":NaN}',
])
def test_odd_json_is_a_protocol_error(text):
    with pytest.raises(ProtocolError, match="malformed Proof message"):
        m.decode(m.Proof.TYPE, raw_body(text))


# -- the handshake answers malformed messages with Denied ------------------------------------
@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["protocol", "nonce", "software", "key_id"]), value=json_values)
def test_a_hello_with_a_wrong_field_is_denied_not_a_crash(field, value):
    hello = {"protocol": 1, "nonce": "ab" * 32, "software": "x", "key_id": "", field: value}
    responder = Connection(initiator=False, secret="s")
    try:
        responder.feed(frame(m.Hello.TYPE, hello))
    except DispyError as exc:
        (denied,) = _frames(wire(responder.data_to_send()))
        assert isinstance(denied, m.Denied) and denied.reason == str(exc)
    else:  # it was valid after all: the handshake goes on with a Challenge
        assert [type(x) for x in _frames(wire(responder.data_to_send()))] == [m.Challenge]


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["nonce", "proof"]), value=json_values)
def test_a_challenge_with_a_wrong_field_is_a_protocol_error_for_the_initiator(field, value):
    initiator = Connection(initiator=True, secret="s")
    initiator.data_to_send()
    challenge = {"nonce": "ab" * 32, "proof": "cd" * 32, field: value}
    with pytest.raises(DispyError):  # ProtocolError, or AuthenticationError for a well-formed wrong proof
        initiator.feed(frame(m.Challenge.TYPE, challenge))


def _frames(data: bytes) -> list:
    from dispy_core.framing import FrameDecoder

    dec = FrameDecoder(1 << 20)
    dec.feed(data)
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(m.decode(f.type, f.body))
    return out


def test_hello_with_nonce_123_gets_denied_naming_the_field():
    responder = Connection(initiator=False)
    with pytest.raises(ProtocolError, match="nonce must be a string, got int"):
        responder.feed(frame(m.Hello.TYPE, {"protocol": 1, "nonce": 123, "software": "x"}))
    (denied,) = _frames(wire(responder.data_to_send()))
    assert isinstance(denied, m.Denied) and "nonce must be a string, got int" in denied.reason


def test_every_message_and_record_class_has_a_decoder_check():
    from dispy_core._fieldcheck import record_builder

    for cls in codec.REGISTRY.values():
        record_builder(cls)  # raises TypeError for an annotation it can't check


def test_relay_nodes_round_trip_and_checks():
    msg = m.RelayNodes([m.RelayedNode("10.2.0.11", 9701, "n1", 4), m.RelayedNode("10.2.0.12", 9701)], "relay")
    parts, _ = m.encode(msg)
    assert m.decode(m.RelayNodes.TYPE, memoryview(b"".join(bytes(p) for p in parts))) == msg
    assert m.RelayNodes.TYPE >= 70  # the relay's numbers
    parts, _ = m.encode(m.RelayNodes([m.RelayedNode("a", 70000)]))
    with pytest.raises(ProtocolError, match="in a RelayedNode record, port must be an integer from 0 to 65535"):
        m.decode(m.RelayNodes.TYPE, memoryview(b"".join(bytes(p) for p in parts)))
