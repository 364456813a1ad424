"""``dispy.logger``: the "dispy" logger, with the level names the documentation uses.

Users write ``loglevel=dispy.logger.DEBUG``; a plain :class:`logging.Logger` has no such
attributes, so the "dispy" logger gets them from a subclass that adds nothing else.

Where the messages go is the application's business, with one exception for dispy 4.x
programs: dispy 4.x printed its log to stderr by itself, so a program that passes
``loglevel=dispy.logger.DEBUG`` and configures no logging expects to see the messages.
:func:`show_if_unconfigured` (called when a cluster is created) gives such programs a
stderr handler on the "dispy" logger, which stays silent as soon as the application
configures logging itself (a handler on the root logger), so nothing is printed twice.
"""

from __future__ import annotations

import logging

__all__ = ["logger", "DispyLogger", "set_level", "show_if_unconfigured"]


class DispyLogger(logging.Logger):
    """A :class:`logging.Logger` that also carries the level numbers as attributes."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = logging.CRITICAL


def _dispy_logger() -> DispyLogger:
    base = logging.getLogger("dispy")
    if type(base) is logging.Logger:
        # Same instance layout, only class attributes added: handlers, filters and
        # levels set on the logger before dispy was imported are kept.
        base.__class__ = DispyLogger
    else:  # an application installed its own Logger class: just add the names
        for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            setattr(base, name, getattr(logging, name))
    return base  # type: ignore[return-value]


logger: DispyLogger = _dispy_logger()


def set_level(level: int | str) -> None:
    """Set the "dispy" logger's level from a number or a name ("DEBUG", "info"...)."""
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            from dispy_core.errors import ConfigError

            raise ConfigError(f"unknown log level {level!r}: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        level = number
    logger.setLevel(level)


class _FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, for programs that configured no logging; silent once the root logger has a
    handler (the application's configuration then takes the messages)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


_fallback: _FallbackHandler | None = None


def show_if_unconfigured() -> None:
    """Print the "dispy" logger's messages to stderr if nothing else would show them: no
    handler on the root logger nor on the "dispy" logger (see the module docstring)."""
    global _fallback
    if _fallback is not None or logger.handlers or logging.getLogger().handlers:
        return
    _fallback = _FallbackHandler()  # sys.stderr
    _fallback.setFormatter(logging.Formatter("%(asctime)s dispy %(levelname)s: %(message)s"))
    logger.addHandler(_fallback)
