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
* **Clusters.** Every job belongs to a cluster: a queue of its own and the nodes it may
  use (all, or those :meth:`Scheduler.allow` names, e.g. where its computation is set up).
  JobCluster uses only the cluster ``None``; dispyscheduler has one per SharedJobCluster.
  Each free slot goes to the least loaded node first; then, among the clusters with
  queued jobs that may use that node, the ``policy`` chooses: ``"default"`` the one whose
  next job was submitted earliest (first submitted, first scheduled, across clusters),
  ``"fair"`` the one given a node least recently (round robin over waiting clusters),
  ``"early"`` the one created first. Within a cluster jobs stay FIFO. A cluster may be
  allowed only some of a node's CPUs (``allow(cluster, node, cpus)``: NodeAllocate.cpus,
  set_node_cpus, deallocate_node with 0): its jobs in flight there stay within ``depth x
  cpus``, and the node's other slots go to other clusters.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Scheduler", "NodeLoad", "PIPELINE", "POLICIES"]

J = TypeVar("J")

#: Jobs in flight per CPU of a node.
PIPELINE = 2
#: How the scheduler chooses between clusters (dispyscheduler's three algorithms).
POLICIES = ("default", "fair", "early")
_ALL = object()


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


class _Cluster:
    """One cluster's queue: entries ``(seq, job_id, job, cluster)`` in submission order
    (cancelled ones are skipped lazily), the nodes it may use, and its CPU caps there."""

    __slots__ = ("cluster_id", "order", "queue", "live", "nodes", "last", "caps", "running")

    def __init__(self, cluster_id: Hashable, order: int, nodes: set[Hashable] | None) -> None:
        self.cluster_id = cluster_id
        self.order = order  # creation order (early policy)
        self.queue: deque[tuple[int, Hashable, Any, _Cluster]] = deque()
        self.live = 0  # entries of ``queue`` still queued
        self.nodes = nodes  # None: any node of the pool
        self.last = -1  # when it was last given a node (fair policy)
        self.caps: dict[Hashable, int] = {}  # node -> CPUs it may use there (absent: all)
        self.running: dict[Hashable, int] = {}  # node -> its jobs in flight there (capped nodes)

    def has_room(self, node: NodeLoad[Any]) -> bool:
        """It may have one more job placed on ``node``."""
        node_id = node.node_id
        if self.nodes is not None and node_id not in self.nodes:
            return False
        cap = self.caps.get(node_id)
        return cap is None or self.running.get(node_id, 0) < cap * node.depth


