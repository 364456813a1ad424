"""What the client sends of a computation's files when its dest_path may already hold
them (against the fake node: which files travel, and the fallbacks)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import dispy


def ident(x):
    return x


def _files(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"A" * 1000)
    b.write_bytes(b"B" * 10)
    os.utime(a, (1_700_000_000.5, 1_700_000_000.5))
    return a, b


def _run(node: Any, clusters: list, depends: list[str], **kwargs: Any) -> None:
    cluster = dispy.JobCluster(ident, nodes=[dispy.NodeAllocate("127.0.0.1", port=node.port)],
                               depends=depends, host="127.0.0.1", loglevel=logging.INFO, **kwargs)
    clusters.append(cluster)
    assert cluster.submit(1)() == 1


def test_files_the_node_holds_are_described_not_sent(fake_node: Any, clusters: list, tmp_path: Path,
                                                     caplog: Any) -> None:
    a, b = _files(tmp_path)
    node = fake_node(held_files=["a.txt"])
    caplog.set_level(logging.INFO, logger="dispy")
    _run(node, clusters, [str(a), str(b)], dest_path="d", cleanup=False)
    (query,) = node.queries
    assert query.dest_path == "d"
    assert [(f.name, f.size, f.mtime, f.sha256) for f in query.files] == [
        ("a.txt", 1000, 1_700_000_000.5, hashlib.sha256(b"A" * 1000).hexdigest()),
        ("b.txt", 10, b.stat().st_mtime, hashlib.sha256(b"B" * 10).hexdigest())]
    (compute,) = node.computes
    assert [f.name for f in compute.files] == ["b.txt"] and [k.name for k in compute.kept] == ["a.txt"]
    assert "already had 1 of the computation's files in d (1000 bytes not sent): a.txt" in caplog.text
    (dnode,) = clusters[0].status().nodes
    assert dnode.tx < 1000


def test_files_that_changed_meanwhile_are_sent(fake_node: Any, clusters: list, tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    node = fake_node(held_files=["a.txt", "b.txt"], kept_changed_once=True)
    _run(node, clusters, [str(a), str(b)], dest_path="d")
    first, second = node.computes
    assert not first.files and [k.name for k in first.kept] == ["a.txt", "b.txt"]
    assert [f.name for f in second.files] == ["a.txt", "b.txt"] and not second.kept


def test_no_query_without_dest_path_and_all_files_for_a_node_that_cannot_tell(
        fake_node: Any, clusters: list, tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    node = fake_node(held_files=["a.txt"])
    _run(node, clusters, [str(a)])  # a fresh directory on the node: nothing to ask
    assert node.queries == [] and [f.name for f in node.computes[0].files] == ["a.txt"]
    older = fake_node(held_files=None)  # answers FilesQuery with an ErrorReport
    _run(older, clusters, [str(a), str(b)], dest_path="d")
    assert len(older.queries) == 1
    (compute,) = older.computes
    assert [f.name for f in compute.files] == ["a.txt", "b.txt"] and not compute.kept
