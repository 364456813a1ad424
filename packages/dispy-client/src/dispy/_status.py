"""The cluster's status report: ``cluster.status()`` and ``cluster.print_status()``."""

from __future__ import annotations

from collections.abc import Iterable

from dispy_core.config import format_size

from dispy_core.nodes import DispyNode

__all__ = ["ClusterStatus", "format_status"]


class ClusterStatus:
    """What ``cluster.status()`` returns: ``nodes`` (a list of :class:`DispyNode`) and
    ``jobs_pending`` (jobs submitted and not yet done)."""

    __slots__ = ("nodes", "jobs_pending")

    def __init__(self, nodes: list[DispyNode], jobs_pending: int) -> None:
        self.nodes = nodes
        self.jobs_pending = jobs_pending

    def __repr__(self) -> str:
        return f"ClusterStatus(nodes={self.nodes!r}, jobs_pending={self.jobs_pending})"


_COLUMNS = ("Node", "CPUs", "Jobs", "Sec/Job", "Node Time Sec", "Sent", "Rcvd")


def format_status(nodes: Iterable[DispyNode], wall_time: float) -> str:
    """The table print_status prints: one row per node, then totals and speedup."""
    rows = []
    total_time = 0.0
    for node in sorted(nodes, key=lambda n: n.ip_addr):
        label = f"{node.ip_addr} ({node.name})" if node.name and node.name != node.ip_addr else node.ip_addr
        per_job = node.cpu_time / node.jobs_done if node.jobs_done else 0.0
        total_time += node.cpu_time
        rows.append((label, str(node.cpus), str(node.jobs_done), f"{per_job:.3f}",
                     f"{node.cpu_time:.3f}", format_size(node.tx), format_size(node.rx)))
    width = max([len(_COLUMNS[0]) + 2] + [len(r[0]) + 1 for r in rows])
    widths = (width, 6, 8, 10, 14, 10, 10)
    lines = [
        " | ".join(
            (f" {h:<{w - 1}}" if i == 0 else f"{h:>{w}}") for i, (h, w) in enumerate(zip(_COLUMNS, widths))
        ),
    ]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append(" | ".join(
            (f" {c:<{w - 1}}" if i == 0 else f"{c:>{w}}") for i, (c, w) in enumerate(zip(row, widths))
        ))
    speedup = total_time / wall_time if wall_time > 0 else 0.0
    lines.append("")
    lines.append(f"Total job time: {total_time:.3f} sec, wall time: {wall_time:.3f} sec, speedup: {speedup:.3f}")
    return "\n".join(lines) + "\n"
