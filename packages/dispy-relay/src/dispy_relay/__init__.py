"""dispy_relay: dispynetrelay, which finds the dispy nodes of its own network and tells
clients and dispyschedulers on other networks (where UDP discovery does not reach)
where they are.

Modules: :mod:`.relay` (the relay itself, :class:`Relay` and :class:`RelayConfig`),
:mod:`.cli` (the ``dispynetrelay`` command and its terminal commands).
"""

from .__about__ import __version__
from .relay import Relay, RelayConfig

__all__ = ["__version__", "Relay", "RelayConfig"]