class Scheduler(Generic[J]):
    """Job queues plus node pool. ``key(job)`` gives the job's id (default: the job
    itself, which must then be hashable); ids must be unique among queued and in-flight
    jobs, across clusters.

    ``policy`` chooses between clusters (see the module docstring): ``"default"``
    (earliest submitted job), ``"fair"`` (cluster served least recently) or ``"early"``
    (cluster created first). With one cluster they are the same FIFO.
    """

    def __init__(self, key: Callable[[J], Hashable] = _identity, pipeline: int = PIPELINE,
                 policy: str = "default") -> None:
        if pipeline < 1:
            raise ValueError(f"pipeline must be >= 1, not {pipeline}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.key = key
        self.pipeline = pipeline
        self.policy = policy
        self._nodes: dict[Hashable, NodeLoad[J]] = {}
        self._added = 0
        self._clusters: dict[Hashable, _Cluster] = {}
        self._created = 0
        self._default = self.add_cluster(None)
        self._seq = 0  # submission counter
        self._rounds = 0  # placements so far (fair policy's clock)
        # Queued job id -> its queue entry: cancel() deletes here in O(1) and assign()
        # skips entries that are no longer the one recorded.
        self._queued: dict[Hashable, tuple[int, Hashable, J, _Cluster]] = {}
        self._pinned: dict[Hashable, deque[tuple[int, Hashable, J, _Cluster]]] = {}
        self._pinned_ids: dict[Hashable, Hashable] = {}  # job id -> node id
        self._where: dict[Hashable, Hashable] = {}  # in-flight job id -> node id
        # In-flight job id -> its cluster, kept while there is more than one cluster
        # (``_shared``) or for a cluster with CPU caps; each cluster's ``running`` counts
        # its jobs so kept, per node. JobCluster (one cluster, no caps) keeps none.
        self._owner: dict[Hashable, _Cluster] = {}
        self._shared = False

    # -- clusters -------------------------------------------------------------------
    def add_cluster(self, cluster_id: Hashable, nodes: Iterable[Hashable] | None = None) -> _Cluster:
        """Add a cluster (a queue of its own) that may use ``nodes`` (None: any node;
        change with :meth:`allow` / :meth:`forbid`). The cluster ``None`` always exists:
        jobs submitted without a cluster go there."""
        if cluster_id in self._clusters:
            raise ValueError(f"cluster {cluster_id!r} already exists")
        cluster = _Cluster(cluster_id, self._created, None if nodes is None else set(nodes))
        self._created += 1
        self._clusters[cluster_id] = cluster
        self._shared = len(self._clusters) > 1
        return cluster

    def allow(self, cluster_id: Hashable, node_id: Hashable, cpus: int | None = None) -> None:
        """The cluster may use the node from now on (e.g. its computation is set up
        there): ``cpus`` of its CPUs (its jobs in flight there stay within ``depth x
        cpus``; 0: none for now), or all of them (None)."""
        cluster = self._clusters[cluster_id]
        if cluster.nodes is not None:
            cluster.nodes.add(node_id)
        if cpus is None:
            cluster.caps.pop(node_id, None)
        elif cpus < 0:
            raise ValueError(f"cpus must be >= 0, not {cpus}")
        else:
            cluster.caps[node_id] = cpus

    def forbid(self, cluster_id: Hashable, node_id: Hashable) -> None:
        """The cluster gets no more jobs placed on the node (its in-flight jobs stay)."""
        cluster = self._clusters[cluster_id]
        if cluster.nodes is None:
            cluster.nodes = set(self._nodes)
        cluster.nodes.discard(node_id)

    def remove_cluster(self, cluster_id: Hashable) -> list[J]:
        """Forget a cluster; returns its jobs still queued (general, then pinned). Its
        jobs in flight stay in flight until :meth:`job_done` or :meth:`remove_node`."""
        if cluster_id is None:
            raise ValueError("the default cluster can't be removed")
        cluster = self._clusters.pop(cluster_id)
        self._shared = len(self._clusters) > 1
        jobs = [entry[2] for entry in cluster.queue if self._queued.get(entry[1]) is entry]
        for entry in cluster.queue:
            if self._queued.get(entry[1]) is entry:
                del self._queued[entry[1]]
        cluster.queue.clear()
        cluster.live = 0
        for node_id, pinned in list(self._pinned.items()):
            mine = [entry for entry in pinned if entry[3] is cluster]
            if mine:
                for entry in mine:
                    pinned.remove(entry)
                    del self._pinned_ids[entry[1]]
                    jobs.append(entry[2])
                if not pinned:
                    del self._pinned[node_id]
        return jobs

    @property
    def clusters(self) -> list[Hashable]:
        return list(self._clusters)

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
        owner = self._owner
        for job_id in node.in_flight:
            del self._where[job_id]
            if owner:
                cluster = owner.pop(job_id, None)
                if cluster is not None:
                    cluster.running.pop(node_id, None)
        return list(node.in_flight.values())

    def release(self, cluster_id: Hashable, node_id: Hashable) -> list[J]:
        """One cluster stops using a node (its session there is lost) while others go on:
        the cluster is forbidden the node, and its jobs in flight there are taken out and
        returned, in dispatch order (the owner decides: resubmit or abandon)."""
        cluster = self._clusters[cluster_id]
        self.forbid(cluster_id, node_id)
        node = self._nodes.get(node_id)
        if node is None:
            return []
        owner = self._owner
        if self._shared or cluster.caps:
            mine = [job_id for job_id in node.in_flight if owner.get(job_id) is cluster]
        else:
            mine = list(node.in_flight)  # the only cluster: every job there is its own
        jobs = []
        for job_id in mine:
            jobs.append(node.in_flight.pop(job_id))
            del self._where[job_id]
            owner.pop(job_id, None)
        cluster.running.pop(node_id, None)
        return jobs

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
    def submit(self, job: J, node_id: Hashable | None = None, cluster_id: Hashable = None) -> None:
        """Queue a job of a cluster (default: the cluster None), for any node the
        cluster may use or (``node_id``) for that node only."""
        job_id = self.key(job)
        if job_id in self._queued or job_id in self._pinned_ids or job_id in self._where:
            raise ValueError(f"job {job_id!r} is already queued or in flight")
        cluster = self._default if cluster_id is None else self._clusters[cluster_id]
        entry = (self._seq, job_id, job, cluster)
        self._seq += 1
        if node_id is None:
            cluster.queue.append(entry)
            cluster.live += 1
            self._queued[job_id] = entry
        else:
            self._pinned.setdefault(node_id, deque()).append(entry)
            self._pinned_ids[job_id] = node_id

    def cancel(self, job_id: Hashable) -> J | None:
        """Remove a job that is still queued (general or pinned); returns it, or None if
        it is not queued (in flight, done or unknown)."""
        entry = self._queued.pop(job_id, None)
        if entry is not None:
            entry[3].live -= 1
            return entry[2]  # its deque entry is skipped by assign()
        node_id = self._pinned_ids.pop(job_id, None)
        if node_id is None:
            return None
        pinned = self._pinned[node_id]
        found: J | None = None
        for i, queued in enumerate(pinned):
            if queued[1] == job_id:
                found = queued[2]
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
        for entry in pinned:
            del self._pinned_ids[entry[1]]
        return [entry[2] for entry in pinned]

    def job_done(self, job_id: Hashable) -> Hashable | None:
        """A job in flight has its final result: frees its slot; returns the node it ran
        on, or None if the job was not in flight (late or duplicate result)."""
        node_id = self._where.pop(job_id, None)
        if node_id is not None:
            node = self._nodes.get(node_id)
            if node is not None:
                node.in_flight.pop(job_id, None)
            if self._owner:
                cluster = self._owner.pop(job_id, None)
                if cluster is not None and cluster.running.get(node_id, 0) > 0:
                    cluster.running[node_id] -= 1
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

    def queued_jobs(self, cluster_id: Any = _ALL) -> Iterator[J]:
        """The jobs still queued (of one cluster, or all): each cluster's general queue
        in FIFO order, clusters in creation order, then pinned ones."""
        queued = self._queued
        clusters = self._clusters.values() if cluster_id is _ALL else [self._clusters[cluster_id]]
        for cluster in clusters:
            for entry in cluster.queue:
                if queued.get(entry[1]) is entry:
                    yield entry[2]
        for pinned in self._pinned.values():
            for entry in pinned:
                if cluster_id is _ALL or entry[3].cluster_id == cluster_id:
                    yield entry[2]

    # -- the decision -----------------------------------------------------------------
    def assign(self) -> list[tuple[Hashable, list[J]]]:
        """Move as many queued jobs as the pipelining rule allows onto nodes.

        Returns ``[(node_id, [jobs...]), ...]``: one batch per node that got jobs, in the
        order nodes first got one; jobs in a batch are in dispatch order. The jobs count
        as in flight from now on, until :meth:`job_done` or :meth:`remove_node`.
        """
        batches: dict[Hashable, list[J]] = {}
        if self._pinned:
            self._assign_pinned(batches)
        if not self._queued:
            for cluster in self._clusters.values():
                cluster.queue.clear()  # only cancelled leftovers
            return list(batches.items())
        heap = [(node.load, node.order, node) for node in self._nodes.values() if node.room > 0]
        heapq.heapify(heap)
        active = [c for c in self._clusters.values() if c.live]
        if len(active) == 1 and active[0].nodes is None and not active[0].caps:
            self._assign_one(active[0], heap, batches)
        else:
            self._assign_many(active, heap, batches)
        return list(batches.items())

    def _assign_pinned(self, batches: dict[Hashable, list[J]]) -> None:
        """Pinned jobs first: they can only go to their own node (if their cluster may
        use it; else they wait)."""
        for node_id in list(self._pinned):
            node = self._nodes.get(node_id)
            if node is None:
                continue
            room = node.room
            pinned = self._pinned[node_id]
            kept: deque[tuple[int, Hashable, J, _Cluster]] = deque()
            while room > 0 and pinned:
                entry = pinned.popleft()
                if not entry[3].has_room(node):
                    kept.append(entry)
                    continue
                del self._pinned_ids[entry[1]]
                self._place(node, entry[1], entry[2], batches, entry[3])
                entry[3].last = self._rounds
                self._rounds += 1
                room -= 1
            kept.extend(pinned)
            if kept:
                self._pinned[node_id] = kept
            else:
                del self._pinned[node_id]

    def _assign_one(self, cluster: _Cluster, heap: list[tuple[float, int, NodeLoad[J]]],
                    batches: dict[Hashable, list[J]]) -> None:
        """One cluster with jobs, allowed everywhere (JobCluster's case): each job to the
        least loaded node, in FIFO order."""
        queue, queued = cluster.queue, self._queued
        while heap and cluster.live:
            entry = queue.popleft()
            job_id = entry[1]
            if queued.get(job_id) is not entry:
                continue  # cancelled
            del queued[job_id]
            cluster.live -= 1
            _, order, node = heap[0]
            self._place(node, job_id, entry[2], batches, cluster)
            if node.room > 0:
                heapq.heapreplace(heap, (node.load, order, node))
            else:
                heapq.heappop(heap)
        cluster.last = self._rounds
        self._rounds += 1

    def _assign_many(self, active: list[_Cluster], heap: list[tuple[float, int, NodeLoad[J]]],
                     batches: dict[Hashable, list[J]]) -> None:
        """The least loaded node first; the policy chooses among the clusters that may
        use it."""
        queued = self._queued
        policy = self.policy
        while heap and active:
            _, order, node = heap[0]
            best: _Cluster | None = None
            best_rank: tuple[int, int] = (0, 0)
            for cluster in active:
                if not cluster.has_room(node):
                    continue
                q = cluster.queue
                while queued.get(q[0][1]) is not q[0]:
                    q.popleft()  # cancelled
                if policy == "default":
                    rank = (q[0][0], 0)  # the earliest submitted job
                elif policy == "fair":
                    rank = (cluster.last, cluster.order)  # served least recently
                else:
                    rank = (cluster.order, 0)  # created first
                if best is None or rank < best_rank:
                    best, best_rank = cluster, rank
            if best is None:
                heapq.heappop(heap)  # no cluster with jobs may use this node
                continue
            entry = best.queue.popleft()
            del queued[entry[1]]
            best.live -= 1
            best.last = self._rounds
            self._rounds += 1
            if not best.live:
                active.remove(best)
            self._place(node, entry[1], entry[2], batches, best)
            if node.room > 0:
                heapq.heapreplace(heap, (node.load, order, node))
            else:
                heapq.heappop(heap)

    def _place(self, node: NodeLoad[J], job_id: Hashable, job: J,
               batches: dict[Hashable, list[J]], cluster: _Cluster | None = None) -> None:
        node.in_flight[job_id] = job
        self._where[job_id] = node.node_id
        if cluster is not None and (self._shared or cluster.caps):
            cluster.running[node.node_id] = cluster.running.get(node.node_id, 0) + 1
            self._owner[job_id] = cluster
        batch = batches.get(node.node_id)
        if batch is None:
            batches[node.node_id] = [job]
        else:
            batch.append(job)
