"""Pure parts of the node, without processes or sockets: options, path rules, the
scheduler, message texts, the status table, the public API."""

from __future__ import annotations

import os
import platform

import pytest

import dispy_node
from dispy_core.errors import ConfigError
from dispy_core.messages import FileData, JobSpec
from dispy_node.console import format_status
from dispy_node.execute import format_user_exception
from dispy_node.options import NodeConfig, resolve_cpus
from dispy_node.paths import (
    FileRefused,
    check_file_name,
    check_files,
    computation_dir,
    prepare_prefix,
    write_files,
)
from dispy_node.scheduler import MAX_DEPTH, Computation, Scheduler
from dispy_node.lifecycle import describe_exit
from dispy_node.sysinfo import python_version_error


def test_public_api_is_pinned():
    assert sorted(dispy_node.__all__) == ["Node", "NodeConfig", "__version__"]


# -- options ----------------------------------------------------------------------------
@pytest.mark.parametrize("requested,available,cpus", [(None, 4, 4), (2, 4, 2), (4, 4, 4), (-1, 4, 3),
                                                      (-3, 4, 1), (1, 1, 1)])
def test_resolve_cpus(requested, available, cpus):
    assert resolve_cpus(requested, available) == cpus


@pytest.mark.parametrize("requested,available,allowed", [(0, 4, "1..4 or -3..-1"), (5, 4, "1..4 or -3..-1"),
                                                         (-4, 4, "1..4 or -3..-1"), (-1, 1, "in 1..1 ")])
def test_resolve_cpus_refuses(requested, available, allowed):
    with pytest.raises(ConfigError, match="invalid CPU count") as info:
        resolve_cpus(requested, available)
    assert allowed in str(info.value)


def test_node_config_checks():
    with pytest.raises(ConfigError, match="port"):
        NodeConfig(port=-1)
    with pytest.raises(ConfigError, match="msg_timeout"):
        NodeConfig(msg_timeout=0)


# -- paths ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "..\\x", "x\0y", 5, None, "\ud800x"])
def test_bad_file_names(name):
    with pytest.raises(FileRefused, match="refused file name"):
        check_file_name(name)


def test_file_checks():
    check_files([FileData("ok.txt", b"12345")], 5)
    with pytest.raises(FileRefused, match="refused file 'big': it is 6 bytes, more than this node's limit of 5 bytes"):
        check_files([FileData("big", b"123456")], 5)
    check_files([FileData("big", b"123456")], 0)  # 0: no limit
    with pytest.raises(FileRefused):
        check_files([FileData("x", "not bytes")], 0)
    with pytest.raises(FileRefused):
        check_files("nope", 0)


def test_computation_dirs_stay_under_the_prefix(tmp_path):
    prefix = prepare_prefix(str(tmp_path / "p"))
    p = prefix.path
    assert computation_dir(prefix, "/a/b", "c") == os.path.join(p, "a", "b")
    assert computation_dir(prefix, "a/./b/", "c") == os.path.join(p, "a", "b")
    fresh = computation_dir(prefix, None, "my comp!")
    assert os.path.dirname(fresh) == p and os.path.basename(fresh).startswith("my_comp-")
    assert computation_dir(prefix, "/", "c") != p
    for bad in ("../x", "a/../../x", "a/.."):
        with pytest.raises(FileRefused, match="dest_path"):
            computation_dir(prefix, bad, "c")
    os.symlink(str(tmp_path), os.path.join(p, "link"))
    with pytest.raises(FileRefused, match="leads out"):
        computation_dir(prefix, "link/x", "c")


def test_write_files_replaces_and_does_not_follow_links(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    write_files(str(d), [FileData("f", b"one", 0o444, 1_000_000.0)])
    assert (d / "f").read_bytes() == b"one" and os.stat(d / "f").st_mtime == 1_000_000.0
    write_files(str(d), [FileData("f", b"two")])  # the read-only one is replaced
    assert (d / "f").read_bytes() == b"two"
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, d / "link")
    write_files(str(d), [FileData("link", b"new")])
    assert target.read_text() == "keep" and not os.path.islink(d / "link")
    write_files(str(d), [FileData("run", b"#!/bin/sh\n")], executable="run")
    assert os.access(d / "run", os.X_OK)


