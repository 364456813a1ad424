"""Running one job inside a worker process, and turning whatever happens into a JobResult.

This is the only module that calls the user's computation. It owns the per-job
environment the original dispynode gives jobs:

* globals ``dispy_job_path``, ``dispy_node_name``, ``dispy_node_ip_addr``,
  ``dispynode_logger`` (messages for the node's log, not the job's stderr) and
  ``dispy_provisional_result(result)`` (sends ``result`` to the client now, as a
  ProvisionalResult, through the worker's sender: :func:`set_result_sender`) and
  ``dispy_send_file(path)`` (sends a file to the client, through the worker's file
  sender: :func:`set_file_sender`; at most ``--max_file_size``, :func:`set_max_file_size`)
  in the computation function's globals;
* the standard modules dispy 4.x's node had imported where computations ran
  (:data:`NODE_MODULES`: ``os``, ``sys``, ``time``...), for programs that use them
  without importing them (:func:`provide_node_modules`, called by the host);
* per-job ``depends`` (functions, classes) injected into those globals for the job only;
  a per-job function also sees the computation's globals while the job runs, as it did
  in dispy 4.x, where it ran in the computation's namespace;
* the job's working directory (``dispy_job_path``): the computation's directory, or for
  a job with files of its own a directory of its own that shows the job's files and the
  computation's by base name (:func:`dispy_node.paths.make_job_dir`), on ``sys.path``
  (``PATH`` for programs) before the computation's directory, removed afterwards;
* ``sys.stdout``/``sys.stderr`` captured as ``str`` for functions, the program's output
  as ``bytes`` for programs;
* an exception (any ``BaseException``: ``SystemExit`` and ``KeyboardInterrupt`` too)
  gives status Terminated and the traceback text, without this module's own frames,
  with the user's source lines: the host registered the computation's sources, and
  a job's own (``JobSpec.sources``) are registered before its code is loaded.

SIGINT is how the node cancels a running job: the main process first sends the worker
a CancelJob naming the job, then SIGINT. The handler raises KeyboardInterrupt only while
user code runs and only if the worker's check (:func:`set_interrupt_check`, which reads
the pending CancelJob messages) says the job running now is the one cancelled; so a
cancel that arrives late, between jobs or after the job finished, interrupts nothing.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from dispy_core import config, serialization
from dispy_core.messages import FileData, JobResult, JobSpec
from dispy_core.sources import install_sources
from dispy_core.status import JobStatus

from .paths import make_job_dir, remove_tree

__all__ = ["Runtime", "run_job", "install_interrupt_handler", "set_interrupt_check",
           "set_result_sender", "set_file_sender", "set_max_file_size", "limit_file_size", "send_file",
           "format_user_exception", "NODE_MODULES", "provide_node_modules"]

_MISSING = object()

#: The standard modules dispy 4.x's dispynode had imported in the namespace where it ran
#: computations, setup and cleanup. Its own examples rely on some of them without an
#: import (``os.getpid()`` in a computation, ``time.sleep`` after a setup that imported
#: only hashlib), so a computation's globals get whichever of them it does not define.
NODE_MODULES = ("copy", "errno", "glob", "hashlib", "io", "marshal", "multiprocessing",
                "os", "pickle", "platform", "re", "shutil", "signal", "socket", "stat",
                "struct", "subprocess", "sys", "tempfile", "threading", "time", "traceback")


def provide_node_modules(namespace: dict[str, Any]) -> None:
    """Bind each of :data:`NODE_MODULES` in ``namespace`` unless it holds that name."""
    for name in NODE_MODULES:
        if name not in namespace:
            namespace[name] = importlib.import_module(name)


_JOB_LOGGER = logging.getLogger("dispynode.job")
_interruptible = False  # True only while user code runs (see module docstring)
_interrupt_check: Callable[[], bool] | None = None
_checking = False  # the handler is running (Python handlers can nest)
_check_again = False  # a SIGINT arrived while it ran
_result_sender: Callable[[Any, list[Any], float | None, bool], None] | None = None
_current_job: Any = None  # job id of the function job running now
_deferring = False  # a provisional result is being sent: SIGINT waits for the end
_deferred = False  # a SIGINT arrived meanwhile
_file_sender: Callable[[Any, str, FileData, float | None, bool], None] | None = None
_max_file_size = 0  # dispynode --max_file_size (0: no limit)
_limit_source = "this node's limit (dispynode --max_file_size)"  # what set _max_file_size


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _checking, _check_again, _deferred
    if not _interruptible:
        if _deferring:
            _deferred = True
        return
    if _interrupt_check is None:
        raise KeyboardInterrupt
    if _checking:
        # A second SIGINT while the first is being checked: raising here would unwind
        # through the outer check and lose the messages it had read. Let it look again.
        _check_again = True
        return
    _checking = True
    try:
        while True:
            _check_again = False
            if _interrupt_check():
                raise KeyboardInterrupt
            if not _check_again:
                return
    finally:
        _checking = False


def install_interrupt_handler() -> None:
    signal.signal(signal.SIGINT, _on_sigint)


def set_interrupt_check(check: Callable[[], bool] | None) -> None:
    """``check()`` runs in the SIGINT handler while a job runs: True interrupts the job."""
    global _interrupt_check
    _interrupt_check = check


def set_result_sender(sender: Callable[[Any, list[Any], float | None, bool], None] | None) -> None:
    """``sender(job_id, payload, timeout, relay)`` sends a provisional result of the running job
    to the node's main process (blocking at most ``timeout`` seconds); used by
    ``dispy_provisional_result``."""
    global _result_sender
    _result_sender = sender


def provisional_result(result: Any, relay: bool = False, timeout: float = config.MsgTimeout) -> int:
    """``dispy_provisional_result`` in jobs: send ``result`` to the client now, as the
    job's provisional result; the job goes on. 0 if sent, -1 if not (or not within
    ``timeout`` seconds). ``relay`` matters only with a shared scheduler: True sends the
    result through dispyscheduler, False (default) straight to the client when the client
    could attach to this node (else through the scheduler too); with JobCluster it has no
    effect, as dispy documents."""
    sender, job_id = _result_sender, _current_job
    if sender is None or job_id is None:
        return -1
    try:
        payload = serialization.dumps(result)
    except Exception as exc:
        _JOB_LOGGER.warning("dispy_provisional_result: can't serialize the result: %s: %s",
                            type(exc).__name__, exc)
        return -1
    return _send_now("dispy_provisional_result", lambda: sender(job_id, payload, timeout, bool(relay)))


def set_file_sender(sender: Callable[[Any, str, FileData, float | None, bool], None] | None) -> None:
    """``sender(job_id, path, file, timeout, relay)`` sends a file of the running job to the
    node's main process (blocking at most ``timeout`` seconds); used by ``dispy_send_file``."""
    global _file_sender
    _file_sender = sender


