"""The life of a computation in the node's main process: its host, its workers, the
flow of its jobs' results, crashes, and its end.

States (``Comp.state``)::

    Compute -> checks -> ForkHost -> HostHello -> (Compute forwarded) -> HostReady
      SETUP ------------------------------------------------------------+
        |  HostReady(ok) -> SpawnWorker x cpus -> first WorkerHello -> ComputeReady
        v                                                               |
      READY  (SubmitJobs / JobResults / CancelJob)        HostReady(error) or a host
        |                                                 that dies: ComputeFailed
        |  CloseComputation or client gone                (FAILED)
        v
      CLOSING: jobs finish (or are terminated), worker connections close,
               CleanupHost -> HostDone, directory removed -> ComputationClosed
      CLOSED

A worker that dies under a job: its connection closes, the job it was running is
reported Terminated with the exit status the host reports (WorkerExited; waited for at
most :data:`EXIT_STATUS_WAIT`), the jobs queued behind it go back to the front of the
queue, and a new worker is asked for. A host that dies fails the computation: its jobs
are reported Terminated, the client gets an ErrorReport (or ComputeFailed during setup).

Hot path: once per event loop iteration (:meth:`Lifecycle._tick`) the scheduler hands
pending jobs to workers and the results that arrived in that iteration go out to each
client in one JobResults. Nothing per job is logged above DEBUG, written to disk, or
timed.

:class:`Lifecycle` is the base of :class:`~dispy_node.server.Node`, which adds the
network edges (listeners, channels, client requests) around it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from dispy_core.aio import Channel
from dispy_core.errors import ConnectionClosed
from dispy_core.messages import (
    CancelJob,
    CleanupHost,
    ComputationClosed,
    Compute,
    ComputeFailed,
    ComputeReady,
    ErrorReport,
    HostDone,
    HostReady,
    JobResult,
    JobResults,
    JobSpec,
    Message,
    SpawnWorker,
    SubmitJobs,
    WorkerExited,
    WorkerStarted,
)
from dispy_core.status import JobStatus

from .paths import remove_job_dirs, remove_tree
from .scheduler import Computation, Scheduler, Worker
from .undelivered import ResultStore

__all__ = [
    "Comp",
    "Client",
    "Lifecycle",
    "describe_status",
    "describe_exit",
    "timeout_error",
    "CANCEL_GRACE",
    "kill_process",
    "kill_group",
    "CLEANUP_TIMEOUT",
    "EXIT_STATUS_WAIT",
    "MAX_START_FAILURES",
    "SETUP",
    "READY",
    "CLOSING",
    "CLOSED",
    "FAILED",
]

log = logging.getLogger(__name__)

#: Seconds a computation's cleanup may take when it closes (then its host is killed).
CLEANUP_TIMEOUT = 60.0
#: Seconds to wait for a dead worker's exit status before reporting its job without it.
EXIT_STATUS_WAIT = 1.0
#: Workers that die before connecting, in a row, before a computation is given up.
MAX_START_FAILURES = 3

SETUP, READY, CLOSING, CLOSED, FAILED = "setup", "ready", "closing", "closed", "failed"


@dataclass(eq=False)
class Comp(Computation):
    """A computation as the main process sees it (the scheduler's view plus its peers)."""

    client: Any = None  # the client Channel that set it up (None while its client is gone)
    owner: Any = None  # that channel's Client record (kept while the client is gone)
    kind: str = "function"
    directory: str = ""
    jobs_dir: str = ""  # its jobs' own directories (paths.make_jobs_root); always removed
    cleanup_files: bool = True
    ip_addr: str = ""
    setup_msg: Compute | None = None  # forwarded to the host once it connects
    host: Channel | None = None
    host_pid: int = 0
    state: str = SETUP
    error: str | None = None  # why it failed, for the client
    terminating: bool = False
    start_failures: int = 0
    lost: dict[int, tuple[Worker, JobSpec]] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    host_done: asyncio.Future[str | None] | None = None
    closed: asyncio.Future[str | None] | None = None
    unacked: dict[int, JobResult] = field(default_factory=dict)  # sent, not acknowledged
    pulse_interval: float = 0.0
    detached_since: float = 0.0  # monotonic time its client's connection was lost; 0: attached
    # A shared cluster's own connection (see Attach): the key it authenticates with, the
    # attached Channel, per job the items sent on it and not yet Delivered, and the final
    # results waiting for those items (a job's result must not overtake its files).
    attach_key: str = ""
    attach_macs: bool = True
    # dispyscheduler's --max_file_size (0: none): the scheduler checks the files clients
    # send through it, and this node checks those they send it on the attached connection.
    attach_file_limit: int = 0
    attached: Any = None
    in_transit: dict[int, int] = field(default_factory=dict)
    parked: dict[int, list[JobResult]] = field(default_factory=dict)
    # Jobs that sent an item through the scheduler because no client was attached yet:
    # their later items go that way too,
    # because the two ways don't keep order between them (a job's provisional results
    # arrive in the order it sent them, even when the client attaches in between).
    relayed: set[int] = field(default_factory=set)

    @property
    def has_jobs(self) -> bool:
        return bool(self.pending) or any(w.queue for w in self.workers.values()) or bool(self.lost)


@dataclass(eq=False)
class Client:
    """Per client connection: the local address it reached and its computations."""

    ip_addr: str
    port: int
    comps: set[Comp] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)  # when it last sent a message
    pinged: bool = False  # a Ping went out since then (--zombie_interval)
    served: bool = False  # it set up a computation here (for --serve)
    counted: bool = False  # counted as served: all its computations were closed
    attach_id: str = ""  # authenticated with this computation's key: it may only Attach to it


