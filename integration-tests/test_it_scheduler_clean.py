"""``dispyscheduler --clean`` removes what earlier runs of the scheduler kept, and
nothing else that lives under ``--dest_path_prefix``.

The scheduler keeps only the results dead clients did not get (``<prefix>/results``);
``--clean`` used to remove the whole prefix directory, so a prefix shared with anything
else (``--dest_path_prefix /var/tmp``) lost all of it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler

from dispy_core.testing import SchedulerProcess, unused_port


def test_clean_removes_the_kept_results_and_nothing_else(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "results").mkdir(parents=True)
    (prefix / "results" / "left-by-an-earlier-run").write_text("old")
    (prefix / "not-the-scheduler-s.txt").write_text("keep me")
    (prefix / "a-directory").mkdir()
    # a node that is not there (named: the scheduler never broadcasts)
    absent = f"127.0.0.1:{unused_port()}"
    with SchedulerProcess("127.0.0.1", [absent], "--clean", "--dest_path_prefix", str(prefix)) as sched:
        assert sched.alive()
        assert not (prefix / "results" / "left-by-an-earlier-run").exists()
        assert (prefix / "results").is_dir()  # made again, for this run's results
        assert (prefix / "not-the-scheduler-s.txt").read_text() == "keep me"
        assert (prefix / "a-directory").is_dir()
