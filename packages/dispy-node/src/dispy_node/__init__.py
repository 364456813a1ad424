"""dispy_node: the dispynode server, which runs dispy jobs on a machine.

Processes: the main process (:mod:`.server`, asyncio; never runs user code), a zygote
(:mod:`.zygote`) that forks one host per computation (:mod:`.host`: files, depends,
setup, cleanup), and the host's workers (:mod:`.worker`, :mod:`.execute`: the jobs).
Supporting modules: :mod:`.options` (settings), :mod:`.cli` (the ``dispynode`` command),
:mod:`.scheduler` (job queues and CPU accounting), :mod:`.paths` (where peers' files may
go), :mod:`.ipc` (the internal transport), :mod:`.discovery`, :mod:`.sysinfo`,
:mod:`.console`.
"""

from .__about__ import __version__
from .options import NodeConfig
from .server import Node

__all__ = ["__version__", "Node", "NodeConfig"]
