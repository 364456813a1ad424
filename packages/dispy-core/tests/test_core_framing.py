"""Framing: headers, limits, incremental and zero-copy receipt."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy_core.errors import FrameTooLarge, ProtocolError, ProtocolVersionError
from dispy_core.framing import FLAG_MAC, HEADER, MAC_SIZE, MAGIC, FrameDecoder, pack_header


def frame(type_: int, body: bytes, mac: bytes = b"") -> bytes:
    return pack_header(type_, len(body), FLAG_MAC if mac else 0) + body + mac


def test_header_layout_is_16_bytes_big_endian():
    assert HEADER.size == 16
    h = pack_header(7, 0x0102030405, FLAG_MAC)
    assert h[:4] == MAGIC and h[5] == 7 and struct.unpack("!Q", h[8:]) == (0x0102030405,)


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=3000)), max_size=8),
       st.lists(st.integers(1, 700), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_any_split_of_the_stream_gives_the_same_frames(frames, cuts):
    stream = b"".join(frame(t, b) for t, b in frames)
    dec = FrameDecoder(1 << 20)
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        dec.feed(stream[pos:pos + n])
        pos += n
        i += 1
    got = []
    while (f := dec.next_frame()) is not None:
        got.append((f.type, bytes(f.body)))
    assert got == frames
    assert dec.idle


def test_large_frame_is_received_in_place():
    body = bytes(range(256)) * 4096  # 1 MiB, larger than the staging area
    dec = FrameDecoder(1 << 24)
    data = frame(3, body, b"m" * MAC_SIZE)
    pos = 0
    while pos < len(data):  # imitate recv_into (asyncio drops each view before the next)
        with dec.get_buffer() as buf:
            n = min(len(buf), 65536, len(data) - pos)
            buf[:n] = data[pos:pos + n]
        dec.buffer_updated(n)
        pos += n
    f = dec.next_frame()
    assert f.type == 3 and bytes(f.body) == body and f.mac == b"m" * MAC_SIZE


def test_oversized_frame_is_refused_from_its_header_alone():
    dec = FrameDecoder(1000)
    with pytest.raises(FrameTooLarge, match="1001 bytes exceeds the limit of 1000"):
        dec.feed(pack_header(1, 1001))


def test_garbage_is_refused():
    with pytest.raises(ProtocolError, match="not a dispy frame"):
        FrameDecoder(1000).feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_other_protocol_version_names_both():
    data = bytearray(pack_header(1, 0))
    data[4] = 9
    with pytest.raises(ProtocolVersionError, match="version 9.*version 1"):
        FrameDecoder(1000).feed(bytes(data))
