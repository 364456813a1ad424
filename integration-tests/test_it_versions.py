"""A client on one Python version driving a node on another.

Program computations work across versions. Python functions can't (cloudpickled bytecode
is specific to a minor version): the user gets a clear message naming both versions,
never a pickle traceback.
"""

from __future__ import annotations

import logging
import platform
import stat
import sys

import dispy


def test_program_computation_across_versions(start_node, other_python, tmp_path):
    version, python = other_python
    proc = start_node("127.0.0.4", python=python)
    script = tmp_path / "which_python.sh"
    script.write_text("#!/bin/sh\necho \"$1\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with dispy.JobCluster(str(script), nodes=[dispy.NodeAllocate(proc.ip, port=proc.port)]) as c:
        job = c.submit("hello")
        assert job() == 0 and job.stdout == b"hello\n"


def add(a, b):
    return a + b


def test_function_across_versions_names_both(start_node, other_python, caplog):
    version, python = other_python
    proc = start_node("127.0.0.4", python=python)
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(add, nodes=[dispy.NodeAllocate(proc.ip, port=proc.port)])
    try:
        cluster.submit(1, 2)
        assert cluster.wait(timeout=3) is False
    finally:
        cluster.close(timeout=1, terminate=True)
    text = caplog.text
    assert platform.python_version() in text and f"Python {version}" in text
    assert "Traceback" not in text and "pickle" not in text.lower()
    assert sys.version_info[:2] != tuple(map(int, version.split(".")))


def square(x):
    return x * x


def test_node_of_an_incompatible_protocol_is_refused_saying_what_to_upgrade(caplog):
    """A node of a release that speaks only a newer protocol than this client (played by
    this tree told so, see dispy_core.compat): refused on both sides with both packages,
    both protocol versions and what to upgrade; the node logs it once, not per retry."""
    from dispy_core import compat
    from dispy_core.testing import NodeProcess, wait_until

    newer = compat.PROTOCOL_HIGHEST + 1
    we_speak = compat.Speaker("", compat.PROTOCOL_LOWEST, compat.PROTOCOL_HIGHEST).protocols
    with NodeProcess("127.0.0.11", protocols=(newer, newer)) as node:
        with caplog.at_level(logging.WARNING):
            with dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node.ip, port=node.port)],
                                  host="127.0.0.1") as cluster:
                cluster.submit(2)
                # long enough for the client to retry (RETRY_FIRST, then doubling)
                assert not cluster.wait(timeout=3)
                cluster.close(timeout=1, terminate=True)
        client_side = (f"node 127.0.0.11 runs dispy-node {dispy.__version__} (protocol {newer}), which needs "
                       f"protocol {newer} or newer; this dispy-client {dispy.__version__} speaks {we_speak}: "
                       f"upgrade dispy-client on this machine")
        lines = [r.getMessage() for r in caplog.records]
        assert len([line for line in lines if line.startswith("can't use node") and client_side in line]) == 1, lines
        # the "no node serves the computation" warning says why
        assert [line for line in lines if line.startswith("wait(timeout=3) timed out") and client_side in line], lines
        node_side = (f"client 127.0.0.1 runs dispy-client {dispy.__version__} ({we_speak}); this dispy-node "
                     f"{dispy.__version__} needs protocol {newer} or newer: upgrade dispy-client on 127.0.0.1")
        assert wait_until(lambda: node_side in node.log), node.log
        assert node.log.count(node_side) == 1, node.log
