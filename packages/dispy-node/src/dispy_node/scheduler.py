"""Which job runs where: the main process's job queues and CPU accounting, without I/O.

Invariants:

* A worker runs its jobs one at a time, in the order it got them. ``Worker.queue`` holds
  the jobs sent to it and not yet answered; ``queue[0]`` is the one running.
* A worker with a non-empty queue holds one CPU. At most ``cpus`` workers hold one, across
  all computations, so at most ``cpus`` jobs run at once.
* How many jobs a worker may hold (:meth:`Computation.depth`) follows how long the
  computation's jobs take: about :data:`QUEUED_WORK` seconds of work, between 1 and
  :data:`MAX_DEPTH` jobs. Tiny jobs thus travel in batches and the worker never idles
  for a round trip, while long jobs (and jobs until their duration is known) go one at
  a time, so that none waits behind another on a busy worker while a worker is free.
  A busy worker is refilled once half its queue has drained, so refills are batches
  too. One job at a time for a process-per-job computation. All other jobs wait in
  ``Computation.pending``.
* ``cpus`` may change while jobs run (console ``cpus``; 0 while jobs are held): above it,
  no worker is given a job, and the CPUs held drain as their jobs end.
* Free CPUs go first to the computations holding fewest, in turn. A busy worker keeps its CPU while its
  computation has jobs (no round trip through this scheduler per job), unless another
  computation with pending jobs holds no CPU at all: then busy workers are not topped
  up, so CPUs go round as they drain.

The server calls :meth:`Scheduler.assign` once per event-loop iteration after anything
changed and sends each worker the jobs it was given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dispy_core.messages import JobSpec

__all__ = ["QUEUED_WORK", "MAX_DEPTH", "Worker", "Computation", "Scheduler"]

#: Seconds of work to keep queued at each worker (see the module docstring).
QUEUED_WORK = 0.005
#: Most jobs queued at one worker.
MAX_DEPTH = 16
#: Weight of the newest job in the running mean of job durations.
_EWMA = 0.1


@dataclass(eq=False)
class Worker:
    """The main process's view of one worker process."""

    comp: Computation
    worker_id: int
    pid: int = 0
    channel: Any = None  # set once the worker connected (WorkerHello)
    queue: deque[JobSpec] = field(default_factory=deque)
    retiring: bool = False  # gets no more jobs (process per job, or being stopped)
    gone: bool = False  # its connection closed
    exit_code: int | None = None  # from the host's WorkerExited
    cancelled: set[Any] = field(default_factory=set)  # job ids cancelled while running
    timing: Any = None  # job id whose timeout is armed (see Lifecycle._watch_head)
    timed_out: dict[Any, float] = field(default_factory=dict)  # job id -> its timeout, once exceeded

    @property
    def ready(self) -> bool:
        return self.channel is not None and not self.retiring and not self.gone


@dataclass(eq=False)
class Computation:
    """The main process's view of one computation: its queue, workers and counters."""

    compute_id: str
    name: str = ""
    cpus: int = 1
    process_per_job: bool = False
    pending: deque[JobSpec] = field(default_factory=deque)
    pending_bytes: int = 0  # payload bytes of the jobs in ``pending`` (for flow control)
    workers: dict[int, Worker] = field(default_factory=dict)
    busy: int = 0  # workers of this computation holding a CPU
    jobs_done: int = 0
    next_worker_id: int = 1
    mean_duration: float = QUEUED_WORK  # running mean of its jobs' run times, seconds

    @property
    def depth(self) -> int:
        """How many jobs a worker of this computation may hold."""
        if self.process_per_job:
            return 1
        return max(1, min(MAX_DEPTH, int(QUEUED_WORK / max(self.mean_duration, 1e-6))))

    def observe(self, duration: float) -> None:
        """Fold one job's run time into the mean that sets :attr:`depth`."""
        self.mean_duration += _EWMA * (duration - self.mean_duration)

    @property
    def running(self) -> int:
        return sum(len(w.queue) for w in self.workers.values())

    def new_worker(self) -> Worker:
        w = Worker(self, self.next_worker_id)
        self.next_worker_id += 1
        self.workers[w.worker_id] = w
        return w


#: Argument bytes queued at one worker beyond which it gets no more jobs until it drains.
WORKER_BYTES = 1 << 20


def spec_size(spec: JobSpec) -> int:
    """Bytes a queued job holds in memory: its arguments and files."""
    n = sum(memoryview(b).nbytes for b in spec.args)
    for f in spec.files:
        n += memoryview(f.data).nbytes
    return n


