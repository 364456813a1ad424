"""The daemons' terminal interface (dispynode, dispyscheduler): command lines read from
stdin without blocking the event loop, and the commands every daemon has.

Only used when a daemon runs in the foreground of a terminal without ``--daemon``.
Commands are one per line and case does not matter. Every console has:

* ``status`` or an empty line: the daemon's status table (:meth:`CommandConsole.status_text`);
* ``quit``: terminate now, as SIGTERM; ``exit``: finish, then stop, as SIGINT (both are
  the CLI's, so that they escalate as signals do);
* ``help``, or anything else: the list of commands.

A program adds its own commands in :meth:`CommandConsole.other_command`.

Lines are read by the event loop when stdin is readable (``add_reader``), so a command
runs in the loop, next to the daemon, and reading never blocks it.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
from collections.abc import Callable
from typing import TextIO

__all__ = ["CommandConsole"]


class CommandConsole(abc.ABC):
    """Reads command lines from a terminal on stdin and carries them out.

    A program's console sets the texts (``greeting``, ``help``, ``quit_said``,
    ``exit_said``) and :meth:`status_text`, and may add commands in
    :meth:`other_command`."""

    #: Said by :meth:`start`.
    greeting = "Enter 'help' for the commands, or an empty line for the status."
    #: The list of commands (``help``, and after an unknown command).
    help = ""
    #: Said before ``quit`` and ``exit`` call the CLI's.
    quit_said = "terminating"
    exit_said = "stopping"

    def __init__(self, *, quit: Callable[[], None], exit: Callable[[], None],
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.quit = quit
        self.exit = exit
        self.fd = (stdin or sys.stdin).fileno()
        self.out = stdout or sys.stdout
        self._buf = b""

    def start(self) -> None:
        """Read stdin in the running loop from now on."""
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        self.say(self.greeting)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if not data:  # the terminal went away: keep serving without it
            asyncio.get_running_loop().remove_reader(self.fd)
            return
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.command(line.decode(errors="replace").strip())

    def command(self, line: str) -> None:
        """Carry out one command line (also the unit tests' way in)."""
        words = line.lower().split()
        cmd, args = (words[0], words[1:]) if words else ("status", [])
        if cmd == "status" and not args:
            self.say(self.status_text())
        elif cmd == "quit" and not args:
            self.say(self.quit_said)
            self.quit()
        elif cmd == "exit" and not args:
            self.say(self.exit_said)
            self.exit()
        elif not self.other_command(cmd, args):
            if cmd != "help":
                self.say(f"unknown command {line!r}")
            self.say(self.help)

    @abc.abstractmethod
    def status_text(self) -> str:
        """The status table (``status`` or an empty line): each program's own."""

    def other_command(self, cmd: str, args: list[str]) -> bool:
        """Carry out a program's own command ``cmd`` (lower case) with ``args``; False if
        it is not one (then the list of commands is shown)."""
        return False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
