"""The program node_update_prog.py runs once on each node (a program computation)."""

import os
import platform
import time

time.sleep(0.2)
print("updated %s at %s" % (os.environ.get("DISPY_NODE_IP_ADDR", "?"), platform.python_version()))
