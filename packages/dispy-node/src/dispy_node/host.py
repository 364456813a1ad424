"""A computation's host process: sets the computation up, forks its workers, cleans up.

The zygote forks one host per computation. The host:

1. connects to the main process (HostHello) and receives the client's Compute, with
   ``dest_path`` replaced by the absolute directory the main process made for it and
   ``jobs_dir`` set to where its jobs' own directories go;
2. writes the computation's files there (those in ``kept`` are there already), makes it
   the working directory (and puts it on ``sys.path``), registers the source text the
   client sent (``Compute.sources``, so that tracebacks of setup, jobs and cleanup show
   the user's lines), unpickles ``{"computation", "depends", "setup", "cleanup"}``,
   injects the depends objects under their ``__name__`` (and dispy 4.x's standard
   modules, ``execute.NODE_MODULES``, where not defined) and runs ``setup(*setup_args)``;
   it answers HostReady(error): setup must return 0, 1 or 2 (dispy's historical codes;
   here every job is forked from this process, so setup's globals are always visible
   and 1 and 2 mean the same as 0);
3. on SpawnWorker forks a worker (which inherits everything setup made) and reports
   WorkerStarted; reaps workers on SIGCHLD and reports WorkerExited with the exit code
   (negative: the signal that killed it);
4. on CleanupHost waits for its workers to leave, runs ``cleanup(*setup_args)`` if it
   is a function, answers HostDone(error) and exits.

If the main process goes away the host kills its workers and exits.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

from dispy_core import serialization
from dispy_core.errors import DispyError
from dispy_core.messages import (
    CleanupHost,
    Compute,
    HostDone,
    HostHello,
    HostReady,
    SpawnWorker,
    WorkerExited,
    WorkerStarted,
)
from dispy_core.sources import install_sources

from .__about__ import __version__
from .execute import (Runtime, format_user_exception, install_interrupt_handler, limit_file_size,
                      provide_node_modules)
from .ipc import BlockingChannel
from .paths import set_modes, write_files
from .worker import worker_main

__all__ = ["host_main", "STOP_WORKERS_TIMEOUT"]

log = logging.getLogger(__name__)

#: Seconds workers get to leave on their own (the main process closed their
#: connections) before the host kills them at cleanup.
STOP_WORKERS_TIMEOUT = 2.0

_SETUP_OK = (0, 1, 2)


class _SetupFailed(Exception):
    pass


class Host:
    def __init__(self, chan: BlockingChannel, compute_id: str, ip_addr: str, address: str,
                 token: str, node_name: str) -> None:
        self.chan = chan
        self.compute_id = compute_id
        self.ip_addr = ip_addr
        self.address = address
        self.token = token
        self.node_name = node_name
        self.workers: dict[int, int] = {}  # pid -> worker_id
        self.process_per_job = False
        self.runtime: Runtime | None = None
        self.cleanup: Any = None
        self.setup_args: tuple[Any, ...] = ()
        self.shutdown_requested = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    # -- setup ------------------------------------------------------------------------
    def set_up(self, compute: Compute) -> str | None:
        """Prepare the computation; returns None or the error for the client."""
        try:
            self._set_up(compute)
        except _SetupFailed as exc:
            return str(exc)
        except BaseException as exc:
            return f"setup of computation {compute.name!r} failed:\n{format_user_exception(exc)}"
        return None

    def _set_up(self, compute: Compute) -> None:
        comp_dir = compute.dest_path
        assert comp_dir is not None and os.path.isabs(comp_dir)
        os.chdir(comp_dir)
        sys.path.insert(0, comp_dir)
        self.process_per_job = compute.process_per_job
        if isinstance(compute.options, dict):  # inherited by the workers forked from here
            limit_file_size(compute.options.get("max_file_size"))
        # Before any user code runs, in this process: workers fork from it and inherit
        # the sources (the main process checked the field).
        install_sources(compute.sources)
        payload = serialization.loads(compute.payload)
        computation = payload.get("computation")
        setup, self.cleanup = payload.get("setup"), payload.get("cleanup")
        self.setup_args = tuple(serialization.loads(compute.setup_args) or ())
        jobs_root = compute.jobs_dir
        assert jobs_root and os.path.isabs(jobs_root)
        # Files the node already held (Compute.kept) are not written again; only their
        # modes follow the client's copies.
        executable = str(computation) if compute.kind == "program" else ""
        write_files(comp_dir, compute.files, executable=executable)
        set_modes(comp_dir, compute.kept, executable=executable)
        if compute.kind == "program":
            shipped = [f.name for f in compute.files] + [f.name for f in compute.kept]
            argv = _program_argv(computation, comp_dir, shipped)
            self.runtime = Runtime("program", argv, comp_dir, self.node_name, self.ip_addr, jobs_root)
            namespaces: list[dict[str, Any]] = []
        else:
            if not callable(computation):
                raise _SetupFailed(f"computation {compute.name!r} is not a function "
                                   f"(got {type(computation).__name__})")
            self.runtime = Runtime("function", computation, comp_dir, self.node_name, self.ip_addr, jobs_root)
            namespaces = _namespaces(computation, setup, self.cleanup)
            for ns in namespaces:
                ns["dispynode_shutdown"] = self._make_shutdown()
                # What jobs see of the node, setup and cleanup see too (dispy 4.x
                # programs log from cleanup and key setup's data by node name).
                ns["dispy_node_name"] = self.node_name
                ns["dispy_node_ip_addr"] = self.ip_addr
                ns["dispynode_logger"] = logging.getLogger("dispynode.job")
                provide_node_modules(ns)
        for obj in payload.get("depends") or ():
            name = getattr(obj, "__name__", None)
            if isinstance(name, str):
                for ns in namespaces:
                    ns[name] = obj
        if setup is not None:
            ret = setup(*self.setup_args)
            if not isinstance(ret, int) or ret not in _SETUP_OK:
                raise _SetupFailed(f"setup of computation {compute.name!r} returned {ret!r}; "
                                   "expected 0, 1 or 2")
            # Globals that setup made are the job's globals too, even when setup and the
            # computation came from different modules (the original ran them in one
            # namespace).
            if namespaces and hasattr(setup, "__globals__"):
                target = namespaces[0]
                for name, value in setup.__globals__.items():
                    if not name.startswith("__"):
                        target.setdefault(name, value)

    # -- main loop --------------------------------------------------------------------
    def serve(self) -> None:
        sock = self.chan.fileno()
        while True:
            readable, _, _ = select.select([sock, self._wake_r], [], [])
            if self._wake_r in readable:
                _drain(self._wake_r)
                self._reap()
            if sock in readable:
                for msg in self.chan.recv_available():
                    if isinstance(msg, SpawnWorker):
                        self._spawn(msg.worker_id)
                    elif isinstance(msg, CleanupHost):
                        self._clean_up()
                        return
                    else:
                        log.warning("host of %s: unexpected %s", self.compute_id, type(msg).__name__)

    def _spawn(self, worker_id: int) -> None:
        assert self.runtime is not None
        pid = os.fork()
        if pid == 0:
            try:
                self._become_worker(worker_id)
            finally:
                os._exit(1)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins
        except OSError:
            pass
        self.workers[pid] = worker_id
        self.chan.send(WorkerStarted(worker_id, pid))

    def _become_worker(self, worker_id: int) -> None:
        # A worker is its own process group, so that cancelling a job also reaches the
        # processes it started (a program computation's program, for one).
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        install_interrupt_handler()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.chan.close()
        assert self.runtime is not None
        worker_main(self.runtime, self.address, self.token, self.compute_id, worker_id,
                    self.process_per_job)

    def _reap(self, report: bool = True) -> None:
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                worker_id = self.workers.pop(pid)
                if report:
                    self.chan.send(WorkerExited(worker_id, pid, os.waitstatus_to_exitcode(status)))

    def _clean_up(self) -> None:
        self.stop_workers(STOP_WORKERS_TIMEOUT)
        error = None
        if callable(self.cleanup):
            try:
                self.cleanup(*self.setup_args)
            except BaseException as exc:
                error = f"cleanup of computation {self.compute_id} failed:\n{format_user_exception(exc)}"
        self.chan.send(HostDone(error, self.shutdown_requested))

    def _make_shutdown(self) -> Any:
        host_pid = os.getpid()

        def dispynode_shutdown() -> None:
            """Ask the node to shut down once this computation's cleanup is done (honored
            only when the node runs with --client_shutdown, and only from setup or cleanup)."""
            if os.getpid() != host_pid:
                logging.getLogger("dispynode.job").warning(
                    "dispynode_shutdown() has effect only in the computation's setup or cleanup, "
                    "not in a job; ignored")
                return
            self.shutdown_requested = True

        return dispynode_shutdown

    def stop_workers(self, timeout: float) -> None:
        """Wait up to ``timeout`` for workers to exit, then kill what is left."""
        deadline = time.monotonic() + timeout
        self._reap(report=False)
        while self.workers and (left := deadline - time.monotonic()) > 0:
            select.select([self._wake_r], [], [], left)
            _drain(self._wake_r)
            self._reap(report=False)
        for pid in self.workers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        while self.workers:
            select.select([self._wake_r], [], [], 0.1)
            _drain(self._wake_r)
            self._reap(report=False)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _namespaces(*funcs: Any) -> list[dict[str, Any]]:
    """The distinct globals dicts of the given functions (computation's first)."""
    out: list[dict[str, Any]] = []
    for f in funcs:
        g = getattr(f, "__globals__", None)
        if isinstance(g, dict) and not any(g is seen for seen in out):
            out.append(g)
    return out


def _program_argv(program: Any, comp_dir: str, shipped: list[str]) -> list[str]:
    """The command that runs a program computation (before the job's arguments)."""
    if not isinstance(program, str) or not program:
        raise _SetupFailed(f"a program computation needs a program name, got {program!r}")
    if program in shipped:
        path = os.path.join(comp_dir, program)
    else:
        found = shutil.which(program)
        if found is None:
            raise _SetupFailed(f"program {program!r} is neither among the computation's files "
                               "nor found on this node's PATH")
        path = found
    if path.endswith(".py"):
        return [sys.executable, path]
    return [path]


def host_main(compute_id: str, ip_addr: str, address: str, token: str, node_name: str) -> None:
    """Body of a freshly forked host; never returns."""
    code = 0
    host = None
    try:
        chan = BlockingChannel.connect(address, token, f"dispy-node-host {__version__}")
        host = Host(chan, compute_id, ip_addr, address, token, node_name)
        chan.send(HostHello(compute_id, os.getpid()))
        compute = chan.recv()
        if not isinstance(compute, Compute):
            raise DispyError(f"expected Compute, got {type(compute).__name__}")
        error = host.set_up(compute)
        chan.send(HostReady(error))
        if error is None:
            host.serve()
    except (DispyError, OSError) as exc:  # the main process closed or went away
        log.debug("host of %s: connection ended: %s", compute_id, exc)
    except BaseException:
        log.exception("host of %s failed", compute_id)
        code = 1
    if host is not None and host.workers:
        host.stop_workers(0)
    os._exit(code)