def set_max_file_size(size: int) -> None:
    """The node's ``--max_file_size`` (0: no limit), for ``dispy_send_file``."""
    global _max_file_size
    _max_file_size = max(0, int(size))


def limit_file_size(client_limit: Any) -> None:
    """In a computation's host: the client's ``dispy.config.MaxFileSize`` (from
    ``Compute.options``) lowers the limit of ``dispy_send_file`` for its jobs."""
    global _max_file_size, _limit_source
    if isinstance(client_limit, int) and not isinstance(client_limit, bool) and client_limit > 0 \
            and (not _max_file_size or client_limit < _max_file_size):
        _max_file_size = client_limit
        _limit_source = "the client's limit (dispy.config.MaxFileSize)"


def client_path(path: str) -> str:
    """Where the client saves a file sent from ``path``: the same relative path, or the
    base name for an absolute path or one that goes up (``..``); "" if there is none."""
    parts = path.replace(os.sep, "/").split("/")
    if os.path.isabs(path) or ".." in parts:
        return os.path.basename(os.path.normpath(path)).replace(os.sep, "/")
    rel = os.path.normpath(path).replace(os.sep, "/")
    return "" if rel in (".", "") else rel


def send_file(path: Any, relay: bool = False, timeout: float = config.MsgTimeout) -> int:
    """``dispy_send_file`` in jobs: send the file ``path`` (relative to the job's working
    directory, or absolute) to the client, which saves it under its working directory
    (see :func:`client_path`). 0 once sent; -1 (logged) for a file that can't be read,
    is larger than ``--max_file_size`` or could not be sent within ``timeout`` seconds.
    ``relay`` is as for :func:`provisional_result`."""
    sender, job_id = _file_sender, _current_job
    if sender is None or job_id is None:
        return -1
    try:
        path = os.fspath(path)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        rel = client_path(path)
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or not rel:
            _JOB_LOGGER.warning("dispy_send_file: %r is not a regular file", path)
            return -1
        if _max_file_size and st.st_size > _max_file_size:
            _JOB_LOGGER.warning("dispy_send_file: %r is %d bytes, more than %s of %d bytes; not sent",
                                path, st.st_size, _limit_source, _max_file_size)
            return -1
        with open(path, "rb") as fh:
            data = fh.read()
    except (OSError, TypeError, ValueError) as exc:
        _JOB_LOGGER.warning("dispy_send_file: can't read %r: %s", path, exc)
        return -1
    file = FileData(os.path.basename(rel), data, stat.S_IMODE(st.st_mode), st.st_mtime)
    return _send_now("dispy_send_file", lambda: sender(job_id, rel, file, timeout, bool(relay)))