# -- scheduler --------------------------------------------------------------------------
def _jobs(*ids):
    return [JobSpec(i, [b""]) for i in ids]


def _comp(sched, cid, workers=2, **kw):
    comp = Computation(cid, cpus=workers, **kw)
    sched.add(comp)
    for _ in range(workers):
        w = comp.new_worker()
        w.channel = object()
    return comp


def _ids(assignments):
    return {(w.comp.compute_id, w.worker_id): [j.job_id for j in jobs] for w, jobs in assignments}


def test_cpus_bound_running_jobs_across_computations():
    sched = Scheduler(cpus=2)
    a, b = _comp(sched, "a"), _comp(sched, "b")
    sched.submit(a, _jobs(1, 2, 3, 4, 5))
    sched.submit(b, _jobs(11, 12))
    # one CPU each; jobs of unknown duration go one at a time
    assert _ids(sched.assign()) == {("a", 1): [1], ("b", 1): [11]}
    assert sched.busy == 2
    assert sched.assign() == []  # no free CPU
    sched.job_done(b.workers[1], 11)
    assert _ids(sched.assign()) == {("b", 1): [12]}  # b holds fewer CPUs than a
    sched.job_done(b.workers[1], 12)
    assert _ids(sched.assign()) == {("a", 2): [2]}


def test_free_cpus_are_spread_over_idle_workers():
    sched = Scheduler(cpus=2)
    comp = _comp(sched, "a")
    comp.mean_duration = 1e-4  # tiny jobs: deep pipelines
    sched.submit(comp, _jobs(1, 2))
    assert _ids(sched.assign()) == {("a", 1): [1], ("a", 2): [2]}


def test_busy_workers_are_not_topped_up_while_another_computation_starves():
    sched = Scheduler(cpus=1)
    a, b = _comp(sched, "a", 1), _comp(sched, "b", 1)
    for _ in range(100):
        a.observe(1e-5)
    assert a.depth == MAX_DEPTH
    sched.submit(a, _jobs(*range(1, 21)))
    assert _ids(sched.assign()) == {("a", 1): list(range(1, 17))}
    sched.submit(b, _jobs(101))
    for i in range(1, 9):
        sched.job_done(a.workers[1], i)
    assert sched.assign() == []  # a's worker is half empty but gets no more
    for i in range(9, 17):
        sched.job_done(a.workers[1], i)
    assert _ids(sched.assign()) == {("b", 1): [101]}


def test_busy_workers_are_refilled_in_batches():
    sched = Scheduler(cpus=1)
    comp = _comp(sched, "a", 1)
    comp.mean_duration = 1e-5
    sched.submit(comp, _jobs(*range(1, 41)))
    (w, jobs), = sched.assign()
    assert len(jobs) == MAX_DEPTH
    for i in range(1, 8):
        sched.job_done(w, i)
        assert sched.assign() == []
    sched.job_done(w, 8)
    assert _ids(sched.assign()) == {("a", 1): list(range(17, 25))}


def test_depth_follows_job_durations():
    comp = Computation("c")
    assert comp.depth == 1  # unknown: as if long
    for _ in range(200):
        comp.observe(1e-5)
    assert comp.depth == MAX_DEPTH
    for _ in range(200):
        comp.observe(1.0)
    assert comp.depth == 1
    fast = Computation("p", process_per_job=True, mean_duration=1e-5)
    assert fast.depth == 1


def test_lost_worker_requeues_in_order_and_frees_its_cpu():
    sched = Scheduler(cpus=1)
    comp = _comp(sched, "a", 1)
    comp.mean_duration = 2.5e-3  # two jobs per worker
    sched.submit(comp, _jobs(1, 2, 3))
    (w, _), = sched.assign()
    head, rest = sched.worker_lost(w)
    assert head.job_id == 1 and [j.job_id for j in rest] == [2]
    assert [j.job_id for j in comp.pending] == [2, 3] and sched.busy == 0
    assert sched.job_done(w, 2) is None


