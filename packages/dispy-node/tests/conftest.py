"""Fixtures for the node's tests: real dispynode processes on 127.0.0.x."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dispy_core.testing import NodeProcess  # noqa: E402
from node_testkit import MAX_FILE_SIZE, SECRET  # noqa: E402


@pytest.fixture(scope="session")
def node() -> Any:
    """The node most tests share: a secret, a file size limit, all CPUs."""
    with NodeProcess("127.0.0.1", "-s", SECRET, "--max_file_size", str(MAX_FILE_SIZE),
                     "--name", "test-node") as proc:
        yield proc
        assert proc.alive(), proc.log