def _send_now(what: str, send: Callable[[], None]) -> int:
    """Run ``send()`` (a message of the running job to the main process) shielded from
    cancellation: a KeyboardInterrupt in the middle of a frame would break the worker's
    connection, so a cancel that arrives meanwhile takes effect right after."""
    global _interruptible, _deferring, _deferred
    was, _interruptible = _interruptible, False
    _deferring = True
    try:
        send()
        status = 0
    except Exception as exc:
        _JOB_LOGGER.warning("%s: sending failed: %s: %s", what, type(exc).__name__, exc)
        status = -1
    finally:
        _deferring = False
        _interruptible = was
    if _deferred:
        _deferred = False
        _on_sigint(signal.SIGINT, None)
    return status


_OURS = os.path.dirname(os.path.abspath(__file__))


def format_user_exception(exc: BaseException) -> str:
    """The traceback text of ``exc`` (and its chained exceptions) without the node's own
    frames: the user's code is what the user needs to see."""
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if os.path.dirname(f.filename) != _OURS])
        todo.extend(x for x in (t.__cause__, t.__context__) if x is not None)
    return "".join(te.format())


@dataclass
class Runtime:
    """What every job of one computation shares (set up by the host, inherited by fork)."""

    kind: str  # "function" or "program"
    computation: Any  # the function, or the program's argv prefix (list of str)
    comp_dir: str
    node_name: str
    ip_addr: str
    jobs_root: str  # where jobs with files of their own get their directories


def _forget_job_modules(job_dir: str) -> None:
    """Modules a job imported from its own directory go with it: the next job may bring
    a different file of the same name."""
    inside = job_dir + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.startswith(inside):
            del sys.modules[name]


def run_job(rt: Runtime, spec: JobSpec) -> JobResult:
    """Run one job to completion; never raises (except when the process is told to die)."""
    job_dir = rt.comp_dir
    start = time.time()
    try:
        if spec.sources:
            install_sources(spec.sources)
        if spec.files:
            job_dir = make_job_dir(rt.jobs_root, rt.comp_dir, spec.job_id, spec.files)
            os.chdir(job_dir)
            sys.path.insert(0, job_dir)
        if rt.kind == "program":
            return _run_program(rt, spec, job_dir)
        return _run_function(rt, spec, job_dir)
    except BaseException as exc:  # setting up the job failed: the job failed
        return JobResult(spec.job_id, JobStatus.Terminated, exception=format_user_exception(exc),
                         start_time=start, end_time=time.time())
    finally:
        if job_dir != rt.comp_dir:
            os.chdir(rt.comp_dir)
            while job_dir in sys.path:
                sys.path.remove(job_dir)
            _forget_job_modules(job_dir)
            remove_tree(job_dir)


