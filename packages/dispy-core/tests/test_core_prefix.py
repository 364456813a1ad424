"""dispy_core.prefix: a daemon records what it creates in its --dest_path_prefix, and
--clean removes only that, refusing (before touching anything) a prefix holding more."""

from __future__ import annotations

import os

import pytest

from dispy_core.errors import ConfigError
from dispy_core.prefix import CleanRefused, DaemonPrefix


def tree(path):
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, ds, fs in os.walk(path) for n in ds + fs)


def test_a_new_prefix_is_made_and_what_the_daemon_makes_is_recorded(tmp_path):
    p = DaemonPrefix(str(tmp_path / "new" / "prefix"), "testd")
    p.open()
    assert os.stat(p.path).st_mode & 0o777 == 0o711
    assert os.listdir(p.path) == [".testd-prefix"] and p.foreign() == []
    p.mkdir("a")
    os.makedirs(os.path.join(p.path, "a", "b", "c"))  # inside a: the daemon's too
    p.mkdir("a/x")  # inside a recorded directory: not recorded again
    assert p.created("a") and p.created("a/b/c") and not p.created("z")
    # the record survives a restart (read by a new object)
    q = DaemonPrefix(p.path, "testd")
    q.open()
    assert q.created("a/b") and q.foreign() == []
    with open(q.record_path) as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith("# testd created the entries") and lines[1:] == ['"a"']


def test_clean_removes_what_was_recorded_and_refuses_anything_else(tmp_path):
    p = DaemonPrefix(str(tmp_path / "prefix"), "testd")
    p.open()
    for rel in ("one", "two", ".own"):
        p.mkdir(rel)
        with open(os.path.join(p.path, rel, "f"), "w") as fh:
            fh.write(rel)
    with open(os.path.join(p.path, "users.txt"), "w") as fh:
        fh.write("not the daemon's")
    os.mkdir(os.path.join(p.path, "photos"))
    before = tree(p.path)
    fresh = DaemonPrefix(p.path, "testd")
    with pytest.raises(CleanRefused) as info:
        fresh.clean()
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == (
        f"--clean: refusing to clean {p.path}: it holds files testd did not create: photos/, users.txt; "
        "nothing was removed. Point --dest_path_prefix at a directory of its own (a new or empty one)")
    assert tree(p.path) == before  # nothing removed, nothing written
    os.unlink(os.path.join(p.path, "users.txt"))
    os.rmdir(os.path.join(p.path, "photos"))
    assert fresh.clean() == 3
    assert os.listdir(p.path) == [".testd-prefix"]
    fresh.open()
    assert not fresh.created("one")


def test_clean_lists_a_few_names_and_counts_the_others(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i:02d}").write_text("")
    with pytest.raises(CleanRefused, match=r"f00, f01, f02, f03, f04 \(and 7 more\); nothing was removed"):
        DaemonPrefix(str(tmp_path), "testd").clean()
    assert len(os.listdir(tmp_path)) == 12


def test_clean_of_a_missing_prefix_creates_nothing(tmp_path):
    assert DaemonPrefix(str(tmp_path / "missing"), "testd").clean() == 0
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(CleanRefused, match="not a directory"):
        DaemonPrefix(str(tmp_path / "file"), "testd").clean()


def test_a_prefix_holding_other_files_is_used_and_only_the_daemon_s_are_recorded(tmp_path):
    (tmp_path / "mine").mkdir()
    p = DaemonPrefix(str(tmp_path), "testd")
    p.open()  # used all the same
    assert p.mkdir("mine") == str(tmp_path / "mine")  # existing: left as it is, not recorded
    assert not p.created("mine") and not p.created("mine/sub")
    with pytest.raises(FileExistsError):
        p.mkdir("mine", exist_ok=False)
    (tmp_path / "link").symlink_to(tmp_path / "mine")
    p.mkdir("link")  # a link is an entry too: never followed, never recorded
    assert not p.created("link") and os.path.islink(tmp_path / "link")
    assert p.foreign() == ["link", "mine/"]


def test_a_record_naming_entries_that_are_gone_is_tidied(tmp_path):
    p = DaemonPrefix(str(tmp_path), "testd")
    p.open()
    p.mkdir("a")
    p.mkdir("b")
    os.rmdir(tmp_path / "a")
    p.forget("b")
    assert not p.created("b") and p.created("a")
    q = DaemonPrefix(str(tmp_path), "testd")
    q.open()
    assert not q.created("a")
    with open(q.record_path) as fh:  # b is still there, unrecorded: foreign now
        assert fh.read().splitlines()[1:] == []
    assert q.foreign() == ["b/"]


def test_record_lines_that_are_not_paths_are_ignored(tmp_path):
    with open(tmp_path / ".testd-prefix", "w") as fh:
        fh.write('an old marker\n"../up"\n"/abs"\n"ok"\n42\n"a/../b"\n{"x": 1}\n')
    (tmp_path / "ok").mkdir()
    p = DaemonPrefix(str(tmp_path), "testd")
    p.open()
    assert p.created("ok") and p.foreign() == []


def test_daemons_sharing_a_prefix_keep_each_other_s_records(tmp_path):
    # two nodes on one host with the same (default) prefix: each change is merged into
    # the record on disk, never written over the other's
    a, b = DaemonPrefix(str(tmp_path), "testd"), DaemonPrefix(str(tmp_path), "testd")
    a.open()
    b.open()
    a.mkdir("from-a")
    b.mkdir("from-b")
    a.mkdir("from-a-2")
    assert a.created("from-b") and b.created("from-a-2")
    b.forget("from-b")
    os.rmdir(tmp_path / "from-b")
    assert a.foreign() == [] and a.created("from-a") and not a.created("from-b")
    (tmp_path / ".testd-prefix.1234.tmp").write_text("left by a crash")  # the daemon's too
    assert a.foreign() == [] and a.clean() == 2
    assert sorted(os.listdir(tmp_path)) == [".testd-prefix"]
