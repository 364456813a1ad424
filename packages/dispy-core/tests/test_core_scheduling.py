"""Tests of dispy_core.scheduling: pipelining limit, FIFO order, least-loaded spreading,
pinned jobs, node loss and cancellation, plus a hypothesis state machine that checks the
invariants after every step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dispy_core.scheduling import PIPELINE, POLICIES, Scheduler


@dataclass(eq=False)
class Job:
    uid: int


def make(n: int, start: int = 0) -> list[Job]:
    return [Job(i) for i in range(start, start + n)]


def sched() -> Scheduler[Job]:
    return Scheduler(key=lambda j: j.uid)


def flat(batches: list[tuple[object, list[Job]]]) -> list[Job]:
    return [job for _, jobs in batches for job in jobs]


# -- basics ---------------------------------------------------------------------------
def test_no_node_no_assignment() -> None:
    s = sched()
    s.submit(Job(1))
    assert s.assign() == []
    assert s.queued == 1 and s.running == 0


def test_pipeline_limit_is_twice_cpus() -> None:
    assert PIPELINE == 2
    s = sched()
    s.add_node("a", 3)
    jobs = make(10)
    for j in jobs:
        s.submit(j)
    batches = s.assign()
    assert batches == [("a", jobs[:6])]
    assert s.queued == 4 and s.running == 6
    assert s.assign() == []  # full
    s.job_done(0)
    s.job_done(1)
    assert s.assign() == [("a", jobs[6:8])]


def test_fifo_order_across_batches() -> None:
    s = sched()
    s.add_node("a", 1)
    jobs = make(7)
    for j in jobs:
        s.submit(j)
    sent: list[Job] = []
    while s.queued or s.running:
        for _, batch in s.assign():
            sent.extend(batch)
        for j in s.in_flight("a")[:1]:
            s.job_done(j.uid)
    assert sent == jobs


def test_least_loaded_spreading_proportional_to_cpus() -> None:
    s = sched()
    s.add_node("big", 4)
    s.add_node("small", 1)
    for j in make(5):
        s.submit(j)
    s.assign()
    assert len(s.in_flight("big")) == 4
    assert len(s.in_flight("small")) == 1


def test_ties_go_to_the_node_added_first_and_batches_alternate() -> None:
    s = sched()
    s.add_node("a", 1)
    s.add_node("b", 1)
    jobs = make(3)
    for j in jobs:
        s.submit(j)
    batches = dict(s.assign())
    assert batches == {"a": [jobs[0], jobs[2]], "b": [jobs[1]]}


def test_new_node_gets_work_first() -> None:
    s = sched()
    s.add_node("a", 2)
    for j in make(3):
        s.submit(j)
    s.assign()  # a has 3 in flight (load 1.5)
    s.add_node("b", 2)
    for j in make(2, 100):
        s.submit(j)
    batches = dict(s.assign())
    assert [j.uid for j in batches["b"]] == [100, 101]
    assert "a" not in batches


def test_zero_cpu_node_gets_nothing() -> None:
    s = sched()
    s.add_node("idle", 0)
    s.submit(Job(1))
    assert s.assign() == []
    s.set_cpus("idle", 1)
    assert flat(s.assign()) and s.where(1) == "idle"


def test_job_done_returns_node_and_ignores_unknown() -> None:
    s = sched()
    s.add_node("a", 1)
    s.submit(Job(1))
    s.assign()
    assert s.job_done(1) == "a"
    assert s.job_done(1) is None
    assert s.job_done(42) is None
    assert s.running == 0


def test_remove_node_returns_in_flight_in_dispatch_order() -> None:
    s = sched()
    s.add_node("a", 2)
    jobs = make(6)
    for j in jobs:
        s.submit(j)
    s.assign()
    s.job_done(1)
    lost = s.remove_node("a")
    assert lost == [jobs[0], jobs[2], jobs[3]]
    assert s.running == 0 and s.queued == 2
    assert s.remove_node("a") == []
    assert s.job_done(0) is None


def test_duplicate_node_and_job_rejected() -> None:
    s = sched()
    s.add_node("a", 1)
    with pytest.raises(ValueError):
        s.add_node("a", 2)
    with pytest.raises(ValueError):
        s.add_node("b", -1)
    s.submit(Job(1))
    with pytest.raises(ValueError):
        s.submit(Job(1))
    with pytest.raises(ValueError):
        Scheduler(pipeline=0)


def test_default_key_is_the_job_itself() -> None:
    s: Scheduler[Job] = Scheduler()
    s.add_node("a", 1)
    j = Job(7)
    s.submit(j)
    assert s.assign() == [("a", [j])]
    assert s.job_done(j) == "a"


def test_cancel_queued_job() -> None:
    s = sched()
    jobs = make(4)
    for j in jobs:
        s.submit(j)
    assert s.cancel(1) is jobs[1]
    assert s.cancel(1) is None
    assert s.queued == 3
    assert list(s.queued_jobs()) == [jobs[0], jobs[2], jobs[3]]
    s.add_node("a", 5)
    assert flat(s.assign()) == [jobs[0], jobs[2], jobs[3]]
    assert s.cancel(0) is None  # in flight: not the queue's business


def test_cancelled_then_resubmitted_id_runs_once() -> None:
    s = sched()
    j = Job(1)
    s.submit(j)
    s.cancel(1)
    s.submit(j)
    s.add_node("a", 4)
    assert flat(s.assign()) == [j]


# -- pinned jobs ------------------------------------------------------------------------
def test_pinned_jobs_only_go_to_their_node() -> None:
    s = sched()
    s.add_node("a", 1)
    s.add_node("b", 1)
    pinned = make(3, 10)
    for j in pinned:
        s.submit(j, node_id="b")
    batches = dict(s.assign())
    assert batches == {"b": pinned[:2]}
    s.job_done(10)
    assert dict(s.assign()) == {"b": [pinned[2]]}


def test_pinned_jobs_wait_for_absent_node_and_survive_its_removal() -> None:
    s = sched()
    s.submit(Job(1), node_id="later")
    s.add_node("other", 4)
    assert s.assign() == []
    assert s.queued == 1
    s.add_node("later", 1)
    assert s.assign() == [("later", [s.in_flight("later")[0]])]
    s.submit(Job(2), node_id="later")
    s.submit(Job(3), node_id="later")
    s.remove_node("later")
    assert s.queued == 2
    dropped = s.drop_pinned("later")
    assert [j.uid for j in dropped] == [2, 3]
    assert s.queued == 0 and s.drop_pinned("later") == []


def test_pinned_before_general_in_one_round() -> None:
    s = sched()
    general = make(3)
    for j in general:
        s.submit(j)
    pinned = Job(99)
    s.submit(pinned, node_id="a")
    s.add_node("a", 1)
    assert s.assign() == [("a", [pinned, general[0]])]


def test_cancel_pinned_job() -> None:
    s = sched()
    jobs = make(3)
    for j in jobs:
        s.submit(j, node_id="a")
    assert s.cancel(1) is jobs[1]
    assert s.cancel(1) is None
    s.add_node("a", 4)
    assert flat(s.assign()) == [jobs[0], jobs[2]]


# -- properties ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    cpus=st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=6),
    njobs=st.integers(min_value=0, max_value=120),
)
def test_one_assign_fills_nodes_least_loaded_first(cpus: list[int], njobs: int) -> None:
    s = sched()
    for i, c in enumerate(cpus):
        s.add_node(i, c)
    jobs = make(njobs)
    for j in jobs:
        s.submit(j)
    batches = s.assign()
    sent = flat(batches)
    capacity = sum(2 * c for c in cpus)
    assert len(sent) == min(njobs, capacity)
    # Every node within its limit; leftovers only when every node is full.
    for i, c in enumerate(cpus):
        assert len(s.in_flight(i)) <= 2 * c
    if s.queued:
        assert all(len(s.in_flight(i)) == 2 * c for i, c in enumerate(cpus))
    # Greedy least-loaded: a node's last job went to it while it was (one of) the least
    # loaded, so its load minus one job never exceeds any other node's final load.
    for i, ci in enumerate(cpus):
        n_i = len(s.in_flight(i))
        if n_i == 0:
            continue
        for k, ck in enumerate(cpus):
            if k != i and ck > 0:
                assert (n_i - 1) / ci <= len(s.in_flight(k)) / ck + 1e-12
    # FIFO: the jobs that left are exactly the first ones submitted.
    assert sorted(j.uid for j in sent) == list(range(len(sent)))


class SchedulerMachine(RuleBasedStateMachine):
    """Random interleavings of every operation; invariants checked after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.s = sched()
        self.cpus: dict[str, int] = {}
        self.next_uid = 0
        self.submitted: list[int] = []  # general-queue uids in submission order
        self.dispatched: list[int] = []  # general-queue uids in dispatch order
        self.pinned: dict[int, str] = {}
        self.done: set[int] = set()
        self.lost: set[int] = set()
        self.cancelled: set[int] = set()
        self.alive: set[int] = set()  # queued or in flight

    @rule(name=st.sampled_from("abcd"), cpus=st.integers(0, 4))
    def add_node(self, name: str, cpus: int) -> None:
        if name in self.cpus:
            self.s.set_cpus(name, cpus)
        else:
            self.s.add_node(name, cpus)
        self.cpus[name] = cpus

    @rule(n=st.integers(1, 10))
    def submit(self, n: int) -> None:
        for _ in range(n):
            uid = self.next_uid
            self.next_uid += 1
            self.s.submit(Job(uid))
            self.submitted.append(uid)
            self.alive.add(uid)

    @rule(name=st.sampled_from("abcd"))
    def submit_pinned(self, name: str) -> None:
        uid = self.next_uid
        self.next_uid += 1
        self.s.submit(Job(uid), node_id=name)
        self.pinned[uid] = name
        self.alive.add(uid)

    @rule()
    def assign(self) -> None:
        before = {n: len(self.s.in_flight(n)) for n in self.cpus}
        for node_id, jobs in self.s.assign():
            assert jobs
            for j in jobs:
                assert self.s.where(j.uid) == node_id
                if j.uid in self.pinned:
                    assert self.pinned[j.uid] == node_id
                else:
                    self.dispatched.append(j.uid)
        for n, c in self.cpus.items():
            assert len(self.s.in_flight(n)) <= max(2 * c, before[n])

    @precondition(lambda self: self.s.running > 0)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        running = [j.uid for n in self.cpus for j in self.s.in_flight(n)]
        uid = data.draw(st.sampled_from(running))
        assert self.s.job_done(uid) is not None
        self.done.add(uid)
        self.alive.discard(uid)

    @precondition(lambda self: bool(self.cpus))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.cpus)))
        expected = [j.uid for j in self.s.in_flight(name)]
        lost = [j.uid for j in self.s.remove_node(name)]
        assert lost == expected
        del self.cpus[name]
        self.lost.update(lost)
        self.alive.difference_update(lost)

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.alive)))
        was_queued = self.s.where(uid) is None
        got = self.s.cancel(uid)
        assert (got is not None) == was_queued
        if got is not None:
            assert got.uid == uid
            self.cancelled.add(uid)
            self.alive.discard(uid)

    @invariant()
    def limits_and_counts(self) -> None:
        in_flight = 0
        for n, c in self.cpus.items():
            k = len(self.s.in_flight(n))
            in_flight += k
        assert in_flight == self.s.running
        assert self.s.running + self.s.queued == len(self.alive)

    @invariant()
    def fifo(self) -> None:
        # The general jobs dispatched so far are a prefix of those submitted (less the
        # cancelled ones): no job left while an earlier one still waited.
        dispatched = set(self.dispatched)
        waiting = False
        for uid in self.submitted:
            if uid in self.cancelled:
                continue
            if uid not in dispatched:
                waiting = True
            else:
                assert not waiting, f"job {uid} dispatched before an earlier job"

    @invariant()
    def no_job_twice(self) -> None:
        assert len(self.dispatched) == len(set(self.dispatched))


SchedulerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
test_scheduler_state_machine = SchedulerMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 30)), min_size=1, max_size=5))
def test_never_more_than_twice_cpus_under_churn(spec: list[tuple[int, int]]) -> None:
    """Submit, assign and finish in rounds: the limit holds after every assign and every
    submitted job is eventually dispatched exactly once."""
    s = sched()
    for i, (cpus, _) in enumerate(spec):
        s.add_node(i, cpus)
    uid = 0
    seen: set[int] = set()
    for _, burst in spec:
        for _ in range(burst):
            s.submit(Job(uid))
            uid += 1
        for _, jobs in s.assign():
            for j in jobs:
                assert j.uid not in seen
                seen.add(j.uid)
        for i, (cpus, _) in enumerate(spec):
            assert len(s.in_flight(i)) <= 2 * cpus
            for j in s.in_flight(i)[:cpus]:
                s.job_done(j.uid)
    while s.queued:
        for _, jobs in s.assign():
            seen.update(j.uid for j in jobs)
        for i in range(len(spec)):
            for j in s.in_flight(i):
                s.job_done(j.uid)
    assert seen == set(range(uid))


# -- per-node depth ---------------------------------------------------------------------------
def test_depth_per_node() -> None:
    s = sched()
    s.add_node("deep", 1, depth=5)
    s.add_node("default", 1)
    assert s.node("deep").depth == 5 and s.node("default").depth == 2
    for j in make(10):
        s.submit(j)
    s.assign()
    assert len(s.in_flight("deep")) == 5 and len(s.in_flight("default")) == 2
    s.set_depth("deep", 1)  # jobs already there stay; no more until below the new limit
    for j in s.in_flight("deep")[:3]:
        s.job_done(j.uid)
    assert s.assign() == []
    s.job_done(s.in_flight("deep")[0].uid)
    s.job_done(s.in_flight("deep")[0].uid)
    assert [n for n, _ in s.assign()] == ["deep"]
    with pytest.raises(ValueError):
        s.set_depth("deep", 0)
    with pytest.raises(ValueError):
        s.add_node("x", 1, depth=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 8)), min_size=1, max_size=5),
       st.integers(0, 100))
