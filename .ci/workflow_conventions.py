"""The project's conventions for its GitHub Actions workflows (.github/workflows/), the
ones GitHub's workflow schema can't see. They cannot run here, so `./dev test`'s checks
suite checks them: the schema with check-jsonschema, these conventions with this module
(run as a script, or through .ci/test_workflow_conventions.py).

What is expected is derived from the tree, so that a new package or Python fails the
check until the workflows cover it:

- the test workflow (test.yml), triggered by push and pull_request, with a concurrency
  group and a timeout on every job, runs `test.pyX:all` for each Python of hatch.toml's
  test matrix (in a job that sets up Python X), `ENV:test` for each `*-only` environment
  of hatch.toml, `checks:all`, and runs a full suite as root (`sudo -E`: the namespace
  tests skip themselves otherwise);
- each package (packages/*/pyproject.toml) has exactly one release workflow,
  release-PACKAGE.yml, triggered only by pushing a tag PACKAGE-v*, that builds only that
  package (`hatch build` in packages/PACKAGE), checks it (`twine check --strict`), checks
  the tag's version against the package's (`hatch version`), and publishes it with
  pypa/gh-action-pypi-publish from a job with `id-token: write` and the `pypi`
  environment, with no password or token (trusted publishing; no `secrets.` at all);
- the release workflows are the same text but for the package's name;
- every action is pinned to a major version (`@v4`, `@release/v1`).
"""

from __future__ import annotations

import itertools
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

WORKFLOWS = Path(".github") / "workflows"
TEST_WORKFLOW = "test.yml"
PUBLISH_ACTION = "pypa/gh-action-pypi-publish"
#: `with:` inputs of the publish action that would carry a stored credential.
CREDENTIAL_INPUTS = {"password", "user", "username", "token", "api-token"}
_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(?:v\d+|release/v\d+)$")
_MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.([\w-]+)\s*\}\}")
_RUNNER = r"(?:hatch|\./dev)\s+run\s+"


def distributions(root: Path) -> list[str]:
    """The distribution names of packages/*/pyproject.toml."""
    names = []
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        with pyproject.open("rb") as fh:
            names.append(str(tomllib.load(fh)["project"]["name"]))
    return names


def _hatch(root: Path) -> dict[str, Any]:
    with (root / "hatch.toml").open("rb") as fh:
        return tomllib.load(fh)


def hatch_test_pythons(root: Path) -> set[str]:
    """The Pythons of hatch.toml's test matrix (environments test.py3.X)."""
    test = _hatch(root)["envs"]["test"]
    return {str(v) for entry in test.get("matrix", []) for v in entry.get("python", [])}


def single_installs(root: Path) -> set[str]:
    """hatch.toml's `*-only` environments (one package with dispy-core, installed alone)."""
    return {name for name in _hatch(root)["envs"] if name.endswith("-only")}


