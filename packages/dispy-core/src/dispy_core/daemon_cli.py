"""What the daemons' command lines (dispynode, dispyscheduler) share: the options about
config files, the console and the version, the logging they set up, the signals that
stop them, and running them in an event loop.

SIGINT is a graceful stop (the daemon's ``drain``), SIGTERM terminates (its ``stop``);
a second signal while the daemon is ending exits 1 at once, after the program's
``at_once`` (its warning, and whatever must not outlive it).

Each connection costs a daemon a file descriptor (two on plain TCP: see
:mod:`dispy_core.aio`), so :func:`run_daemon` first raises the soft limit on open files to
the hard limit (:func:`raise_file_limit`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .errors import ConfigError

__all__ = ["add_common_options", "Stoppable", "end_on_signals", "start_logging", "run_daemon",
           "raise_file_limit", "WANTED_FILES"]

#: Open files a daemon wants, to take a few thousand connections at once.
WANTED_FILES = 8192


def add_common_options(p: argparse.ArgumentParser, program: str, version: str, not_saved: str) -> None:
    """Add ``--save_config``, ``--config`` (see :mod:`dispy_core.inifile`), ``--daemon``
    (see :func:`run_daemon`) and ``--version``; ``not_saved`` names the options a saved
    file leaves out, for ``--save_config``'s help."""
    p.add_argument("--save_config", nargs="?", const="-", default=None, metavar="FILE",
                   help=f"save the options given (except {not_saved}) to FILE "
                        "(stdout if FILE is omitted) and exit")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="read options from FILE (made with --save_config); options given on the "
                        "command line override it")
    p.add_argument("--daemon", action="store_true",
                   help="don't read commands from stdin (the default when stdin is not a terminal)")
    p.add_argument("--version", action="version", version=f"{program} {version}")


class Stoppable(Protocol):
    """What stopping needs of a daemon."""

    @property
    def closing(self) -> bool: ...
    def stop(self) -> None: ...
    def drain(self) -> None: ...


def end_on_signals(daemon: Stoppable, at_once: Callable[[], None]) -> Callable[[bool], None]:
    """Stop ``daemon`` on SIGINT (graceful) and SIGTERM, in the running loop; returns the
    function they call, ``end(graceful)``, for the console's ``exit`` and ``quit``.

    Once the daemon is ending, another call runs ``at_once()``, flushes the logs and
    exits 1 at once."""
    ending = False

    def end(graceful: bool) -> None:
        nonlocal ending
        if ending or daemon.closing:
            at_once()
            logging.shutdown()
            os._exit(1)
        ending = True
        if graceful:
            daemon.drain()
        else:
            daemon.stop()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, end, True)
    loop.add_signal_handler(signal.SIGTERM, end, False)
    return end


def start_logging(program: str, debug: bool) -> None:
    """Log to stderr, each line naming ``program``; debug messages with ``debug``."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {program} %(levelname)s %(message)s")


def run_daemon(program: str, args: argparse.Namespace, serve: Callable[[bool], Coroutine[Any, Any, None]],
               log: logging.Logger) -> int:
    """Run ``serve(interactive)`` in a new event loop: interactive (a console on stdin)
    unless ``--daemon`` was given or stdin is not a terminal. The exit status: 0, or 1
    (logged to ``log``) if the daemon could not start (its address, its prefix: an
    OSError or ConfigError) or failed."""
    interactive = not args.daemon and sys.stdin is not None and sys.stdin.isatty()
    raise_file_limit(program, log)
    try:
        asyncio.run(serve(interactive))
    except (OSError, ConfigError) as exc:  # ConfigError: e.g. --clean refused its prefix
        log.error("%s could not start: %s", program, exc)
        return 1
    except RuntimeError as exc:
        log.error("%s failed: %s", program, exc)
        return 1
    return 0


def raise_file_limit(program: str, log: logging.Logger) -> int:
    """Raise this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit;
    returns the soft limit now in force. Logs a warning if that is below
    :data:`WANTED_FILES` (each connection takes one or two descriptors): the daemon then
    refuses connections beyond it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. above the kernel's fs.nr_open
            pass
    if soft != resource.RLIM_INFINITY and soft < WANTED_FILES:
        log.warning("%s can have only %d files open (ulimit -n; hard limit %s): about %d connections "
                    "at once; raise the hard limit to take more", program, soft,
                    "unlimited" if hard == resource.RLIM_INFINITY else hard, soft // 2)
    return soft
