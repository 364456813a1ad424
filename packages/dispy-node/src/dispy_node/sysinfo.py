"""What the node tells clients about itself: NodeInfo, availability (psutil), versions.

Also the one compatibility rule the node enforces on a Compute: Python functions travel
as cloudpickled bytecode, which only the same Python minor version can run.
"""

from __future__ import annotations

import logging
import platform

import psutil  # type: ignore[import-untyped]

from dispy_core.messages import AvailInfo, NodeInfo

from .__about__ import __version__
from .options import NodeConfig, machine_cpus

__all__ = ["SOFTWARE", "avail_info", "node_info", "python_version_error", "prime_cpu_percent"]

log = logging.getLogger(__name__)

SOFTWARE = f"dispy-node {__version__}"


def prime_cpu_percent() -> None:
    """psutil's first cpu_percent() call has no reference point; make it early."""
    psutil.cpu_percent(interval=None)


def avail_info(path: str) -> AvailInfo | None:
    """Free CPU %, available memory (bytes), free disk at ``path`` (bytes), free swap %."""
    try:
        disk = psutil.disk_usage(path).free
    except OSError:
        disk = 0
    try:
        return AvailInfo(
            cpu=round(100.0 - psutil.cpu_percent(interval=None), 1),
            memory=int(psutil.virtual_memory().available),
            disk=int(disk),
            swap=round(100.0 - psutil.swap_memory().percent, 1),
        )
    except Exception as exc:  # psutil may not know this platform's counters
        log.debug("no availability info: %s", exc)
        return None


def node_info(cfg: NodeConfig, ip_addr: str, port: int) -> NodeInfo:
    return NodeInfo(
        name=cfg.name,
        ip_addr=ip_addr,
        port=port,
        cpus=cfg.cpus,
        max_cpus=machine_cpus(),
        platform=platform.platform(),
        python_version=platform.python_version(),
        software=SOFTWARE,
        avail_info=avail_info(cfg.dest_path_prefix),
    )


def python_version_error(client_version: str) -> str | None:
    """Why a function computation from a client on ``client_version`` can't run here."""
    ours = platform.python_version()
    if client_version.split(".")[:2] == ours.split(".")[:2]:
        return None
    return (
        f"client runs Python {client_version or '(unknown)'} but this node runs Python {ours}: "
        "Python functions can't be shipped between Python versions (bytecode differs); "
        "run the same Python minor version on both, or use a program computation"
    )
