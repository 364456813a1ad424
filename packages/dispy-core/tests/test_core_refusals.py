"""RefusalLog: refused connections and datagrams logged, then summarised, per reason."""

import logging

from dispy_core.errors import DispyError, ProtocolError
from dispy_core.refusals import RefusalLog, reason_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_are_logged_then_summarised(caplog):
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("test.refusals"), burst=3, interval=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.refusals"):
        for i in range(1200):
            refusals.refused("not a dispy frame", "closed connection %d: garbage", i)
        for i in range(34):
            refusals.refused("authentication failed", "closed connection %d: secrets differ", i)
        assert len(caplog.records) == 6  # 3 per reason, the rest counted
        clock.now += 61
        refusals.refused("not a dispy frame", "closed connection %d: garbage", 9999)  # ends the minute
    lines = [r.getMessage() for r in caplog.records]
    assert lines[6] == ("1,234 connections refused in the last minute (6 logged above): "
                        "not a dispy frame (1,200), authentication failed (34)")
    assert len(lines) == 7  # the flood goes on: the next one is counted, not written
    caplog.clear()
    with caplog.at_level(logging.WARNING, "test.refusals"):
        refusals.flush()
        assert [r.getMessage() for r in caplog.records] == [
            "1 connection refused in the last 0 s: not a dispy frame (1)"]
        clock.now += 61
        refusals.flush()  # a quiet interval: nothing to say, and the counts start again
        refusals.refused("authentication failed", "closed connection %s", "again")
    assert [r.getMessage() for r in caplog.records][-1] == "closed connection again"


def test_refusal_reasons():
    from dispy_core.errors import AuthenticationError, ConnectionClosed, FrameTooLarge, ProtocolVersionError

    assert reason_of(ProtocolError("not a dispy frame (got b'GET ')")) == "not a dispy frame"
    assert reason_of(ProtocolError("malformed Hello message: nonce must be a string, got int")) == "malformed message"
    assert reason_of(AuthenticationError("the secrets differ")) == "authentication failed"
    assert reason_of(ProtocolVersionError("v2")) == "another protocol version"
    assert reason_of(FrameTooLarge("big")) == "frame too large"
    assert reason_of(ConnectionClosed("bye")) == "closed during the handshake"
    assert reason_of(DispyError("stale discovery request (clock skew or a replay)")) == "stale discovery request"


def test_version_refusals_are_logged_once_per_peer_and_message(caplog):
    from dispy_core.errors import ProtocolVersionError
    from dispy_core.refusals import once_key

    refusals = RefusalLog(logging.getLogger("test.refusals.once"), burst=5, clock=Clock())
    old = ProtocolVersionError("client 10.0.0.1 runs dispy-client 0.9.0 (protocol 3)...")
    other = ProtocolVersionError("client 10.0.0.2 runs dispy-client 0.9.0 (protocol 3)...")
    with caplog.at_level(logging.WARNING, "test.refusals.once"):
        for _ in range(20):  # the client retries as long as it runs
            refusals.refused(reason_of(old), "closed %s", old, once=once_key(old))
        refusals.refused(reason_of(other), "closed %s", other, once=once_key(other))
        refusals.refused(reason_of(old), "datagram from %s: %s", "10.0.0.7", old, once=once_key(old, "10.0.0.7"))
        refusals.flush()
    assert len(caplog.records) == 3  # one per peer, no summary of the retries
    assert once_key(ProtocolError("garbage")) is None
