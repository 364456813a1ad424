"""Files on the node, through JobCluster and real dispynode processes, as a user sees them:

* the job's working directory (``dispy_job_path``) shows the computation's ``depends``
  files and the job's own ``dispy_job_depends`` files by base name; a job's own files are
  seen by no other job (not even one running at the same time on the same node) and are
  gone after it;
* a ``dest_path`` reused with ``cleanup=False``: files the node already holds are not
  sent again (the node's ``tx`` bytes in ``cluster.status()`` say so), a changed file is;
* ``dispynode --force_cleanup`` removes the files a client asked to keep.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys

import pytest

import dispy
from dispy_core.testing import NodeProcess, wait_until


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


# -- the job's working directory -------------------------------------------------------
def job_in_its_directory(own, other, rendezvous):
    """Reads the computation's file and its own by base name; with ``rendezvous`` (a
    directory on this machine) waits there until the other job runs too, then looks for
    the other job's file."""
    import os
    import time

    seen = {"cwd": os.getcwd(), "job_path": dispy_job_path,  # noqa: F821
            "data": open("data.txt").read(), "listing": sorted(os.listdir("."))}
    if own:
        seen["own"] = open(own).read()
    if rendezvous:
        open(os.path.join(rendezvous, own), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(rendezvous, other)):
            if time.monotonic() > deadline:
                raise TimeoutError("the other job did not start")
            time.sleep(0.01)
    seen["sees_other"] = bool(other) and os.path.exists(other)
    return seen


def test_a_job_sees_the_computation_s_files_and_its_own_and_no_other_job_s(start_node, tmp_path):
    node = start_node("127.0.0.41", "-c", "2")
    data = tmp_path / "data.txt"
    data.write_text("for every job")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("only job a's")
    b.write_text("only job b's")
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    with dispy.JobCluster(job_in_its_directory, nodes=nodes_of(node), depends=[str(data)]) as cluster:
        # Two jobs with files of their own, running at the same time on the node's 2 CPUs
        ja = cluster.submit("a.txt", "b.txt", str(rendezvous), dispy_job_depends=[str(a)])
        jb = cluster.submit("b.txt", "a.txt", str(rendezvous), dispy_job_depends=[str(b)])
        # and a job without files of its own, after them
        assert cluster.wait(timeout=90)
        plain = cluster.submit("", "a.txt", "")
        assert cluster.wait(timeout=60)
        for job, own, text in ((ja, "a.txt", "only job a's"), (jb, "b.txt", "only job b's")):
            seen = job.result
            assert seen is not None, job.exception
            assert seen["data"] == "for every job" and seen["own"] == text
            assert seen["cwd"] == seen["job_path"]
            assert seen["listing"] == sorted(["data.txt", own])
            assert seen["sees_other"] is False
            assert not os.path.exists(seen["job_path"])  # gone with the job
        assert ja.result["job_path"] != jb.result["job_path"]
        seen = plain.result
        assert seen is not None, plain.exception
        assert seen["data"] == "for every job" and seen["listing"] == ["data.txt"]
        assert seen["cwd"] == seen["job_path"] and seen["sees_other"] is False
        # no job's directory or file is left on the node
        left = [os.path.join(d, f) for d, _, files in os.walk(node.dest_path_prefix) for f in files]
        assert not [p for p in left if os.path.basename(p) in ("a.txt", "b.txt")], left


def setup_writes():
    with open("made_by_setup.txt", "w") as fh:
        fh.write("from setup")
    os.mkdir("results")
    with open(os.path.join("results", "r.txt"), "w") as fh:
        fh.write("in a subdirectory")
    return 0


def reads_everything(name):
    import os

    return (open(name).read(), open("made_by_setup.txt").read(),
            open(os.path.join("results", "r.txt")).read(), open("sent_later.txt").read())


def own_module_value(_):
    import jobmod  # the job's own module, from its directory

    return jobmod.VALUE, open("data.txt").read(), dispy_job_path  # noqa: F821


