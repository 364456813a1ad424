"""Test helpers shared by every dispy package's tests: in-memory connection pairs and
real ``dispynode`` subprocesses on loopback addresses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from .connection import Connection
from .messages import Message

__all__ = ["connected_pair", "pump", "received", "NodeProcess", "node_python", "wait_until", "unused_port"]


def pump(a: Connection, b: Connection) -> None:
    """Move bytes both ways until neither side has anything to send."""
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            out = src.data_to_send()
            if out:
                dst.feed(b"".join(bytes(memoryview(p).cast("B")) for p in out))
                moved = True
        if not moved:
            return


def received(conn: Connection) -> list[Message]:
    msgs = []
    while (m := conn.next_message()) is not None:
        msgs.append(m)
    return msgs


def connected_pair(secret: str = "", responder_secret: str | None = None) -> tuple[Connection, Connection]:
    """An initiator and a responder with the handshake done (Welcome consumed)."""
    a = Connection(initiator=True, secret=secret, software="test-initiator")
    b = Connection(initiator=False, secret=secret if responder_secret is None else responder_secret,
                   software="test-responder")
    pump(a, b)
    received(a), received(b)
    return a, b


# -- real nodes for tests ------------------------------------------------------------

_SERVING = re.compile(r"serving (\d+) CPUs at (\S+):(\d+)")


def node_python() -> str:
    """The interpreter that runs test nodes: $DISPY_NODE_PYTHON, else this one.

    Pointing it at a virtualenv that has only dispy-core and dispy-node installed is how
    the client-only test environment proves the two install separately.
    """
    return os.environ.get("DISPY_NODE_PYTHON") or sys.executable


class NodeProcess:
    """A real ``dispynode`` subprocess bound to a loopback address, for tests.

    Started with ``-i <ip> -p 0 --daemon``; the port comes from the node's "serving" line.
    Stop it with :meth:`stop` (SIGTERM, then SIGKILL) or use it as a context manager.
    Only this process is ever signalled, by PID.
    """

    def __init__(self, ip: str = "127.0.0.1", *args: str, python: str | None = None,
                 port: int = 0, timeout: float = 30.0, dest_path_prefix: str | None = None) -> None:
        self.ip = ip
        self._tmp = None
        if dest_path_prefix is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dispy-test-node-")
            dest_path_prefix = self._tmp.name
        self.dest_path_prefix = dest_path_prefix
        cmd = [python or node_python(), "-m", "dispy_node.cli", "-i", ip, "-p", str(port),
               "--daemon", "--dest_path_prefix", dest_path_prefix, *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.output: list[str] = []
        self.port = 0
        self.cpus = 0
        ready = threading.Event()

        def reader() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = _SERVING.search(line)
                if m and not ready.is_set():
                    self.cpus, self.port = int(m.group(1)), int(m.group(3))
                    ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        if not ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"dispynode did not start: {' '.join(cmd)}\n{self.log}")

    @property
    def log(self) -> str:
        return "".join(self.output)

    @property
    def addr(self) -> str:
        return f"{self.ip}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)



def unused_port(ip: str = "127.0.0.1") -> int:
    """A TCP port on ``ip`` that nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])