def test_cancel_and_find():
    sched = Scheduler(cpus=1)
    comp = _comp(sched, "a", 1)
    comp.mean_duration = 2.5e-3
    sched.submit(comp, _jobs(1, 2, 3))
    sched.assign()
    assert sched.cancel_pending(comp, 3).job_id == 3 and sched.cancel_pending(comp, 3) is None
    w, pos = sched.find(comp, 2)
    assert pos == 1 and sched.find(comp, 9) is None
    assert sched.job_done(w, 2).job_id == 2 and [j.job_id for j in w.queue] == [1]


# -- texts ------------------------------------------------------------------------------
def test_describe_exit():
    assert describe_exit(7, 3) == "job 7: worker process exited with status 3"
    assert describe_exit(7, -11) == "job 7: worker process killed by signal SIGSEGV (11)"
    assert describe_exit(7, None, "cancelled; ") == "job 7: cancelled; worker process exited unexpectedly"


def test_python_version_error_names_both():
    assert python_version_error(platform.python_version()) is None
    text = python_version_error("3.1.0")
    assert "client runs Python 3.1.0 but this node runs Python " + platform.python_version() in text


def test_user_tracebacks_hide_node_frames():
    def user():
        raise ValueError("boom")

    try:
        user()
    except ValueError as exc:
        text = format_user_exception(exc)
    assert "in user" in text and "ValueError: boom" in text and "dispy_node" not in text


def test_status_table():
    st = {"name": "n", "cpus": 2, "busy": 1, "jobs_done": 5, "listening": [("127.0.0.1", 9701)],
          "computations": [{"compute_id": "abc", "name": "f", "client": ("127.0.0.1", 5000), "state": "ready",
                            "cpus": 2, "pending": 3, "running": 1, "done": 5}]}
    text = format_status(st)
    assert "dispynode n at 127.0.0.1:9701" in text and "CPUs: 2 (1 busy), jobs done: 5" in text
    assert "127.0.0.1:5000" in text and "ready" in text
    st["computations"] = []
    assert "no computations" in format_status(st)


def test_queued_payload_is_counted_and_bounds_worker_queues():
    sched = Scheduler(cpus=1)
    comp = _comp(sched, "a", 1)
    comp.mean_duration = 1e-4  # tiny jobs would otherwise queue deep at the worker
    big = [JobSpec(i, [b"x" * (3 << 20)]) for i in range(1, 5)]
    sched.submit(comp, big)
    assert comp.pending_bytes == 4 * (3 << 20)
    # a worker holding a 3 MiB job gets no second one: arguments wait in the queue
    assert _ids(sched.assign()) == {("a", 1): [1]}
    assert comp.pending_bytes == 3 * (3 << 20)
    sched.job_done(comp.workers[1], 1)
    assert _ids(sched.assign()) == {("a", 1): [2]}
    assert sched.cancel_pending(comp, 4) is not None
    assert comp.pending_bytes == 3 << 20
    assert sched.remove(comp) == [big[2]] and comp.pending_bytes == 0


def test_discovery_answers_only_requesters_on_a_served_network():
    import ipaddress

    from dispy_node.discovery import pick_address

    nets = [("10.0.0.5", ipaddress.IPv4Network("10.0.0.0/24")),
            ("127.0.0.1", ipaddress.IPv4Network("127.0.0.0/8"))]
    assert pick_address(nets, "10.0.0.77") == "10.0.0.5"
    assert pick_address(nets, "127.0.0.9") == "127.0.0.1"
    assert pick_address(nets, "192.168.1.4") is None
    assert pick_address(nets, "not-an-ip") is None


def test_provisional_result_passes_its_timeout_and_reports_failure():
    from dispy_node import execute

    calls = []

    def sender(job_id, payload, timeout, relay):
        calls.append((job_id, timeout, relay))
        if timeout == 0.5:
            raise TimeoutError("main process not listening")

    execute.set_result_sender(sender)
    old = execute._current_job
    execute._current_job = 7
    try:
        assert execute.provisional_result("x", timeout=3) == 0
        assert execute.provisional_result("x", timeout=0.5, relay=True) == -1
        assert calls == [(7, 3, False), (7, 0.5, True)]
    finally:
        execute._current_job = old
        execute.set_result_sender(None)
    assert execute.provisional_result("x") == -1  # no job running
