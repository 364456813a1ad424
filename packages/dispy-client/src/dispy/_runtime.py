"""The client's engine: :class:`Runtime`, the :class:`dispy_core.engine.Engine` of one
JobCluster, with what only the client does with jobs and nodes.

Threads and what they own:

* the **user's threads** call ``JobCluster`` methods. ``submit`` serializes the arguments
  right there, appends the job to a deque and wakes the loop with
  ``call_soon_threadsafe`` only if no wake-up is already pending, so a burst of submits
  costs one wake-up;
* the **loop thread** (:class:`dispy_core.engine.LoopThread`) runs the engine: node
  sessions, discovery, the scheduler, dispatch of job batches and the results; the
  engine calls this module's hooks there (results into DispyJobs, callbacks, the
  recover file, the pending count);
* the **callback thread** (:mod:`._callbacks`) runs ``job_status``/``cluster_status``.

Shared state between them is small: the incoming deque (append / popleft are atomic), the
pending-jobs counter under a Condition (``wait()``), the per-job fields (written by the
loop before ``finish`` is set) and the list of nodes tried (under a lock).

Per-job work on the loop is kept minimal (no logging above DEBUG, one dict lookup, one
``loads``); argument buffers from ``dumps`` go to the socket without being copied.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from dispy_core import serialization
from dispy_core.computation import Computation, payload_size
from dispy_core.engine import Engine
from dispy_core.messages import FileData, JobFile, JobResult
from dispy_core.nodes import DispyNode, NodeAllocate
from dispy_core.session import NodeSession
from dispy_core.status import JobStatus, NodeStatus

from .__about__ import __version__
from ._callbacks import CallbackThread
from ._job import DispyJob

__all__ = ["Runtime", "apply_result", "save_job_file"]

log = logging.getLogger(__name__)

_Running = JobStatus.Running
_Provisional = JobStatus.ProvisionalResult
_Initialized = NodeStatus.Initialized


def save_job_file(path: str, file: FileData) -> str:
    """Write a file a job sent under the current directory, at its relative ``path``
    (the base name only for an absolute path or one with ``..``: never outside the
    current directory), with its mode and mtime; returns where it was written."""
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith("/") or ".." in parts or "\0" in path:
        rel = os.path.basename(path.replace("\\", "/").rstrip("/"))
        if rel in ("", ".", "..") or "\0" in rel:
            raise ValueError(f"refused path {path!r}")
    else:
        rel = os.path.normpath("/".join(p for p in parts if p not in ("", ".")))
    base = os.path.realpath(os.getcwd())
    target = os.path.realpath(os.path.join(base, rel))
    if target == base or os.path.commonpath([base, target]) != base:
        raise ValueError(f"refused path {path!r}: it leads out of {base}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.dispy-{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(file.data)
        os.chmod(tmp, (file.mode if isinstance(file.mode, int) else 0o644) & 0o777)
        if isinstance(file.mtime, (int, float)) and file.mtime > 0:
            os.utime(tmp, (file.mtime, file.mtime))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def apply_result(job: DispyJob, r: JobResult, loads: Callable[[Any], Any]) -> int:
    """Set a job's result, output, exception and times from a node's JobResult (not its
    status); returns the bytes received for it."""
    rx = 0
    exception = r.exception
    if r.result is not None:
        rx += payload_size(r.result)
        try:
            job.result = loads(r.result)
        except Exception as exc:
            job.result = None
            exception = (exception or "") + (
                f"the result could not be deserialized here: {type(exc).__name__}: {exc}")
    else:
        job.result = None
    stdout, stderr = r.stdout, r.stderr
    if isinstance(stdout, memoryview):
        stdout = bytes(stdout)
    if isinstance(stderr, memoryview):
        stderr = bytes(stderr)
    job.stdout, job.stderr, job.exception = stdout, stderr, exception
    rx += len(stdout or "") + len(stderr or "")
    if r.start_time:
        job.start_time = r.start_time
    job.end_time = r.end_time or time.time()
    return rx


class Runtime(Engine[DispyJob]):
    """Everything a JobCluster does on the network: nodes, jobs in flight, results.

    The engine (:class:`dispy_core.engine.Engine`) plus the client's own concerns,
    through the engine's hooks: results applied to DispyJobs (``finish`` set),
    ``job_status``/``cluster_status`` callbacks, nodes recorded in the recover file, the
    ``pending`` count that ``wait()`` waits on, files sent by jobs saved here.
    """

    def __init__(
        self,
        cluster: Any,
        computation: Computation,
        specs: list[NodeAllocate],
        *,
        secret: str | bytes,
        dest_path: str | None,
        cleanup_files: bool,
        process_per_job: bool,
        local_host: str | list[str] | None,
        client_port: int,
        job_status: Callable[[DispyJob], Any] | None,
        cluster_status: Callable[[int, DispyNode | None, DispyJob | None], Any] | None,
        callbacks: CallbackThread | None,
        dispy_port: int | None = None,
        ssl: Any = None,
        compute_id: str | None = None,
        pulse_interval: float = 0.0,
        recover: Any = None,
        reentrant: bool = False,
        ipv4_udp_multicast: bool = False,
        ping_interval: float | None = None,
        compute_options: dict[str, Any] | None = None,
        node_port: int | None = None,
    ) -> None:
        # Before Engine.__init__: the loop starts running at its end.
        self.recover = recover  # the RecoverFile (nodes are recorded as they get ready)
        self.job_status = job_status
        self.cluster_status = cluster_status
        self.callbacks = callbacks
        self.cond = threading.Condition(threading.Lock())
        self.pending = 0  # jobs submitted and not done; under cond
        # Jobs submitted whose job_status/cluster_status calls have not all run yet (the
        # same as pending when there are no callbacks); wait() waits on it: a program
        # that collects results in job_status has them all when wait() returns. Under cond.
        self.unreported = 0
        self._refusing = False  # under cond
        super().__init__(
            cluster, computation, specs,
            secret=secret, dest_path=dest_path, cleanup_files=cleanup_files,
            process_per_job=process_per_job, local_host=local_host, client_port=client_port,
            software=f"dispy-client {__version__} / Python {platform.python_version()}",
            dispy_port=dispy_port, ssl=ssl, compute_id=compute_id, pulse_interval=pulse_interval,
            reentrant=reentrant, ipv4_udp_multicast=ipv4_udp_multicast, ping_interval=ping_interval,
            compute_options=compute_options, node_port=node_port,
        )

    # -- jobs in (any thread) -----------------------------------------------------------
    def submit(self, job: DispyJob) -> bool:
        """From any thread: queue a job whose ``_spec`` is set; False once closing."""
        with self.cond:
            if self._refusing:
                return False
            self.pending += 1
            self.unreported += 1
            self._incoming.append(job)
        if not self._wake_pending:
            self._wake_pending = True
            self.thread.call_soon(self._drain)
        return True

    def refuse_submits(self) -> None:
        """From any thread: later submits fail; jobs queued before are still drained."""
        with self.cond:
            self._refusing = True

    def cancel(self, job: DispyJob) -> int:
        """Cancel a job (or the job a snapshot copies): see Engine.cancel."""
        if job._origin is not None:
            job = job._origin
        return super().cancel(job)

    # -- the engine's hooks (in the loop) -----------------------------------------------
    def _job_result(self, session: NodeSession, job: DispyJob, r: JobResult, status: int) -> int:
        rx = apply_result(job, r, serialization.loads)
        job.status = status
        job._mark_done()
        callbacks = self.callbacks
        if callbacks is not None:
            if self.job_status is not None:
                callbacks.put(self.job_status, job)
            if self.cluster_status is not None:
                callbacks.put(self.cluster_status, status, self._job_node(session, job), job)
        return rx

    def _job_node(self, session: NodeSession, job: DispyJob) -> DispyNode | None:
        """The node a job ran on (for cluster_status): the session's."""
        return session.node  # type: ignore[no-any-return]

    def _job_finished(self, job: DispyJob, status: int, node: DispyNode | None, now: float,
                      exception: str) -> None:
        job.status = status
        job.exception = exception
        job.end_time = now
        job._mark_done()
        if self.callbacks is not None:
            if self.job_status is not None:
                self.callbacks.put(self.job_status, job)
            if self.cluster_status is not None:
                self.callbacks.put(self.cluster_status, status, node, job)

    def _jobs_done(self, n: int) -> None:
        if not n:
            return
        callbacks = self.callbacks
        with self.cond:
            self.pending -= n
            if callbacks is None:
                self.unreported -= n
            if self.pending <= 0:
                self.cond.notify_all()
        if callbacks is not None:
            # Queued after these jobs' own callbacks, so it runs once they have.
            callbacks.put(self._jobs_reported, n)

    def _jobs_reported(self, n: int) -> None:
        with self.cond:
            self.unreported -= n
            if self.unreported <= 0:
                self.cond.notify_all()

    def wait_done(self, timeout: float | None) -> bool:
        """From any thread: wait until every job submitted is done and the callbacks about
        it have run; False after ``timeout`` seconds. Called from a callback, only until
        the jobs are done: the callback thread can't wait for its own queue."""
        callbacks = self.callbacks
        in_callback = callbacks is not None and threading.current_thread() is callbacks.thread
        with self.cond:
            if in_callback:
                return self.cond.wait_for(lambda: self.pending <= 0, timeout)
            return self.cond.wait_for(lambda: self.unreported <= 0, timeout)

    def _jobs_dispatched(self, session: NodeSession, jobs: list[DispyJob]) -> None:
        callbacks, cluster_status = self.callbacks, self.cluster_status
        if callbacks is not None and cluster_status is not None:
            put, node = callbacks.put, session.node
            for job in jobs:
                put(cluster_status, _Running, node, job)

    def _node_status(self, status: int, session: NodeSession) -> None:
        if status == _Initialized and self.recover is not None:
            assert session.key is not None
            self.recover.add_node(session.key[0], session.key[1], session.node.name)
        if self.cluster_status is not None and self.callbacks is not None:
            self.callbacks.put(self.cluster_status, status, session.node, None)

    def _job_provisional(self, session: NodeSession, job: DispyJob, r: JobResult) -> None:
        """A provisional result (dispy_provisional_result): the job goes on running."""
        if r.result is not None:
            session.node.rx += payload_size(r.result)
            try:
                job.result = serialization.loads(r.result)
            except Exception as exc:
                log.warning("job %s: a provisional result could not be deserialized: %s: %s",
                            job.id, type(exc).__name__, exc)
                return
        else:
            job.result = None
        job.status = _Provisional
        callbacks = self.callbacks
        if callbacks is not None and (self.job_status is not None or self.cluster_status is not None):
            snap = job._snapshot()  # the job may change before the callback runs
            if self.job_status is not None:
                callbacks.put(self.job_status, snap)
            if self.cluster_status is not None:
                callbacks.put(self.cluster_status, _Provisional, self._job_node(session, job), snap)

    def _job_file(self, session: NodeSession, job: DispyJob | None, msg: JobFile) -> None:
        """Saved under the current directory (see save_job_file)."""
        file = msg.file
        name = job.id if job is not None and job.id is not None else msg.job_id
        limit = self.compute_options.get("max_file_size") or 0
        if limit and len(file.data) > limit:  # (nodes refuse these before sending: older ones may not)
            log.error("job %s: refused file %r from node %s: %d bytes, more than dispy.config.MaxFileSize "
                      "(%d bytes)", name, msg.path, session.label, len(file.data), limit)
            return
        try:
            path = save_job_file(msg.path, file)
        except (OSError, ValueError) as exc:
            log.error("job %s: saving file %r sent from node %s failed: %s", name, msg.path,
                      session.label, exc)
            return
        if session.node is not None:
            session.node.rx += len(file.data)
        log.debug("job %s: saved file %s from node %s", name, path, session.label)
