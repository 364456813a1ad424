"""The node's terminal interface: commands read from stdin, and the status table.

Only used when dispynode runs in the foreground of a terminal without ``--daemon``.
Commands (one per line; case does not matter):

* ``status`` or an empty line: the status table;
* ``cpus N``: use N CPUs (as ``-c``: a negative N leaves that many unused);
* ``stop``: take no new computations and start no new jobs (running ones go on);
* ``start``: take jobs again, on the CPUs the node had before ``stop``;
* ``admin_secret``: the next line is the secret dispyadmin must know (``--admin_secret``,
  typed here so that it stays out of the process list; not echoed); an empty line
  leaves it as it was;
* ``quit``: terminate now, as SIGTERM; ``exit``: finish the jobs, then stop, as SIGINT;
* ``help``, or anything else: the list of commands.

Reading the lines (in the event loop, never blocking it) and the commands every daemon
has are :class:`dispy_core.console.CommandConsole`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TextIO

from dispy_core.console import CommandConsole
from dispy_core.errors import ConfigError

__all__ = ["Console", "Operated", "format_status", "HELP"]

_COLUMNS = ("Computation", "Name", "Client", "State", "CPUs", "Queued", "Busy", "Done")

HELP = """\
commands:
  status (or an empty line)  the node's CPUs, jobs and computations
  cpus N                     use N CPUs (a negative N leaves that many unused)
  stop                       take no new computations or jobs; queued jobs wait
  start                      take jobs again (on the CPUs the node had before stop)
  admin_secret               type the secret dispyadmin must know (as --admin_secret)
  quit                       terminate now: running jobs are killed (as SIGTERM)
  exit                       finish the jobs in the node, then stop (as SIGINT)
  help                       this list"""


class Operated(Protocol):
    """What the console needs of the node (:class:`dispy_node.server.Node`)."""

    def status(self) -> dict[str, Any]: ...
    def set_cpus(self, n: int) -> int: ...
    def pause_jobs(self, reason: str = ...) -> None: ...
    def resume_jobs(self, reason: str = ...) -> bool: ...
    def set_admin_secret(self, secret: str) -> None: ...


def format_status(st: dict[str, Any]) -> str:
    """The status table for a :meth:`dispy_node.server.Node.status` snapshot."""
    where = ", ".join(f"{ip}:{port}" for ip, port in st["listening"])
    lines = [
        f"dispynode {st['name']} at {where}",
        f"  CPUs: {st['cpus']} ({st['busy']} busy), jobs done: {st['jobs_done']}",
    ]
    if st.get("state"):
        lines.append(f"  state: {st['state']}")
    comps = st["computations"]
    if not comps:
        lines.append("  no computations")
        return "\n".join(lines)
    rows = [_COLUMNS] + [
        (c["compute_id"][:12], c["name"][:24], _peer(c["client"]), c["state"], str(c["cpus"]),
         str(c["pending"]), str(c["running"]), str(c["done"]))
        for c in comps
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class Console(CommandConsole):
    """The node's commands, read from a terminal on stdin (see the module's doc).

    ``quit`` and ``exit`` are the CLI's, so that they escalate as signals do (a second
    one while the node is ending stops it at once)."""

    greeting = "Enter 'help' for the commands, or an empty line for the node's status."
    help = HELP
    quit_said = "terminating dispynode (running jobs are killed)"
    exit_said = "stopping dispynode once the jobs in it are done"

    def __init__(self, node: Operated, *, quit: Callable[[], None], exit: Callable[[], None],
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        super().__init__(quit=quit, exit=exit, stdin=stdin, stdout=stdout)
        self.node = node

    def _admin_secret(self, line: str) -> None:
        if not line:
            self.say("admin secret unchanged")
            return
        try:
            self.node.set_admin_secret(line)
        except ConfigError as exc:
            self.say(str(exc))
            return
        self.say("admin secret set: dispyadmin with this secret may manage the node")

    def status_text(self) -> str:
        return format_status(self.node.status())

    def other_command(self, cmd: str, args: list[str]) -> bool:
        if cmd == "cpus":
            self._cpus(args)
        elif cmd == "admin_secret" and not args:
            self.ask_secret("type the admin secret and Enter (not shown):", self._admin_secret)
        elif cmd == "stop" and not args:
            self.node.pause_jobs("operator")
            self.say("stopped: no new computations or jobs; running jobs go on, queued ones wait "
                     "('start' resumes)")
        elif cmd == "start" and not args:
            if self.node.resume_jobs("operator"):
                self.say(f"started: running jobs on {self.node.status()['cpus']} CPUs")
            else:
                self.say(f"not running jobs yet: {self.node.status().get('state', 'jobs are held')}")
        else:
            return False
        return True

    def _cpus(self, args: list[str]) -> None:
        try:
            n = int(args[0]) if len(args) == 1 else None
        except ValueError:
            n = None
        if n is None:
            self.say(f"the node uses {self.node.status()['cpus']} CPUs; usage: cpus N "
                     "(a negative N leaves that many unused)")
            return
        try:
            cpus = self.node.set_cpus(n)
        except ConfigError as exc:
            self.say(str(exc))
            return
        self.say(f"using {cpus} CPUs")
