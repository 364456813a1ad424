"""Serialization, config, datagrams and the public API pin."""

import pickle

import pytest

import dispy_core
from dispy_core import auth, config, serialization
from dispy_core.errors import AuthenticationError, ProtocolError


def test_public_api_is_pinned():
    assert sorted(dispy_core.__all__) == sorted([
        "__version__", "PROTOCOL_VERSION", "Connection", "JobStatus", "NodeStatus", "DispyError",
        "ConfigError", "ProtocolError", "FrameTooLarge", "ProtocolVersionError",
        "AuthenticationError", "ConnectionClosed", "PythonVersionError", "ComputationError"])


def test_lambdas_and_closures_travel():
    k = 3
    f = serialization.loads(serialization.dumps(lambda x: x * k))
    assert f(2) == 6


def test_large_buffers_travel_out_of_band():
    big = b"x" * (1 << 20)
    parts = serialization.dumps((big, bytearray(big), memoryview(big)))
    assert len(parts) == 5 and len(parts[0]) < 1000  # stream, kinds, 3 buffers: no copy
    assert parts[2] is big  # the caller's own bytes, not a copy
    a, b, c = serialization.loads(parts)
    assert a == big and isinstance(a, bytes) and b == bytearray(big) and bytes(c) == big


def test_small_bytes_stay_in_band():
    assert len(serialization.dumps(b"small")) == 1


def test_status_numbers_are_dispys():
    s = dispy_core.JobStatus
    assert (s.Created, s.Running, s.ProvisionalResult, s.Cancelled, s.Terminated, s.Abandoned,
            s.Finished) == (5, 6, 7, 8, 9, 10, 11)
    n = dispy_core.NodeStatus
    assert (n.Initialized, n.Closed, n.AvailInfo) == (4, 16, 17)


@pytest.mark.parametrize("text,n", [("0", 0), ("10", 10), ("10k", 10240), ("10M", 10 << 20),
                                    ("1.5g", 3 << 29), ("2t", 2 << 40), (" 7 ", 7), (5, 5)])
def test_parse_size(text, n):
    assert config.parse_size(text) == n


@pytest.mark.parametrize("text", ["", "-1", "10x", "k", "1.2.3", -4])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        config.parse_size(text)


def test_ports_follow_the_base():
    assert (config.client_port(), config.node_port(), config.scheduler_port()) == (9700, 9701, 9702)
    assert config.node_port(5000) == 5001
    old = config.DispyPort
    try:
        config.DispyPort = 6000
        assert config.node_port() == 6001
    finally:
        config.DispyPort = old


def test_datagrams_are_sealed():
    key = auth.derive_key("s")
    d = auth.seal_datagram(key, 30, b"body")
    assert auth.open_datagram(key, d) == (30, b"body")
    with pytest.raises(AuthenticationError):
        auth.open_datagram(auth.derive_key("other"), d)
    with pytest.raises(AuthenticationError):
        auth.open_datagram(key, d[:-33] + b"X" + d[-32:])
    with pytest.raises(ProtocolError):
        auth.open_datagram(key, pickle.dumps({"PING": 1}))
