"""``dispy.config`` *is* :mod:`dispy_core.config`: the same module object, not a copy.

dispy programs set ``dispy.config.DispyPort = n`` (or ``MsgTimeout``...) before creating a
cluster and expect every part of dispy to see the new value. Re-exporting the names with
``from ... import *`` would freeze copies of them, so this module replaces itself in
``sys.modules`` with the core module: ``import dispy.config``, ``from dispy import config``
and ``dispy.config`` all give ``dispy_core.config``.
"""

import sys

from dispy_core import config as _core_config

sys.modules[__name__] = _core_config