def test_depth_limit_holds(nodes: list[tuple[int, int]], njobs: int) -> None:
    s = sched()
    for i, (cpus, depth) in enumerate(nodes):
        s.add_node(i, cpus, depth=depth)
    for j in make(njobs):
        s.submit(j)
    s.assign()
    for i, (cpus, depth) in enumerate(nodes):
        assert len(s.in_flight(i)) <= depth * cpus
    assert s.running == min(njobs, sum(c * d for c, d in nodes))


# -- clusters and policies (dispyscheduler) ---------------------------------------------
def order_of(s: Scheduler[Job], done_each_round: bool = True) -> list[int]:
    """Run everything on the pool one job at a time; the order jobs were given a node."""
    out = []
    while s.queued:
        batches = s.assign()
        assert batches, "jobs left but none could be placed"
        for _node, jobs in batches:
            for j in jobs:
                out.append(j.uid)
                if done_each_round:
                    s.job_done(j.uid)
    return out


def three_clusters(policy: str) -> Scheduler[Job]:
    """One node with one CPU and depth 1 (one job at a time); clusters a (created first,
    jobs 0-3 submitted first), b (jobs 10-11) and c (jobs 20-21) submitted in turn
    after a's."""
    s = Scheduler(key=lambda j: j.uid, pipeline=1, policy=policy)
    s.add_node("n", 1)
    for cid in "abc":
        s.add_cluster(cid)
    for uid in (0, 1, 2, 3):
        s.submit(Job(uid), cluster_id="a")
    for uid in (10, 20, 11, 21):
        s.submit(Job(uid), cluster_id="b" if uid < 20 else "c")
    return s


