"""Settings for every package's tests (this file is at pytest's rootdir, so it applies to
every test path).

Each pytest run works in a directory of its own instead of the checkout: clusters write
their recover files (``_dispy_YYYYMMDDHHMMSS``) into the working directory, and
``./dev test`` runs several suites of the same checkout at once, whose clusters must not
pick the same name. Tests that care about the working directory set their own
(``monkeypatch.chdir(tmp_path)``).

Tests marked ``namespaces`` build networks of Linux network namespaces and test how
dispy behaves on a network: discovery, faults, cut cables. What they test does not
depend on the Python version or on which packages are installed, and they are the
slowest tests, so ``./dev test`` runs each of them in one suite only:
``DISPY_NAMESPACE_TESTS`` names the modules (comma-separated, e.g.
``test_it_faults_netns``) whose namespace tests this run takes, ``none`` skips them all,
and unset (a plain ``pytest`` run) runs them all.

Tests marked ``browser`` drive a real browser (Playwright with Debian's chromium; the
``browser`` fixture in integration-tests/conftest.py). They too run in one suite of
``./dev test``: ``DISPY_BROWSER_TESTS=0`` skips them (they run in another suite), ``1`` or
unset runs them, and there a missing Playwright or chromium fails them with a message
saying how to install it.

Tests marked ``packaging`` build the packages' distributions (the release command,
tools/release.py) and install them from a package index the test starts
(integration-tests/test_it_index.py). They need hatch, twine and pypiserver, which only
the py3.13 environment has, so they run in that suite of ``./dev test``:
``DISPY_PACKAGING_TESTS=0`` skips them, ``1`` or unset runs them, and there a missing tool
fails them with a message naming it.

The other integration tests (those of integration-tests/ with none of these three marks)
drive real daemons on loopback; the py3.11 and py3.13 suites of ``./dev test`` run them,
on the lowest and the newest dependency versions. ``DISPY_INTEGRATION_TESTS=0`` leaves
them out of a run (deselected): ``./dev test``'s py3.12 suite, which runs every package's
unit tests and the namespace tests (with daemons on Python 3.12), so that eight suites on
one machine stay well under 15 minutes. The hosted CI, a machine per suite, runs them on
every Python.

The header of every run names the versions of the dependencies whose ranges the packages
declare, and the environment that tests the lowest ones checks that it has them (below).
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version


@pytest.fixture(autouse=True, scope="session")
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)


# -- the dependency versions under test --------------------------------------------------
#: Dependencies whose version ranges the packages declare (packages/*/pyproject.toml) and
#: the test matrix tests at both ends: the environment with DISPY_LOWEST_DEPS=1 in its
#: environment (hatch.toml) must have exactly the lowest allowed versions, the others get
#: the newest ones their environments were built with.
_RANGED = ("cloudpickle", "cryptography", "psutil")
_ROOT = os.path.dirname(os.path.abspath(__file__))


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _lowest_allowed() -> dict[str, Version]:
    """The lowest version of each ranged dependency that every package allows."""
    lowest: dict[str, Version] = {}
    for pyproject in sorted(glob.glob(os.path.join(_ROOT, "packages", "*", "pyproject.toml"))):
        with open(pyproject, "rb") as fh:
            requirements = tomllib.load(fh)["project"].get("dependencies", [])
        for text in requirements:
            req = Requirement(text)
            if req.name not in _RANGED:
                continue
            bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
            if not bounds:
                raise pytest.UsageError(f"{pyproject}: {text!r} declares no lower bound")
            lowest[req.name] = max([*bounds, lowest.get(req.name, bounds[0])])
    return lowest


def _versions_line() -> str:
    versions = ", ".join(f"{name} {_installed(name) or '(not installed)'}" for name in _RANGED)
    which = "the lowest allowed" if os.environ.get("DISPY_LOWEST_DEPS") else "as installed"
    return f"dispy dependencies ({which}): {versions}"


def pytest_report_header(config: pytest.Config) -> str:
    return _versions_line()


def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest.ini's -q hides the header; the versions tested are worth a line anyway.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(_versions_line())


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("DISPY_LOWEST_DEPS"):
        return
    # The environment meant to test the lowest versions must really have them: a pin in
    # hatch.toml that the installer overrode, or a lower bound raised in a pyproject.toml
    # but not in hatch.toml, would otherwise test something else unseen.
    wrong = [f"{name} {_installed(name)} (lowest allowed: {version})"
             for name, version in _lowest_allowed().items()
             if _installed(name) is not None and Version(_installed(name) or "0") != version]
    if wrong:
        raise pytest.UsageError("DISPY_LOWEST_DEPS is set but this environment has " + ", ".join(wrong)
                                + ": fix the pins in hatch.toml")


# -- which suite runs the namespace tests -----------------------------------------------
#: Marks of the tests that take longest (networks built, browsers, builds and installs).
_LONG = ("namespaces", "browser", "packaging", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The modules holding long tests first, each module's tests kept together and in order:
    # ./dev test spreads a suite's modules over pytest-xdist workers (--dist loadfile) in
    # this order, so that no long module starts last and leaves one worker running alone.
    long_modules = {item.path for item in items if any(item.get_closest_marker(m) for m in _LONG)}
    items.sort(key=lambda item: item.path not in long_modules)  # (a stable sort)
    if os.environ.get("DISPY_BROWSER_TESTS") == "0":
        for item in items:
            if item.get_closest_marker("browser") is not None:
                item.add_marker(pytest.mark.skip(
                    reason="browser tests run in another suite of ./dev test (DISPY_BROWSER_TESTS=0)"))
    if os.environ.get("DISPY_PACKAGING_TESTS") == "0":
        for item in items:
            if item.get_closest_marker("packaging") is not None:
                item.add_marker(pytest.mark.skip(
                    reason="packaging tests run in another suite of ./dev test (DISPY_PACKAGING_TESTS=0)"))
    if os.environ.get("DISPY_INTEGRATION_TESTS") == "0":
        marks = ("namespaces", "browser", "packaging")
        integration = Path(__file__).resolve().parent / "integration-tests"
        left = [item for item in items if integration in item.path.parents
                and not any(item.get_closest_marker(mark) for mark in marks)]
        if left:
            config.hook.pytest_deselected(items=left)
            dropped = set(left)
            items[:] = [item for item in items if item not in dropped]
    chosen = os.environ.get("DISPY_NAMESPACE_TESTS")
    if chosen is None:
        return
    modules = {name.strip() for name in chosen.split(",") if name.strip() and name.strip() != "none"}
    for item in items:
        if item.get_closest_marker("namespaces") is None:
            continue
        module = item.path.stem
        if module not in modules:
            item.add_marker(pytest.mark.skip(
                reason=f"{module} runs in another suite of ./dev test (DISPY_NAMESPACE_TESTS={chosen})"))
