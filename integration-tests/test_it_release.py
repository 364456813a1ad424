"""``./dev release PKG VERSION`` (tools/release.py) on throw-away clones of this repository.

Each test clones the repository into its tmp_path and runs the release command of this
checkout on the clone (``--root``): every refusal (one line, exit status 2, nothing
changed), a real release (the commit, the annotated tag, the version, the CHANGELOG, the
built files), dispy-core's check of the other packages' ranges, and the checks of the
built files catching what should not ship.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "tools" / "release.py"

pytestmark = pytest.mark.packaging


def _load_release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dispy_release_tool", RELEASE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    for tool in ("hatch", "twine"):
        if importlib.util.find_spec(tool) is None:
            pytest.fail(f"{tool} is not installed: the packaging tests need hatch and twine (hatch.toml gives "
                        "them to the py3.13 suite; DISPY_PACKAGING_TESTS=0 leaves them to it)", pytrace=False)
    root = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    git(root, "config", "user.name", "release test")
    git(root, "config", "user.email", "release-test@example.invalid")
    return root


def release(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # hatch's build environment for the clone (a project at a new path each time) goes
    # under the clone's tmp_path, not into the user's hatch data directory.
    env = os.environ | {"HATCH_DATA_DIR": str(root.parent / "hatch-data")}
    return subprocess.run([sys.executable, str(RELEASE), *args, "--root", str(root)],
                          capture_output=True, text=True, timeout=170, env=env)


def state(root: Path) -> tuple[str, str, str, dict[str, str]]:
    """Everything a refusal must leave alone: HEAD, the tags, the status, the packages' files."""
    files = {str(p.relative_to(root)): p.read_text() for p in (root / "packages").glob("*/*.md")}
    files |= {str(p.relative_to(root)): p.read_text() for p in (root / "packages").rglob("__about__.py")}
    return (git(root, "rev-parse", "HEAD"), git(root, "tag", "--list"),
            git(root, "status", "--porcelain", "--untracked-files=all"), files)


def assert_refused(root: Path, args: tuple[str, ...], *phrases: str) -> None:
    before = state(root)
    done = release(root, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("release refused: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0]
    assert done.stdout == ""
    assert state(root) == before


def edit_and_commit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new, 1))
    git(root, "commit", "-qam", f"test: edit {relative}")


def test_each_refusal_is_one_line_and_changes_nothing(clone: Path) -> None:
    assert_refused(clone, ("dispy-nodes", "0.2.0"), "no package 'dispy-nodes'", "dispy-node")
    assert_refused(clone, ("dispy-node", "two"), "'two' is not a version")
    assert_refused(clone, ("dispy-node", "0.02.0"), "canonical", "0.2.0")
    # A dirty tree: a changed file, then a new one.
    about = clone / "packages/dispy-node/src/dispy_node/__about__.py"
    about.write_text(about.read_text() + "# local edit\n")
    assert_refused(clone, ("dispy-node", "0.2.0"), "not committed", "__about__.py")
    git(clone, "checkout", "--", str(about))
    (clone / "packages/dispy-node/stray.txt").write_text("x")
    assert_refused(clone, ("dispy-node", "0.2.0"), "not committed", "stray.txt")
    (clone / "packages/dispy-node/stray.txt").unlink()
    # Not newer: than the tree's version, than the newest tag.
    assert_refused(clone, ("dispy-node", "0.1.0"), "not newer than the version in the tree, 0.1.0")
    assert_refused(clone, ("dispy-node", "0.1.0rc1"), "not newer")
    git(clone, "tag", "-a", "dispy-node-v0.3.0", "-m", "a later release")
    assert_refused(clone, ("dispy-node", "0.2.0"), "not newer than its newest tag, dispy-node-v0.3.0")
    git(clone, "tag", "-d", "dispy-node-v0.3.0")
    # An empty Unreleased section.
    changelog = "packages/dispy-relay/CHANGELOG.md"
    text = (clone / changelog).read_text()
    start = text.index("## Unreleased\n") + len("## Unreleased\n")
    (clone / changelog).write_text(text[:start] + "\n" + text[text.index("## 0.1.0"):])
    git(clone, "commit", "-qam", "test: nothing unreleased")
    assert_refused(clone, ("dispy-relay", "0.1.1"), "dispy-relay/CHANGELOG.md", "'## Unreleased' section is empty")
    # dispy-core ranges: a bare name, no upper bound, a range without the tree's dispy-core.
    pyproject = "packages/dispy-scheduler/pyproject.toml"
    edit_and_commit(clone, pyproject, '"dispy-core>=0.1.0,<0.2"', '"dispy-core"')
    assert_refused(clone, ("dispy-scheduler", "0.1.1"), "dispy-scheduler requires dispy-core with no version range")
    edit_and_commit(clone, pyproject, '"dispy-core"', '"dispy-core>=0.1.0"')
    assert_refused(clone, ("dispy-scheduler", "0.1.1"), "has no upper bound")
    edit_and_commit(clone, pyproject, '"dispy-core>=0.1.0"', '"dispy-core>=0.1.1,<0.2"')
    assert_refused(clone, ("dispy-scheduler", "0.1.1"),
                   "dispy-scheduler's dispy-core range", "does not include dispy-core 0.1.0 (the version in the tree)")


