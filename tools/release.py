"""Release one package of the monorepo: ``./dev release PKG VERSION [--dry-run]``.

This module owns the release step and the checks of what it builds:

1. Refusals, all checked before anything changes (each is one line, exit status 2): an
   unknown package, a version that is not a canonical PEP 440 version, a dirty tree, a
   version not newer than the package's current version and its newest tag
   (``PKG-vX.Y.Z``), an empty ``## Unreleased`` section in the package's CHANGELOG.md, a
   ``dispy-core`` requirement that is not a bounded range or does not include the
   dispy-core version in the tree, and, releasing dispy-core itself, another package whose
   dispy-core range would not include the new version.
2. The change: ``__about__.py`` gets the version; the CHANGELOG's Unreleased entries move
   under ``## VERSION (YYYY-MM-DD)`` below a new, empty ``## Unreleased``.
3. The build, ``hatch build`` of the wheel and the sdist into ``dist/PKG/``
   (:func:`build`), and the checks of both files (:func:`check_distributions`):
   ``twine check --strict``; the metadata (name, version, Requires-Dist as declared,
   including the dispy-core range, Requires-Python); the files inside (exactly the
   package's tracked source files, so the modules, ``py.typed`` and dispy-core's web
   static files, and nothing else: no tests, no caches); the console scripts' entry points
   (as declared, each naming a function defined at the top level of a module shipped).
4. The wheel is kept in the tree: it replaces the package's previous one in
   ``integration-tests/releases/`` (:data:`RELEASES`), where the version-skew test
   (integration-tests/test_it_version_skew.py) installs the newest release of each package
   from. A checkout then needs no tags and no history to test against the previous
   release, and what it tests is the very file that was published.
5. The commit ``release PKG VERSION`` and the annotated tag ``PKG-vVERSION``.

A failed build or check puts the files back as they were; ``--dry-run`` does steps 1-3 and
then puts them back too (and keeps no wheel). The index test
(integration-tests/test_it_index.py) builds with the same :func:`build` and
:func:`check_distributions`.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import email.message
import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
CORE = "dispy-core"
#: The newest released wheel of each package, committed by each release (step 4).
RELEASES = Path("integration-tests") / "releases"
UNRELEASED = "## Unreleased"
_VERSION_LINE = re.compile(r'^__version__\s*=\s*"([^"]*)"\s*$', re.MULTILINE)
#: Specifier operators that bound a range from above (a range must have one: a package
#: can't promise to work with dispy-core releases nobody has tested it against).
_UPPER = ("<", "<=", "==", "~=", "===")


class Refusal(Exception):
    """The release can't go on; the message says why, in one line."""


@dataclass(frozen=True)
class Package:
    """What the release needs to know about one package, read from its files."""

    name: str
    directory: Path
    about: Path  # the file whose ``__version__`` hatch reads
    import_name: str  # the top-level package in the wheel
    version: Version
    requires_python: str
    dependencies: tuple[str, ...]
    scripts: dict[str, str]

    @property
    def changelog(self) -> Path:
        return self.directory / "CHANGELOG.md"

    @property
    def core_requirement(self) -> Requirement | None:
        for text in self.dependencies:
            req = Requirement(text)
            if canonicalize_name(req.name) == CORE:
                return req
        return None


def read_package(root: Path, name: str) -> Package:
    directory = root / "packages" / name
    pyproject_path = directory / "pyproject.toml"
    if not pyproject_path.is_file():
        known = ", ".join(p.name for p in packages(root))
        raise Refusal(f"no package {name!r} (packages: {known})")
    with pyproject_path.open("rb") as fh:
        pyproject = tomllib.load(fh)
    project = pyproject["project"]
    hatch = pyproject["tool"]["hatch"]
    about = directory / hatch["version"]["path"]
    found = _VERSION_LINE.search(about.read_text())
    if found is None:
        raise Refusal(f"{about.relative_to(root)} has no line __version__ = \"...\"")
    (wheel_package,) = hatch["build"]["targets"]["wheel"]["packages"]
    return Package(
        name=project["name"],
        directory=directory,
        about=about,
        import_name=Path(wheel_package).name,
        version=Version(found.group(1)),
        requires_python=project["requires-python"],
        dependencies=tuple(project.get("dependencies", ())),
        scripts=dict(project.get("scripts", {})),
    )


