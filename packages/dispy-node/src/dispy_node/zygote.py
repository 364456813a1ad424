"""The zygote: a warm, idle interpreter that forks one host process per computation.

The main process starts it once (``python -m dispy_node.zygote``) and writes one JSON
line to its stdin: the internal socket's address, the token, the node's name and the log
level. The zygote imports everything hosts and workers need (cloudpickle, dispy_core,
this package), connects (ZygoteHello) and waits. On ForkHost it forks; the child becomes
that computation's host. Setting up a computation therefore costs a fork, not an
interpreter start, which keeps the time from Compute to the first result in
milliseconds.

The zygote runs in its own session (the main process starts it so), ignores SIGINT, and
lets the kernel reap its hosts (SIGCHLD ignored): the main process learns that a host
died from its connection closing. It exits when the main process closes the connection.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from dispy_core.errors import DispyError
from dispy_core.messages import ForkHost, ZygoteHello

from .__about__ import __version__
from .execute import set_max_file_size
from .host import host_main
from .ipc import BlockingChannel

__all__ = ["main"]

log = logging.getLogger(__name__)


def _detach_stdin() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def main() -> None:
    init = json.loads(sys.stdin.readline())
    _detach_stdin()  # user code reading stdin gets EOF, not the node's pipe
    logging.basicConfig(level=init.get("loglevel", logging.INFO),
                        format="%(asctime)s dispynode[%(process)d] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    address, token, node_name = init["address"], init["token"], init["name"]
    set_max_file_size(init.get("max_file_size", 0))  # inherited by hosts and workers
    chan = BlockingChannel.connect(address, token, f"dispy-node-zygote {__version__}")
    chan.send(ZygoteHello(os.getpid()))
    while True:
        try:
            msg = chan.recv()
        except (DispyError, OSError):
            break
        if not isinstance(msg, ForkHost):
            log.warning("zygote: unexpected %s from the node", type(msg).__name__)
            continue
        pid = os.fork()
        if pid == 0:
            chan.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            host_main(msg.compute_id, msg.ip_addr, address, token, node_name)
            os._exit(1)  # host_main never returns; this is a guard
        log.debug("zygote: forked host %d for %s", pid, msg.compute_id)
    chan.close()


if __name__ == "__main__":
    main()
