"""The node pool and the job queue: which job goes to which node, and when.

This is the scheduling state that JobCluster keeps in its event loop and that
dispyscheduler will keep for many clients. It is pure bookkeeping: no I/O, no threads, no
clocks. The owner feeds it events and carries out what :meth:`Scheduler.assign` returns::

    sched = Scheduler(key=lambda job: job.uid)
    sched.add_node("10.0.0.5:9701", cpus=4)          # a node finished its setup
    sched.submit(job)                                 # FIFO
    sched.submit(other, node_id="10.0.0.5:9701")      # pinned to one node (submit_node)
    for node_id, jobs in sched.assign():              # batched per node
        send(node_id, jobs)
    sched.job_done(uid)                               # its result arrived
    lost = sched.remove_node("10.0.0.5:9701")         # the jobs that were in flight there

Rules (the invariants the tests check):

* **Pipelining.** A node holds at most ``depth * cpus`` jobs in flight, ``depth`` being
  the scheduler's ``pipeline`` (2) unless set for that node (:meth:`Scheduler.set_depth`):
  while one job's result travels back and the next job travels out, the node already has
  queued work, so its CPUs never idle while jobs wait here. (An owner that sees jobs much
  shorter than a network round trip may deepen a node's pipeline: 2 jobs per CPU can't
  cover the round trip then.) A node with 0 CPUs (deallocated) gets nothing.
* **Least loaded first.** Each job of the general queue goes to the node with the lowest
  ``in_flight / cpus`` that still has room; ties go to the node added first. Batches are
  built job by job, so a burst is spread over the nodes in proportion to their CPUs.
* **FIFO.** Jobs of the general queue leave in submission order; pinned jobs leave in
  submission order among the jobs pinned to the same node. Pinned jobs are offered to
  their node before general jobs in each :meth:`assign` (they can go nowhere else).
* Jobs pinned to a node that is not in the pool wait for it; :meth:`remove_node` leaves
  them waiting (the node may come back) and :meth:`drop_pinned` takes them out.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["Scheduler", "NodeLoad", "PIPELINE"]

J = TypeVar("J")

#: Jobs in flight per CPU of a node.
PIPELINE = 2


def _identity(job: object) -> Hashable:
    return job


class NodeLoad(Generic[J]):
    """One node of the pool: its CPUs and the jobs in flight there (in dispatch order)."""

    __slots__ = ("node_id", "cpus", "order", "depth", "in_flight")

    def __init__(self, node_id: Hashable, cpus: int, order: int, depth: int) -> None:
        self.node_id = node_id
        self.cpus = cpus
        self.order = order  # ties between equally loaded nodes go to the oldest
        self.depth = depth  # jobs in flight per CPU
        self.in_flight: dict[Hashable, J] = {}

    @property
    def load(self) -> float:
        return len(self.in_flight) / self.cpus if self.cpus > 0 else float("inf")

    @property
    def room(self) -> int:
        return max(0, self.depth * self.cpus - len(self.in_flight))

    def __repr__(self) -> str:
        return f"NodeLoad({self.node_id!r}, cpus={self.cpus}, in_flight={len(self.in_flight)})"


class Scheduler(Generic[J]):
    """Job queue plus node pool. ``key(job)`` gives the job's id (default: the job itself,
    which must then be hashable); ids must be unique among queued and in-flight jobs."""

    def __init__(self, key: Callable[[J], Hashable] = _identity, pipeline: int = PIPELINE) -> None:
        if pipeline < 1:
            raise ValueError(f"pipeline must be >= 1, not {pipeline}")
        self.key = key
        self.pipeline = pipeline
        self._nodes: dict[Hashable, NodeLoad[J]] = {}
        self._added = 0
        # The general queue is a deque of jobs plus a dict of the ids still queued:
        # cancel() deletes from the dict in O(1) and assign() skips what is gone.
        self._queue: deque[J] = deque()
        self._queued: dict[Hashable, J] = {}
        self._pinned: dict[Hashable, deque[J]] = {}
        self._pinned_ids: dict[Hashable, Hashable] = {}  # job id -> node id
        self._where: dict[Hashable, Hashable] = {}  # in-flight job id -> node id

    # -- nodes ----------------------------------------------------------------------
    def add_node(self, node_id: Hashable, cpus: int, depth: int | None = None) -> None:
        """Add a node that can take jobs (``depth`` jobs in flight per CPU, default the
        scheduler's ``pipeline``). Raises ValueError if it is already in the pool."""
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} is already in the pool")
        if cpus < 0:
            raise ValueError(f"cpus must be >= 0, not {cpus}")
        depth = self.pipeline if depth is None else depth
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        self._nodes[node_id] = NodeLoad(node_id, cpus, self._added, depth)
        self._added += 1

    def set_depth(self, node_id: Hashable, depth: int) -> None:
        """Change how many jobs per CPU a node may hold in flight (>= 1); jobs already
        there stay even if over the new limit."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        self._nodes[node_id].depth = depth

    def set_cpus(self, node_id: Hashable, cpus: int) -> None:
        """Change a node's CPUs; jobs already in flight stay there even if over the limit."""
        if cpus < 0:
            raise ValueError(f"cpus must be >= 0, not {cpus}")
        self._nodes[node_id].cpus = cpus

    def remove_node(self, node_id: Hashable) -> list[J]:
        """Take a node out of the pool; returns the jobs that were in flight there, in
        dispatch order (the owner decides: resubmit or abandon). Unknown node: []."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return []
        for job_id in node.in_flight:
            del self._where[job_id]
        return list(node.in_flight.values())

    def has_node(self, node_id: Hashable) -> bool:
        return node_id in self._nodes

    def node(self, node_id: Hashable) -> NodeLoad[J]:
        """The pool's record of a node (KeyError if absent). Read it, don't change it."""
        return self._nodes[node_id]

    @property
    def nodes(self) -> list[Hashable]:
        return list(self._nodes)

    def in_flight(self, node_id: Hashable) -> list[J]:
        """Jobs in flight on a node, in dispatch order ([] for an unknown node)."""
        node = self._nodes.get(node_id)
        return list(node.in_flight.values()) if node is not None else []

    # -- jobs -----------------------------------------------------------------------
    def submit(self, job: J, node_id: Hashable | None = None) -> None:
        """Queue a job, for any node or (``node_id``) for that node only."""
        job_id = self.key(job)
        if job_id in self._queued or job_id in self._pinned_ids or job_id in self._where:
            raise ValueError(f"job {job_id!r} is already queued or in flight")
        if node_id is None:
            self._queue.append(job)
            self._queued[job_id] = job
        else:
            self._pinned.setdefault(node_id, deque()).append(job)
            self._pinned_ids[job_id] = node_id

    def cancel(self, job_id: Hashable) -> J | None:
        """Remove a job that is still queued (general or pinned); returns it, or None if
        it is not queued (in flight, done or unknown)."""
        job = self._queued.pop(job_id, None)
        if job is not None:
            return job  # its deque entry is skipped by assign()
        node_id = self._pinned_ids.pop(job_id, None)
        if node_id is None:
            return None
        pinned = self._pinned[node_id]
        found: J | None = None
        for i, queued in enumerate(pinned):
            if self.key(queued) == job_id:
                found = queued
                del pinned[i]
                break
        if not pinned:
            del self._pinned[node_id]
        return found

    def drop_pinned(self, node_id: Hashable) -> list[J]:
        """Remove and return every job still queued for ``node_id`` only."""
        pinned = self._pinned.pop(node_id, None)
        if not pinned:
            return []
        for job in pinned:
            del self._pinned_ids[self.key(job)]
        return list(pinned)

    def job_done(self, job_id: Hashable) -> Hashable | None:
        """A job in flight has its final result: frees its slot; returns the node it ran
        on, or None if the job was not in flight (late or duplicate result)."""
        node_id = self._where.pop(job_id, None)
        if node_id is not None:
            node = self._nodes.get(node_id)
            if node is not None:
                node.in_flight.pop(job_id, None)
        return node_id

    def where(self, job_id: Hashable) -> Hashable | None:
        """The node a job is in flight on, or None."""
        return self._where.get(job_id)

    @property
    def queued(self) -> int:
        """Jobs waiting for a node (general and pinned)."""
        return len(self._queued) + len(self._pinned_ids)

    @property
    def running(self) -> int:
        """Jobs in flight on some node."""
        return len(self._where)

    def queued_jobs(self) -> Iterator[J]:
        """The jobs still queued: general queue in FIFO order, then pinned ones."""
        queued = self._queued
        for job in self._queue:
            if queued.get(self.key(job)) is job:
                yield job
        for pinned in self._pinned.values():
            yield from pinned

    # -- the decision -----------------------------------------------------------------
    def assign(self) -> list[tuple[Hashable, list[J]]]:
        """Move as many queued jobs as the pipelining rule allows onto nodes.

        Returns ``[(node_id, [jobs...]), ...]``: one batch per node that got jobs, in the
        order nodes first got one; jobs in a batch are in dispatch order. The jobs count
        as in flight from now on, until :meth:`job_done` or :meth:`remove_node`.
        """
        batches: dict[Hashable, list[J]] = {}
        key = self.key

        # Pinned jobs first: they can only go to their own node.
        if self._pinned:
            for node_id in list(self._pinned):
                node = self._nodes.get(node_id)
                if node is None:
                    continue
                room = node.room
                pinned = self._pinned[node_id]
                while room > 0 and pinned:
                    job = pinned.popleft()
                    job_id = key(job)
                    del self._pinned_ids[job_id]
                    self._place(node, job_id, job, batches)
                    room -= 1
                if not pinned:
                    del self._pinned[node_id]

        if not self._queued:
            self._queue.clear()  # only cancelled leftovers
            return list(batches.items())

        heap = [
            (node.load, node.order, node)
            for node in self._nodes.values()
            if node.room > 0
        ]
        heapq.heapify(heap)
        queue, queued = self._queue, self._queued
        while heap and queued:
            job = queue.popleft()
            job_id = key(job)
            if queued.get(job_id) is not job:
                continue  # cancelled
            del queued[job_id]
            _, order, node = heap[0]
            self._place(node, job_id, job, batches)
            if node.room > 0:
                heapq.heapreplace(heap, (node.load, order, node))
            else:
                heapq.heappop(heap)
        return list(batches.items())

    def _place(self, node: NodeLoad[J], job_id: Hashable, job: J,
               batches: dict[Hashable, list[J]]) -> None:
        node.in_flight[job_id] = job
        self._where[job_id] = node.node_id
        batch = batches.get(node.node_id)
        if batch is None:
            batches[node.node_id] = [job]
        else:
            batch.append(job)
