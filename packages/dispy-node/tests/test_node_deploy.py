"""The deployment files shipped in dispy-node (dispy_node/deploy): they are in the built
wheel, ``python -m dispy_node.deploy`` gives them from an installed copy, the systemd
unit passes ``systemd-analyze verify``, and the Dockerfile's default command is the node
with the documented options (images can't be built here: no registry for the base image)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dispy_core import config
from dispy_node import deploy
from dispy_node.cli import build_parser

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SOURCE = PACKAGE_DIR / "src" / "dispy_node" / "deploy"
NAMES = ["Dockerfile", "dispynode.service"]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def _deploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispy_node.deploy", *args], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dispy-node's wheel, built from the sources as a release builds it (hatchling)."""
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(PACKAGE_DIR)],
                       capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stdout + p.stderr
    (built,) = out.glob("dispy_node-*.whl")
    return built


def test_the_wheel_ships_the_files_and_the_documented_command_prints_them(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        for name in NAMES:
            assert z.read(f"dispy_node/deploy/{name}").decode() == (SOURCE / name).read_text()
        z.extractall(tmp_path / "site")
    # Run the command against the wheel's copy of dispy_node (dispy_core comes from the
    # environment), not the source tree: what a user with the installed package runs.
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    listing = _deploy(env=env)
    assert listing.returncode == 0, listing.stderr
    assert str(tmp_path / "site" / "dispy_node" / "deploy") in listing.stdout
    for name in NAMES:
        assert name in listing.stdout
        shown = _deploy(name, env=env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == (SOURCE / name).read_text()
    copied = _deploy("--copy", str(tmp_path / "copy"), env=env)
    assert copied.returncode == 0, copied.stderr
    assert sorted(os.listdir(tmp_path / "copy")) == sorted(NAMES)
    for name in NAMES:
        assert (tmp_path / "copy" / name).read_text() == (SOURCE / name).read_text()


def test_copy_does_not_overwrite_an_operators_file_unless_forced(tmp_path):
    (tmp_path / "dispynode.service").write_text("# edited by the operator\n")
    p = _deploy("--copy", str(tmp_path))
    assert p.returncode == 1
    assert "dispynode.service" in p.stderr and "nothing was written" in p.stderr
    assert (tmp_path / "dispynode.service").read_text() == "# edited by the operator\n"
    assert not (tmp_path / "Dockerfile").exists()
    p = _deploy("--copy", str(tmp_path), "--force")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "dispynode.service").read_text() == deploy.text("dispynode.service")


def test_an_unknown_file_name_is_refused_naming_the_files():
    p = _deploy("nginx.conf")
    assert p.returncode == 2
    assert "Dockerfile" in p.stderr and "dispynode.service" in p.stderr
    with pytest.raises(KeyError, match="there are Dockerfile, dispynode.service"):
        deploy.text("nginx.conf")


def test_dispynode_help_says_where_the_deployment_files_are():
    assert "python -m dispy_node.deploy lists them" in " ".join(build_parser().format_help().split())


def _unit_lines(text: str) -> dict[str, list[str]]:
    """key -> values of the unit's settings (comments and sections left out)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(not os.access(SYSTEMD_ANALYZE, os.X_OK), reason="needs systemd-analyze (systemd)")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    unit = deploy.text("dispynode.service")
    settings = _unit_lines(unit)
    documented = "/opt/dispynode/bin/dispynode"
    (exec_start,) = settings["ExecStart"]
    assert exec_start.startswith(documented + " --daemon ")
    # verify checks that ExecStart's program exists: point it at this environment's
    # dispynode, the one thing changed.
    here = os.path.join(os.path.dirname(sys.executable), "dispynode")
    assert os.access(here, os.X_OK), here
    (tmp_path / "dispynode.service").write_text(unit.replace(documented, here))
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", str(tmp_path / "dispynode.service")],
                       capture_output=True, text=True, timeout=60)
    # verify reports unknown keys and bad values as messages but may still exit 0
    assert p.returncode == 0 and p.stdout + p.stderr == "", p.stdout + p.stderr
    # The hardening the documentation promises.
    for key, value in [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("Restart", "on-failure"),
                       ("NoNewPrivileges", "yes"), ("KillMode", "mixed"), ("StateDirectory", "dispynode"),
                       ("EnvironmentFile", "-/etc/default/dispynode"),
                       ("LoadCredential", "dispynode.ini:/etc/dispynode/dispynode.ini")]:
        assert settings[key] == [value], key
    # The options ExecStart gives dispynode parse, as the node parses them.
    args = build_parser().parse_args(exec_start.split()[1:-1])
    assert args.daemon and args.config == "%d/dispynode.ini" and args.dest_path_prefix == "%S/dispynode"
    assert exec_start.split()[-1] == "$DISPYNODE_ARGS"


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return instructions


def test_the_dockerfile_runs_the_node_with_the_documented_options():
    instructions = _dockerfile_instructions(deploy.text("Dockerfile"))
    words = [word for word, _ in instructions]
    known = {"ARG", "FROM", "RUN", "USER", "WORKDIR", "EXPOSE", "STOPSIGNAL", "CMD", "ENV", "LABEL"}
    assert set(words) <= known, set(words) - known
    # Only ARGs before FROM (the base image's Python version is one).
    assert all(w == "ARG" for w in words[:words.index("FROM")])
    assert dict(instructions)["FROM"] == "python:${PYTHON_VERSION}-slim"
    args = dict(a.partition("=")[::2] for w, a in instructions if w == "ARG")
    # A Python the packages support (requires-python >= 3.11); the version is a build arg.
    major, minor = args["PYTHON_VERSION"].split(".")
    assert (int(major), int(minor)) >= (3, 11) and args["DISPY_NODE_VERSION"] == '""'
    (run,) = [a for w, a in instructions if w == "RUN"]
    assert 'dispy-node==$DISPY_NODE_VERSION' in run and "pip install --no-cache-dir" in run
    # Jobs don't run as root.
    (user,) = [a for w, a in instructions if w == "USER"]
    assert user not in ("root", "0")
    (exposed,) = [a for w, a in instructions if w == "EXPOSE"]
    assert exposed.split() == [f"{config.node_port()}/tcp", f"{config.node_port()}/udp"]
    # CMD in exec form (so the node is PID 1 and gets docker stop's signal), the node
    # with --daemon (no terminal) and --serve 1 (a fresh container per client).
    assert words[-1] == "CMD"
    cmd = json.loads(instructions[-1][1])
    assert cmd[0] == "dispynode"
    parsed = build_parser().parse_args(cmd[1:])
    assert parsed.daemon and parsed.serve == 1
    assert parsed.ip_addr is None