def test_default_policy_is_first_submitted_first_scheduled_across_clusters() -> None:
    assert order_of(three_clusters("default")) == [0, 1, 2, 3, 10, 20, 11, 21]


def test_fair_policy_goes_round_robin_over_waiting_clusters() -> None:
    assert order_of(three_clusters("fair")) == [0, 10, 20, 1, 11, 21, 2, 3]


def test_early_policy_serves_the_first_created_cluster_first() -> None:
    s = three_clusters("early")
    s.submit(Job(4), cluster_id="a")  # later than b's and c's jobs: still first
    assert order_of(s) == [0, 1, 2, 3, 4, 10, 11, 20, 21]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy must be one of default, fair, early"):
        Scheduler(policy="random")


def test_every_policy_picks_the_least_loaded_node_first() -> None:
    for policy in ("default", "fair", "early"):
        s = Scheduler(key=lambda j: j.uid, pipeline=1, policy=policy)
        s.add_node("big", 4)
        s.add_node("small", 1)
        s.add_cluster("a")
        s.add_cluster("b")
        for uid in range(5):
            s.submit(Job(uid), cluster_id="ab"[uid % 2])
        placed = {node: [j.uid for j in jobs] for node, jobs in s.assign()}
        assert sorted(len(v) for v in placed.values()) == [1, 4], (policy, placed)


