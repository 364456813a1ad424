"""The daemons' terminal interface (dispynode, dispyscheduler): command lines read from
stdin without blocking the event loop, and the commands every daemon has.

Only used when a daemon runs in the foreground of a terminal without ``--daemon``.
Commands are one per line and case does not matter. Every console has:

* ``status`` or an empty line: the daemon's status table (:meth:`CommandConsole.status_text`);
* ``quit``: terminate now, as SIGTERM; ``exit``: finish, then stop, as SIGINT (both are
  the CLI's, so that they escalate as signals do);
* ``help``, or anything else: the list of commands.

A program adds its own commands in :meth:`CommandConsole.other_command`; a command that
takes a secret reads it from the next line with :meth:`CommandConsole.ask_secret`, so it
stays out of the process list and off the screen.

Lines are read by the event loop when stdin is readable (``add_reader``), so a command
runs in the loop, next to the daemon, and reading never blocks it.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
import termios
from collections.abc import Callable
from typing import Any, TextIO

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
        self._secret_for: Callable[[str], None] | None = None  # who gets the next line
        self._echo: list[Any] | None = None  # the terminal's settings while a secret is typed

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
        then = self._secret_for
        if then is not None:  # the line asked for by ask_secret: not a command
            self._secret_for = None
            self._restore_echo()
            then(line)
            return
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

    def ask_secret(self, prompt: str, then: Callable[[str], None]) -> None:
        """Say ``prompt`` and give the next line, as typed, to ``then``; the terminal does
        not echo it (when stdin is one)."""
        self._secret_for = then
        try:
            attrs = termios.tcgetattr(self.fd)
            quiet = list(attrs)
            quiet[3] = quiet[3] & ~termios.ECHO
            termios.tcsetattr(self.fd, termios.TCSANOW, quiet)
            self._echo = attrs
        except (termios.error, OSError):
            pass  # not a terminal (tests): nothing shows the line anyway
        self.say(prompt)

    def _restore_echo(self) -> None:
        if self._echo is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, self._echo)
            except (termios.error, OSError):
                pass
            self._echo = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
