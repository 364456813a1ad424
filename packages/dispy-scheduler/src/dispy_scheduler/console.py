"""The scheduler's terminal interface: commands read from stdin, and the status table.

Only used when dispyscheduler runs in the foreground of a terminal without ``--daemon``.
Commands (one per line; case does not matter):

* ``status`` or an empty line: the status table (nodes, then clusters; with ``--httpd``
  the web monitor's address first);
* ``quit``: terminate now, as SIGTERM (every computation is closed, its jobs terminated);
* ``exit``: let the running computations finish, then stop, as SIGINT;
* ``help``, or anything else: the list of commands.

Reading the lines (in the event loop, never blocking it) and the commands every daemon
has are :class:`dispy_core.console.CommandConsole`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

from dispy_core.console import CommandConsole

__all__ = ["Console", "Operated", "format_status", "HELP"]

_NODE_COLUMNS = ("Node", "Name", "CPUs", "Running", "Done", "Node time")
_CLUSTER_COLUMNS = ("Cluster", "Client", "State", "Exclusive", "Queued", "Running", "Done")

HELP = """\
commands:
  status (or an empty line)  the scheduler's nodes and clusters
  quit                       terminate now: every computation is closed, its jobs
                             terminated (as SIGTERM)
  exit                       admit no new clusters; let the running ones finish,
                             then stop (as SIGINT)
  help                       this list"""


class Operated(Protocol):
    """What the console needs of the daemon (:class:`dispy_scheduler.daemon.Daemon`)."""

    def status(self) -> dict[str, Any]: ...


def _table(columns: Sequence[str], rows: list[tuple[str, ...]]) -> list[str]:
    rows = [tuple(columns)] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _seconds(t: float) -> str:
    return f"{t:.1f}s"


def format_status(st: dict[str, Any]) -> str:
    """The status table for a :meth:`Daemon.status` snapshot."""
    where = ", ".join(_addr(ip, port) for ip, port in st["listening"]) or "(not listening)"
    lines = [f"dispyscheduler at {where}, policy: {st.get('policy', 'default')}"]
    if st.get("web"):
        lines.append(f"web monitor at {st['web']}")
    nodes = st["nodes"]
    if nodes:
        lines += _table(_NODE_COLUMNS, [
            (_addr(n["ip_addr"], n["port"]), str(n["name"])[:24], str(n["cpus"]), str(n["running"]),
             str(n["done"]), _seconds(n["cpu_time"]))
            for n in nodes
        ])
    else:
        lines.append("  no nodes")
    clusters = st["clusters"]
    if clusters:
        lines.append("")
        lines += _table(_CLUSTER_COLUMNS, [
            (str(c["name"])[:24], str(c["client"]), str(c["state"]), "yes" if c["exclusive"] else "no",
             str(c["queued"]), str(c["running"]), str(c["done"]))
            for c in clusters
        ])
    else:
        lines.append("  no clusters")
    return "\n".join(lines)


class Console(CommandConsole):
    """The scheduler's commands, read from a terminal on stdin (see the module's doc).

    ``quit`` and ``exit`` are the CLI's, so that they escalate as signals do (a second
    one while the scheduler is ending stops it at once)."""

    greeting = "Enter 'help' for the commands, or an empty line for the scheduler's status."
    help = HELP
    quit_said = "terminating dispyscheduler (running jobs are terminated)"
    exit_said = "stopping dispyscheduler once the running computations are done"

    def __init__(self, daemon: Operated, *, quit: Callable[[], None], exit: Callable[[], None],
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        super().__init__(quit=quit, exit=exit, stdin=stdin, stdout=stdout)
        self.daemon = daemon

    def status_text(self) -> str:
        return format_status(self.daemon.status())
