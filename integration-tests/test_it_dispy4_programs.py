"""Programs written the way dispy 4.x's examples are, against a dispynode on the same machine.

dispy 4.x's example programs (sample.py, obj_instances.py, delegate.py, node_setup.py,
node_shvars.py, replace_inmem.py, provisional_results.py, job_scheduler.py,
bounded_submit.py, node_update.py) create ``JobCluster(compute)`` with no ``nodes`` (or
``NodeAllocate('*')``) and rely on discovery finding a ``dispynode`` started with no
options. The programs in ``dispy4_programs/`` use the same features the same way; each
runs here as a subprocess, and the test checks what it printed (``RESULT <json>`` lines,
``print_status``) against what the job must have computed.

They broadcast, so everything runs inside a network namespace the test creates (only
loopback, like an offline laptop; the name includes this process's pid), with the node
started there as a user would: ``dispynode`` with no options (plus ``--daemon`` and a
``--dest_path_prefix`` in a temporary directory, which are not networking options), and
again with ``-i 127.0.0.1`` for a subset of the programs. Nothing touches the host's own
network namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create a network namespace",
    ),
]

PROGRAMS = Path(__file__).resolve().parent / "dispy4_programs"
_SERVING = re.compile(r"dispynode (?P<name>.+) serving (?P<cpus>\d+) CPUs at (?P<ip>\S+):(?P<port>\d+)")

# node options -> id; each variant gets a namespace and a node of its own
VARIANTS = {"no-options": (), "i-127.0.0.1": ("-i", "127.0.0.1")}


@dataclass
class NsNode:
    ns: tuple[str, ...]  # the command prefix that runs a command in the namespace
    name: str
    ip: str
    cpus: int
    log: Path

    def run(self, program: str, *args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([*self.ns, sys.executable, str(PROGRAMS / program), *args], cwd=cwd,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{program} did not finish in {timeout} s; output:\n{exc.stdout!r}\n"
                                 f"{exc.stderr!r}\nnode log:\n{self.log.read_text()}") from None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _start_node(ns: tuple[str, ...], options: tuple[str, ...], workdir: Path) -> tuple[subprocess.Popen[bytes], NsNode]:
    prefix = workdir / "node-files"
    prefix.mkdir()
    log = workdir / "node.log"
    with open(log, "wb") as out:  # a file, not a pipe nobody reads: the node may log a lot
        proc = subprocess.Popen([*ns, node_python(), "-m", "dispy_node.cli", *options, "--daemon",
                                 "--dest_path_prefix", str(prefix)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = _SERVING.search(log.read_text(errors="replace"))
        if m:
            return proc, NsNode(ns, m["name"], m["ip"], int(m["cpus"]), log)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError(f"dispynode {' '.join(options)} did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def ns_nodes() -> Iterator[Any]:
    """get(variant) -> NsNode: a namespace with only loopback and a dispynode in it,
    started on first use and kept for the module (one per variant)."""
    started: dict[str, tuple[str, subprocess.Popen[bytes], NsNode, Path]] = {}

    def get(variant: str) -> NsNode:
        if variant not in started:
            name = f"dispy-p4-{os.getpid()}-{len(started)}"
            _sh("ip", "netns", "add", name)
            workdir = Path(tempfile.mkdtemp(prefix="dispy-p4-"))
            try:
                ns = ("ip", "netns", "exec", name)
                _sh(*ns, "ip", "link", "set", "lo", "up")
                proc, node = _start_node(ns, VARIANTS[variant], workdir)
            except BaseException:
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            started[variant] = (name, proc, node, workdir)
        return started[variant][2]

    yield get
    for name, proc, _node, workdir in started.values():
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def results(out: subprocess.CompletedProcess[str]) -> list[Any]:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return [json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def status_rows(out: subprocess.CompletedProcess[str], node: NsNode) -> list[str]:
    """The rows of print_status's table for ``node``."""
    assert "Node" in out.stdout and "Sec/Job" in out.stdout, out.stdout
    return [line for line in out.stdout.splitlines() if line.strip().startswith(node.ip)]


def data_files(tmp_path: Path, count: int, prefix: str, suffix: str) -> dict[str, bytes]:
    files = {}
    for k in range(count):
        content = os.urandom(2000 + 1000 * k)
        (tmp_path / f"{prefix}{k:03d}{suffix}").write_bytes(content)
        files[f"{prefix}{k:03d}{suffix}"] = content
    return files


# -- the programs ----------------------------------------------------------------------
def check_sample(node: NsNode, tmp_path: Path) -> None:
    out = node.run("sample_prog.py", cwd=tmp_path)
    rows = results(out)
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]  # ids in submission order
    for r in rows:
        assert r["slept"] == r["asked"] and r["name"] == node.name and r["ip_addr"] == node.ip
        assert r["started"] > 0
    (row,) = status_rows(out, node)
    assert re.search(rf"\|\s+{node.cpus}\s+\|\s+6\s+\|", row), row  # CPUs and jobs done


def check_instances(node: NsNode, tmp_path: Path) -> None:
    rows = results(node.run("instances_prog.py", cwd=tmp_path))
    assert rows == [{"sensor": f"s{k}", "value": k + 0.5, "result": (k + 0.5) * 10,
                     "stdout": f"sensor s{k} reads {k + 0.5:.1f}\n"} for k in range(5)]


def check_delegate(node: NsNode, tmp_path: Path) -> None:
    out = node.run("delegate_prog.py", cwd=tmp_path)
    rows = results(out)
    assert rows == [{"id": x + 1, "name": node.name, "func": "double" if x % 2 == 0 else "negate",
                     "value": 2 * x if x % 2 == 0 else -x} for x in range(6)]
    assert len(status_rows(out, node)) == 1


