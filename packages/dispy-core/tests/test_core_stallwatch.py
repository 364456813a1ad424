"""StallWatch: which connections count as stuck for --msg_timeout (no sockets needed)."""

from __future__ import annotations

from dispy_core.aio import StallWatch


class FakeChannel:
    def __init__(self, waiting: int = 0, sent: int | None = 0) -> None:
        self.waiting, self.sent, self.closed = waiting, sent, False

    def write_buffer_size(self) -> int:
        return self.waiting

    def bytes_sent(self) -> int | None:
        return self.sent


def test_a_channel_that_sends_nothing_of_what_waits_is_stuck_after_the_timeout() -> None:
    watch, ch = StallWatch(2.0), FakeChannel(waiting=100)
    assert watch.stuck([ch], 0.0) == []
    assert watch.stuck([ch], 1.9) == []
    assert watch.stuck([ch], 2.0) == [(ch, 100, 2.0)]


def test_progress_or_an_empty_buffer_restarts_the_clock() -> None:
    watch, ch = StallWatch(2.0), FakeChannel(waiting=100)
    watch.stuck([ch], 0.0)
    ch.sent = 10  # the peer took some
    assert watch.stuck([ch], 1.5) == []
    assert watch.stuck([ch], 3.0) == []  # 1.5 s since progress
    ch.waiting = 0  # idle: never stuck, however long
    assert watch.stuck([ch], 100.0) == []
    ch.waiting = 5
    assert watch.stuck([ch], 101.0) == []
    assert watch.stuck([ch], 103.0) == [(ch, 5, 2.0)]


def test_tls_channels_progress_by_a_shrinking_buffer() -> None:
    watch, ch = StallWatch(2.0), FakeChannel(waiting=100, sent=None)
    watch.stuck([ch], 0.0)
    ch.waiting = 50
    assert watch.stuck([ch], 1.9) == []
    assert watch.stuck([ch], 3.0) == []
    assert watch.stuck([ch], 3.9) == [(ch, 50, 2.0)]


def test_closed_and_forgotten_channels_are_dropped() -> None:
    watch, a, b = StallWatch(1.0), FakeChannel(waiting=1), FakeChannel(waiting=1)
    watch.stuck([a, b], 0.0)
    a.closed = True
    assert watch.stuck([a], 5.0) == []  # closed
    assert watch.stuck([b], 6.0) == []  # b was not seen at 5.0: its clock starts again
