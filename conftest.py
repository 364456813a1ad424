"""Settings for every package's tests (this file is at pytest's rootdir, so it applies to
every test path).

Each pytest run works in a directory of its own instead of the checkout: clusters write
their recover files (``_dispy_YYYYMMDDHHMMSS``) into the working directory, and
``./dev test`` runs several suites of the same checkout at once, whose clusters must not
pick the same name. Tests that care about the working directory set their own
(``monkeypatch.chdir(tmp_path)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)