def packages(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "packages").glob("*/pyproject.toml"))


# -- git -----------------------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise Refusal(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def newest_tag(root: Path, name: str) -> Version | None:
    """The newest version among the tags ``NAME-vX.Y.Z`` (tags that don't parse are not releases)."""
    versions = []
    for tag in git(root, "tag", "--list", f"{name}-v*").split():
        try:
            versions.append(Version(tag[len(name) + 2:]))
        except InvalidVersion:
            continue
    return max(versions, default=None)


# -- the CHANGELOG -------------------------------------------------------------------------
def unreleased_entries(text: str) -> tuple[int, int]:
    """The span of the lines between ``## Unreleased`` and the next ``## `` heading."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    heading = next((i for i, line in enumerate(lines) if line.rstrip() == UNRELEASED), None)
    if heading is None:
        raise Refusal(f"the CHANGELOG has no {UNRELEASED!r} heading")
    end = next((i for i in range(heading + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return offsets[heading + 1], offsets[end]


def move_unreleased(text: str, version: Version, day: datetime.date) -> str:
    start, end = unreleased_entries(text)
    entries = text[start:end].strip("\n")
    rest = text[end:]
    return f"{text[:start]}\n## {version} ({day.isoformat()})\n{entries}\n" + (f"\n{rest}" if rest else "")


# -- the checks before any change ----------------------------------------------------------
def core_range_problem(package: Package, core_version: Version) -> str | None:
    """Why PACKAGE's dispy-core requirement does not admit CORE_VERSION (None: it does)."""
    req = package.core_requirement
    if req is None:
        return None
    if not req.specifier:
        return f"{package.name} requires {CORE} with no version range (declare '{CORE}>=X,<Y')"
    if not any(spec.operator in _UPPER for spec in req.specifier):
        return f"{package.name}'s {CORE} range {req.specifier} has no upper bound (declare '{CORE}>=X,<Y')"
    if not req.specifier.contains(core_version, prereleases=True):
        return f"{package.name}'s {CORE} range {req.specifier} does not include {CORE} {core_version}"
    return None


def check(root: Path, name: str, version_text: str) -> tuple[Package, Version]:
    """Every refusal, in order; returns the package and the new version when none applies."""
    package = read_package(root, name)
    try:
        version = Version(version_text)
    except InvalidVersion:
        raise Refusal(f"{version_text!r} is not a version (PEP 440, e.g. 0.2.0)") from None
    if str(version) != version_text:
        raise Refusal(f"write the version as {version} (its canonical form), not {version_text!r}")
    dirty = git(root, "status", "--porcelain", "--untracked-files=all")
    if dirty.strip():
        first = dirty.splitlines()[0].strip()
        raise Refusal(f"the tree has changes not committed ({first}{', ...' if dirty.count(chr(10)) > 1 else ''}): commit or remove them first")
    if version <= package.version:
        raise Refusal(f"{name} {version} is not newer than the version in the tree, {package.version}")
    tagged = newest_tag(root, name)
    if tagged is not None and version <= tagged:
        raise Refusal(f"{name} {version} is not newer than its newest tag, {name}-v{tagged}")
    start, end = unreleased_entries(package.changelog.read_text())
    if not package.changelog.read_text()[start:end].strip():
        raise Refusal(f"{package.changelog.relative_to(root)}: the {UNRELEASED!r} section is empty: "
                      "say what this release changes")
    if name == CORE:
        problems = [problem for other in packages(root) if other.name != CORE
                    if (problem := core_range_problem(read_package(root, other.name), version))]
        if problems:
            raise Refusal("; ".join(problems) + ": widen the ranges (once tested with it) before releasing "
                          f"{CORE} {version}")
    else:
        if package.core_requirement is None:
            raise Refusal(f"{name} declares no {CORE} requirement")
        core = read_package(root, CORE)
        problem = core_range_problem(package, core.version)
        if problem:
            raise Refusal(f"{problem} (the version in the tree)")
    return package, version


