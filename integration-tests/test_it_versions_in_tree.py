"""The tree is always releasable as far as versions go: every package's CHANGELOG.md has the
format ``./dev release`` works on, and every package's dispy-core range is a bounded range
that includes the dispy-core in the tree (what tools/release.py enforces at release time,
checked on every test run so that a change breaking it is seen when it is made).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent.name for p in (REPO / "packages").glob("*/pyproject.toml"))
_RELEASE_HEADING = re.compile(r"^## (?P<version>\S+) \((?P<date>\d{4}-\d{2}-\d{2})\)$")


def _release_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dispy_release_tool", REPO / "tools" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", PACKAGES)
def test_changelog_has_unreleased_on_top_then_dated_releases_newest_first(name: str) -> None:
    tool = _release_tool()
    package = tool.read_package(REPO, name)
    lines = package.changelog.read_text().splitlines()
    assert lines[0] == "# Changelog"
    headings = [line for line in lines if line.startswith("#") and line != "# Changelog"]
    assert headings[0] == "## Unreleased", f"{name}: the first section must be '## Unreleased'"
    versions = []
    for heading in headings[1:]:
        found = _RELEASE_HEADING.match(heading)
        assert found, f"{name}: {heading!r} is not '## X.Y.Z (YYYY-MM-DD)'"
        versions.append(Version(found["version"]))
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    # The version in the tree is the newest released one (a release bumps both).
    assert versions and versions[0] == package.version


@pytest.mark.parametrize("name", [n for n in PACKAGES if n != "dispy-core"])
def test_dispy_core_range_is_bounded_and_includes_the_tree(name: str) -> None:
    tool = _release_tool()
    core = tool.read_package(REPO, "dispy-core")
    package = tool.read_package(REPO, name)
    assert package.core_requirement is not None, f"{name} must declare its dispy-core range"
    assert tool.core_range_problem(package, core.version) is None


@pytest.mark.parametrize("name", PACKAGES)
def test_the_newest_release_wheel_is_kept_in_the_tree(name: str) -> None:
    """The version-skew test installs the previous release from integration-tests/releases/
    (put there by ``./dev release``): exactly one wheel per package, of the version in the
    tree (the newest released one), with that name and version inside."""
    tool = _release_tool()
    package = tool.read_package(REPO, name)
    wheels = tool.release_wheels(REPO, package)
    assert len(wheels) == 1, f"{name}: {wheels}"
    dist = name.replace("-", "_")
    assert wheels[0].name == f"{dist}-{package.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheels[0]) as zf:
        meta = zf.read(f"{dist}-{package.version}.dist-info/METADATA").decode()
        assert f"Name: {name}\n" in meta and f"Version: {package.version}\n" in meta
        assert any(n.startswith(f"{package.import_name}/") for n in zf.namelist())
