"""The node's terminal interface: commands read from stdin, and the status table.

Only used when dispynode runs in the foreground of a terminal without ``--daemon``.
``quit`` or ``exit`` shuts the node down (as SIGTERM does); any other line, an empty one
included, prints the status table.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Console", "format_status"]

_COLUMNS = ("Computation", "Name", "Client", "State", "CPUs", "Queued", "Busy", "Done")


def format_status(st: dict[str, Any]) -> str:
    """The status table for a :meth:`dispy_node.server.Node.status` snapshot."""
    where = ", ".join(f"{ip}:{port}" for ip, port in st["listening"])
    lines = [
        f"dispynode {st['name']} at {where}",
        f"  CPUs: {st['cpus']} ({st['busy']} busy), jobs done: {st['jobs_done']}",
    ]
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


class Console:
    """Reads command lines from a terminal on stdin without blocking the event loop."""

    def __init__(self, status: Callable[[], dict[str, Any]], stop: Callable[[], None],
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.status = status
        self.stop = stop
        self.fd = (stdin or sys.stdin).fileno()
        self.out = stdout or sys.stdout
        self._buf = b""

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        self._say("Enter 'quit' or 'exit' to stop the node, or an empty line for its status.")

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
        if line.lower() in ("quit", "exit"):
            self._say("stopping dispynode")
            asyncio.get_running_loop().remove_reader(self.fd)
            self.stop()
        else:
            self._say(format_status(self.status()))

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