def test_a_cluster_uses_only_the_nodes_it_is_allowed() -> None:
    s = sched()
    s.add_node("n1", 1)
    s.add_node("n2", 1)
    s.add_cluster("x", nodes=[])  # set up nowhere yet
    s.submit(Job(1), cluster_id="x")
    s.submit(Job(2), cluster_id="x")
    s.submit(Job(3), node_id="n1", cluster_id="x")  # pinned: waits too
    assert s.assign() == []
    s.allow("x", "n2")
    assert [(n, [j.uid for j in js]) for n, js in s.assign()] == [("n2", [1, 2])]
    s.allow("x", "n1")
    assert [(n, [j.uid for j in js]) for n, js in s.assign()] == [("n1", [3])]
    s.forbid("x", "n2")
    s.submit(Job(4), cluster_id="x")
    assert [(n, [j.uid for j in js]) for n, js in s.assign()] == [("n1", [4])]
    s.forbid(None, "n1")  # the default cluster, allowed everywhere until now
    s.submit(Job(5))
    assert [(n, [j.uid for j in js]) for n, js in s.assign()] == []  # n1 is full anyway
    s.job_done(1)
    s.job_done(3)
    assert [(n, [j.uid for j in js]) for n, js in s.assign()] == [("n2", [5])]


def test_a_node_no_waiting_cluster_may_use_does_not_stop_the_others() -> None:
    s = sched()
    s.add_node("n1", 1)
    s.add_node("n2", 1)
    s.add_cluster("x", nodes=["n2"])
    s.add_cluster("y", nodes=["n1"])
    for uid in range(4):
        s.submit(Job(uid), cluster_id="x")
    s.submit(Job(10), cluster_id="y")
    placed = {n: [j.uid for j in js] for n, js in s.assign()}
    assert placed == {"n2": [0, 1], "n1": [10]}


def test_remove_cluster_returns_its_queued_jobs_and_leaves_others() -> None:
    s = sched()
    s.add_node("n", 1)
    s.add_cluster("x")
    s.submit(Job(1), cluster_id="x")
    s.submit(Job(2), cluster_id="x")
    s.submit(Job(3))
    s.submit(Job(4), node_id="n", cluster_id="x")
    assert s.cancel(2) is not None
    running = flat(s.assign())
    assert [j.uid for j in running] == [4, 1]  # pinned first; the node is full
    s.submit(Job(5), cluster_id="x")
    assert sorted(j.uid for j in s.remove_cluster("x")) == [5]
    assert s.clusters == [None] and s.queued == 1 and s.running == 2
    assert [j.uid for j in s.queued_jobs()] == [3]
    with pytest.raises(KeyError):
        s.submit(Job(6), cluster_id="x")
    with pytest.raises(ValueError):
        s.remove_cluster(None)
    s.job_done(4)
    assert [j.uid for j in flat(s.assign())] == [3]