# -- the build and the checks of what it built ---------------------------------------------
def build(package_dir: Path, out: Path) -> list[Path]:
    """``hatch build`` of PACKAGE_DIR's wheel and sdist into OUT (emptied first); the files."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # The hatch installed beside this Python (the release and py3.13 test environments
    # have it), else the one on PATH (./dev's).
    if importlib.util.find_spec("hatch") is not None:
        hatch = [sys.executable, "-m", "hatch"]
    elif shutil.which("hatch") is not None:
        hatch = ["hatch"]
    else:
        raise Refusal("hatch is not installed (./dev release runs in the hatch environment 'release', which has it)")
    # A `hatch run` around us sets which environment is active; the build of the package
    # (a project of its own) must not look for that environment there.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HATCH_ENV")}
    done = subprocess.run([*hatch, "build", "-t", "wheel", "-t", "sdist", str(out)],
                          cwd=package_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise Refusal(f"hatch build failed in {package_dir} (exit {done.returncode}): {last}")
    return sorted(out.iterdir())


def _metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def _check_metadata(package: Package, version: Version, meta: email.message.Message, where: str) -> list[str]:
    problems = []
    if meta["Name"] != package.name:
        problems.append(f"{where}: Name is {meta['Name']!r}, not {package.name!r}")
    if meta["Version"] != str(version):
        problems.append(f"{where}: Version is {meta['Version']!r}, not {version}")
    if meta["Requires-Python"] != package.requires_python:
        problems.append(f"{where}: Requires-Python is {meta['Requires-Python']!r}, not {package.requires_python!r}")
    declared = {str(Requirement(text)) for text in package.dependencies}
    found = {str(Requirement(text)) for text in meta.get_all("Requires-Dist") or []}
    if found != declared:
        problems.append(f"{where}: Requires-Dist is {sorted(found)}, not {sorted(declared)}")
    return problems


def _tracked_sources(package: Package) -> set[str]:
    """The package's source files, relative to src/ (what the wheel ships): the files git
    tracks or would (not ignored). A release's tree is clean, so there they are the tracked
    ones; the index test builds a working tree, where a new module may not be committed yet."""
    src = package.directory / "src"
    listed = git(package.directory, "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 "--", "src").split("\0")
    return {str((package.directory / path).relative_to(src)) for path in listed if path}


def check_distributions(package: Package, version: Version, files: list[Path]) -> None:
    """Raise :class:`Refusal` listing every problem found in the built wheel and sdist."""
    norm = package.name.replace("-", "_")
    wheel = next((f for f in files if f.name == f"{norm}-{version}-py3-none-any.whl"), None)
    sdist = next((f for f in files if f.name == f"{norm}-{version}.tar.gz"), None)
    if wheel is None or sdist is None or len(files) != 2:
        raise Refusal(f"expected {norm}-{version}-py3-none-any.whl and {norm}-{version}.tar.gz, "
                      f"built {[f.name for f in files]}")
    problems: list[str] = []
    if importlib.util.find_spec("twine") is None:
        raise Refusal("twine is not installed (./dev release runs in the hatch environment 'release', which has it)")
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                           capture_output=True, text=True)
    if twine.returncode != 0:
        problems.append("twine check --strict: " + " ".join((twine.stdout + twine.stderr).split()))

    sources = _tracked_sources(package)
    dist_info = f"{norm}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = _metadata(zf.read(f"{dist_info}/METADATA").decode())
        problems += _check_metadata(package, version, meta, wheel.name)
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode() if f"{dist_info}/entry_points.txt" in names else ""
        shipped = {name for name in names if not name.startswith(f"{dist_info}/")}
        problems += [f"{wheel.name}: {name} is missing" for name in sorted(sources - shipped)]
        problems += [f"{wheel.name}: {name} should not be in it" for name in sorted(shipped - sources)]
        required = {f"{package.import_name}/__init__.py", f"{package.import_name}/py.typed"}
        if package.name == CORE:
            required |= {n for n in sources if n.startswith(f"{package.import_name}/web/static/")} or {
                f"{package.import_name}/web/static/ (the web pages)"}
        problems += [f"{wheel.name}: has no {name}" for name in sorted(required - names)]
        problems += _check_scripts(package, entry_points, zf, wheel.name)

    prefix = f"{norm}-{version}/"
    with tarfile.open(sdist) as tf:
        members = {m.name for m in tf.getmembers() if m.isfile()}
        pkg_info = tf.extractfile(f"{prefix}PKG-INFO")
        if pkg_info is None:
            problems.append(f"{sdist.name}: no PKG-INFO")
        else:
            problems += _check_metadata(package, version, _metadata(pkg_info.read().decode()), sdist.name)
    # .gitignore: hatchling puts the ignore file it used in the sdist (the monorepo's), so
    # that a wheel built from the sdist leaves out the same files.
    expected = {prefix + name for name in ("PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md", ".gitignore")}
    expected |= {f"{prefix}src/{name}" for name in sources}
    problems += [f"{sdist.name}: {name} is missing" for name in sorted(expected - members)]
    problems += [f"{sdist.name}: {name} should not be in it" for name in sorted(members - expected)]
    if problems:
        raise Refusal(f"{len(problems)} problem(s) in the built files: " + "; ".join(problems))


def _check_scripts(package: Package, entry_points: str, zf: zipfile.ZipFile, where: str) -> list[str]:
    """The wheel's console scripts are the declared ones, each a function its module defines."""
    found: dict[str, str] = {}
    section = None
    for line in entry_points.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    problems = []
    if found != package.scripts:
        problems.append(f"{where}: console scripts are {found}, not {package.scripts}")
    for script, target in found.items():
        module, _, function = target.partition(":")
        path = module.replace(".", "/") + ".py"
        if path not in zf.namelist():
            path = module.replace(".", "/") + "/__init__.py"
        if path not in zf.namelist():
            problems.append(f"{where}: script {script}: module {module} is not in the wheel")
            continue
        tree = ast.parse(zf.read(path))
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if function not in defined:
            problems.append(f"{where}: script {script}: {module} defines no function {function}")
    return problems