def describe_status(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "exited unexpectedly"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-code})"
    return f"exited with status {code}"


def describe_exit(job_id: Any, code: int | None, why: str = "") -> str:
    """The error text of a job whose worker process died under it."""
    return f"job {job_id}: {why}worker process {describe_status(code)}"


def timeout_error(job_id: Any, timeout: float, where: str | None = None, note: str = "") -> str:
    """The exception text of a job that ran longer than its timeout: the traceback of
    where it was interrupted (``where``, whose KeyboardInterrupt line is replaced), then
    a TimeoutError line saying what happened."""
    lines = where.rstrip("\n").splitlines() if where else []
    if lines and lines[-1] == "KeyboardInterrupt":
        lines.pop()
    lines.append(f"TimeoutError: job {job_id} ran longer than its timeout of {timeout:g} s "
                 f"and was terminated{note}")
    return "\n".join(lines) + "\n"


def kill_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_group(pid: int) -> None:
    """Kill a worker and whatever it started (it leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        kill_process(pid)


#: Seconds a cancelled (or timed out) job gets to stop after KeyboardInterrupt before
#: its worker is killed.
CANCEL_GRACE = 5.0

#: Queued job payload per computation above which the node stops reading its client,
#: and below which it reads again.
PAUSE_BYTES = 8 << 20
RESUME_BYTES = 2 << 20

_PROVISIONAL = JobStatus.ProvisionalResult


class Lifecycle:
    """Computations' processes, job flow and endings (the base of Node)."""

    def __init__(self, sched: Scheduler, store: ResultStore) -> None:
        self.sched = sched
        self.store = store
        self.comps: dict[str, Comp] = {}
        self.jobs_done = 0
        self.cpu_time = 0.0  # seconds the finished jobs ran (for dispyadmin)
        self._loop = asyncio.get_running_loop()
        self._outbox: dict[Comp, list[JobResult]] = {}
        self._tick_scheduled = False
        # Clients whose socket we stopped reading: their computation holds more queued
        # job payload than PAUSE_BYTES. TCP then pushes back on the client, so a client
        # can't fill the node's memory with arguments faster than jobs start.
        self._paused: dict[Channel, Comp] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task whose failure is logged, never propagated."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("internal error")

        task = self._loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # == results =========================================================================
    def _job_failed(self, comp: Comp, spec: JobSpec, error: str | None, *,
                    status: int = JobStatus.Terminated) -> None:
        """Report a job that the node ended (with the next batch of results)."""
        now = time.time()
        result = JobResult(spec.job_id, status, exception=error, start_time=now, end_time=now)
        self._outbox.setdefault(comp, []).append(result)
        self._kick()

    def _limit_intake(self, ch: Channel, comp: Comp) -> None:
        if comp.pending_bytes > PAUSE_BYTES and ch not in self._paused:
            self._paused[ch] = comp
            ch.pause_reading()

    def _kick(self) -> None:
        if not self._tick_scheduled:
            self._tick_scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        """Once per loop iteration: give jobs to workers, then send the results."""
        self._tick_scheduled = False
        for worker, jobs in self.sched.assign():
            try:
                worker.channel.send(SubmitJobs(worker.comp.compute_id, jobs))
            except ConnectionClosed:
                continue  # its close handler puts the jobs back
            self._watch_head(worker)
        if self._paused:
            for ch, comp in list(self._paused.items()):
                if comp.pending_bytes <= RESUME_BYTES or ch.closed or comp.client is not ch:
                    del self._paused[ch]
                    ch.resume_reading()
        if self._outbox:
            outbox, self._outbox = self._outbox, {}
            for comp, results in outbox.items():
                if comp.in_transit:
                    results = self._park(comp, results)
                if not results:
                    continue
                ch = comp.client
                if ch is not None and not ch.closed:
                    ch.send(JobResults(comp.compute_id, results))
                    # Kept until the client acknowledges them (see undelivered.py).
                    unacked = comp.unacked
                    for r in results:
                        if r.status != _PROVISIONAL:
                            unacked[r.job_id] = r
                else:
                    self.store.save(comp.compute_id, (r for r in results if r.status != _PROVISIONAL))

    def _acknowledged(self, compute_id: str, comp: Comp | None, job_ids: Any) -> None:
        """The client has these results: forget them (memory, then disk)."""
        if not isinstance(job_ids, list):
            return
        if comp is not None:
            pop = comp.unacked.pop
            left = [i for i in job_ids if isinstance(i, int) and pop(i, None) is None]
        else:
            left = job_ids
        if left:
            self.store.forget(compute_id, left)

    # == a shared cluster's attached connection (see Attach) ============================
    def _send_attached(self, comp: Comp, job_id: int, msg: Message, relay: bool = False) -> bool:
        """Send a provisional result or file of job ``job_id`` on ``comp``'s attached
        connection; False when it goes with the results instead: the job asked to
        ``relay`` it, there is no attached connection, or an earlier item of the job went
        with the results for want of one (the job stays on that way, see ``Comp.relayed``)."""
        if relay:
            return False  # asked for: the job chose the way of each item itself
        ch = comp.attached
        if ch is None or ch.closed or job_id in comp.relayed:
            comp.relayed.add(job_id)
            return False
        ch.send(msg)
        comp.in_transit[job_id] = comp.in_transit.get(job_id, 0) + 1
        return True

    def _park(self, comp: Comp, results: list[JobResult]) -> list[JobResult]:
        """Final results whose job's items are still on the attached connection wait."""
        ready = []
        for r in results:
            if r.status != _PROVISIONAL and r.job_id in comp.in_transit:
                comp.parked.setdefault(r.job_id, []).append(r)
            else:
                ready.append(r)
        return ready

    def _delivered(self, comp: Comp, job_ids: Any) -> None:
        """The client got these items (one job id each): results they held up go."""
        if not isinstance(job_ids, list):
            return
        for job_id in job_ids:
            left = comp.in_transit.get(job_id) if isinstance(job_id, int) else None
            if left is None:
                continue
            if left > 1:
                comp.in_transit[job_id] = left - 1
                continue
            del comp.in_transit[job_id]
            parked = comp.parked.pop(job_id, None)
            if parked:
                self._outbox.setdefault(comp, []).extend(parked)
                self._kick()

    def _unattach(self, comp: Comp) -> None:
        """The attached connection is gone: nothing waits for it any more."""
        comp.attached = None
        comp.in_transit.clear()
        if comp.parked:
            out = self._outbox.setdefault(comp, [])
            for results in comp.parked.values():
                out.extend(results)
            comp.parked.clear()
            self._kick()

    def _detach(self, comp: Comp) -> None:
        """Its client's connection is gone: jobs go on, results go to disk until a
        client resumes the computation (or it is closed, see Node)."""
        comp.client = None
        comp.detached_since = time.monotonic()
        if comp.unacked:
            self.store.save(comp.compute_id, comp.unacked.values())
            comp.unacked.clear()

    def _on_results(self, worker: Worker, msg: JobResults) -> None:
        comp: Comp = worker.comp  # type: ignore[assignment]
        out = self._outbox.get(comp)
        if out is None:
            out = self._outbox[comp] = []
        done = self.sched.job_done
        observe = comp.observe
        n = 0
        for result in msg.results:
            if result.status == JobStatus.ProvisionalResult:
                # dispy_provisional_result: the job goes on; sent on if it is still ours.
                if worker.queue and worker.queue[0].job_id == result.job_id:
                    if not self._send_attached(comp, result.job_id, JobResults(comp.compute_id, [result]),
                                               relay=msg.relay):
                        out.append(result)
                continue
            comp.relayed.discard(result.job_id)
            if done(worker, result.job_id) is not None:
                if worker.timed_out:
                    result = self._timeout_result(worker, result)
                out.append(result)
                n += 1
                try:
                    took = result.end_time - result.start_time
                    observe(took)
                    self.cpu_time += max(0.0, took)
                except TypeError:
                    pass  # a worker's result without times: nothing to learn
        self.jobs_done += n
        self._watch_head(worker)
        if comp.process_per_job and n and comp.state in (SETUP, READY, CLOSING) and not comp.terminating:
            self._spawn_worker(comp)  # the one that ran the job is leaving
        if comp.state == CLOSING and not comp.has_jobs:
            comp.idle.set()
        self._kick()

    def _on_host_message(self, comp: Comp, msg: Message) -> None:
        if isinstance(msg, WorkerExited):
            self._worker_exited(comp, msg)
        elif isinstance(msg, WorkerStarted):
            worker = comp.workers.get(msg.worker_id)
            if worker is not None and not worker.pid:
                worker.pid = msg.pid
        elif isinstance(msg, HostReady):
            if comp.state != SETUP:
                return
            if msg.error is not None:
                self._setup_failed(comp, str(msg.error))
            else:
                for _ in range(comp.cpus):
                    self._spawn_worker(comp)
        elif isinstance(msg, HostDone):
            if msg.shutdown is True:
                self._shutdown_requested(comp)
            if comp.host_done is not None and not comp.host_done.done():
                comp.host_done.set_result(msg.error)
        else:
            log.warning("unexpected %s from the host of %s", type(msg).__name__, comp.compute_id)

    # == interrupting jobs: cancel and timeouts ==========================================
    def _interrupt(self, worker: Worker, job_id: Any) -> None:
        """Stop ``job_id``, which ``worker`` holds: the worker drops it if it hasn't
        started, or interrupts it (KeyboardInterrupt: it checks its messages when SIGINT
        arrives) if it runs; a job still running :data:`CANCEL_GRACE` seconds later is
        killed with its worker."""
        worker.cancelled.add(job_id)
        try:
            worker.channel.send(CancelJob(worker.comp.compute_id, job_id))
        except ConnectionClosed:
            return  # the worker is gone: its close handler reports the job
        try:
            os.kill(worker.pid, signal.SIGINT)
        except OSError:
            pass
        self._loop.call_later(CANCEL_GRACE, self._interrupt_deadline, worker, job_id)

    def _interrupt_deadline(self, worker: Worker, job_id: Any) -> None:
        if not worker.gone and worker.queue and worker.queue[0].job_id == job_id and job_id in worker.cancelled:
            log.info("job %s of %s did not stop after KeyboardInterrupt; killing its worker %d",
                     job_id, worker.comp.compute_id, worker.pid)
            kill_group(worker.pid)

    def _watch_head(self, worker: Worker) -> None:
        """Arm the timeout of the job ``worker`` runs now, if it has one. A worker runs
        its queue in order, so its head started when it was sent to an idle worker or
        when the result before it arrived: within a message's latency of its real start."""
        q = worker.queue
        if q and q[0].timeout and worker.timing != q[0].job_id:
            job_id, timeout = q[0].job_id, float(q[0].timeout)
            worker.timing = job_id
            self._loop.call_later(timeout, self._timed_out, worker, job_id, timeout)

    def _timed_out(self, worker: Worker, job_id: Any, timeout: float) -> None:
        q = worker.queue
        if worker.gone or not q or q[0].job_id != job_id or job_id in worker.timed_out:
            return  # it ended in time
        log.info("job %s of %s ran longer than its timeout (%g s): terminating it",
                 job_id, worker.comp.compute_id, timeout)
        worker.timed_out[job_id] = timeout
        self._interrupt(worker, job_id)

    @staticmethod
    def _timeout_result(worker: Worker, result: JobResult) -> JobResult:
        """The result of a job whose timeout ran out says so (unless it finished anyway)."""
        timeout = worker.timed_out.pop(result.job_id, None)
        if timeout is None or result.status != JobStatus.Terminated:
            return result
        return dataclasses.replace(result, exception=timeout_error(result.job_id, timeout, result.exception))

    # == workers =========================================================================
    def _spawn_worker(self, comp: Comp) -> None:
        if comp.host is None or comp.host.closed:
            return
        worker = comp.new_worker()
        comp.host.send(SpawnWorker(worker.worker_id))

    def _ready(self, comp: Comp) -> None:
        comp.state = READY
        log.info("computation %s (%r) ready (%d CPUs)", comp.compute_id, comp.name, comp.cpus)
        if comp.client is not None and not comp.client.closed:
            comp.client.send(ComputeReady(comp.compute_id, comp.cpus, comp.directory))

    def _worker_gone(self, worker: Worker) -> None:
        """A worker's connection closed: requeue its waiting jobs, report the running one
        (with the exit status when the host tells it), and replace the worker."""
        comp: Comp = worker.comp  # type: ignore[assignment]
        head, requeued = self.sched.worker_lost(worker)
        if requeued and comp.terminating:  # no worker will take them any more
            self._cancel_pending(comp)
        if head is not None:
            if worker.exit_code is not None:
                self._report_crash(comp, worker, head)
            else:
                comp.lost[worker.worker_id] = (worker, head)
                self._loop.call_later(EXIT_STATUS_WAIT, self._exit_status_deadline, comp, worker.worker_id)
        if comp.state in (SETUP, READY, CLOSING) and not comp.terminating and not worker.retiring:
            if worker.channel is None:
                comp.start_failures += 1
                if comp.start_failures >= MAX_START_FAILURES:
                    self._host_failed(comp, f"computation {comp.compute_id}: its worker processes "
                                            "keep dying before they start (the last one "
                                            f"{describe_status(worker.exit_code)})")
                    return
            self._spawn_worker(comp)
        if comp.state == CLOSING and not comp.has_jobs:
            comp.idle.set()
        self._kick()

    def _worker_exited(self, comp: Comp, msg: WorkerExited) -> None:
        lost = comp.lost.pop(msg.worker_id, None)
        if lost is not None:
            self._report_crash(comp, lost[0], lost[1], msg.returncode)
            if comp.state == CLOSING and not comp.has_jobs:
                comp.idle.set()
            return
        worker = comp.workers.get(msg.worker_id)
        if worker is None:
            return
        worker.exit_code = msg.returncode
        if worker.channel is None:  # died before connecting: no connection will close
            self._worker_gone(worker)

    def _exit_status_deadline(self, comp: Comp, worker_id: int) -> None:
        lost = comp.lost.pop(worker_id, None)
        if lost is not None:
            self._report_crash(comp, lost[0], lost[1])
            if comp.state == CLOSING and not comp.has_jobs:
                comp.idle.set()

    def _report_crash(self, comp: Comp, worker: Worker, spec: JobSpec, code: int | None = None) -> None:
        code = worker.exit_code if code is None else code
        timeout = worker.timed_out.pop(spec.job_id, None)
        if timeout is not None:
            text = timeout_error(spec.job_id, timeout, note=(
                f" (it went on after KeyboardInterrupt, so its worker process was {describe_status(code)})"))
        else:
            if spec.job_id in worker.cancelled:
                why = "cancelled; "
            elif comp.terminating:
                why = "terminated (computation closed); "
            else:
                why = ""
            text = describe_exit(spec.job_id, code, why)
            if not comp.terminating:
                log.warning("computation %s: %s", comp.compute_id, text)
        comp.jobs_done += 1
        self._job_failed(comp, spec, text)
        if spec.files and comp.jobs_dir:  # the worker had no chance to remove its directory
            self._background(asyncio.to_thread(remove_job_dirs, comp.jobs_dir, spec.job_id))

    # == hosts and the end of computations ===============================================
    def _setup_failed(self, comp: Comp, error: str) -> None:
        log.info("computation %s (%r): setup failed: %s", comp.compute_id, comp.name, error.strip().splitlines()[-1])
        comp.state = FAILED
        if comp.client is not None and not comp.client.closed:
            comp.client.send(ComputeFailed(comp.compute_id, error))
        self._background(self._teardown(comp))

    def _host_gone(self, comp: Comp) -> None:
        comp.host = None
        if comp.host_done is not None:  # it was asked to clean up and leave
            if not comp.host_done.done():
                comp.host_done.set_result(f"the host process of computation {comp.compute_id} "
                                          "exited during cleanup")
        elif comp.state in (SETUP, READY, CLOSING):
            self._host_failed(comp, f"the host process of computation {comp.compute_id} "
                                    f"({comp.name!r}) exited unexpectedly")

    def _host_failed(self, comp: Comp, error: str) -> None:
        """The computation can't go on: fail its jobs and tell the client."""
        log.warning("%s", error)
        was = comp.state
        comp.state, comp.error, comp.terminating = FAILED, error, True
        if was == SETUP:
            if comp.client is not None and not comp.client.closed:
                comp.client.send(ComputeFailed(comp.compute_id, error))
        self._fail_all_jobs(comp, error)
        if was != SETUP and comp.client is not None and not comp.client.closed:
            self._tick()  # the jobs' results first
            comp.client.send(ErrorReport(error, comp.compute_id))
        if comp.host is not None:
            comp.host.close()
        comp.idle.set()  # a close waiting for the jobs goes on
        if comp.closed is None:  # a CloseComputation in progress finishes the teardown itself
            self._background(self._teardown(comp, forget=was == SETUP))

    def _fail_all_jobs(self, comp: Comp, error: str) -> None:
        for spec in self.sched.remove(comp):
            self._job_failed(comp, spec, error, status=JobStatus.Cancelled)
        for worker in list(comp.workers.values()):
            head, _ = self.sched.worker_lost(worker)
            if worker.pid:
                kill_group(worker.pid)
            if worker.channel is not None:
                worker.channel.close()
            if head is not None:
                self._job_failed(comp, head, f"job {head.job_id}: {error}")
        for spec in self.sched.remove(comp):  # jobs requeued by worker_lost
            self._job_failed(comp, spec, error, status=JobStatus.Cancelled)
        for worker, spec in comp.lost.values():
            self._job_failed(comp, spec, describe_exit(spec.job_id, worker.exit_code))
        comp.lost.clear()

    async def _teardown(self, comp: Comp, forget: bool = True) -> None:
        """Stop a failed computation's processes and remove its directory."""
        for worker in list(comp.workers.values()):
            self.sched.worker_lost(worker)
            if worker.pid:
                kill_group(worker.pid)
        if comp.host is not None:
            # Alive (its connection is open): it leaves at EOF unless user code holds it
            # up. A host whose connection closed is not signalled: its pid may be reused.
            comp.host.close()
            if comp.host_pid:
                kill_process(comp.host_pid)
        await self._remove_directory(comp)
        if forget:
            self._forget(comp)

    def _forget(self, comp: Comp) -> None:
        if comp.attached is not None:
            comp.attached.close()
        self._unattach(comp)
        if comp.unacked:  # results its client may not have got: keep them for it
            self.store.save(comp.compute_id, comp.unacked.values())
            comp.unacked.clear()
        self.sched.remove(comp)
        if self.comps.get(comp.compute_id) is comp:
            del self.comps[comp.compute_id]
        if isinstance(comp.owner, Client):
            comp.owner.comps.discard(comp)
        self._forgotten(comp)

    def _forgotten(self, comp: Comp) -> None:
        """Hook: ``comp`` is gone from the node (closed or failed)."""

    def _shutdown_requested(self, comp: Comp) -> None:
        """Hook: ``comp``'s setup or cleanup called ``dispynode_shutdown()``."""

    async def _remove_directory(self, comp: Comp) -> None:
        if comp.jobs_dir:  # what killed jobs left: job files never outlive their computation
            jobs_dir, comp.jobs_dir = comp.jobs_dir, ""
            await asyncio.to_thread(remove_tree, jobs_dir)
        if not comp.cleanup_files or not comp.directory:
            return
        if any(c is not comp and c.directory == comp.directory for c in self.comps.values()):
            return  # another computation shares this dest_path
        directory, comp.directory = comp.directory, ""
        await asyncio.to_thread(remove_tree, directory)
        self._directory_removed(directory)

    def _directory_removed(self, directory: str) -> None:
        """Hook: a computation's directory was removed."""

    async def _close(self, comp: Comp, *, terminate: bool, reply: bool,
                     timeout: float = CLEANUP_TIMEOUT) -> None:
        """Close a computation: its jobs finish (or are terminated), its workers and host
        leave after cleanup, its directory goes; replies ComputationClosed if asked."""
        if comp.closed is not None:  # closing already: wait for it, then answer
            if terminate and not comp.closed.done() and comp.state == CLOSING:
                self._terminate(comp)
            error = await asyncio.shield(comp.closed)
            if reply:
                self._reply_closed(comp, error)
            return
        comp.closed = self._loop.create_future()
        error = comp.error
        if comp.state != FAILED:
            comp.state = CLOSING
            if terminate:
                self._terminate(comp)
            if comp.has_jobs:
                comp.idle.clear()
                await comp.idle.wait()
            error = await self._stop_host(comp, timeout)
        else:
            await self._teardown(comp, forget=False)
        await self._remove_directory(comp)
        comp.state = CLOSED
        self._forget(comp)
        log.info("computation %s (%r) closed", comp.compute_id, comp.name)
        comp.closed.set_result(error)
        if reply:
            self._reply_closed(comp, error)

    def _reply_closed(self, comp: Comp, error: str | None) -> None:
        self._tick()  # results before the close notice
        if comp.client is not None and not comp.client.closed:
            comp.client.send(ComputationClosed(comp.compute_id, error))

    def _terminate(self, comp: Comp) -> None:
        """Jobs not started are cancelled; running ones are killed with their workers."""
        comp.terminating = True
        self._cancel_pending(comp)
        for worker in comp.workers.values():
            if worker.queue and worker.pid:
                kill_group(worker.pid)

    def _cancel_pending(self, comp: Comp) -> None:
        for spec in comp.pending:
            self._job_failed(comp, spec, None, status=JobStatus.Cancelled)
        comp.pending.clear()

    async def _stop_host(self, comp: Comp, timeout: float) -> str | None:
        for worker in list(comp.workers.values()):
            worker.retiring = True
            if worker.channel is not None:
                worker.channel.close()  # the worker exits at EOF
        if comp.host is None or comp.host.closed:
            return comp.error
        comp.host_done = self._loop.create_future()
        comp.host.send(CleanupHost())
        try:
            error = await asyncio.wait_for(asyncio.shield(comp.host_done), timeout)
        except TimeoutError:
            error = f"cleanup of computation {comp.compute_id} did not finish in {timeout:.0f} s; killed it"
            log.warning("%s", error)
            if comp.host_pid:
                kill_process(comp.host_pid)
        if comp.host is not None:
            comp.host.close()
        return error
