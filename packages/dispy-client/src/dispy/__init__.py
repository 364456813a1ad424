"""dispy: distributed and parallel computing with/for Python.

``JobCluster(computation, nodes=[...])`` sends a Python function (or a program) to
computers running ``dispynode``; ``cluster.submit(*args)`` runs it there and returns a
:class:`DispyJob` whose ``job()`` waits for the result::

    import dispy

    def compute(n):
        return n * n

    with dispy.JobCluster(compute, nodes=["192.168.1.10"]) as cluster:
        jobs = [cluster.submit(i) for i in range(10)]
        print([job() for job in jobs])

Modules: :mod:`._cluster` (JobCluster), :mod:`._job` (DispyJob), :mod:`._node` (nodes and
NodeAllocate), :mod:`._computation` (what travels), :mod:`._runtime` (the event-loop
thread), :mod:`._session` (one node's conversation), :mod:`._discovery` (UDP discovery),
:mod:`._callbacks` (the callback thread), :mod:`._status` (print_status), :mod:`._log`
(``dispy.logger``). ``dispy.config`` is :mod:`dispy_core.config` itself.
"""

from dispy_core.errors import ConfigError, DispyError

from . import config
from .__about__ import __version__
from ._cluster import JobCluster
from ._job import DispyJob
from ._log import logger
from ._node import DispyNode, DispyNodeAvailInfo, NodeAllocate
from ._recover import recover_jobs
from ._status import ClusterStatus

__all__ = [
    "__version__",
    "JobCluster",
    "DispyJob",
    "DispyNode",
    "DispyNodeAvailInfo",
    "NodeAllocate",
    "ClusterStatus",
    "recover_jobs",
    "DispyError",
    "ConfigError",
    "logger",
    "config",
]