# -- the release ---------------------------------------------------------------------------
def release_wheels(root: Path, package: Package) -> list[Path]:
    """The package's wheels in :data:`RELEASES` (one, once it has been released)."""
    prefix = canonicalize_name(package.name).replace("-", "_")
    return sorted((root / RELEASES).glob(f"{prefix}-*.whl"))


def keep_wheel(root: Path, package: Package, version: Version, out: Path) -> list[Path]:
    """Put the new wheel in :data:`RELEASES` in place of the previous one; the paths changed
    (relative to ``root``), for the release commit."""
    previous = release_wheels(root, package)
    for old in previous:
        old.unlink()
    wheel = next(out.glob(f"*-{version}-*.whl"))
    (root / RELEASES).mkdir(parents=True, exist_ok=True)
    kept = shutil.copy2(wheel, root / RELEASES / wheel.name)
    return [p.relative_to(root) for p in (*previous, Path(kept))]


def release(root: Path, name: str, version_text: str, dry_run: bool = False,
            day: datetime.date | None = None) -> str:
    """Check, change, build, check the built files, commit and tag; a summary line."""
    package, version = check(root, name, version_text)
    day = day or datetime.date.today()
    before = {path: path.read_text() for path in (package.about, package.changelog)}
    package.about.write_text(_VERSION_LINE.sub(f'__version__ = "{version}"', before[package.about], count=1))
    package.changelog.write_text(move_unreleased(before[package.changelog], version, day))
    out = root / "dist" / name
    keep = False
    try:
        check_distributions(package, version, build(package.directory, out))
        keep = not dry_run
    finally:
        if not keep:
            for path, text in before.items():
                path.write_text(text)
    if dry_run:
        return f"dry run: {name} {version} passes every check; built {out} (nothing committed or tagged)"
    kept = keep_wheel(root, package, version, out)
    paths = [str(p.relative_to(root)) for p in before] + [str(p) for p in kept]
    git(root, "add", "-A", "--", *paths)
    git(root, "commit", "-q", "-m", f"release {name} {version}", "--", *paths)
    tag = f"{name}-v{version}"
    git(root, "tag", "-a", tag, "-m", f"{name} {version}")
    return (f"released {name} {version}: commit 'release {name} {version}', tag {tag}, files in {out}; "
            f"publish with: git push origin HEAD {tag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev release", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="the distribution name, e.g. dispy-node")
    parser.add_argument("version", help="the new version, e.g. 0.2.0")
    parser.add_argument("--dry-run", action="store_true", help="check and build, then change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        print(release(args.root.resolve(), args.package, args.version, dry_run=args.dry_run))
    except Refusal as refusal:
        print(f"release refused: {refusal}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
