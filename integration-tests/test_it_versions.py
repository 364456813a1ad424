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
