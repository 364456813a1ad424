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

Modules: :mod:`._cluster` (JobCluster), :mod:`._job` (DispyJob), :mod:`._computation`
(what travels), :mod:`._runtime` (the client's engine: the event-loop thread), :mod:`._recover` (recover file,
recover_jobs), :mod:`._callbacks` (the callback thread), :mod:`._status` (print_status),
:mod:`._log` (``dispy.logger``); :mod:`dispy.httpd` (the web monitor, ``DispyHTTPServer``)
is imported when a program asks for it. What dispyscheduler shares with JobCluster is in
dispy-core: nodes and NodeAllocate (:mod:`dispy_core.nodes`), one node's conversation
(:mod:`dispy_core.session`), UDP discovery (:mod:`dispy_core.discovery`), the engine
(:mod:`dispy_core.engine`: sessions, dispatch, results, that ``_runtime`` subclasses). ``dispy.config``
is :mod:`dispy_core.config` itself.
"""

from dispy_core.errors import ConfigError, DispyError
from dispy_core.nodes import DispyNode, DispyNodeAvailInfo, NodeAllocate

from . import config
from .__about__ import __version__
from ._cluster import JobCluster
from ._job import DispyJob
from ._log import logger
from ._recover import recover_jobs
from ._shared import SharedJobCluster
from ._status import ClusterStatus

__all__ = [
    "__version__",
    "JobCluster",
    "SharedJobCluster",
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
