"""Message bodies: JSON control fields, out-of-line blobs, malformed input."""

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy_core import messages as m
from dispy_core.codec import decode_body, encode_body
from dispy_core.errors import ProtocolError


def roundtrip(msg):
    parts, n = m.encode(msg)
    body = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    assert len(body) == n
    return m.decode(msg.TYPE, memoryview(body))


def test_nested_records_and_blobs_roundtrip():
    spec = m.JobSpec(3, [b"pickle", bytearray(b"buf")], [m.FileData("a.txt", b"data", 0o600, 1.5)])
    got = roundtrip(m.SubmitJobs("cid", [spec]))
    job = got.jobs[0]
    assert job.job_id == 3 and [bytes(x) for x in job.args] == [b"pickle", b"buf"]
    assert isinstance(job.files[0], m.FileData) and bytes(job.files[0].data) == b"data"


def test_blobs_are_not_copied_into_json():
    parts, _ = encode_body({"x": b"\xff" * 100})
    assert b"\xff" not in parts[1]  # the JSON part


def test_pickle_buffer_is_accepted_as_a_blob():
    parts, _ = encode_body({"x": pickle.PickleBuffer(bytearray(b"abc"))})
    assert bytes(parts[-1]) == b"abc"


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: not k.startswith("$")),
                       st.one_of(st.integers(), st.text(), st.booleans(), st.none(),
                                 st.floats(allow_nan=False), st.binary())))
def test_any_control_dict_roundtrips(d):
    parts, _ = encode_body(d)
    got = decode_body(memoryview(b"".join(bytes(memoryview(p).cast("B")) for p in parts)))
    assert {k: bytes(v) if isinstance(v, memoryview) else v for k, v in got.items()} == d


@pytest.mark.parametrize("body", [b"", b"\0\0\0\5\0\0\0\0{}", b"\0\0\0\2\0\0\0\0[]",
                                  b"\0\0\0\2\0\0\0\1\0\0\0\0\0\0\0\x09{}", b"\0\0\0\2\0\0\0\0{}xx",
                                  b'\0\0\0\x10\0\0\0\0{"$t":"Nope"}xxx'])
def test_malformed_bodies_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        decode_body(memoryview(body))


def test_wrong_fields_are_protocol_errors():
    parts, _ = encode_body({"bogus": 1})
    with pytest.raises(ProtocolError, match="malformed InfoRequest"):
        m.decode(m.InfoRequest.TYPE, memoryview(b"".join(bytes(p) for p in parts)))


def test_message_types_are_unique_and_frozen():
    types = m.message_types()
    assert len(types) == len({c.__name__ for c in types.values()})
    with pytest.raises((AttributeError, TypeError)):  # frozen (3.11 raises TypeError)
        m.ErrorReport("x").reason = "y"
