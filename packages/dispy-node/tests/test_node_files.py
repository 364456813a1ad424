"""Files on the node, without processes: job directories (the job's files and links to
the computation's), dest_path rules, and which files a node already holds (FilesQuery)."""

from __future__ import annotations

import hashlib
import os

import pytest
from node_testkit import SECRET, TestClient, client_test, ship_by_value, value

from dispy_core import messages as m
from dispy_core.computation import file_digest
from dispy_core.errors import ConfigError, ProtocolError
from dispy_core.messages import ComputeFailed, ComputeReady, FileData, FileDigest, FilesHeld, FilesQuery
from dispy_core.testing import NodeProcess
from dispy_node.held import DigestCache, check_digests
from dispy_node.paths import (
    FileRefused,
    computation_dir,
    created_by_node,
    existing_dest_dir,
    link_into_job_dirs,
    make_job_dir,
    make_jobs_root,
    prepare_prefix,
    remove_job_dirs,
    remove_tree,
    set_modes,
)

ship_by_value(__name__)


def _comp(tmp_path):
    prefix = prepare_prefix(str(tmp_path / "prefix"))
    comp = computation_dir(prefix, "shared", "comp")
    with open(os.path.join(comp, "data.txt"), "w") as fh:
        fh.write("computation's")
    with open(os.path.join(comp, "same.txt"), "w") as fh:
        fh.write("computation's same")
    os.mkdir(os.path.join(comp, "sub"))
    with open(os.path.join(comp, "sub", "deep.txt"), "w") as fh:
        fh.write("deep")
    return prefix, comp


# -- job directories -------------------------------------------------------------------
def test_a_job_dir_shows_its_own_files_and_the_computation_s(tmp_path):
    prefix, comp = _comp(tmp_path)
    root = make_jobs_root(prefix, "comp")
    assert not root.startswith(comp + os.sep)  # outside the computation's directory
    job = make_job_dir(root, comp, 7, [FileData("own.txt", b"job's"), FileData("same.txt", b"job's same")])
    assert sorted(os.listdir(job)) == ["data.txt", "own.txt", "same.txt", "sub"]
    read = lambda *p: open(os.path.join(job, *p)).read()  # noqa: E731
    assert read("data.txt") == "computation's" and read("own.txt") == "job's"
    assert read("same.txt") == "job's same"  # the job's own file wins
    assert read("sub", "deep.txt") == "deep"  # subdirectories too
    # A file the computation gets later shows in later jobs
    with open(os.path.join(comp, "later.txt"), "w") as fh:
        fh.write("later")
    other = make_job_dir(root, comp, 8, [FileData("other.txt", b"x")])
    assert "later.txt" in os.listdir(other) and "own.txt" not in os.listdir(other)
    remove_tree(job)
    assert not os.path.exists(job)
    # Removing the job's directory removes links, never what they point to
    assert sorted(os.listdir(comp)) == ["data.txt", "later.txt", "same.txt", "sub"]
    assert open(os.path.join(comp, "sub", "deep.txt")).read() == "deep"
    remove_job_dirs(root, 8)  # what a killed job left
    assert os.listdir(root) == []


def test_a_file_sent_later_is_linked_into_running_jobs_dirs(tmp_path):
    prefix, comp = _comp(tmp_path)
    root = make_jobs_root(prefix, "comp")
    a = make_job_dir(root, comp, 1, [FileData("new.txt", b"job a's own")])
    b = make_job_dir(root, comp, 2, [FileData("b.txt", b"")])
    with open(os.path.join(comp, "new.txt"), "w") as fh:
        fh.write("sent later")
    link_into_job_dirs(root, comp, "new.txt")
    assert open(os.path.join(a, "new.txt")).read() == "job a's own"  # the job's own still wins
    assert open(os.path.join(b, "new.txt")).read() == "sent later"
    # a job starting at that moment is not disturbed by a link made before its own
    c = make_job_dir(root, comp, 3, [FileData("c.txt", b"")])
    link_into_job_dirs(root, comp, "data.txt")
    assert open(os.path.join(c, "data.txt")).read() == "computation's"


def test_job_dirs_of_a_killed_job_are_found_by_job_id(tmp_path):
    prefix, comp = _comp(tmp_path)
    root = make_jobs_root(prefix, "comp")
    a = make_job_dir(root, comp, 12, [FileData("f", b"")])
    b = make_job_dir(root, comp, 123, [FileData("f", b"")])
    remove_job_dirs(root, 12)
    assert not os.path.exists(a) and os.path.exists(b)


def test_dest_path_lookups_create_nothing_and_node_dirs_are_reserved(tmp_path):
    prefix = prepare_prefix(str(tmp_path / "prefix"))
    assert existing_dest_dir(prefix, "not/yet") is None
    assert not os.path.exists(os.path.join(prefix.path, "not"))
    assert existing_dest_dir(prefix, None) is None and existing_dest_dir(prefix, "") is None
    made = computation_dir(prefix, "/x/y", "c")
    assert existing_dest_dir(prefix, "x/y") == made
    for bad in ("../out", ".jobs", ".undelivered/a", "/.jobs/x"):
        with pytest.raises(FileRefused):
            existing_dest_dir(prefix, bad)
        with pytest.raises(FileRefused):
            computation_dir(prefix, bad, "c")


