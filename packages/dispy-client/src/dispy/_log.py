"""``dispy.logger``: the "dispy" logger, with the level names the documentation uses.

Users write ``loglevel=dispy.logger.DEBUG``; a plain :class:`logging.Logger` has no such
attributes, so the "dispy" logger gets them from a subclass that adds nothing else (no
state, no handlers: configuring handlers is the application's business).
"""

from __future__ import annotations

import logging

__all__ = ["logger", "DispyLogger", "set_level"]


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