def check_setup(node: NsNode, tmp_path: Path) -> None:
    files = data_files(tmp_path, 2, "input", ".dat")
    out = node.run("setup_prog.py", str(tmp_path), cwd=tmp_path)
    *jobs, allocated = results(out)
    assert not [r for r in jobs if "failed" in r], jobs
    # the only node got the first file, by its base name, and every job hashed its bytes
    assert allocated == {"allocated": [[node.ip, str(tmp_path / "input000.dat")]]}
    assert jobs == [{"ip": node.ip, "file": "input000.dat", "alg": alg,
                     "digest": hashlib.new(alg, files["input000.dat"]).hexdigest()}
                    for alg in ("md5", "sha1", "sha256", "sha512")]


def check_shvars(node: NsNode, tmp_path: Path) -> None:
    steps = [3, 5, 7, 11, 13, 17, 19, 23]
    rows = results(node.run("shvars_prog.py", cwd=tmp_path))
    assert not [r for r in rows if "failed" in r], rows
    assert [r["step"] for r in rows] == steps and {r["ip"] for r in rows} == {node.ip}
    # Every job added its step to one counter that setup made: the totals the jobs saw
    # are the running sums of one order of the steps, ending at 1 + all of them.
    totals = sorted(r["total"] for r in rows)
    assert totals[-1] == 1 + sum(steps)
    increments = [b - a for a, b in zip([1, *totals], totals)]
    assert sorted(increments) == steps


def check_resetup(node: NsNode, tmp_path: Path) -> None:
    files = data_files(tmp_path, 2, "chunk", ".dat")
    rows = results(node.run("resetup_prog.py", str(tmp_path), cwd=tmp_path))
    assert not [r for r in rows if "failed" in r], rows
    assert sorted(r["i"] for r in rows) == list(range(6)), rows
    for r in rows:
        first = r["i"] < 3  # before resetup_node: the first file; after it: the second
        name = "chunk000.dat" if first else "chunk001.dat"
        assert r == {"i": r["i"], "ip": node.ip, "file": name, "generation": 1 if first else 2,
                     "digest": hashlib.sha256(files[name]).hexdigest()}
    # the client's own copies are untouched (setup removed the node's copies)
    assert sorted(p.name for p in tmp_path.glob("*.dat")) == ["chunk000.dat", "chunk001.dat"]


def check_provisional(node: NsNode, tmp_path: Path) -> None:
    rows = results(node.run("provisional_prog.py", cwd=tmp_path))
    seen = [r for r in rows if "seen" in r]
    first = [r["value"] for r in seen if r["seen"] == 1]
    # the first job's provisional results arrive in the order it sent them
    assert first[:4] == [0.9, 0.5, 0.2, 0.005], seen
    assert {"good_enough": 1, "value": 0.005} in rows
    # ... and every job, still running or waiting when the value was good enough, was
    # cancelled (none ran on to its end)
    final = {r["final"]: r["status"] for r in rows if "final" in r}
    assert final == {1: 8, 2: 8, 3: 8, 4: 8}  # DispyJob.Cancelled


def check_scheduler(node: NsNode, tmp_path: Path) -> None:
    files = data_files(tmp_path, 5, "data", "")
    rows = results(node.run("scheduler_prog.py", str(tmp_path), cwd=tmp_path))
    done = {r["file"]: r["sha1"] for r in rows if "file" in r}
    assert done == {name: hashlib.sha1(content).hexdigest() for name, content in files.items()}
    assert {"most_at_once_on_a_node": 1} in rows


def check_bounded(node: NsNode, tmp_path: Path) -> None:
    (last,) = results(node.run("bounded_prog.py", cwd=tmp_path))
    assert last["results"] == {str(i + 1): i * i for i in range(40)}
    # the submit loop waited for the callbacks at least once, and never let more than the
    # upper bound be in flight (40 jobs of 50 ms on 2 CPUs against a submit loop that
    # takes microseconds: it reaches the bound)
    assert last["throttled"] >= 1 and last["most_in_flight"] <= 6


def check_update(node: NsNode, tmp_path: Path) -> None:
    out = node.run("update_prog.py", "1", cwd=tmp_path)
    (row,) = results(out)  # once on the node, not once per CPU
    assert row["ip"] == node.ip and row["stdout_type"] == "bytes" and row["exit"] == 0
    assert re.fullmatch(rf"updated {re.escape(node.ip)} at \d+\.\d+\.\d+\n", row["stdout"]) and row["stderr"] == ""
    (status,) = status_rows(out, node)
    assert re.search(rf"\|\s+{node.cpus}\s+\|\s+1\s+\|", status), status  # CPUs and jobs done


CHECKS = {"sample": check_sample, "instances": check_instances, "delegate": check_delegate,
          "setup": check_setup, "shvars": check_shvars, "resetup": check_resetup,
          "provisional": check_provisional, "scheduler": check_scheduler, "bounded": check_bounded,
          "update": check_update}
# with -i 127.0.0.1 (the same discovery path, an address given): a subset, for time
WITH_ADDRESS = ("sample", "delegate", "setup", "update")


@pytest.mark.parametrize("program", list(CHECKS))
def test_program_with_node_started_with_no_options(ns_nodes, program, tmp_path):
    CHECKS[program](ns_nodes("no-options"), tmp_path)


@pytest.mark.parametrize("program", WITH_ADDRESS)
def test_program_with_node_on_127_0_0_1(ns_nodes, program, tmp_path):
    node = ns_nodes("i-127.0.0.1")
    assert node.ip == "127.0.0.1"
    CHECKS[program](node, tmp_path)