def test_dispy_core_release_checks_the_other_packages_ranges(clone: Path) -> None:
    # 0.2.0 is outside every other package's range (<0.2): refused, naming each of them.
    assert_refused(clone, ("dispy-core", "0.2.0"), "dispy-client's dispy-core range", "dispy-node's",
                   "dispy-relay's", "dispy-scheduler's", "does not include dispy-core 0.2.0")
    for name in ("dispy-client", "dispy-node", "dispy-relay"):
        edit_and_commit(clone, f"packages/{name}/pyproject.toml", '"dispy-core>=0.1.0,<0.2"', '"dispy-core>=0.1.0,<0.3"')
    # One package left behind is enough to refuse, and it is the only one named.
    before = state(clone)
    done = release(clone, "dispy-core", "0.2.0")
    assert done.returncode == 2 and "dispy-scheduler's dispy-core range" in done.stderr
    assert "dispy-node's" not in done.stderr and state(clone) == before
    edit_and_commit(clone, "packages/dispy-scheduler/pyproject.toml", '"dispy-core>=0.1.0,<0.2"', '"dispy-core>=0.1.0,<0.3"')
    # With every range widened it goes through: a dry run builds and checks, changes nothing.
    before = state(clone)
    done = release(clone, "dispy-core", "0.2.0", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run: dispy-core 0.2.0 passes every check" in done.stdout
    assert state(clone) == before
    built = sorted(p.name for p in (clone / "dist" / "dispy-core").iterdir())
    assert built == ["dispy_core-0.2.0-py3-none-any.whl", "dispy_core-0.2.0.tar.gz"]


def test_a_release_bumps_moves_the_changelog_builds_commits_and_tags(clone: Path) -> None:
    tool = _load_release()
    head = git(clone, "rev-parse", "HEAD").strip()
    changelog = clone / "packages/dispy-node/CHANGELOG.md"
    unreleased = changelog.read_text().split("## Unreleased\n", 1)[1].split("\n## ", 1)[0].strip()
    assert unreleased

    done = release(clone, "dispy-node", "0.2.0")
    assert done.returncode == 0, done.stderr
    assert "released dispy-node 0.2.0" in done.stdout and "tag dispy-node-v0.2.0" in done.stdout

    # One commit on top, changing the version and the CHANGELOG, and putting the new wheel
    # in place of the previous release's in the tree; the tree is clean.
    assert git(clone, "log", "-1", "--format=%s").strip() == "release dispy-node 0.2.0"
    assert git(clone, "rev-parse", "HEAD~1").strip() == head
    assert sorted(git(clone, "diff", "--no-renames", "--name-status", "HEAD~1").splitlines()) == [
        "A\tintegration-tests/releases/dispy_node-0.2.0-py3-none-any.whl",
        "D\tintegration-tests/releases/dispy_node-0.1.0-py3-none-any.whl",
        "M\tpackages/dispy-node/CHANGELOG.md", "M\tpackages/dispy-node/src/dispy_node/__about__.py"]
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""
    # The annotated tag, on that commit.
    assert git(clone, "cat-file", "-t", "dispy-node-v0.2.0").strip() == "tag"
    assert git(clone, "rev-list", "-n1", "dispy-node-v0.2.0").strip() == git(clone, "rev-parse", "HEAD").strip()
    # The version and the CHANGELOG.
    about = (clone / "packages/dispy-node/src/dispy_node/__about__.py").read_text()
    assert '__version__ = "0.2.0"' in about
    today = datetime.date.today().isoformat()
    text = changelog.read_text()
    assert text.startswith(f"# Changelog\n\n## Unreleased\n\n## 0.2.0 ({today})\n{unreleased}\n\n## 0.1.0 (2026-12-07)\n")
    # The other packages are untouched.
    assert '__version__ = "0.1.0"' in (clone / "packages/dispy-core/src/dispy_core/__about__.py").read_text()

    # The built files: the new version, dispy-core's range, the node's modules, no tests.
    dist = clone / "dist" / "dispy-node"
    wheel, sdist = dist / "dispy_node-0.2.0-py3-none-any.whl", dist / "dispy_node-0.2.0.tar.gz"
    assert sorted(dist.iterdir()) == [wheel, sdist]
    assert (clone / "integration-tests/releases" / wheel.name).read_bytes() == wheel.read_bytes()
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read("dispy_node-0.2.0.dist-info/METADATA").decode()
        entry_points = zf.read("dispy_node-0.2.0.dist-info/entry_points.txt").decode()
    assert "Version: 0.2.0" in meta and "Requires-Dist: dispy-core<0.2,>=0.1.0" in meta
    assert "dispy_node/cli.py" in names and "dispy_node/py.typed" in names
    assert not [n for n in names if "test" in n.split("/")[0] or "__pycache__" in n]
    assert "dispynode = dispy_node.cli:main" in entry_points
    with tarfile.open(sdist) as tf:
        assert not [n for n in tf.getnames() if "/tests/" in n]

    # Nothing left unreleased: the next release of the node is refused until there is.
    assert_refused(clone, ("dispy-node", "0.2.1"), "'## Unreleased' section is empty")

    # The checks of the built files catch what should not ship and what is missing.
    package = tool.read_package(clone, "dispy-node")
    tool.check_distributions(package, tool.Version("0.2.0"), [wheel, sdist])  # as built: passes
    bad = clone / "bad"
    bad.mkdir()
    bad_wheel = bad / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad_wheel, "w") as dst:
        for item in src.infolist():
            if item.filename == "dispy_node/py.typed":
                continue
            data = src.read(item)
            if item.filename.endswith("entry_points.txt"):
                data = data.replace(b"dispy_node.cli:main", b"dispy_node.cli:run")
            dst.writestr(item, data)
        dst.writestr("dispy_node/__pycache__/cli.cpython-313.pyc", b"")
        dst.writestr("tests/test_node.py", b"")
    with pytest.raises(tool.Refusal) as refused:
        tool.check_distributions(package, tool.Version("0.2.0"), [bad_wheel, sdist])
    message = str(refused.value)
    assert "dispy_node/py.typed is missing" in message
    assert "dispy_node/__pycache__/cli.cpython-313.pyc should not be in it" in message
    assert "tests/test_node.py should not be in it" in message
    assert "dispy_node.cli defines no function run" in message
    # A wheel of another version is not this release's.
    with pytest.raises(tool.Refusal, match="expected dispy_node-0.2.1"):
        tool.check_distributions(package, tool.Version("0.2.1"), [wheel, sdist])