def _run_function(rt: Runtime, spec: JobSpec, job_dir: str) -> JobResult:
    global _interruptible, _current_job
    g = rt.computation.__globals__
    saved: dict[str, Any] = {}
    lent: list[tuple[dict[str, Any], str]] = []  # names lent to per-job functions' globals

    def inject(name: str, value: Any) -> None:
        if name not in saved:
            saved[name] = g.get(name, _MISSING)
        g[name] = value

    def lend(fg: dict[str, Any]) -> None:
        for name, value in list(g.items()):
            if not name.startswith("__") and name not in fg:
                fg[name] = value
                lent.append((fg, name))

    inject("dispy_job_path", job_dir)
    inject("dispy_node_name", rt.node_name)
    inject("dispy_node_ip_addr", rt.ip_addr)
    inject("dispynode_logger", _JOB_LOGGER)
    inject("dispy_provisional_result", provisional_result)
    inject("dispy_send_file", send_file)
    out, err = io.StringIO(), io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    status, result, exception = JobStatus.Finished, None, None
    start = time.time()
    try:
        if spec.depends is not None:
            own: list[dict[str, Any]] = []
            for obj in serialization.loads(spec.depends):
                name = getattr(obj, "__name__", None)
                if isinstance(name, str):
                    inject(name, obj)
                fg = getattr(obj, "__globals__", None)
                if isinstance(fg, dict) and fg is not g and not any(fg is o for o in own):
                    own.append(fg)
            # A function shipped with the job has globals of its own, but dispy 4.x ran it
            # in the computation's namespace: programs expect dispy_node_name, setup's
            # globals and the node's modules there too (lent for this job only).
            for fg in own:
                lend(fg)
        args, kwargs = serialization.loads(spec.args)
        sys.stdout, sys.stderr = out, err
        _current_job = spec.job_id
        _interruptible = True
        try:
            value = rt.computation(*args, **kwargs)
        finally:
            _interruptible = False
            _current_job = None
            sys.stdout, sys.stderr = stdout, stderr
        result = serialization.dumps(value)
    except BaseException as exc:
        status, result, exception = JobStatus.Terminated, None, format_user_exception(exc)
    end = time.time()
    for fg, name in lent:
        fg.pop(name, None)
    for name, old in saved.items():
        if old is _MISSING:
            g.pop(name, None)
        else:
            g[name] = old
    return JobResult(spec.job_id, status, result, out.getvalue(), err.getvalue(), exception, start, end)


def _run_program(rt: Runtime, spec: JobSpec, job_dir: str) -> JobResult:
    global _interruptible
    args, _kwargs = serialization.loads(spec.args)
    argv = [*rt.computation, *(str(a) for a in args)]
    env = dict(os.environ)
    # Files shipped with the computation (and the job's own, first) are runnable by name,
    # as with the original node.
    path = [job_dir, rt.comp_dir] if job_dir != rt.comp_dir else [rt.comp_dir]
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", os.defpath)])
    env["DISPY_JOB_PATH"] = job_dir
    env["DISPY_NODE_NAME"] = rt.node_name
    env["DISPY_NODE_IP_ADDR"] = rt.ip_addr
    start = time.time()
    try:
        _interruptible = True
        try:
            proc = subprocess.run(argv, cwd=job_dir, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True)
        finally:
            _interruptible = False
    except BaseException as exc:
        return JobResult(spec.job_id, JobStatus.Terminated, exception=format_user_exception(exc),
                         stdout=b"", stderr=b"", start_time=start, end_time=time.time())
    return JobResult(spec.job_id, JobStatus.Finished, serialization.dumps(proc.returncode),
                     proc.stdout, proc.stderr, None, start, time.time())
