"""The two installs users do, from a package index: ``pip install dispy-node`` on a node,
``pip install dispy-client`` on a client, and a real job between them.

The test builds dispy-core, dispy-node and dispy-client the way ``./dev release`` does
(tools/release.py: ``build`` and ``check_distributions``), starts a real ``pypiserver`` on
127.0.0.1 serving a directory of its own (uploads need a password from an htpasswd file
the test writes; no fallback to another index), uploads the distributions with
``twine upload``, and puts the wheels of the third-party dependencies there too (``pip
download``: the newest releases the packages allow, for this Python). Then two fresh
virtual environments (``python -m venv``) install from that index only (``pip install
--index-url``, with no pip configuration); the node environment's ``dispynode``
serves on 127.0.0.x and the client environment's Python runs a JobCluster on it.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dispy_core.testing import DaemonProcess, unused_port, wait_until

REPO = Path(__file__).resolve().parent.parent
NODE_IP = "127.0.0.61"
BUILT = ("dispy-core", "dispy-node", "dispy-client")
_SERVING = re.compile(r"serving (?P<cpus>\d+) CPUs at (\S+):(?P<port>\d+)")

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (no proxy for 127.0.0.1)

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(480)]


def _release_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dispy_release_tool", REPO / "tools" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def _pip_env() -> dict[str, str]:
    """The environment for pip: no configuration file or PIP_* variable adds another index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TWINE_", "VIRTUAL_ENV"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    # The index is on this machine: never through a proxy the environment may name.
    for key in ("no_proxy", "NO_PROXY"):
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.1"]))
    return env


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                          env=_pip_env(), cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout}\n{done.stderr}"
    return done


class Index:
    """A pypiserver on 127.0.0.1 serving ``directory``; uploads need ``user``/``password``."""

    def __init__(self, directory: Path, htpasswd: Path, user: str, password: str) -> None:
        self.user, self.password = user, password
        # Its log goes to a file: a pipe nobody reads while it runs would fill up and stop it.
        self.log = directory.parent / "pypiserver.log"
        for _ in range(3):  # (a port found free can be taken before the server binds it)
            self.port = unused_port("127.0.0.1")
            with self.log.open("a") as out:  # (the server has its own copy of the file)
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(self.port),
                     "-P", str(htpasswd), "-a", "update", "--disable-fallback", str(directory)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if wait_until(lambda: self.proc.poll() is not None or self._answers(), timeout=30) and self._answers():
                return
            self.stop()
        raise RuntimeError(f"pypiserver did not start: {self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with _DIRECT.open(f"{self.url}/simple/", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def upload(self, files: list[Path], password: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
             "--repository-url", f"{self.url}/", "-u", self.user, "-p", password or self.password,
             *map(str, files)], capture_output=True, text=True, timeout=120, env=_pip_env())


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    missing = [tool for tool in ("hatch", "twine", "pypiserver", "passlib") if importlib.util.find_spec(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: the index test needs hatch, twine and "
                    "pypiserver[passlib] (hatch.toml gives them to the py3.13 suite; "
                    "DISPY_PACKAGING_TESTS=0 leaves it to that suite)", pytrace=False)
    from passlib.apache import HtpasswdFile  # type: ignore[import-untyped]

    served = tmp_path / "index"
    served.mkdir()
    htpasswd = tmp_path / "htpasswd"
    password = secrets.token_urlsafe(16)
    users = HtpasswdFile(str(htpasswd), new=True)
    users.set_password("dispy-release", password)
    users.save()
    server = Index(served, htpasswd, "dispy-release", password)
    try:
        yield server
    finally:
        server.stop()


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return meta.get_all("Requires-Dist") or []


def _venv(path: Path) -> Path:
    # Without pip of its own: ensurepip takes most of a minute under ./dev test's load,
    # and the pip beside this test installs into it just the same (pip --python).
    run(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def pip(venv_python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "pip", "--python", venv_python, *args)


CLIENT = """\
import sys
import dispy

def square(x):
    return x * x

ip, port = sys.argv[1], int(sys.argv[2])
with dispy.JobCluster(square, nodes=[dispy.NodeAllocate(ip, port=port)]) as cluster:
    jobs = [cluster.submit(i) for i in range(6)]
    results = [job() for job in jobs]
    ok = all(job.status == dispy.DispyJob.Finished for job in jobs)
    print("results", results, "finished", ok, "on", sorted({job.ip_addr for job in jobs}))
print("dispy from", dispy.__file__)
"""


def test_pip_install_node_and_client_from_an_index_and_run_a_job(index: Index, tmp_path: Path) -> None:
    tool = _release_tool()
    # The distributions, built and checked as ./dev release does.
    ours: list[Path] = []
    for name in BUILT:
        package = tool.read_package(REPO, name)
        files = tool.build(package.directory, tmp_path / "built" / name)
        tool.check_distributions(package, package.version, files)
        ours += files
    # Uploads need the password: a wrong one is refused and uploads nothing.
    refused = index.upload(ours[:1], password="not-" + index.password)
    assert refused.returncode != 0 and not any((tmp_path / "index").iterdir())
    uploaded = index.upload(ours)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(p.name for p in ours)

    # The third-party dependencies' wheels, the newest allowed, for this Python.
    third_party = sorted({req for wheel in ours if wheel.suffix == ".whl" for req in _requirements(wheel)
                          if not req.startswith("dispy-")})
    assert any(req.startswith("psutil") for req in third_party) and any(req.startswith("cloudpickle") for req in third_party)
    run(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--dest", tmp_path / "index", *third_party)

    # The two installs, from that index only.
    simple = f"{index.url}/simple/"
    node_python = _venv(tmp_path / "node-venv")
    client_python = _venv(tmp_path / "client-venv")
    pip(node_python, "install", "-q", "--index-url", simple, "dispy-node")
    pip(client_python, "install", "-q", "--index-url", simple, "dispy-client")
    versions = {name: str(tool.read_package(REPO, name).version) for name in BUILT}
    listed = pip(node_python, "list", "--format=freeze").stdout
    assert f"dispy-node=={versions['dispy-node']}" in listed and f"dispy-core=={versions['dispy-core']}" in listed
    assert "dispy-client" not in listed
    listed = pip(client_python, "list", "--format=freeze").stdout
    assert f"dispy-client=={versions['dispy-client']}" in listed and "dispy-node" not in listed

    # The node environment's dispynode (its console script) serves on 127.0.0.x ...
    node_dir = tmp_path / "node-files"
    node_dir.mkdir()
    dispynode = node_python.parent / "dispynode"
    node = DaemonProcess(NODE_IP, [str(dispynode), "-i", NODE_IP, "-p", "0", "--daemon",
                                   "--dest_path_prefix", str(node_dir)], _SERVING, "dispynode", None, timeout=60)
    try:
        # ... and the client environment's Python runs a JobCluster on it.
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        work = tmp_path / "client-work"
        work.mkdir()
        done = run(client_python, script, NODE_IP, str(node.port), cwd=work)
    finally:
        node.stop()
    assert f"results {[i * i for i in range(6)]} finished True on ['{NODE_IP}']" in done.stdout, done.stdout + done.stderr
    assert f"dispy from {tmp_path / 'client-venv'}" in done.stdout
