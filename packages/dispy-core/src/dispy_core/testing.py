"""Test helpers shared by every dispy package's tests: in-memory connection pairs and
real ``dispynode`` subprocesses on loopback addresses."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections.abc import Callable, Iterator
from typing import Any

from .connection import Connection
from .messages import Message

__all__ = ["connected_pair", "pump", "received", "NodeProcess", "SchedulerProcess", "RelayProcess", "node_python", "wait_until",
           "unused_port", "console_commands"]


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

_SERVING = re.compile(r"serving (?P<cpus>\d+) CPUs at (\S+):(?P<port>\d+)")
_SCHEDULER_SERVING = re.compile(r"dispyscheduler serving clients at (\S+):(?P<port>\d+)")
_RELAY_SERVING = re.compile(r"dispynetrelay serving clients at (\S+):(?P<port>\d+)")


def node_python() -> str:
    """The interpreter that runs test nodes: $DISPY_NODE_PYTHON, else this one.

    Pointing it at a virtualenv that has only dispy-core and dispy-node installed is how
    the client-only test environment proves the two install separately.
    """
    return os.environ.get("DISPY_NODE_PYTHON") or sys.executable


class DaemonProcess:
    """A real daemon subprocess (``cmd``) whose "serving" line (``pattern``: CPUs, IP,
    port groups, or IP and port) gives its port. Stop it with :meth:`stop` (SIGTERM, then
    SIGKILL) or use it as a context manager. Only this process is ever signalled, by PID."""

    def __init__(self, ip: str, cmd: list[str], pattern: re.Pattern[str], what: str,
                 tmp: tempfile.TemporaryDirectory[str] | None, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        self.ip = ip
        self._tmp = tmp
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.output: list[str] = []
        self.port = 0
        self.cpus = 0
        ready = threading.Event()

        def reader() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = pattern.search(line)
                if m and not ready.is_set():
                    self.cpus = int(m.group("cpus")) if "cpus" in pattern.groupindex else 0
                    self.port = int(m.group("port"))
                    ready.set()
            ready.set()

        threading.Thread(target=reader, daemon=True).start()
        if not ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"{what} did not start: {' '.join(cmd)}\n{self.log}")

    @property
    def log(self) -> str:
        """The daemon's output so far. A thread reads it from a pipe and may lag behind
        the daemon: wait for a line (``wait_until(lambda: text in d.log)``), don't read once."""
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

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NodeProcess(DaemonProcess):
    """A real ``dispynode`` started with ``-i <ip> -p 0 --daemon`` (and ``args``).

    ``protocols`` (lowest, highest) makes it speak other protocol versions than this
    release does (see :mod:`dispy_core.compat`), in all its processes: a node of another
    release, for tests of the handshake's version refusals."""

    def __init__(self, ip: str = "127.0.0.1", *args: str, python: str | None = None,
                 port: int = 0, timeout: float = 30.0, dest_path_prefix: str | None = None,
                 protocols: tuple[int, int] | None = None) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="dispy-test-node-")
        if dest_path_prefix is None:
            dest_path_prefix = tmp.name
        self.dest_path_prefix = dest_path_prefix
        cmd = [python or node_python(), "-m", "dispy_node.cli", "-i", ip, "-p", str(port),
               "--daemon", "--dest_path_prefix", dest_path_prefix, *args]
        env = None
        if protocols is not None:
            # sitecustomize runs first in every Python process started with this path:
            # the node's zygote and workers must speak the same versions as the node.
            site = os.path.join(tmp.name, "protocols-site")
            os.mkdir(site)
            with open(os.path.join(site, "sitecustomize.py"), "w") as fh:
                fh.write(f"import dispy_core.compat as c\nc.PROTOCOL_LOWEST, c.PROTOCOL_HIGHEST = {protocols!r}\n")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
        super().__init__(ip, cmd, _SERVING, "dispynode", tmp, timeout, env)


class SchedulerProcess(DaemonProcess):
    """A real ``dispyscheduler`` on ``ip`` (``--scheduler_port 0 -p 0 --daemon``) using
    exactly ``nodes`` (``-n``: it never broadcasts), with ``args``."""

    def __init__(self, ip: str, nodes: list[str], *args: str, timeout: float = 30.0) -> None:
        if importlib.util.find_spec("dispy_scheduler") is None:
            # A test run where it is not installed (the client-only suite): the test is
            # skipped (pytest and unittest both take SkipTest), not failed.
            raise unittest.SkipTest("dispy-scheduler is not installed here")
        tmp = tempfile.TemporaryDirectory(prefix="dispy-test-scheduler-")
        self.dest_path_prefix = tmp.name
        cmd = [sys.executable, "-m", "dispy_scheduler.cli", "-i", ip, "--scheduler_port", "0", "-p", "0",
               "--daemon", "--dest_path_prefix", tmp.name]
        for n in nodes:
            cmd += ["-n", n]
        super().__init__(ip, cmd + list(args), _SCHEDULER_SERVING, "dispyscheduler", tmp, timeout)


class RelayProcess(DaemonProcess):
    """A real ``dispynetrelay -i <ip> --daemon`` with ``args`` (``--relay_port 0`` unless
    ``args`` give one). Only in a network namespace of the test's own, or on loopback
    addresses (from which it sends no discovery request)."""

    def __init__(self, ip: str, *args: str, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "dispy_relay.cli", "-i", ip, "--daemon"]
        if "--relay_port" not in args:
            cmd += ["--relay_port", "0"]
        super().__init__(ip, cmd + list(args), _RELAY_SERVING, "dispynetrelay", None, timeout)


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


@contextlib.contextmanager
def console_commands(console_type: Callable[..., Any], target: Any) -> Iterator[tuple[Callable[[str], str], list[str]]]:
    """A daemon's console (``console_type(target, quit=..., exit=..., stdin=..., stdout=...)``,
    a :class:`dispy_core.console.CommandConsole`) on ``target``, with /dev/null as stdin.
    Yields ``say(line)``, which carries out a command line and returns what the console
    printed, and the list of the CLI's calls it made (``"quit"``, ``"exit"``)."""
    out, calls = io.StringIO(), []
    with open(os.devnull) as stdin:
        console = console_type(target, quit=lambda: calls.append("quit"), exit=lambda: calls.append("exit"),
                               stdin=stdin, stdout=out)

        def say(line: str) -> str:
            out.seek(0)
            out.truncate()
            console.command(line)
            return out.getvalue()

        yield say, calls
