"""Logging refused connections and datagrams without letting a flood fill the log.

Every refused peer (garbage on the port, another secret, no handshake in time, a failed
TLS handshake, a datagram sealed with another secret) is worth a line to the person who
misconfigured a client, and worth nothing 100,000 times over to anyone: a probe of the
port wrote 17.5 MB of log lines. A :class:`RefusalLog` logs the first :attr:`burst`
refusals of each reason as they come, then counts the rest and writes one summary line
per :attr:`interval`::

    1,234 connections refused in the last minute (10 logged above): not a dispy frame (1,200), authentication failed (34)

The counts start again after an interval in which nothing had to be summarised: a
refusal after a quiet spell is logged in full again. The summary is written when the
interval ends (by a timer of the running event loop, if there is one) or, failing that,
at the next refusal after it, and by :meth:`flush` (a daemon calls it when it stops).
A peer of an incompatible release (:class:`ProtocolVersionError`, see
:mod:`dispy_core.compat`) retries as long as it runs: its refusal is logged once per
peer host and message (``once``, see :func:`once_key`), not at every retry.

The daemons use one for their ports (dispynode, dispyscheduler, through
:class:`dispy_core.listen.ChannelServer`), the discovery receivers one for datagrams.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from .errors import (
    AuthenticationError,
    ConnectionClosed,
    DispyError,
    FrameTooLarge,
    ProtocolError,
    ProtocolVersionError,
)

__all__ = ["RefusalLog", "reason_of", "once_key"]

#: How many distinct ``once`` keys a RefusalLog remembers (a flood of made-up versions
#: can't grow it without bound; past this, the oldest are forgotten and may be logged again).
ONCE_KEYS = 256


def once_key(exc: BaseException | None, peer: object = "") -> str | None:
    """The ``once`` key of a refusal: version refusals are logged once per message (which
    names the peer's package and versions) and ``peer`` (a datagram's sender: a connection's
    message names its host), the rest as :class:`RefusalLog` bursts."""
    return f"{peer} {exc}" if isinstance(exc, ProtocolVersionError) else None


def reason_of(exc: BaseException | None) -> str:
    """A refusal's reason as a summary counts it: a few words per kind of failure."""
    if isinstance(exc, AuthenticationError):
        return "authentication failed"
    if isinstance(exc, ProtocolVersionError):
        return "another protocol version"
    if isinstance(exc, FrameTooLarge):
        return "frame too large"
    if isinstance(exc, ProtocolError):
        text = str(exc)
        if text.startswith("not a dispy"):
            return "not a dispy frame"
        if text.startswith("malformed"):
            return "malformed message"
        return "protocol error"
    if isinstance(exc, ConnectionClosed):
        return "closed during the handshake"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no handshake in time"
    if exc is None:
        return "closed"
    if isinstance(exc, DispyError):  # a receiver's own reason ("stale discovery request (...)")
        return str(exc).split(" (")[0].split(":")[0][:40] or type(exc).__name__
    return type(exc).__name__


class RefusalLog:
    """Logs refusals on ``log`` at ``level``: ``burst`` per reason, then a summary per
    ``interval`` seconds. ``what`` names the refused things in the summary
    ("connections", "datagrams"). Thread-safe (clusters in one client run one loop
    thread each and share the discovery receivers' log)."""

    def __init__(self, log: logging.Logger, what: str = "connections", *, burst: int = 5,
                 interval: float = 60.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.burst = burst
        self.interval = interval
        self.level = level
        self._clock = clock
        self._start = clock()  # of the current interval
        self._counts: dict[str, int] = {}  # refusals per reason in this interval
        self._logged: dict[str, int] = {}  # lines written per reason since the last quiet interval
        self._shown = 0  # lines written in this interval
        self._suppressed = 0  # refusals counted, not written, in this interval
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self._once: dict[str, None] = {}  # once keys already logged, oldest first

    def refused(self, reason: str, msg: str, *args: object, once: str | None = None) -> None:
        """A refusal for ``reason`` (see :func:`reason_of`); ``msg % args`` is its line.
        With ``once`` (see :func:`once_key`), only the first refusal with that key is
        logged; the later ones are not even counted (the peer is retrying, the line above
        says what to do)."""
        with self._lock:
            if once is not None:
                if once in self._once:
                    return
                if len(self._once) >= ONCE_KEYS:
                    del self._once[next(iter(self._once))]
                self._once[once] = None
            self._refused(reason, msg, args)

    def _refused(self, reason: str, msg: str, args: tuple[object, ...]) -> None:
        now = self._clock()
        if now - self._start >= self.interval:
            self._roll(now)
        self._counts[reason] = self._counts.get(reason, 0) + 1
        written = self._logged.get(reason, 0)
        if written < self.burst:
            self._logged[reason] = written + 1
            self._shown += 1
            self.log.log(self.level, msg, *args)
            return
        self._suppressed += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # summarised at the next refusal after the interval, or by flush()
            self._timer = loop.call_later(max(0.0, self._start + self.interval - now), self._on_timer)

    def flush(self) -> None:
        """Write the summary of what was counted and not written (if anything) now."""
        with self._lock:
            self._roll(self._clock())

    def close(self) -> None:
        """Flush, and cancel the timer (the owner is stopping)."""
        self.flush()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            self._roll(self._clock())

    def _roll(self, now: float) -> None:
        """End the current interval: summarise it if anything went unwritten."""
        if self._suppressed:
            total = sum(self._counts.values())
            span = now - self._start
            when = "in the last minute" if 55 <= span <= 65 else f"in the last {span:.0f} s"
            shown = f" ({self._shown:,} logged above)" if self._shown else ""
            reasons = ", ".join(f"{reason} ({n:,})" for reason, n in
                                sorted(self._counts.items(), key=lambda item: -item[1]))
            what = self.what[:-1] if total == 1 and self.what.endswith("s") else self.what
            self.log.log(self.level, "%s %s refused %s%s: %s", f"{total:,}", what, when, shown, reasons)
        else:
            self._logged.clear()  # a quiet interval: the next refusals are written in full
        self._counts.clear()
        self._shown = 0
        self._suppressed = 0
        self._start = now