def load_workflow(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        # libyaml's loader when PyYAML has it (ten times faster), the same YAML either way.
        data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    on = workflow.get("on")
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {str(name): None for name in on}
    return dict(on or {})


def matrix_combinations(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's matrix combinations, as GitHub expands them (lists, exclude, include)."""
    matrix = (job.get("strategy") or {}).get("matrix")
    if not isinstance(matrix, dict):
        return [{}]  # no matrix, or an expression that only GitHub can evaluate
    keys = [key for key in matrix if key not in ("include", "exclude")]
    includes: list[dict[str, Any]] = [dict(entry) for entry in matrix.get("include") or []]
    if not keys:
        return includes or [{}]
    combos = [dict(zip(keys, values)) for values in itertools.product(*(matrix[k] for k in keys))]
    for exclude in matrix.get("exclude") or []:
        combos = [c for c in combos if any(c.get(k) != v for k, v in exclude.items())]
    originals = list(combos)
    for include in includes:
        matched = False
        for combo in originals:
            if all(combo[k] == v for k, v in include.items() if k in keys):
                combo.update({k: v for k, v in include.items() if k not in keys})
                matched = True
        if not matched:
            combos.append(include)
    return combos


def job_scripts(job: dict[str, Any]) -> list[str]:
    """The job's shell scripts (its steps' `run:`), one text per matrix combination, with
    `${{ matrix.KEY }}` replaced by the combination's value."""
    text = "\n".join(str(step["run"]) for step in job.get("steps") or [] if "run" in step)
    return [_MATRIX_REF.sub(lambda m: str(combo.get(m.group(1), m.group(0))), text)
            for combo in matrix_combinations(job)]


def _uses(workflow: dict[str, Any]) -> list[str]:
    found = []
    for job in (workflow.get("jobs") or {}).values():
        if "uses" in job:
            found.append(str(job["uses"]))
        found.extend(str(step["uses"]) for step in job.get("steps") or [] if "uses" in step)
    return found


def check_test_workflow(root: Path) -> list[str]:
    path = root / WORKFLOWS / TEST_WORKFLOW
    if not path.exists():
        return [f"{path.relative_to(root)} is missing"]
    name = str(path.relative_to(root))
    workflow = load_workflow(path)
    problems = []
    on = triggers(workflow)
    for event in ("push", "pull_request"):
        if event not in on:
            problems.append(f"{name}: not triggered by {event}")
    if not workflow.get("concurrency"):
        problems.append(f"{name}: no concurrency group (a newer push should cancel the older run)")
    jobs: dict[str, dict[str, Any]] = workflow.get("jobs") or {}
    for job_id, job in jobs.items():
        if "timeout-minutes" not in job:
            problems.append(f"{name}: job {job_id} has no timeout-minutes")
    scripts = [script for job in jobs.values() for script in job_scripts(job)]
    everything = "\n".join(scripts)

    ran_pythons = set(re.findall(_RUNNER + r"test\.py([\d.]+):all", everything))
    for python in sorted(hatch_test_pythons(root) - ran_pythons):
        problems.append(f"{name}: no job runs the full suite on Python {python} "
                        f"(hatch run test.py{python}:all; hatch.toml's test matrix has it)")
    for python in sorted(ran_pythons - hatch_test_pythons(root)):
        problems.append(f"{name}: runs test.py{python}:all, which hatch.toml's test matrix lacks")

    ran_installs = set(re.findall(_RUNNER + r"([\w-]+-only):test", everything))
    for install in sorted(single_installs(root) - ran_installs):
        problems.append(f"{name}: no job runs the {install} install (hatch run {install}:test)")
    for install in sorted(ran_installs - single_installs(root)):
        problems.append(f"{name}: runs {install}:test, which hatch.toml does not define")

    # A suite on Python X needs X set up in its job (hatch never downloads a Python).
    for job_id, job in jobs.items():
        for combo in matrix_combinations(job):
            setup = " ".join(str((step.get("with") or {}).get("python-version", ""))
                             for step in job.get("steps") or []
                             if str(step.get("uses", "")).startswith("actions/setup-python@"))
            setup = _MATRIX_REF.sub(lambda m: str(combo.get(m.group(1), m.group(0))), setup)
            script = "\n".join(str(step["run"]) for step in job.get("steps") or [] if "run" in step)
            script = _MATRIX_REF.sub(lambda m: str(combo.get(m.group(1), m.group(0))), script)
            for python in sorted(set(re.findall(_RUNNER + r"test\.py([\d.]+):all", script))):
                if python not in setup.split():
                    problems.append(f"{name}: job {job_id} runs test.py{python}:all "
                                    f"but does not set up Python {python}")
    if not re.search(_RUNNER + r"checks:all", everything):
        problems.append(f"{name}: no job runs the checks suite (hatch run checks:all)")
    if not any(re.search(r"sudo -E\b.*" + _RUNNER + r"test\.py[\d.]+:all", s) for s in scripts):
        problems.append(f"{name}: no full suite runs as root (sudo -E): the namespace tests "
                        "would skip themselves everywhere")
    return problems


def _publish_problems(name: str, workflow: dict[str, Any]) -> list[str]:
    problems = []
    publishing = [(job_id, job) for job_id, job in (workflow.get("jobs") or {}).items()
                  if any(str(step.get("uses", "")).startswith(PUBLISH_ACTION + "@")
                         for step in job.get("steps") or [])]
    if len(publishing) != 1:
        problems.append(f"{name}: {len(publishing)} jobs publish with {PUBLISH_ACTION} (expected 1)")
    for job_id, job in publishing:
        if (job.get("permissions") or {}).get("id-token") != "write":
            problems.append(f"{name}: job {job_id} publishes without `permissions: id-token: write` "
                            "(trusted publishing needs it)")
        environment = job.get("environment")
        if isinstance(environment, dict):
            environment = environment.get("name")
        if environment != "pypi":
            problems.append(f"{name}: job {job_id} publishes outside the `pypi` environment")
        for step in job.get("steps") or []:
            if str(step.get("uses", "")).startswith(PUBLISH_ACTION + "@"):
                given = CREDENTIAL_INPUTS & set(step.get("with") or {})
                if given:
                    problems.append(f"{name}: job {job_id} gives {PUBLISH_ACTION} "
                                    f"{', '.join(sorted(given))}: publish with trusted publishing, "
                                    "no stored credential")
    top = workflow.get("permissions")
    if top == "write-all" or (isinstance(top, dict) and top.get("id-token") == "write"):
        problems.append(f"{name}: the whole workflow may request an id-token; "
                        "only the publishing job should")
    return problems


def check_release_workflows(root: Path) -> list[str]:
    problems = []
    dists = distributions(root)
    found: dict[str, list[Path]] = {dist: [] for dist in dists}
    normalized = {dist: re.sub(r"[-_.]+", "_", dist).lower() for dist in dists}
    for path in sorted((root / WORKFLOWS).glob("*.y*ml")):
        name = str(path.relative_to(root))
        workflow = load_workflow(path)
        on = triggers(workflow)
        push = on.get("push") or {}
        tags = push.get("tags") if isinstance(push, dict) else None
        is_release = bool(tags) or path.name.startswith("release-")
        if not is_release:
            continue
        patterns = [str(t) for t in tags or []]
        owners = [d for d in dists if patterns == [f"{d}-v*"]]
        if not owners:
            problems.append(f"{name}: triggered by tags {patterns}, expected exactly one "
                            "pattern PACKAGE-v* for a package of packages/")
            continue
        dist = owners[0]
        found[dist].append(path)
        if path.name != f"release-{dist}.yml":
            problems.append(f"{name}: releases {dist}, so it should be named release-{dist}.yml")
        if set(on) != {"push"} or set(push) != {"tags"}:
            problems.append(f"{name}: must be triggered only by pushing a {dist}-v* tag "
                            f"(has {sorted(on)}, push: {sorted(push)})")
        text = path.read_text()
        for other in dists:
            if other != dist and f"packages/{other}" in text:
                problems.append(f"{name}: touches packages/{other}; it must build {dist} only")
        steps = [step for job in (workflow.get("jobs") or {}).values() for step in job.get("steps") or []]
        builds = [s for s in steps if "hatch build" in str(s.get("run", ""))
                  and (s.get("working-directory") == f"packages/{dist}"
                       or f"cd packages/{dist}" in str(s.get("run")))]
        if not builds:
            problems.append(f"{name}: no step runs `hatch build` in packages/{dist}")
        runs = "\n".join(str(s.get("run", "")) for s in steps)
        if "twine check --strict" not in runs:
            problems.append(f"{name}: does not check the distributions with `twine check --strict`")
        if "hatch version" not in runs or not re.search(r"GITHUB_REF_NAME|github\.ref_name", runs):
            problems.append(f"{name}: does not check the tag's version against the package's "
                            "(hatch version and GITHUB_REF_NAME)")
        if "secrets." in text:
            problems.append(f"{name}: uses a stored secret; publishing uses trusted publishing only")
        problems.extend(_publish_problems(name, workflow))

    for dist, paths in found.items():
        if len(paths) != 1:
            listed = ", ".join(str(p.relative_to(root)) for p in paths) or "none"
            problems.append(f"{dist}: {len(paths)} release workflows ({listed}), expected exactly one")

    # Same text but for the package's name: a fix made to one is made to all.
    generic: dict[str, list[str]] = {}
    for dist, paths in found.items():
        if len(paths) == 1:
            text = paths[0].read_text().replace(dist, "PACKAGE").replace(normalized[dist], "PACKAGE_")
            generic.setdefault(text, []).append(paths[0].name)
    if len(generic) > 1:
        groups = sorted(generic.values(), key=len, reverse=True)
        odd = ", ".join(n for group in groups[1:] for n in group)
        problems.append(f"release workflows differ beyond the package's name: {odd} "
                        f"vs {', '.join(groups[0])}")
    return problems


def check_pinned_actions(root: Path) -> list[str]:
    problems = []
    for path in sorted((root / WORKFLOWS).glob("*.y*ml")):
        for uses in _uses(load_workflow(path)):
            if not uses.startswith("./") and not _PINNED.match(uses):
                problems.append(f"{path.relative_to(root)}: {uses} is not pinned to a major "
                                "version (@vN or @release/vN)")
    return problems


def problems(root: Path) -> list[str]:
    """Every way the workflows under ``root`` break the conventions (empty: none)."""
    return check_test_workflow(root) + check_release_workflows(root) + check_pinned_actions(root)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    found = problems(root)
    for problem in found:
        print(problem, file=sys.stderr)
    if not found:
        print(f"{WORKFLOWS}: the conventions hold")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