def test_queued_jobs_of_one_cluster() -> None:
    s = sched()
    s.add_cluster("x")
    s.submit(Job(1), cluster_id="x")
    s.submit(Job(2))
    s.submit(Job(3), node_id="n", cluster_id="x")
    assert [j.uid for j in s.queued_jobs("x")] == [1, 3]
    assert [j.uid for j in s.queued_jobs(None)] == [2]
    assert [j.uid for j in s.queued_jobs()] == [2, 1, 3]


def test_a_cluster_s_cpu_cap_on_a_node_leaves_the_rest_to_others() -> None:
    s = Scheduler(key=lambda j: j.uid, pipeline=1)
    s.add_node("n", 4)
    s.add_cluster("x")
    s.add_cluster("y")
    s.allow("x", "n", cpus=1)  # x may use one of n's four CPUs
    for uid in range(4):
        s.submit(Job(uid), cluster_id="x")
    for uid in range(10, 14):
        s.submit(Job(uid), cluster_id="y")
    assert sorted(j.uid for j in flat(s.assign())) == [0, 10, 11, 12]
    s.job_done(10)
    assert [j.uid for j in flat(s.assign())] == [13]  # x is at its cap
    s.job_done(0)
    assert [j.uid for j in flat(s.assign())] == [1]
    s.allow("x", "n", cpus=0)  # none for now (deallocate_node)
    s.job_done(1)
    assert flat(s.assign()) == []
    s.allow("x", "n")  # all CPUs again
    assert sorted(j.uid for j in flat(s.assign())) == [2]  # the one free CPU
    s.job_done(11)
    s.job_done(12)
    assert [j.uid for j in flat(s.assign())] == [3]
    with pytest.raises(ValueError):
        s.allow("x", "n", cpus=-1)


def test_a_cap_counts_pinned_jobs_and_resets_when_the_node_goes() -> None:
    s = Scheduler(key=lambda j: j.uid, pipeline=1)
    s.add_node("n", 2)
    s.add_cluster("x")
    s.allow("x", "n", cpus=1)
    s.submit(Job(1), node_id="n", cluster_id="x")
    s.submit(Job(2), node_id="n", cluster_id="x")
    assert [j.uid for j in flat(s.assign())] == [1]  # the second waits for the cap
    assert [j.uid for j in s.remove_node("n")] == [1]
    s.add_node("n", 2)
    assert [j.uid for j in flat(s.assign())] == [2]  # the count went with the node
    assert s.job_done(2) == "n" and s.running == 0


def test_release_takes_one_cluster_off_a_node_and_leaves_the_others() -> None:
    s = Scheduler(key=lambda j: j.uid, pipeline=1)
    s.add_node("n", 4)
    s.add_node("m", 1)
    s.add_cluster("x")
    s.add_cluster("y")
    for uid in range(3):
        s.submit(Job(uid), cluster_id="x")
    for uid in range(10, 13):
        s.submit(Job(uid), cluster_id="y")
    placed = {n: sorted(j.uid for j in js) for n, js in s.assign()}
    assert sum(len(v) for v in placed.values()) == 5
    on_n_x = [uid for uid in placed["n"] if uid < 10]
    back = s.release("x", "n")  # x's session to n is lost; y's is fine
    assert sorted(j.uid for j in back) == on_n_x
    assert all(s.where(uid) is None for uid in on_n_x)
    assert all(s.where(uid) == "n" for uid in placed["n"] if uid >= 10)
    for j in back:
        s.submit(j, cluster_id="x")  # run again: not on n any more
    s.job_done(placed["m"][0])
    assert [n for n, _ in s.assign()] == ["m"]
    assert s.release("x", "gone") == []


