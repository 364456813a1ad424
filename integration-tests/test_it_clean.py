"""``--clean`` removes only what a dispy daemon created under ``--dest_path_prefix``:
real ``dispynode`` and ``dispyscheduler`` processes on 127.0.0.1.

Each daemon records in its prefix the directories it makes there (``.dispynode-prefix``,
``.dispyscheduler-prefix``). ``--clean`` on a prefix that holds anything else is refused
before anything is removed or written: the daemon does not start, and says what is there.
On a prefix the daemon made, ``--clean`` removes what earlier runs left and nothing else.
A prefix that holds the user's files can still be used without ``--clean``: the daemon never
removes what it did not create, even a ``dest_path`` directory naming one of them.
"""

from __future__ import annotations

import os
import subprocess

import pytest

import dispy
from dispy_core.testing import NodeProcess, node_python, unused_port, wait_until


def user_files(prefix, extra=0):
    """A directory as a user keeps it: a file, a directory with a photo, ``extra`` more."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "report.xlsx").write_text("quarterly numbers")
    (prefix / "photos").mkdir()
    (prefix / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    for i in range(extra):
        (prefix / f"notes-{i}.txt").write_text(f"note {i}")
    return sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*"))


def listing(prefix):
    return sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*"))


def run_node_clean(prefix):
    """``dispynode --clean`` on ``prefix``, expected to refuse and exit: its output."""
    proc = subprocess.run([node_python(), "-m", "dispy_node.cli", "-i", "127.0.0.1", "-p", "0", "--daemon",
                           "--clean", "--dest_path_prefix", str(prefix)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "serving" not in proc.stdout
    return proc.stdout + proc.stderr


def compute(n):
    with open("made-by-a-job.txt", "w") as fh:
        fh.write("job output")
    return n + 1


# -- dispynode -------------------------------------------------------------------------------
def test_node_clean_refuses_a_prefix_holding_user_files(tmp_path):
    prefix = tmp_path / "data"
    before = user_files(prefix, extra=7)
    out = run_node_clean(prefix)
    assert f"--clean: refusing to clean {prefix}: it holds files dispynode did not create: " in out, out
    assert "notes-0.txt, notes-1.txt, notes-2.txt, notes-3.txt, notes-4.txt (and 4 more)" in out, out
    assert "point --dest_path_prefix at a directory of its own" in out.lower(), out
    assert listing(prefix) == before  # nothing removed, nothing written
    assert (prefix / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8 a cat"


def test_node_clean_removes_only_what_dispynode_made(tmp_path, caplog):
    prefix = tmp_path / "prefix"  # made by the node
    data = tmp_path / "data.txt"
    data.write_text("sent to the node")
    with NodeProcess("127.0.0.1", "-c", "1", dest_path_prefix=str(prefix)) as node:
        nodes = [dispy.NodeAllocate(node.ip, port=node.port)]
        for dest_path in ("kept/deep", None):
            with dispy.JobCluster(compute, nodes=nodes, depends=[str(data)], dest_path=dest_path,
                                  cleanup=False) as cluster:
                assert cluster.submit(1)() == 2
    assert (prefix / "kept" / "deep" / "made-by-a-job.txt").exists()
    assert (prefix / "kept" / "deep" / "data.txt").exists()
    left = [p for p in os.listdir(prefix) if not p.startswith(".") and p != "kept"]
    assert len(left) == 1, os.listdir(prefix)  # the computation without a dest_path

    # A file of the user's in it now: --clean refuses, and removes nothing
    (prefix / "mine.txt").write_text("mine")
    out = run_node_clean(prefix)
    assert "it holds files dispynode did not create: mine.txt;" in out, out
    assert (prefix / "kept" / "deep" / "made-by-a-job.txt").exists() and (prefix / left[0]).is_dir()

    (prefix / "mine.txt").unlink()
    with NodeProcess("127.0.0.1", "--clean", dest_path_prefix=str(prefix)) as node:
        assert node.alive()
        assert sorted(os.listdir(prefix)) == [".dispynode-prefix", ".jobs", ".undelivered"]
    assert wait_until(lambda: "--clean: removed 4 entries" in node.log, 5), node.log


def test_a_prefix_holding_user_files_is_used_but_they_are_never_removed(tmp_path):
    prefix = tmp_path / "data"
    user_files(prefix)
    data = tmp_path / "data.txt"
    data.write_text("sent to the node")
    with NodeProcess("127.0.0.1", "-c", "1", dest_path_prefix=str(prefix)) as node:
        nodes = [dispy.NodeAllocate(node.ip, port=node.port)]
        # cleanup=True (the default) asks the node to remove the computation's directory
        # at close: the user's directory is kept (the node did not make it) ...
        with dispy.JobCluster(compute, nodes=nodes, depends=[str(data)], dest_path="photos") as cluster:
            assert cluster.submit(1)() == 2
        # ... one the node made for it is removed
        with dispy.JobCluster(compute, nodes=nodes, depends=[str(data)], dest_path="photos/run") as cluster:
            assert cluster.submit(2)() == 3
            assert (prefix / "photos" / "run" / "data.txt").exists()
        assert wait_until(lambda: not (prefix / "photos" / "run").exists(), 10)
        assert (prefix / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8 a cat"
        assert (prefix / "photos" / "made-by-a-job.txt").exists()
        assert wait_until(lambda: "was not created by this node: it is kept" in node.log, 10), node.log
    assert (prefix / "report.xlsx").read_text() == "quarterly numbers"


# -- dispyscheduler --------------------------------------------------------------------------
pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
from dispy_core.testing import SchedulerProcess  # noqa: E402


def scheduler(prefix, *args):
    # a node that is not there (named: the scheduler never broadcasts)
    absent = f"127.0.0.1:{unused_port()}"
    return SchedulerProcess("127.0.0.1", [absent], *args, "--dest_path_prefix", str(prefix))


def test_scheduler_clean_refuses_a_prefix_holding_user_files(tmp_path):
    prefix = tmp_path / "data"
    before = user_files(prefix)
    (prefix / "results").mkdir()  # the user's, named as the scheduler's is
    (prefix / "results" / "q3.results").write_text("the user's")
    before = listing(prefix)
    with pytest.raises(RuntimeError) as info:
        scheduler(prefix, "--clean")
    out = str(info.value)
    assert (f"--clean: refusing to clean {prefix}: it holds files dispyscheduler did not create: "
            "photos/, report.xlsx, results/;") in out, out
    assert listing(prefix) == before
    assert (prefix / "results" / "q3.results").read_text() == "the user's"


def test_scheduler_clean_removes_only_what_it_made(tmp_path):
    prefix = tmp_path / "sched"  # made by the scheduler
    with scheduler(prefix) as sched:
        assert sched.alive()
    assert (prefix / "results").is_dir()
    (prefix / "results" / "c1.results").write_bytes(b"kept by an earlier run")  # as a dead client's
    (prefix / "mine.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="it holds files dispyscheduler did not create: mine.txt;"):
        scheduler(prefix, "--clean")
    assert (prefix / "results" / "c1.results").exists()

    (prefix / "mine.txt").unlink()
    with scheduler(prefix, "--clean") as sched:
        assert sched.alive()
        assert sorted(os.listdir(prefix)) == [".dispyscheduler-prefix", "results"]
        assert os.listdir(prefix / "results") == []