class Scheduler:
    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.busy = 0
        self.computations: dict[str, Computation] = {}
        self._last = ""  # compute_id that got the last free CPU (for taking turns)

    # -- changes --------------------------------------------------------------------
    def add(self, comp: Computation) -> None:
        self.computations[comp.compute_id] = comp

    def remove(self, comp: Computation) -> list[JobSpec]:
        """Forget a computation; returns its jobs that never ran. Its workers must have
        been removed with :meth:`worker_lost` (their CPUs are released there)."""
        self.computations.pop(comp.compute_id, None)
        return self.take_pending(comp)

    @staticmethod
    def take_pending(comp: Computation) -> list[JobSpec]:
        """Remove and return the computation's jobs that no worker has."""
        jobs = list(comp.pending)
        comp.pending.clear()
        comp.pending_bytes = 0
        return jobs

    def submit(self, comp: Computation, jobs: Iterable[JobSpec]) -> None:
        for spec in jobs:
            comp.pending.append(spec)
            comp.pending_bytes += spec_size(spec)

    def job_done(self, worker: Worker, job_id: Any) -> JobSpec | None:
        """A worker answered ``job_id``; returns its spec (None if it was not expected)."""
        q = worker.queue
        if q and q[0].job_id == job_id:
            spec = q.popleft()
        else:
            for spec in q:
                if spec.job_id == job_id:
                    q.remove(spec)
                    break
            else:
                return None
        worker.cancelled.discard(job_id)
        worker.comp.jobs_done += 1
        if worker.comp.process_per_job:
            worker.retiring = True  # it exits after this job
        if not q:
            self._release(worker)
        return spec

    def worker_lost(self, worker: Worker) -> tuple[JobSpec | None, list[JobSpec]]:
        """A worker is gone: returns (the job it was running, jobs queued behind it).

        The queued jobs go back to the front of the computation's queue, in order; the
        running one is the caller's to report.
        """
        comp = worker.comp
        comp.workers.pop(worker.worker_id, None)
        worker.gone = True
        if not worker.queue:
            return None, []
        head, *rest = worker.queue
        worker.queue.clear()
        self._release(worker)
        comp.pending.extendleft(reversed(rest))
        comp.pending_bytes += sum(map(spec_size, rest))
        return head, rest

    def cancel_pending(self, comp: Computation, job_id: Any) -> JobSpec | None:
        """Remove a job that no worker has yet; returns it, or None."""
        for spec in comp.pending:
            if spec.job_id == job_id:
                comp.pending.remove(spec)
                comp.pending_bytes -= spec_size(spec)
                return spec
        return None

    def find(self, comp: Computation, job_id: Any) -> tuple[Worker, int] | None:
        """The worker holding ``job_id`` and its position in that worker's queue."""
        for w in comp.workers.values():
            for i, spec in enumerate(w.queue):
                if spec.job_id == job_id:
                    return w, i
        return None

    # -- decisions ------------------------------------------------------------------
    def assign(self) -> list[tuple[Worker, list[JobSpec]]]:
        """Hand pending jobs to workers; returns what to send to whom."""
        waiting = [c for c in self.computations.values() if c.pending]
        if not waiting:
            return []
        plan: dict[Worker, list[JobSpec]] = {}
        self._share_free_cpus(waiting, plan)
        # While a computation with jobs and an idle worker holds no CPU, busy workers
        # elsewhere get nothing more: CPUs then go round as those workers drain.
        starving = any(
            c.pending and c.busy == 0 and any(w.ready and not w.queue for w in c.workers.values())
            for c in waiting
        )
        # Nor while more CPUs are held than the node now has (its CPU count went down,
        # or to 0 while jobs are held): busy workers drain until the count fits.
        if not starving and self.busy <= self.cpus:
            for comp in waiting:
                half = comp.depth // 2
                for w in comp.workers.values():
                    if not comp.pending:
                        break
                    if w.ready and w.queue and len(w.queue) <= half:
                        self._give(comp, w, plan)
        return list(plan.items())

    def _share_free_cpus(self, waiting: list[Computation], plan: dict[Worker, list[JobSpec]]) -> None:
        """Free CPUs go to idle workers, one job each and one computation at a time, in
        turn (starting after the computation that got the last one); the top-ups that
        follow fill their pipelines from what is left."""
        if self.busy >= self.cpus:
            return
        ids = [c.compute_id for c in waiting]
        if self._last in ids:
            i = ids.index(self._last) + 1
            waiting = waiting[i:] + waiting[:i]
        while self.busy < self.cpus and waiting:
            # Those holding fewest CPUs first; in turn among equals (the sort is stable).
            for comp in sorted(waiting, key=lambda c: c.busy):
                if self.busy >= self.cpus:
                    return
                idle = next((w for w in comp.workers.values() if w.ready and not w.queue), None)
                if idle is None or not comp.pending:
                    waiting.remove(comp)
                    continue
                self.busy += 1
                comp.busy += 1
                self._last = comp.compute_id
                self._give(comp, idle, plan, 1)

    @staticmethod
    def _give(comp: Computation, w: Worker, plan: dict[Worker, list[JobSpec]], most: int = 0) -> None:
        jobs = plan.setdefault(w, [])
        depth = most or comp.depth
        # Queued payload counts too: a worker holds at most one job beyond its first once
        # that much argument data is waiting for it (10 MB arguments go one at a time).
        held = sum(map(spec_size, w.queue))
        while comp.pending and len(w.queue) < depth and (not w.queue or held < WORKER_BYTES):
            spec = comp.pending.popleft()
            size = spec_size(spec)
            comp.pending_bytes -= size
            held += size
            w.queue.append(spec)
            jobs.append(spec)

    # -- internals ------------------------------------------------------------------
    def _release(self, worker: Worker) -> None:
        self.busy -= 1
        worker.comp.busy -= 1
