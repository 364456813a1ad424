"""Machines upgraded one at a time: the previous release against the current tree.

The previous release of each package is its wheel in ``integration-tests/releases/``:
``./dev release`` puts each package's new wheel there, in place of the one before, in the
release commit itself (tools/release.py), so any checkout, with or without tags or
history, holds the very files that were published. They are installed into a fresh
virtual environment (once per test session), and real daemons and clients of both
releases run jobs together on 127.0.0.x: an old dispynode with the current
client, the current dispynode with an old client, an old client through the current
dispyscheduler, and the current client through an old dispyscheduler. A release that
shares no protocol version with its peer is refused with both versions and what to
upgrade in the message, on both sides (played here by the current tree told to speak
only a protocol version above the old release's, see :mod:`dispy_core.compat`).

Marked ``packaging``: the test matrix runs it in one suite (it builds and installs).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import dispy
from dispy_core import compat
from dispy_core.testing import DaemonProcess, NodeProcess, wait_until

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / "integration-tests" / "releases"
PACKAGES = ("dispy-core", "dispy-client", "dispy-node", "dispy-scheduler")
_SCHEDULER_SERVING = re.compile(r"dispyscheduler serving clients at (\S+):(?P<port>\d+)")
_SERVING = re.compile(r"serving (?P<cpus>\d+) CPUs at (\S+):(?P<port>\d+)")


def _run(cmd: list[str], **kwargs: object) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return str(done.stdout)


def released_wheel(distribution: str) -> Path:
    """The wheel of ``distribution``'s newest release, kept in the tree by ``./dev release``."""
    found = sorted(RELEASES.glob(f"{distribution.replace('-', '_')}-*-py3-none-any.whl"))
    assert len(found) == 1, f"{RELEASES} must hold exactly one wheel of {distribution}, not {found}"
    return found[0]


class OldRelease:
    """The previous releases, installed together in a virtual environment of their own."""

    def __init__(self, venv: Path, wheels: dict[str, Path]) -> None:
        self.venv = venv
        self.python = str(venv / "bin" / "python")
        self.wheels = wheels

    def version(self, distribution: str) -> str:
        return self.wheels[distribution].name.split("-")[1]

    def protocols(self) -> tuple[int, int]:
        """The protocol versions the old dispy-core speaks (0.1.0, before compat: 1 only)."""
        out = _run([self.python, "-c", "try:\n from dispy_core.compat import PROTOCOL_LOWEST as l, "
                    "PROTOCOL_HIGHEST as h\nexcept ImportError:\n l = h = 1\nprint(l, h)"]).split()
        return int(out[0]), int(out[1])


@pytest.fixture(scope="session")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> OldRelease:
    wheels = {d: released_wheel(d) for d in PACKAGES}
    venv = tmp_path_factory.mktemp("previous-release") / "old-venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    # Only the released wheels for dispy's own packages (pip of this environment installs
    # into that one); their dependencies come from pip's cache or the index.
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
          *map(str, wheels.values())])
    old = OldRelease(venv, wheels)
    installed = _run([old.python, "-c", "import dispy, dispy_core, dispy_node, dispy_scheduler; "
                      "print(dispy.__version__, dispy_core.__version__, dispy_core.__file__)"]).split()
    assert installed[:2] == [old.version("dispy-client"), old.version("dispy-core")]
    assert str(venv) in installed[2]  # not this checkout's sources
    return old


def square(x: int) -> int:
    return x * x


CLIENT = textwrap.dedent("""
    import logging, sys
    import dispy

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def square(x):
        return x * x

    kind, where = sys.argv[1], sys.argv[2]
    if kind == "job":
        host, port = where.rsplit(":", 1)
        cluster = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(host, port=int(port))], host="127.0.0.1")
    else:
        cluster = dispy.SharedJobCluster(square, scheduler_node=where, host="127.0.0.1")
    try:
        jobs = [cluster.submit(i) for i in range(4)]
        if kind == "refused":
            print("done" if cluster.wait(timeout=float(sys.argv[3])) else "timed out", flush=True)
        else:
            print("results", [job() for job in jobs], flush=True)
    finally:
        cluster.close(timeout=0 if kind == "refused" else 5, terminate=True)  # (refused: no job can finish)
""")


def run_old_client(old: OldRelease, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "old_client.py"
    script.write_text(CLIENT)
    return subprocess.run([old.python, str(script), *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def future_protocol(old: OldRelease) -> int:
    """A protocol version neither the old release nor this tree speaks."""
    return max(old.protocols()[1], compat.PROTOCOL_HIGHEST) + 1


@pytest.fixture
def future_node(old_release: OldRelease) -> Iterator[NodeProcess]:
    """The current tree's dispynode speaking only a protocol newer than both releases':
    a "next" release that dropped their protocol."""
    version = future_protocol(old_release)
    with NodeProcess("127.0.0.9", protocols=(version, version)) as node:
        yield node


def test_old_node_serves_the_current_client(old_release: OldRelease) -> None:
    with NodeProcess("127.0.0.5", python=old_release.python) as node:
        with dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node.ip, port=node.port)], host="127.0.0.1") as c:
            jobs = [c.submit(i) for i in range(4)]
            assert [job() for job in jobs] == [0, 1, 4, 9]
            assert all(job.status == dispy.DispyJob.Finished for job in jobs)
        assert "refused" not in node.log and "protocol" not in node.log, node.log


