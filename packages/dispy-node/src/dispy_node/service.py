"""Service windows (``--service_start``, ``--service_stop``, ``--service_end``): the hours
of each day in which the node works, and what it must do when the clock moves on.

Pure: no I/O, no timers. The time of day comes from a clock that tests replace. The
window repeats daily and is measured from ``service_start`` (00:00 when not given), so
it may wrap midnight (17:00 -> 08:00 serves through the night)::

    start ............ stop ............ end ............ (next day's) start
      |    SERVING      |    STOPPED      |     CLOSED      |
           jobs run,       running jobs      computations
           computations    finish; queued    closed, jobs
           accepted        ones wait         terminated

Without ``--service_stop`` the node serves up to ``end``; without ``--service_end`` it
stays STOPPED from ``stop`` until the next start (computations are never closed for it).
Outside SERVING the node takes no new computations and answers no discovery requests.

:class:`ServiceClock` turns phase changes into :class:`Action`\\ s for the node (hold
jobs, release them, close every computation); the node's runner asks it again after
:meth:`ServiceClock.delay` seconds.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from dispy_core.errors import ConfigError

__all__ = ["DAY", "Phase", "Action", "ServiceWindow", "ServiceClock", "parse_time", "format_time",
           "seconds_of_day"]

#: Seconds in a day.
DAY = 24 * 3600
#: Longest wait between two looks at the clock: a clock set forward or back, or a
#: daylight saving change, is noticed within this many seconds.
MAX_DELAY = 60.0
#: Looking at the clock this much after a change is due makes sure it is seen as done.
_MARGIN = 0.05

_HHMM = re.compile(r"(\d{1,2}):(\d{2})")


class Phase(enum.Enum):
    SERVING = "serving"
    STOPPED = "stopped"  # from --service_stop: no new jobs start
    CLOSED = "closed"  # from --service_end: no computations at all


class Action(enum.Enum):
    HOLD = "hold"  # start no more jobs (running ones go on)
    RELEASE = "release"  # start jobs again
    CLOSE_ALL = "close_all"  # close every computation, terminating its jobs


def parse_time(text: str, option: str) -> int:
    """Seconds after midnight of ``HH:MM`` (24-hour); ConfigError naming ``--option``."""
    m = _HHMM.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(f"invalid --{option} {text!r}: expected a time of day as HH:MM "
                          "in 24-hour format (00:00 to 23:59)")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


def format_time(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def seconds_of_day(t: datetime.datetime) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


@dataclass(frozen=True)
class ServiceWindow:
    """A validated daily window; times are seconds after midnight."""

    start: int = 0
    stop: int | None = None
    end: int | None = None

    @classmethod
    def from_options(cls, start: str | None, stop: str | None, end: str | None) -> ServiceWindow | None:
        """The window the three options describe (None when none is given);
        ConfigError naming the option that is wrong."""
        if start is None and stop is None and end is None:
            return None
        if stop is None and end is None:
            raise ConfigError("--service_start needs --service_stop or --service_end "
                              "(when the node stops taking jobs each day)")
        return cls(parse_time(start, "service_start") if start is not None else 0,
                   parse_time(stop, "service_stop") if stop is not None else None,
                   parse_time(end, "service_end") if end is not None else None)

    def __post_init__(self) -> None:
        if self.stop is None and self.end is None:
            raise ConfigError("a service window needs --service_stop or --service_end")
        start = format_time(self.start)
        if self.stop == self.start:
            raise ConfigError(f"--service_stop {format_time(self.start)} is the same time as "
                              f"--service_start {start}")
        if self.end == self.start:
            raise ConfigError(f"--service_end {start} is the same time as --service_start {start}")
        if self.stop is not None and self.end is not None and self._offset(self.stop) > self._offset(self.end):
            raise ConfigError(f"--service_stop {format_time(self.stop)} must not come after "
                              f"--service_end {format_time(self.end)} (counting from --service_start "
                              f"{start}; the window may wrap midnight)")

    def _offset(self, t: float) -> float:
        """Seconds from the (latest) start to ``t``, in [0, DAY)."""
        return (t - self.start) % DAY

    @property
    def _stop_offset(self) -> float:
        return self._offset(self.stop if self.stop is not None else self.end)  # type: ignore[arg-type]

    @property
    def _end_offset(self) -> float:
        return self._offset(self.end) if self.end is not None else DAY

    def phase(self, t: float) -> Phase:
        """The phase at ``t`` seconds after midnight."""
        o = self._offset(t)
        if o < self._stop_offset:
            return Phase.SERVING
        if o < self._end_offset:
            return Phase.STOPPED
        return Phase.CLOSED

    def next_change(self, t: float) -> float:
        """Seconds from ``t`` until the phase changes."""
        o = self._offset(t)
        for edge in (self._stop_offset, self._end_offset, DAY):
            if o < edge:
                return edge - o
        return DAY - o  # not reached: o < DAY

    def describe(self) -> str:
        text = f"from {format_time(self.start)}"
        if self.stop is not None:
            text += f", no new jobs from {format_time(self.stop)}"
        if self.end is not None:
            text += f", closed from {format_time(self.end)}"
        return text + " (daily)"

    def refusal(self, phase: Phase) -> str:
        """Why a computation is refused in ``phase`` (for ComputeFailed)."""
        if phase is Phase.STOPPED:
            return (f"outside its service window: it takes no new jobs from --service_stop "
                    f"{format_time(self.stop if self.stop is not None else 0)} until --service_start "
                    f"{format_time(self.start)}")
        return (f"outside its service window: it serves from --service_start {format_time(self.start)} "
                f"until --service_end {format_time(self.end if self.end is not None else 0)}")


def _now() -> datetime.datetime:
    return datetime.datetime.now()


#: What to do when the phase goes from one to another (only forward changes happen on a
#: steady clock; the others come from a clock that jumped or a node that slept).
_ACTIONS: dict[tuple[Phase, Phase], list[Action]] = {
    (Phase.SERVING, Phase.STOPPED): [Action.HOLD],
    (Phase.SERVING, Phase.CLOSED): [Action.HOLD, Action.CLOSE_ALL],
    (Phase.STOPPED, Phase.CLOSED): [Action.CLOSE_ALL],
    (Phase.STOPPED, Phase.SERVING): [Action.RELEASE],
    (Phase.CLOSED, Phase.SERVING): [Action.RELEASE],
    (Phase.CLOSED, Phase.STOPPED): [],  # jumped over a whole serving period: still held
}


class ServiceClock:
    """The node's position in its window. Call :meth:`update` now and then (after
    :meth:`delay` seconds); it returns what the node must do.

    It begins as SERVING (as a node without a window), so the first update of a node
    started outside its window says HOLD (and CLOSE_ALL, harmless with nothing open).
    """

    def __init__(self, window: ServiceWindow, clock: Callable[[], datetime.datetime] = _now) -> None:
        self.window = window
        self.clock = clock
        self.phase = Phase.SERVING

    def update(self) -> list[Action]:
        new = self.window.phase(seconds_of_day(self.clock()))
        old, self.phase = self.phase, new
        return [] if new is old else list(_ACTIONS[old, new])

    def delay(self) -> float:
        """Seconds until the next :meth:`update` is due."""
        return min(MAX_DELAY, self.window.next_change(seconds_of_day(self.clock())) + _MARGIN)

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING

    def refusal(self) -> str:
        return self.window.refusal(self.phase)