def test_dest_path_is_checked_before_anything_is_made(tmp_path):
    prefix = prepare_prefix(str(tmp_path / "prefix"))
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(prefix.path, "out"))
    os.makedirs(os.path.join(prefix.path, "in", "deep"))
    os.symlink(os.path.join(prefix.path, "in"), os.path.join(prefix.path, "to-in"))
    os.symlink(prefix.path, os.path.join(prefix.path, "to-prefix"))
    os.symlink(os.path.join(prefix.path, ".undelivered"), os.path.join(prefix.path, "to-undelivered"))
    open(os.path.join(prefix.path, "in", "file"), "w").close()
    for bad, why in (("out/a/b", "leads out"), ("out", "leads out"), ("to-prefix", "prefix itself"),
                     ("to-prefix/.jobs/x", "prefix itself"), ("to-undelivered/k", "is the node's own"),
                     ("in/file/x", "is not a directory"), (".x", "is the node's own"),
                     ("a\udc80\ud800", "not a valid file name")):
        for look in (computation_dir, existing_dest_dir):
            with pytest.raises(FileRefused, match=why):
                look(prefix, bad, *(("c",) if look is computation_dir else ()))
    assert os.listdir(outside) == [] and not os.path.exists(os.path.join(prefix.path, "a"))
    # links to directories inside the prefix lead where they point
    assert computation_dir(prefix, "to-in/deep/new", "c") == os.path.join(prefix.path, "in", "deep", "new")
    assert existing_dest_dir(prefix, "to-in/deep") == os.path.join(prefix.path, "in", "deep")


def test_only_directories_the_node_made_are_its_to_remove(tmp_path):
    prefix = prepare_prefix(str(tmp_path / "prefix"))
    os.mkdir(os.path.join(prefix.path, "users"))
    assert not created_by_node(prefix, computation_dir(prefix, "users", "c"))
    made = computation_dir(prefix, "users/run/1", "c")
    assert created_by_node(prefix, made) and created_by_node(prefix, os.path.dirname(made))
    assert created_by_node(prefix, computation_dir(prefix, None, "c"))
    assert created_by_node(prefix, computation_dir(prefix, "fresh", "c"))
    assert not created_by_node(prefix, prefix.path)


def test_the_node_s_own_directories_must_not_be_links(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "prefix").mkdir()
    os.symlink(elsewhere, tmp_path / "prefix" / ".undelivered")
    with pytest.raises(ConfigError, match="must be a directory, not a link"):
        prepare_prefix(str(tmp_path / "prefix"))


def test_set_modes_does_not_follow_links(tmp_path):
    target = tmp_path / "target"
    target.write_text("t")
    target.chmod(0o600)
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "prog").write_text("#!/bin/sh\n")
    set_modes(str(tmp_path), [FileDigest("link", 1, 0.0, "0" * 64, 0o777),
                              FileDigest("prog", 1, 0.0, "0" * 64, 0o644)], executable="prog")
    assert target.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "prog").stat().st_mode & 0o700 == 0o700


# -- files a node holds ----------------------------------------------------------------
def _write(path, data: bytes, mtime: float) -> FileData:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return FileData(path.name, data, 0o644, mtime)


def test_held_means_same_size_mtime_and_sha256(tmp_path):
    cache = DigestCache()
    d = tmp_path
    same = _write(d / "same.bin", b"a" * 1000, 1_700_000_000.25)
    other_content = FileData("content.bin", b"b" * 1000, 0o644, 1_700_000_000.0)
    _write(d / "content.bin", b"c" * 1000, 1_700_000_000.0)  # same size and mtime, other bytes
    other_mtime = FileData("mtime.bin", b"m", 0o644, 1_600_000_000.0)
    _write(d / "mtime.bin", b"m", 1_700_000_000.0)
    absent = FileData("absent.bin", b"x", 0o644, 1.0)
    wanted = [file_digest(f) for f in (same, other_content, other_mtime, absent)]
    assert cache.held(str(d), wanted) == ["same.bin"]
    assert cache.missing(str(d), wanted) == ["content.bin", "mtime.bin", "absent.bin"]
    assert cache.held(None, wanted) == []
    assert file_digest(same).sha256 == hashlib.sha256(b"a" * 1000).hexdigest()


def test_digests_are_cached_by_file_identity(tmp_path):
    cache = DigestCache()
    f = _write(tmp_path / "big.bin", b"x" * 100_000, 1_700_000_000.0)
    want = [file_digest(f)]
    assert cache.held(str(tmp_path), want) == ["big.bin"] and cache.hashed == 1
    assert cache.held(str(tmp_path), want) == ["big.bin"] and cache.hashed == 1  # cached
    # Rewritten in place with the same size and mtime: ctime changes, so it is hashed again
    with open(tmp_path / "big.bin", "r+b") as fh:
        fh.write(b"y")
    os.utime(tmp_path / "big.bin", (1_700_000_000.0, 1_700_000_000.0))
    assert cache.held(str(tmp_path), want) == [] and cache.hashed == 2


