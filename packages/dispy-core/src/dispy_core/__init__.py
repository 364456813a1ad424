"""dispy_core: what every dispy program shares and what crosses the wire.

Modules: :mod:`config` (ports, timeouts, sizes), :mod:`errors`, :mod:`framing`,
:mod:`codec` and :mod:`messages` (the wire format), :mod:`auth` and :mod:`connection`
(handshake and authenticated sessions, no I/O), :mod:`serialization` (user payloads),
:mod:`status` (job and node status numbers), :mod:`aio` (the asyncio transport),
:mod:`tls` (SSLContexts for TLS between client and node; `dispy-certgen` is :mod:`certgen`).
What a cluster (JobCluster, and dispyscheduler for shared clusters) needs toward nodes:
:mod:`scheduling` (node pool, queues, policies), :mod:`nodes` (NodeAllocate, DispyNode,
node specs), :mod:`netif` (addresses and interfaces), :mod:`discovery` (UDP discovery),
:mod:`computation` (a computation as it travels), :mod:`session` (one node's conversation),
:mod:`engine` (a computation's nodes, jobs and results on one event loop).
"""

from .__about__ import __version__
from .connection import Connection
from .errors import (
    AuthenticationError,
    ComputationError,
    ConfigError,
    ConnectionClosed,
    DispyError,
    FrameTooLarge,
    ProtocolError,
    ProtocolVersionError,
    PythonVersionError,
)
from .framing import PROTOCOL_VERSION
from .status import JobStatus, NodeStatus

__all__ = [
    "__version__",
    "PROTOCOL_VERSION",
    "Connection",
    "JobStatus",
    "NodeStatus",
    "DispyError",
    "ConfigError",
    "ProtocolError",
    "FrameTooLarge",
    "ProtocolVersionError",
    "AuthenticationError",
    "ConnectionClosed",
    "PythonVersionError",
    "ComputationError",
]
