"""Tests of the GitHub Actions workflows, which cannot run here: the tree follows the
conventions of .ci/workflow_conventions.py, each convention is really checked (a copy of
the tree broken in one way fails it, naming what is wrong), GitHub's workflow schema
rejects a broken workflow offline, and the release workflows' build steps, run here as
GitHub would run them, build and check the tagged package and refuse a tag whose version
is not the package's.

Run by `./dev test`'s checks suite (`hatch run checks:all`); the root conftest.py runs
each test in a directory of its own, so every path here is absolute.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_conventions() -> ModuleType:
    spec = importlib.util.spec_from_file_location("workflow_conventions", ROOT / ".ci" / "workflow_conventions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conventions = _load_conventions()
PACKAGES = conventions.distributions(ROOT)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the conventions are derived from and apply to."""
    shutil.copy(ROOT / "hatch.toml", tmp_path / "hatch.toml")
    for pyproject in ROOT.glob("packages/*/pyproject.toml"):
        (tmp_path / pyproject.parent.relative_to(ROOT)).mkdir(parents=True)
        shutil.copy(pyproject, tmp_path / pyproject.relative_to(ROOT))
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path} any more: update this test"
    path.write_text(text.replace(old, new, 1))


def problems_of(tree: Path) -> str:
    found = conventions.problems(tree)
    assert found, "the broken copy passed the conventions check"
    return "\n".join(found)


def workflow(tree: Path, name: str) -> Path:
    return tree / ".github" / "workflows" / name


def test_the_workflows_follow_the_conventions() -> None:
    assert conventions.problems(ROOT) == []


def test_the_expected_sets_come_from_the_tree() -> None:
    assert set(PACKAGES) == {"dispy-core", "dispy-client", "dispy-node", "dispy-scheduler", "dispy-relay"}
    assert conventions.hatch_test_pythons(ROOT) == {"3.11", "3.12", "3.13"}
    assert conventions.single_installs(ROOT) == {"node-only", "client-only", "scheduler-only", "relay-only"}


def test_a_new_package_needs_a_release_workflow(tree: Path) -> None:
    (tree / "packages" / "dispy-extra").mkdir()
    (tree / "packages" / "dispy-extra" / "pyproject.toml").write_text('[project]\nname = "dispy-extra"\n')
    assert "dispy-extra: 0 release workflows" in problems_of(tree)


def test_a_new_python_needs_a_job(tree: Path) -> None:
    edit(tree / "hatch.toml", 'python = ["3.11", "3.12", "3.13"]', 'python = ["3.11", "3.12", "3.13", "3.14"]')
    assert "no job runs the full suite on Python 3.14" in problems_of(tree)


def test_a_python_dropped_from_the_matrix_is_noticed(tree: Path) -> None:
    # Out of the list and out of the include entries (an include alone adds a combination).
    edit(workflow(tree, "test.yml"), 'python: ["3.11", "3.12", "3.13"]', 'python: ["3.11", "3.12"]')
    edit(workflow(tree, "test.yml"), '- python: "3.13"', '- python: "3.12"')
    assert "no job runs the full suite on Python 3.13" in problems_of(tree)


def test_a_new_single_package_install_needs_a_job(tree: Path) -> None:
    with (tree / "hatch.toml").open("a") as fh:
        fh.write('\n[envs.extra-only]\nskip-install = true\n')
    assert "no job runs the extra-only install" in problems_of(tree)


def test_a_suite_needs_its_python_set_up(tree: Path) -> None:
    edit(workflow(tree, "test.yml"), "            3.11\n            3.12\n            3.13\n",
         "            3.11\n            3.12\n")
    assert "job full runs test.py3.13:all but does not set up Python 3.13" in problems_of(tree)


def test_each_single_package_install_is_run(tree: Path) -> None:
    edit(workflow(tree, "test.yml"), "install: [node-only, client-only, scheduler-only, relay-only]",
         "install: [node-only, client-only, scheduler-only]")
    assert "no job runs the relay-only install" in problems_of(tree)


