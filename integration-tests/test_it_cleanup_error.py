"""A computation's ``cleanup`` that raises on a node is reported to the program.

The node runs ``cleanup`` when the cluster closes and sends its traceback back with its
confirmation; ``close_node`` already logged it, ``close()`` dropped it, so a broken
cleanup went unseen.
"""

from __future__ import annotations

import logging

import dispy


def compute(n):
    return n + 1


def broken_cleanup():
    raise ValueError("cleanup-broke-here")


def test_close_reports_a_cleanup_that_raised(node, tmp_path, caplog):
    cluster = dispy.JobCluster(compute, nodes=[(node.ip, node.port)], cleanup=broken_cleanup,
                               recover_file=str(tmp_path / "recover"))
    try:
        assert cluster.submit(1)(timeout=60) == 2
    finally:
        with caplog.at_level(logging.WARNING, logger="dispy"):
            assert cluster.close(timeout=60)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(node.ip in m and "cleanup-broke-here" in m and "ValueError" in m for m in warnings), warnings
