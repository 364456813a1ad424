"""dispy_scheduler: dispyscheduler, the shared scheduler through which several dispy
clients (``SharedJobCluster``) use the same nodes at once.

Modules: :mod:`.options` (the settings, :class:`SchedulerConfig`), :mod:`.cli` (the
``dispyscheduler`` command), :mod:`.console` (its terminal commands), :mod:`.daemon`
(the scheduler itself).
"""

from .__about__ import __version__
from .options import SchedulerConfig

__all__ = ["__version__", "SchedulerConfig"]