def test_links_and_bad_names_are_never_held(tmp_path):
    cache = DigestCache()
    outside = _write(tmp_path / "outside.txt", b"secret", 1_700_000_000.0)
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "data.txt").symlink_to(tmp_path / "outside.txt")
    d = file_digest(outside)
    link = FileDigest("data.txt", d.size, d.mtime, d.sha256)
    up = FileDigest("../outside.txt", d.size, d.mtime, d.sha256)
    assert cache.held(str(comp), [link, up]) == []
    with pytest.raises(FileRefused):
        check_digests([up], "FilesQuery")
    with pytest.raises(FileRefused, match="twice"):
        check_digests([link, link], "FilesQuery")
    with pytest.raises(FileRefused):
        check_digests("nope", "FilesQuery")


@pytest.mark.parametrize("fields", [
    {"name": "", "size": 1, "mtime": 0.0, "sha256": "0" * 64},
    {"name": "a", "size": -1, "mtime": 0.0, "sha256": "0" * 64},
    {"name": "a", "size": True, "mtime": 0.0, "sha256": "0" * 64},
    {"name": "a", "size": 1, "mtime": "x", "sha256": "0" * 64},
    {"name": "a", "size": 1, "mtime": 0.0, "sha256": "0" * 63},
    {"name": "a", "size": 1, "mtime": 0.0, "sha256": "G" * 64},
    {"name": "a", "size": 1, "mtime": 0.0, "sha256": "0" * 64, "mode": 0o17777},
])
def test_malformed_digests_from_a_peer_are_protocol_errors(fields):
    with pytest.raises(TypeError):
        FileDigest(**fields)
    body = m.codec.encode_body({"dest_path": "x", "files": [dict(fields, **{"$t": "FileDigest"})]})[0]
    with pytest.raises(ProtocolError):
        m.decode(m.FilesQuery.TYPE, memoryview(b"".join(bytes(p) for p in body)))


def test_file_query_messages_roundtrip():
    d = FileDigest("a.txt", 3, 1.5, "ab" * 32, 0o600)
    for msg in (m.FilesQuery("x/y", [d]), m.FilesHeld(["a.txt"]), m.FilesHeld([], "why"),
                m.ComputeFailed("c", "changed", ["a.txt"])):
        parts, _ = m.encode(msg)
        assert m.decode(msg.TYPE, memoryview(b"".join(bytes(p) for p in parts))) == msg
    parts, _ = m.codec.encode_body({"names": "a.txt"})
    with pytest.raises(ProtocolError, match="names must be a list"):
        m.decode(m.FilesHeld.TYPE, memoryview(b"".join(bytes(p) for p in parts)))


# -- through a real node ---------------------------------------------------------------
def test_files_query_and_kept_files_through_a_node(tmp_path):
    f = FileData("kept.txt", b"kept bytes", 0o640, 1_700_000_000.5)
    d = file_digest(f)

    async def body(c: TestClient):
        # Nothing there yet (and the query creates nothing)
        reply = await c.request(FilesQuery("reuse", [d]))
        assert reply == FilesHeld([])
        assert not os.path.exists(os.path.join(node.dest_path_prefix, "reuse"))
        reply = await c.request(FilesQuery("../out", [d]))
        assert isinstance(reply, FilesHeld) and reply.names == [] and "dest_path" in reply.error
        first = await c.compute(read_kept, files=[f], dest_path="reuse", cleanup_files=False,
                                jobs_dir="/tmp/not-this-one")
        assert isinstance(first, ComputeReady)
        await c.close_computation(first.compute_id)
        assert await c.request(FilesQuery("reuse", [d])) == FilesHeld(["kept.txt"])
        # Kept, not sent: the job reads the bytes that were already there
        second = await c.compute(read_kept, dest_path="reuse", cleanup_files=False, kept=[d])
        assert isinstance(second, ComputeReady), second
        (r,) = await c.run_jobs(second.compute_id, (0,))
        assert value(r) == "kept bytes"
        await c.close_computation(second.compute_id)
        # Changed meanwhile (same size and mtime, other bytes): refused, naming the file
        path = os.path.join(second.dest_path, "kept.txt")
        with open(path, "wb") as fh:
            fh.write(b"KEPT BYTES")
        os.utime(path, (f.mtime, f.mtime))
        third = await c.compute(read_kept, dest_path="reuse", kept=[d])
        assert isinstance(third, ComputeFailed) and third.missing == ["kept.txt"], third
        # Kept names are checked like sent ones
        bad = await c.compute(read_kept, dest_path="reuse", kept=[FileDigest("../x", 1, 0.0, "0" * 64)])
        assert isinstance(bad, ComputeFailed) and "refused file name" in bad.error

    with NodeProcess("127.0.0.7", "-c", "1", "-s", SECRET) as node:
        client_test(node, body)
    # The client's jobs_dir was not used
    assert not os.path.exists("/tmp/not-this-one")


def read_kept(_):
    return open("kept.txt").read()