def test_the_checks_suite_and_root_runs_are_required(tree: Path) -> None:
    edit(workflow(tree, "test.yml"), "run: ./dev run checks:all", "run: ./dev run checks:mypy")
    edit(workflow(tree, "test.yml"), 'sudo -E env "PATH=$PATH" ./dev run', "./dev run")
    found = problems_of(tree)
    assert "no job runs the checks suite" in found
    assert "no full suite runs as root" in found


def test_jobs_need_a_timeout_and_the_run_a_concurrency_group(tree: Path) -> None:
    edit(workflow(tree, "test.yml"), "    timeout-minutes: 15\n", "")
    edit(workflow(tree, "test.yml"), "concurrency:", "x-concurrency:")
    found = problems_of(tree)
    assert "job checks has no timeout-minutes" in found
    assert "no concurrency group" in found


def test_a_second_release_workflow_for_a_package_is_refused(tree: Path) -> None:
    shutil.copy(workflow(tree, "release-dispy-node.yml"), workflow(tree, "release-node-again.yml"))
    found = problems_of(tree)
    assert "dispy-node: 2 release workflows" in found
    assert "release-node-again.yml: releases dispy-node, so it should be named release-dispy-node.yml" in found


def test_the_tag_pattern_must_match_the_package(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-node.yml"), 'tags: ["dispy-node-v*"]', 'tags: ["dispy-nod-v*"]')
    found = problems_of(tree)
    assert "release-dispy-node.yml: triggered by tags ['dispy-nod-v*']" in found
    assert "dispy-node: 0 release workflows" in found


def test_a_release_workflow_builds_only_its_package(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-node.yml"), "working-directory: packages/dispy-node\n        run: hatch build",
         "working-directory: packages/dispy-core\n        run: hatch build")
    found = problems_of(tree)
    assert "release-dispy-node.yml: touches packages/dispy-core" in found
    assert "release-dispy-node.yml: no step runs `hatch build` in packages/dispy-node" in found


def test_a_release_must_be_checked(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-relay.yml"), "twine check --strict", "twine check")
    edit(workflow(tree, "release-dispy-relay.yml"), 'package_version="$(hatch version)"', 'package_version="0.1.0"')
    found = problems_of(tree)
    assert "release-dispy-relay.yml: does not check the distributions with `twine check --strict`" in found
    assert "release-dispy-relay.yml: does not check the tag's version" in found
    assert "release workflows differ beyond the package's name: release-dispy-relay.yml" in found


def test_a_release_triggered_otherwise_than_by_its_tag_is_refused(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-core.yml"), "on:\n  push:\n", "on:\n  workflow_dispatch:\n  push:\n")
    assert "release-dispy-core.yml: must be triggered only by pushing a dispy-core-v* tag" in problems_of(tree)


def test_publishing_uses_trusted_publishing_only(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-client.yml"), "packages-dir: dist/",
         "packages-dir: dist/\n          password: ${{ secrets.PYPI_API_TOKEN }}")
    found = problems_of(tree)
    assert "release-dispy-client.yml: job publish gives pypa/gh-action-pypi-publish password" in found
    assert "release-dispy-client.yml: uses a stored secret" in found


def test_publishing_needs_the_id_token_and_the_pypi_environment(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-scheduler.yml"), "id-token: write", "contents: read")
    edit(workflow(tree, "release-dispy-scheduler.yml"), "name: pypi\n", "name: staging\n")
    found = problems_of(tree)
    assert "release-dispy-scheduler.yml: job publish publishes without `permissions: id-token: write`" in found
    assert "release-dispy-scheduler.yml: job publish publishes outside the `pypi` environment" in found


def test_only_the_publishing_job_gets_the_id_token(tree: Path) -> None:
    edit(workflow(tree, "release-dispy-core.yml"), "permissions:\n  contents: read",
         "permissions:\n  contents: read\n  id-token: write")
    assert "release-dispy-core.yml: the whole workflow may request an id-token" in problems_of(tree)


def test_actions_are_pinned_to_a_major_version(tree: Path) -> None:
    edit(workflow(tree, "test.yml"), "actions/checkout@v4", "actions/checkout@main")
    assert "test.yml: actions/checkout@main is not pinned to a major version" in problems_of(tree)


def test_the_matrix_is_expanded_as_github_does() -> None:
    job = {"strategy": {"matrix": {"python": ["3.11", "3.12"], "os": ["a"],
                                   "exclude": [{"python": "3.12", "os": "a"}],
                                   "include": [{"python": "3.11", "extra": 1}, {"python": "3.14"}]}},
           "steps": [{"run": "hatch run test.py${{ matrix.python }}:all ${{matrix.extra}}"}]}
    assert conventions.matrix_combinations(job) == [{"python": "3.11", "os": "a", "extra": 1}, {"python": "3.14"}]
    assert conventions.job_scripts(job) == ["hatch run test.py3.11:all 1",
                                            "hatch run test.py3.14:all ${{matrix.extra}}"]


def test_the_schema_check_rejects_a_broken_workflow_offline(tree: Path) -> None:
    # The builtin schema ships with check-jsonschema: this must not need the network, and
    # must catch a mistake (a misspelt runs-on) rather than accept anything.
    path = workflow(tree, "test.yml")
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0
    edit(path, "runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04")
    broken = subprocess.run(cmd, capture_output=True, text=True)
    assert broken.returncode != 0
    assert "runs_on" in broken.stdout + broken.stderr


# -- the release workflows' build job, run here -------------------------------------------

def run_build_job(package: str, tag: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    """Run the `run:` steps of release-PACKAGE.yml's build job as GitHub runs them (bash
    -eo pipefail, in the step's working-directory, GITHUB_ENV carried from step to step),
    on a copy of the package; the tools the job installs (hatch, twine) must be on PATH.
    Returns the first failing step's result, or the last one's."""
    shutil.copytree(ROOT / "packages" / package, workspace / "packages" / package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "dist", "build"))
    github_env = workspace / "github_env"
    github_env.touch()
    # Without hatch's own variables: under `hatch run checks:all` they would make the
    # job's hatch act on the checks environment instead of the package.
    env = {key: value for key, value in os.environ.items() if not key.startswith("HATCH_")}
    env.update(GITHUB_REF_NAME=tag, GITHUB_REF=f"refs/tags/{tag}",
               GITHUB_WORKSPACE=str(workspace), GITHUB_ENV=str(github_env))
    job = conventions.load_workflow(ROOT / conventions.WORKFLOWS / f"release-{package}.yml")["jobs"]["build"]
    result = None
    for step in job["steps"]:
        if "run" not in step or "pip install" in step["run"]:
            continue
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                                cwd=workspace / step.get("working-directory", "."), env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            return result
        for line in github_env.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
    assert result is not None
    return result


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not on PATH (run through `./dev run checks:all`, which has it)", pytrace=False)


def _version(package: str) -> str:
    """The package's version, read from where hatch reads it ([tool.hatch.version] path)."""
    with (ROOT / "packages" / package / "pyproject.toml").open("rb") as fh:
        about = tomllib.load(fh)["tool"]["hatch"]["version"]["path"]
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "packages" / package / about).read_text(), re.M)
    assert match is not None, f"no __version__ in packages/{package}/{about}"
    return match.group(1)


# One package (dispy-client: its import name, dispy, is not its distribution's) is enough:
# the other release workflows are the same text but for the name (checked above), and each
# build takes seconds.
@pytest.mark.parametrize("package", ["dispy-client"])
def test_the_release_build_job_builds_and_checks_its_package(package: str, tmp_path: Path) -> None:
    _need("hatch")
    _need("twine")
    version = _version(package)
    result = run_build_job(package, f"{package}-v{version}", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    name = package.replace("-", "_")
    assert sorted(p.name for p in (tmp_path / "dist" / package).iterdir()) == [
        f"{name}-{version}-py3-none-any.whl", f"{name}-{version}.tar.gz"]
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_release_build_job_refuses_a_tag_of_another_version(tmp_path: Path) -> None:
    _need("hatch")
    result = run_build_job("dispy-node", "dispy-node-v99.0.0", tmp_path)
    assert result.returncode != 0
    assert "tag dispy-node-v99.0.0 says 99.0.0 but packages/dispy-node is at" in result.stdout
    assert not (tmp_path / "dist").exists()