def test_release_with_the_only_cluster_returns_every_job_there() -> None:
    s = sched()
    s.add_node("n", 1)
    s.submit(Job(1))
    s.submit(Job(2))
    assert [j.uid for j in flat(s.assign())] == [1, 2]
    assert [j.uid for j in s.release(None, "n")] == [1, 2]
    assert s.running == 0 and s.has_node("n")
    s.submit(Job(3))
    assert s.assign() == []  # the default cluster is no longer allowed there


class ClustersMachine(RuleBasedStateMachine):
    """Several clusters on shared nodes, with caps, releases and node loss: every job is
    queued, in flight once or ended; each cluster's counts match its jobs in flight; a
    cluster never gets more than its cap on a node it was capped on before the round."""

    def __init__(self) -> None:
        super().__init__()
        self.s: Scheduler[Job] = Scheduler(key=lambda j: j.uid, pipeline=2)
        self.cluster_of: dict[int, str] = {}
        self.alive: set[int] = set()
        self.next_uid = 0
        self.nodes: set[str] = set()

    @initialize(policy=st.sampled_from(POLICIES))
    def choose_policy(self, policy: str) -> None:
        # drawn, not derived from anything else: hypothesis replays examples exactly
        self.s = Scheduler(key=lambda j: j.uid, pipeline=2, policy=policy)
        for c in "xy":
            self.s.add_cluster(c)

    @rule(name=st.sampled_from("ab"), cpus=st.integers(1, 3))
    def add_node(self, name: str, cpus: int) -> None:
        if name not in self.nodes:
            self.s.add_node(name, cpus)
            self.nodes.add(name)

    @rule(c=st.sampled_from("xy"), n=st.integers(1, 6))
    def submit(self, c: str, n: int) -> None:
        for _ in range(n):
            uid = self.next_uid
            self.next_uid += 1
            self.s.submit(Job(uid), cluster_id=c)
            self.cluster_of[uid] = c
            self.alive.add(uid)

    @rule(c=st.sampled_from("xy"), name=st.sampled_from("ab"), cpus=st.none() | st.integers(0, 2))
    def allow(self, c: str, name: str, cpus: int | None) -> None:
        self.s.allow(c, name, cpus)

    @rule()
    def assign(self) -> None:
        caps = {c: dict(self.s._clusters[c].caps) for c in "xy"}
        before = {(c, n): self.count(c, n) for c in "xy" for n in self.nodes}
        for node_id, jobs in self.s.assign():
            for j in jobs:
                assert self.s.where(j.uid) == node_id
        for c in "xy":
            for n, cap in caps[c].items():
                if n in self.nodes:
                    assert self.count(c, n) <= max(2 * cap, before[(c, n)])

    def count(self, c: str, n: str) -> int:
        return sum(1 for j in self.s.in_flight(n) if self.cluster_of[j.uid] == c)

    @precondition(lambda self: self.s.running > 0)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(j.uid for n in self.nodes for j in self.s.in_flight(n))))
        assert self.s.job_done(uid) is not None
        self.alive.discard(uid)

    @precondition(lambda self: bool(self.nodes))
    @rule(data=st.data(), c=st.sampled_from("xy"))
    def release(self, data: st.DataObject, c: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        expected = sorted(j.uid for j in self.s.in_flight(name) if self.cluster_of[j.uid] == c)
        got = sorted(j.uid for j in self.s.release(c, name))
        assert got == expected
        self.alive.difference_update(got)
        self.s.allow(c, name)  # its session is back

    @precondition(lambda self: bool(self.nodes))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        self.alive.difference_update(j.uid for j in self.s.remove_node(name))
        self.nodes.discard(name)

    @invariant()
    def counts(self) -> None:
        assert self.s.running + self.s.queued == len(self.alive)
        for c in "xy":
            cluster = self.s._clusters[c]
            for n in self.nodes:
                assert cluster.running.get(n, 0) == self.count(c, n), (c, n)


ClustersMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_clusters_state_machine = ClustersMachine.TestCase
