"""Fixtures for integration tests: real dispynode processes on 127.0.0.x.

Every node is named explicitly and bound to a loopback address; nothing here broadcasts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispy_core.testing import NodeProcess

REPO = Path(__file__).resolve().parent.parent


# -- a real browser (tests marked "browser") --------------------------------------------
#: Debian's chromium (apt-get install chromium); DISPY_CHROMIUM names another binary.
CHROMIUM = os.environ.get("DISPY_CHROMIUM", "/usr/bin/chromium")

_HOW_TO_INSTALL = (
    "the browser tests need Playwright (pip install playwright; hatch.toml gives it to the "
    "suite that runs them) and Debian's chromium (apt-get install chromium; .ci/run installs it). "
    "DISPY_BROWSER_TESTS=0 leaves them to another suite."
)


# One per test module, not per session: while Playwright's sync API is started, the main
# thread has a running event loop (its own), so asyncio.run() in any later test fails
# ("cannot be called from a running event loop"); it is stopped at the module's end.
@pytest.fixture(scope="module")
def _chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright is not installed: {_HOW_TO_INSTALL}", pytrace=False)
    # A page shows a change a second or two after it happens; under the load of ./dev
    # test's parallel suites that can take longer than Playwright's default 5 s.
    expect.set_options(timeout=20_000)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: {_HOW_TO_INSTALL}", pytrace=False)
    # Playwright's own browser download is not used (nor reachable): the system's chromium,
    # headless, without its sandbox (the tests run as root, where it refuses to start).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser(_chromium: Any) -> Iterator[Any]:
    """A Playwright ``Browser`` (chromium, headless), shared by the session's tests; pages
    a test opens in contexts of its own (``browser.new_context()``) are closed after it."""
    before = set(_chromium.contexts)
    yield _chromium
    for context in set(_chromium.contexts) - before:
        context.close()


@pytest.fixture
def node() -> Iterator[NodeProcess]:
    """One node with 2 CPUs on 127.0.0.1."""
    with NodeProcess("127.0.0.1", "-c", "2") as n:
        yield n


@pytest.fixture
def start_node() -> Iterator:
    """Factory: start_node(ip="127.0.0.1", *args, python=None) -> NodeProcess."""
    started: list[NodeProcess] = []

    def start(ip: str = "127.0.0.1", *args: str, python: str | None = None) -> NodeProcess:
        n = NodeProcess(ip, *args, python=python)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


def find_python(version: str) -> str | None:
    """A working interpreter for Python ``version`` ("3.12"): on PATH, else from pyenv.

    pyenv's shims are on PATH for every version but fail for the inactive ones, so each
    candidate is tried before it is trusted.
    """
    candidates = [shutil.which(f"python{version}")]
    if shutil.which("pyenv"):
        bare = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout
        for v in sorted((v for v in bare.split() if v.startswith(version + ".")), reverse=True):
            prefix = subprocess.run(["pyenv", "prefix", v], capture_output=True, text=True).stdout.strip()
            candidates.append(f"{prefix}/bin/python{version}")
    for c in candidates:
        if c and subprocess.run([c, "-c", "pass"], capture_output=True).returncode == 0:
            return c
    return None


def other_python_versions() -> list[str]:
    """Python minor versions other than this one that can be found (3.11-3.13)."""
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [v for v in ("3.11", "3.12", "3.13") if v != mine and find_python(v)]


def node_venv(version: str) -> str:
    """A virtualenv for Python ``version`` with only dispy-core and dispy-node (editable),
    built once and reused; returns its python.

    One per checkout (its name has a hash of this checkout's path: an editable install
    of another clone would test that clone's sources, and break when it is deleted), and
    built under a lock: ``./dev test`` runs the Python versions' suites at the same time
    and each of them wants the other versions' node environments.
    """
    root = Path(os.environ.get("DISPY_TEST_VENVS", Path.home() / ".cache" / "dispy-test-venvs"))
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
    venv = root / f"node-py{version}-{checkout}"
    python = venv / "bin" / "python"
    marker = venv / ".dispy-installed"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            interpreter = find_python(version)
            assert interpreter is not None
            subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "-e", str(REPO / "packages" / "dispy-core"),
                            "-e", str(REPO / "packages" / "dispy-node")],
                           check=True, stdout=subprocess.DEVNULL)
            marker.write_text(f"{REPO}\n")
    return str(python)


@pytest.fixture(params=other_python_versions() or ["none"])
def other_python(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(version, python) of a node environment on another Python minor version."""
    if request.param == "none":
        pytest.skip("no other Python 3.11-3.13 on PATH (./dev test puts pyenv's there)")
    return request.param, node_venv(request.param)