def test_current_node_serves_an_old_client(old_release: OldRelease, tmp_path: Path) -> None:
    with NodeProcess("127.0.0.6") as node:
        done = run_old_client(old_release, tmp_path, "job", node.addr)
        assert "results [0, 1, 4, 9]" in done.stdout, done.stdout + done.stderr
        assert "refused" not in node.log and "protocol" not in node.log, node.log


def test_old_client_through_the_current_scheduler(old_release: OldRelease, tmp_path: Path) -> None:
    pytest.importorskip("dispy_scheduler")
    from dispy_core.testing import SchedulerProcess

    with NodeProcess("127.0.0.7") as node, SchedulerProcess("127.0.0.1", [node.addr]) as sched:
        done = run_old_client(old_release, tmp_path, "shared", f"127.0.0.1:{sched.port}")
        assert "results [0, 1, 4, 9]" in done.stdout, done.stdout + done.stderr + sched.log


def test_current_client_through_an_old_scheduler_to_an_old_and_a_current_node(
        old_release: OldRelease, tmp_path: Path) -> None:
    with NodeProcess("127.0.0.8") as current, NodeProcess("127.0.0.10", python=old_release.python) as old:
        cmd = [old_release.python, "-m", "dispy_scheduler.cli", "-i", "127.0.0.1", "--scheduler_port", "0",
               "-p", "0", "--daemon", "--dest_path_prefix", str(tmp_path), "-n", current.addr, "-n", old.addr]
        with DaemonProcess("127.0.0.1", cmd, _SCHEDULER_SERVING, "dispyscheduler", None) as sched:
            with dispy.SharedJobCluster(square, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.1") as c:
                jobs = [c.submit(i) for i in range(8)]
                assert [job() for job in jobs] == [i * i for i in range(8)]


def test_incompatible_releases_are_refused_naming_both_versions(
        old_release: OldRelease, future_node: NodeProcess, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    ours = f"dispy-node {dispy.__version__}"  # the current tree's versions
    needs = future_protocol(old_release)
    old_speaks = compat.Speaker("", *old_release.protocols()).protocols  # "protocol 1"
    we_speak = compat.Speaker("", compat.PROTOCOL_LOWEST, compat.PROTOCOL_HIGHEST).protocols
    # The old client (protocol 1) against a node that speaks only a newer protocol: the
    # old release words nothing itself, the refusal it shows is the node's, in its terms.
    done = run_old_client(old_release, tmp_path, "refused", future_node.addr, "4")
    assert "timed out" in done.stdout, done.stdout + done.stderr
    old_client = f"dispy-client {old_release.version('dispy-client')}"
    expected_old_side = (f"node 127.0.0.9 runs {ours} (protocol {needs}), which needs protocol {needs} or "
                         f"newer; this {old_client} speaks {old_speaks}: upgrade dispy-client on this machine")
    assert expected_old_side in done.stderr, done.stderr
    # ... logged once, though the client retried.
    assert len([line for line in done.stderr.splitlines()
                if "can't use node" in line and expected_old_side in line]) == 1, done.stderr
    expected_node_side = (f"client 127.0.0.1 runs {old_client} ({old_speaks}); this {ours} needs protocol "
                          f"{needs} or newer: upgrade dispy-client on 127.0.0.1")
    assert wait_until(lambda: expected_node_side in future_node.log), future_node.log
    assert future_node.log.count(expected_node_side) == 1, future_node.log  # not per retry

    # The current client, which speaks only protocol 1, against that node: refused, and
    # the "no node serves" warning says why.
    with caplog.at_level(logging.WARNING):
        with dispy.JobCluster(square, nodes=[dispy.NodeAllocate("127.0.0.9", port=future_node.port)],
                              host="127.0.0.1") as c:
            c.submit(3)
            assert not c.wait(timeout=3)
            c.close(timeout=1, terminate=True)
    mine = f"dispy-client {dispy.__version__}"
    expected = (f"node 127.0.0.9 runs {ours} (protocol {needs}), which needs protocol {needs} or newer; "
                f"this {mine} speaks {we_speak}: upgrade dispy-client on this machine")
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith("can't use node") and expected in line], lines
    assert [line for line in lines if line.startswith("wait(timeout=3) timed out") and expected in line], lines