def test_process_per_job_and_a_job_s_own_module(start_node, tmp_path):
    node = start_node("127.0.0.50", "-c", "1")
    data = tmp_path / "data.txt"
    data.write_text("shared")
    mods = []
    for i in range(2):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "jobmod.py").write_text(f"VALUE = {i}\n")
        mods.append(d / "jobmod.py")
    for per_job in (False, True):
        with dispy.JobCluster(own_module_value, nodes=nodes_of(node), depends=[str(data)],
                              process_per_job=per_job) as cluster:
            jobs = [cluster.submit(0, dispy_job_depends=[str(m)]) for m in mods]
            # each job imports its own jobmod, never the one of the job before it
            assert [j() for j in jobs][0][:2] == (0, "shared"), jobs[0].exception
            assert jobs[1].result[:2] == (1, "shared"), jobs[1].exception
            assert not any(os.path.exists(j.result[2]) for j in jobs)


def dies(note):
    import os

    with open(note, "w") as fh:
        fh.write(dispy_job_path)  # noqa: F821
    os._exit(3)


def test_what_a_job_whose_process_died_left_is_removed(start_node, tmp_path):
    node = start_node("127.0.0.51", "-c", "1")
    own = tmp_path / "own.txt"
    own.write_text("own")
    note = tmp_path / "job_path"
    with dispy.JobCluster(dies, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(str(note), dispy_job_depends=[str(own)])
        job()
        assert job.status == dispy.DispyJob.Terminated and "exited with status 3" in job.exception
        job_path = note.read_text()
        assert job_path and wait_until(lambda: not os.path.exists(job_path), 20)


def test_setup_s_files_subdirectories_send_file_and_same_names(start_node, tmp_path):
    node = start_node("127.0.0.42", "-c", "1")
    shared = tmp_path / "shared.txt"
    shared.write_text("the computation's")
    later = tmp_path / "sent_later.txt"
    later.write_text("sent after setup")
    own_dir = tmp_path / "own"
    own_dir.mkdir()
    same_name = own_dir / "shared.txt"
    same_name.write_text("the job's own")
    with dispy.JobCluster(reads_everything, nodes=nodes_of(node), depends=[str(shared), os],
                          setup=setup_writes) as cluster:
        assert cluster.submit("shared.txt")() is None  # sent_later.txt is not there yet
        (dnode,) = cluster.status().nodes
        assert cluster.send_file(str(later), dnode) == 0
        assert cluster.submit("shared.txt")() == ("the computation's", "from setup", "in a subdirectory",
                                                  "sent after setup")
        # a job file of the same name as a computation file hides it, for that job only
        job = cluster.submit("shared.txt", dispy_job_depends=[str(same_name)])
        assert job() == ("the job's own", "from setup", "in a subdirectory", "sent after setup"), job.exception
        assert cluster.submit("shared.txt")()[0] == "the computation's"


def waits_for_a_file(marker):
    import os
    import time

    open(marker, "w").close()  # it runs: the client may send the file now
    deadline = time.monotonic() + 60
    while not os.path.exists("late.txt"):
        if time.monotonic() > deadline:
            raise TimeoutError("late.txt did not show")
        time.sleep(0.01)
    return open("late.txt").read(), open("own.txt").read()


def test_a_file_sent_while_a_job_runs_shows_in_its_directory(start_node, tmp_path):
    node = start_node("127.0.0.49", "-c", "1")
    own = tmp_path / "own.txt"
    own.write_text("own")
    late = tmp_path / "late.txt"
    late.write_text("sent while the job ran")
    marker = tmp_path / "started"
    with dispy.JobCluster(waits_for_a_file, nodes=nodes_of(node)) as cluster:
        job = cluster.submit(str(marker), dispy_job_depends=[str(own)])
        assert wait_until(lambda: marker.exists() or job.status not in (dispy.DispyJob.Created,
                                                                         dispy.DispyJob.Running), 60)
        (dnode,) = cluster.status().nodes
        assert cluster.send_file(str(late), dnode) == 0
        assert job() == ("sent while the job ran", "own"), job.exception


def test_a_program_job_runs_in_its_directory_with_both_kinds_of_files(start_node, tmp_path):
    node = start_node("127.0.0.43", "-c", "1")
    script = tmp_path / "show.sh"
    script.write_text('#!/bin/sh\ncat data.txt "$1"\n[ "$(pwd)" = "$DISPY_JOB_PATH" ] && echo " cwd ok"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    data = tmp_path / "data.txt"
    data.write_text("shared,")
    own = tmp_path / "own.txt"
    own.write_text("own")
    with dispy.JobCluster(str(script), nodes=nodes_of(node), depends=[str(data)]) as cluster:
        job = cluster.submit("own.txt", dispy_job_depends=[str(own)])
        assert job() == 0, (job.stderr, job.exception)
        assert job.stdout == b"shared,own cwd ok\n"


# -- dest_path reused with cleanup=False -------------------------------------------------
def digest_of(name):
    import hashlib

    with open(name, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


SIZE = 2 << 20


def _run(node, depends, **kwargs):
    """One cluster: a job reads the file by name; returns (its digest, bytes sent to the node)."""
    with dispy.JobCluster(digest_of, nodes=nodes_of(node), depends=depends, **kwargs) as cluster:
        job = cluster.submit(os.path.basename(depends[0]))
        result = job()
        assert result is not None, job.exception
        (dnode,) = cluster.status().nodes
        return result, dnode.tx


def test_files_already_in_a_reused_dest_path_are_not_sent_again(start_node, tmp_path):
    node = start_node("127.0.0.44", "-c", "1")
    big = tmp_path / "big.bin"
    content = os.urandom(SIZE)
    big.write_bytes(content)
    first, tx = _run(node, [str(big)], dest_path="reused", cleanup=False)
    assert first == hashlib.sha256(content).hexdigest() and tx > SIZE
    kept = os.path.join(node.dest_path_prefix, "reused", "big.bin")
    assert os.path.getsize(kept) == SIZE

    again, tx = _run(node, [str(big)], dest_path="reused", cleanup=False)
    assert again == first and tx < SIZE // 4  # the file did not travel
    assert wait_until(lambda: "kept 1 file(s) already in" in node.log, 10), node.log

    # Same size and mtime, other bytes: the hash tells, and the new content is sent
    mtime = big.stat().st_mtime
    changed = os.urandom(SIZE)
    big.write_bytes(changed)
    os.utime(big, (mtime, mtime))
    new, tx = _run(node, [str(big)], dest_path="reused", cleanup=False)
    assert new == hashlib.sha256(changed).hexdigest() and tx > SIZE

    # Another dest_path holds nothing yet; the last cluster (cleanup=True) removes the files
    _, tx = _run(node, [str(big)], dest_path="elsewhere")
    assert tx > SIZE
    _, tx = _run(node, [str(big)], dest_path="reused")
    assert tx < SIZE // 4
    assert not os.path.exists(kept)


def test_a_program_kept_in_a_dest_path_stays_runnable(start_node, tmp_path):
    node = start_node("127.0.0.45", "-c", "1")
    script = tmp_path / "prog.py"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('ran', sys.argv[1])\n")
    script.chmod(0o755)
    for _ in range(2):
        with dispy.JobCluster(str(script), nodes=nodes_of(node), dest_path="progs", cleanup=False) as cluster:
            job = cluster.submit("x")
            assert job() == 0, (job.stderr, job.exception)
            assert job.stdout == b"ran x\n"
    assert wait_until(lambda: "kept 1 file(s) already in" in node.log, 10), node.log


def test_dispyscheduler_does_not_send_files_a_node_holds(start_node, tmp_path):
    pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
    from dispy_core.testing import SchedulerProcess

    node = start_node("127.0.0.48", "-c", "1")
    data = tmp_path / "data.bin"
    content = os.urandom(1 << 16)
    data.write_bytes(content)
    with SchedulerProcess("127.0.0.48", [node.addr]) as sched:
        for _ in range(2):
            cluster = dispy.SharedJobCluster(digest_of, scheduler_node=f"127.0.0.48:{sched.port}",
                                             host="127.0.0.48", depends=[str(data)], dest_path="via-sched",
                                             cleanup=False, loglevel=logging.WARNING)
            try:
                job = cluster.submit("data.bin")
                assert job() == hashlib.sha256(content).hexdigest(), job.exception
            finally:
                cluster.close()
    assert node.log.count("kept 1 file(s) already in") == 1, node.log


# -- dispynode --force_cleanup ----------------------------------------------------------
def test_force_cleanup_removes_what_the_client_asked_to_keep(start_node, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("kept?")
    for ip, args, kept in (("127.0.0.46", (), True), ("127.0.0.47", ("--force_cleanup",), False)):
        node = start_node(ip, "-c", "1", *args)
        result, _ = _run(node, [str(data)], dest_path="keep", cleanup=False)
        assert result == hashlib.sha256(b"kept?").hexdigest()
        assert os.path.exists(os.path.join(node.dest_path_prefix, "keep", "data.txt")) is kept, args


# -- dest_path stays in the prefix, out of the node's own entries --------------------------
def refused(node, dest_path, caplog, why):
    """A cluster with ``dest_path``: the node refuses it, saying ``why``; no job runs."""
    caplog.clear()
    cluster = dispy.JobCluster(digest_of, nodes=nodes_of(node), dest_path=dest_path, loglevel=logging.WARNING)
    try:
        job = cluster.submit("x")
        assert wait_until(lambda: "node refused the computation" in caplog.text, 30), (dest_path, caplog.text)
        assert f"refused dest_path {dest_path!r}: {why}" in caplog.text, caplog.text
        assert job.status == dispy.DispyJob.Created
    finally:
        cluster.close(timeout=0, terminate=True)  # the job can't run: don't wait for it


def test_a_dest_path_through_a_link_out_of_the_prefix_creates_nothing_outside(tmp_path, caplog):
    prefix, outside = tmp_path / "prefix", tmp_path / "outside"
    prefix.mkdir()
    outside.mkdir()
    (prefix / "link").symlink_to(outside)  # planted in the prefix
    (prefix / "inner").mkdir()
    (prefix / "to-inner").symlink_to(prefix / "inner")
    with NodeProcess("127.0.0.49", "-c", "1", dest_path_prefix=str(prefix)) as node:
        for dest_path in ("link/a/b", "link", "to-inner/../../outside/c"):
            refused(node, dest_path, caplog, "" if ".." in dest_path else "it leads out of")
        assert os.listdir(outside) == []  # no directory made there, even before the refusal
        # a link to a directory inside the prefix may be used
        data = tmp_path / "data.txt"
        data.write_text("through a link")
        result, _ = _run(node, [str(data)], dest_path="to-inner/run")
        assert result == hashlib.sha256(b"through a link").hexdigest()
    assert os.listdir(outside) == []


def test_the_node_s_own_entries_are_out_of_every_computation_s_reach(tmp_path, caplog):
    prefix = tmp_path / "prefix"
    with NodeProcess("127.0.0.50", "-c", "1", dest_path_prefix=str(prefix)) as node:
        # where the node keeps a result for a client that is gone (see undelivered.py)
        stored = prefix / ".undelivered" / ("0" * 32) / "7.result"
        stored.parent.mkdir(parents=True)
        content = os.urandom(64)
        stored.write_bytes(content)
        (prefix / "alias").symlink_to(prefix / ".undelivered")  # planted links to the node's own
        (prefix / "jobs-alias").symlink_to(prefix / ".jobs")
        for dest_path in ("alias", "jobs-alias/x", ".undelivered", "/.undelivered", ".jobs", ".jobs/x",
                          ".dispynode-prefix", ".anything-else"):
            name = dest_path.lstrip("/").split("/")[0]
            if "alias" in name:
                name = ".undelivered" if name == "alias" else ".jobs"
            refused(node, dest_path, caplog, f"{name!r} is the node's own")
        assert node.alive()
    assert stored.read_bytes() == content  # the stored result survived every close
    assert sorted(os.listdir(prefix)) == [".dispynode-prefix", ".jobs", ".undelivered", "alias", "jobs-alias"]
    assert os.listdir(prefix / ".jobs") == []
