"""Faults on a real (virtual) network: nodes that crash, freeze, get cut off or restart,
and a client that is killed, with the client and three nodes each on its own "host".

Each test builds a small LAN out of network namespaces: a "switch" namespace holding a
Linux bridge, and one namespace per host (client 10.79.0.1, nodes 10.79.0.11-13, /24),
each joined to the bridge by a veth pair whose bridge end lives in the switch namespace.
Cutting a node's cable is setting that bridge-side veth down: the node's process and its
TCP connections stay, only packets stop (which a loopback test can't do). Nodes are real
``dispynode`` processes started in their namespaces; the client is a subprocess in the
client namespace that reports what its callbacks saw as JSON. Nothing is created in the
host's own namespace, every node is named explicitly (nothing is broadcast), only the
processes started here are signalled (by PID), and the namespaces (their names carry this
process's id, so concurrent runs don't collide) are deleted afterwards.

Faults: a node SIGKILLed mid-job (reentrant or not), stopped gracefully (SIGINT) or
terminated (SIGTERM); a node frozen (SIGSTOP) or cut off past 5 x pulse_interval, then
back; a short cut that must lose nothing; a cut while large arguments are being sent;
the client's own cable cut; the client killed (recover_jobs from a new process, also
after a node crashed and restarted meanwhile); a node restarted as a new process; and two
chaos runs (round-robin SIGKILL + restart; and kill / freeze / cut in turn).

What is checked, beyond "it didn't hang": every job's final status is reported exactly
once (counted in ``job_status``), results are right, and jobs ran where they should have
(the job itself returns ``dispy_node_ip_addr``; ``cluster_status`` records each dispatch).
``DISPY_CHAOS_JOBS`` sets the size of the chaos tests (default 2000; 10,000 for a full
run, which takes about two minutes each).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

from dispy import DispyJob
from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces",
    ),
]

CLIENT_IP = "10.79.0.1"
NODE_IPS = ["10.79.0.11", "10.79.0.12", "10.79.0.13"]
FINISHED, ABANDONED, TERMINATED = DispyJob.Finished, DispyJob.Abandoned, DispyJob.Terminated

# The client program. argv[1] is JSON: nodes, kwargs for JobCluster, phases (each: count,
# dur (< 0: a random time up to -dur; else each job, as it starts, makes a file
# "marks/<node ip> <n>" in the client's directory), optional pad (bytes of padding in each job's
# arguments), gate (a file to wait for) and wait_init [ip, n] (wait until ip was
# initialized n times)), timeout. Lines it prints: READY (every node initialized), INIT ip,
# CLOSED ip, PHASE k (phase k submitted), then the JSON report (the last line that starts
# with "{": closing the cluster may print more).
CLIENT = textwrap.dedent("""
    import json, os, sys, threading, time
    import dispy
    from dispy import DispyJob, DispyNode

    def compute(n, dur, pad=b"", mark=""):
        import os, random, time
        t0 = time.time()
        if mark:  # "this job has started here" for the test, which shares the filesystem
            open(os.path.join(mark, f"{dispy_node_ip_addr} {n}"), "w").close()
        time.sleep(random.uniform(0, -dur) if dur < 0 else dur)
        return dispy_node_ip_addr, n * n + 1, t0, time.time(), len(pad)

    a = json.loads(sys.argv[1])
    lock = threading.Lock()
    finals, runs, inits, closes = [], [], [], []
    FINAL = (DispyJob.Finished, DispyJob.Abandoned, DispyJob.Terminated, DispyJob.Cancelled)

    def say(*words):
        with lock:
            print(*words, flush=True)

    def job_status(job):
        if job.status in FINAL:
            with lock:
                finals.append([job.id, job.status, job.host, time.time()])

    def cluster_status(status, node, job):
        now = time.time()
        if status == DispyNode.Initialized:
            with lock:
                inits.append([node.ip_addr, now])
            say("INIT", node.ip_addr)
        elif status == DispyNode.Closed:
            with lock:
                closes.append([node.ip_addr, now])
            say("CLOSED", node.ip_addr)
        elif status == DispyJob.Running and job is not None:
            with lock:
                runs.append([job.id, node.ip_addr, now])

    def wait_for(cond, timeout=60):
        deadline = time.time() + timeout
        while not cond() and time.time() < deadline:
            time.sleep(0.02)

    def init_count(ip):
        with lock:
            return sum(1 for i, _ in inits if i == ip)

    cluster = dispy.JobCluster(compute, nodes=a["nodes"], host=a["host"], job_status=job_status,
                               cluster_status=cluster_status, loglevel=dispy.logger.WARNING,
                               **a["kwargs"])
    wait_for(lambda: all(init_count(ip) for ip in a["nodes"]), 30)
    say("READY")
    jobs = []
    t0 = time.time()
    for k, phase in enumerate(a["phases"]):
        if phase.get("gate"):
            wait_for(lambda: os.path.exists(phase["gate"]))
        if phase.get("wait_init"):
            ip, n = phase["wait_init"]
            wait_for(lambda: init_count(ip) >= n)
        start = len(jobs)
        pad = b"x" * phase.get("pad", 0)
        mark = os.path.abspath("marks") if phase["dur"] >= 0 else ""
        jobs.extend(cluster.submit(start + i, phase["dur"], pad, mark) for i in range(phase["count"]))
        say("PHASE", k)
    ok = cluster.wait(timeout=a["timeout"])
    elapsed = time.time() - t0
    time.sleep(a.get("settle", 1.5))  # a late (duplicate) result would be reported now
    with lock:  # (one write, not interleaved with a callback's line)
        out = {"ok": ok, "elapsed": elapsed, "finals": list(finals), "runs": list(runs),
               "inits": list(inits), "closes": list(closes),
               "jobs": [[j.id, j.status, j.host, j.result] for j in jobs]}
        print(json.dumps(out), flush=True)
    cluster.close(timeout=10, terminate=True)
""")

RECOVER = textwrap.dedent("""
    import json, sys, dispy
    jobs = dispy.recover_jobs(sys.argv[1], timeout=60)
    print(json.dumps([[j.id, j.status, j.host, j.result] for j in jobs]), flush=True)
""")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Lan:
    """The namespaces: ``client`` and ``node[ip]`` are command prefixes."""

    def __init__(self, switch: str, client: tuple[str, ...], node: dict[str, tuple[str, ...]],
                 ports: dict[str, str]) -> None:
        self.switch = ("ip", "netns", "exec", switch)
        self.client = client
        self.node = node
        self.ports = ports  # node ip -> its veth's name in the switch namespace

    def cut(self, ip: str) -> None:
        sh(*self.switch, "ip", "link", "set", self.ports[ip], "down")

    def restore(self, ip: str) -> None:
        sh(*self.switch, "ip", "link", "set", self.ports[ip], "up")


@pytest.fixture
def lan() -> Iterator[Lan]:
    pid = os.getpid()
    switch = f"dfs-{pid}"
    hosts = {CLIENT_IP: f"dfc-{pid}", **{ip: f"dfn{k + 1}-{pid}" for k, ip in enumerate(NODE_IPS)}}
    made: list[str] = []
    try:
        for name in (switch, *hosts.values()):
            sh("ip", "netns", "add", name)
            made.append(name)
        sw = ("ip", "netns", "exec", switch)
        sh(*sw, "ip", "link", "set", "lo", "up")
        sh(*sw, "ip", "link", "add", "br0", "type", "bridge")
        sh(*sw, "ip", "link", "set", "br0", "up")
        ports = {}
        for k, (ip, name) in enumerate(hosts.items()):
            port = f"p{k}"
            ports[ip] = port
            ns = ("ip", "netns", "exec", name)
            sh(*ns, "ip", "link", "set", "lo", "up")
            # both ends are made in the switch namespace; the host's end moves to its own
            sh(*sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
            sh(*sw, "ip", "link", "set", port, "master", "br0")
            sh(*sw, "ip", "link", "set", port, "up")
            sh(*ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(*ns, "ip", "link", "set", "eth0", "up")
        yield Lan(switch, ("ip", "netns", "exec", hosts[CLIENT_IP]),
                  {ip: ("ip", "netns", "exec", hosts[ip]) for ip in NODE_IPS}, ports)
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Node:
    """A dispynode in its namespace; its output goes to a log file (read on failure)."""

    def __init__(self, lan: Lan, ip: str, *args: str, cpus: int = 2) -> None:
        self.lan, self.ip, self.args, self.cpus = lan, ip, args, cpus
        self.prefix = tempfile.mkdtemp(prefix="dispy-faults-node-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.prefix, "node.log")
        self.start()

    def start(self) -> None:
        """Start the process (again: same address, same dest_path_prefix), wait until it serves."""
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log_path, "ab") as log:
            mark = log.tell()
            self.proc = subprocess.Popen(
                [*self.lan.node[self.ip], node_python(), "-m", "dispy_node.cli", "--daemon",
                 "-i", self.ip, "-c", str(self.cpus), "--dest_path_prefix", self.prefix, *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log()[mark:]
            if f"serving {self.cpus} CPUs at {self.ip}:9701" in text:
                return
            assert self.proc.poll() is None, text
            time.sleep(0.02)
        raise AssertionError(f"node {self.ip} did not start: {self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # (in case a test left it stopped)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.prefix, ignore_errors=True)


@pytest.fixture
def nodes(lan: Lan) -> Iterator:
    """Factory: nodes(cpus=2, *args) starts one node on each of NODE_IPS."""
    started: list[Node] = []

    def start(*args: str, cpus: int = 2) -> list[Node]:
        made = [Node(lan, ip, *args, cpus=cpus) for ip in NODE_IPS]
        started.extend(made)
        return made

    yield start
    for n in started:
        n.stop()


class Client:
    """The client program in the client namespace; its stdout lines come through a queue."""

    def __init__(self, lan: Lan, phases: list[dict], timeout: float = 60, **kwargs) -> None:
        self.dir = tempfile.mkdtemp(prefix="dispy-faults-client-")
        self.marks = os.path.join(self.dir, "marks")
        os.mkdir(self.marks)
        args = {"nodes": NODE_IPS, "host": CLIENT_IP, "phases": phases, "timeout": timeout,
                "kwargs": {"pulse_interval": 1, **kwargs}}
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen([*lan.client, sys.executable, "-c", CLIENT, json.dumps(args)],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     cwd=self.dir)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, text: str, timeout: float = 60) -> None:
        """Wait for the line ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} from the client in {timeout} s; "
                                     f"saw {self.seen[-5:]}; {self.errors()}") from None
            assert line is not None, f"the client ended before {text!r}: {self.errors()}"
            self.seen.append(line)

    def wait_started(self, ip: str | None, n: int, timeout: float = 30) -> None:
        """Wait until ``n`` jobs have started on node ``ip`` (None: on any node)."""
        deadline = time.monotonic() + timeout
        while True:
            started = [m for m in os.listdir(self.marks) if ip is None or m.split()[0] == ip]
            if len(started) >= n:
                return
            assert time.monotonic() < deadline, f"{len(started)} jobs started on {ip}: {self.errors()}"
            time.sleep(0.02)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def report(self, timeout: float = 120) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the client did not end in {timeout} s: {self.errors()}") from None
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        assert self.proc.returncode == 0, self.errors()
        r = json.loads([line for line in self.seen if line.startswith("{")][-1])
        r["stderr"] = self.errors()
        return r

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    def gate(self) -> str:
        return os.path.join(self.dir, "gate")

    def open_gate(self) -> None:
        open(self.gate(), "w").close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def client(lan: Lan) -> Iterator:
    """Factory: client(phases, timeout=60, **JobCluster kwargs) starts the client program."""
    started: list[Client] = []

    def start(phases: list[dict], **kwargs) -> Client:
        c = Client(lan, phases, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def check_exactly_once(r: dict, count: int) -> dict[int, list]:
    """Every job 1..count reported once in job_status, Finished with the right result;
    returns id -> result ([node ip, value, start, end])."""
    assert r["ok"], r["stderr"]
    reported = Counter(job_id for job_id, *_ in r["finals"])
    assert sorted(reported) == list(range(1, count + 1)), r["stderr"]
    twice = {job_id: n for job_id, n in reported.items() if n != 1}
    assert not twice, f"reported more than once: {twice}"
    results = {}
    for job_id, status, host, result in r["jobs"]:
        n = job_id - 1
        assert status == FINISHED, (job_id, status, r["stderr"])
        assert result[1] == n * n + 1, (job_id, result)
        assert host == result[0], (job_id, host, result)  # the client knows where it ran
        results[job_id] = result
    finals = {job_id: (status, host) for job_id, status, host, _ in r["finals"]}
    assert all(finals[i] == (FINISHED, results[i][0]) for i in results)
    return results


def runs_by_job(r: dict) -> dict[int, list[str]]:
    """id -> the nodes the job was dispatched to, in order."""
    runs: dict[int, list[str]] = defaultdict(list)
    for job_id, ip, _ in sorted(r["runs"], key=lambda e: e[2]):
        runs[job_id].append(ip)
    return runs


def inits_of(r: dict, ip: str) -> int:
    return sum(1 for i, _ in r["inits"] if i == ip)


# -- a node crashes ------------------------------------------------------------------------------

def test_killed_node_jobs_rerun_elsewhere_exactly_once(lan, nodes, client) -> None:
    """SIGKILL one node while its jobs run, reentrant: each job finishes once, correctly,
    and the jobs the dead node had ran again on the other two."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.5}], reentrant=True)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    killed_at = time.time()
    victim.kill()
    r = c.report()
    results = check_exactly_once(r, 12)
    runs = runs_by_job(r)
    had = {job_id for job_id, ips in runs.items() if victim.ip in ips}
    assert had, "the killed node had no jobs"
    assert all(results[i][0] != victim.ip for i in had), "a job of the dead node finished there"
    assert all(len(runs[i]) >= 2 for i in had), runs  # sent again
    for result in results.values():  # nothing at all finished on it after the kill
        assert result[0] != victim.ip or result[3] < killed_at
    assert {result[0] for result in results.values()} >= set(NODE_IPS[1:])
    assert victim.ip in {ip for ip, _ in r["closes"]}, r["closes"]


def test_killed_node_jobs_are_abandoned_without_reentrant(lan, nodes, client) -> None:
    """The same without reentrant: exactly the jobs sent to the dead node end Abandoned
    (reported once), every other job finishes, and wait() returns."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.5}], reentrant=False)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    victim.kill()
    r = c.report()
    assert r["ok"], r["stderr"]
    reported = Counter(job_id for job_id, *_ in r["finals"])
    assert sorted(reported) == list(range(1, 13)) and set(reported.values()) == {1}, reported
    runs = runs_by_job(r)
    sent_to_victim = {job_id for job_id, ips in runs.items() if victim.ip in ips}
    abandoned = set()
    for job_id, status, host, result in r["jobs"]:
        if status == ABANDONED:
            abandoned.add(job_id)
            assert host == victim.ip, (job_id, host)
        else:
            assert status == FINISHED, (job_id, status, r["stderr"])
            assert result[0] in NODE_IPS[1:] and result[1] == (job_id - 1) ** 2 + 1
    assert abandoned and abandoned <= sent_to_victim, (abandoned, runs)
    # Without reentrant only jobs never sent (still in the client's outbox: a narrow
    # window, as the kill comes 0.7 s after dispatch) may be queued again.
    assert all(len(runs[i]) == 1 or (i in sent_to_victim - abandoned and runs[i][0] == victim.ip)
               for i in runs), (runs, abandoned)


def test_node_sigint_finishes_its_jobs_and_leaves(lan, nodes, client) -> None:
    """SIGINT to a node mid-run (no reentrant, so nothing is hidden by a rerun): the
    jobs it has finish there and are reported once, Finished; it gets no new jobs, the
    rest run on the other nodes, and it exits 0."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.5}], reentrant=False)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    signalled_at = time.time()
    victim.signal(signal.SIGINT)
    r = c.report()
    assert victim.proc is not None and victim.proc.wait(30) == 0, victim.log()
    results = check_exactly_once(r, 12)
    runs = runs_by_job(r)
    there = {i for i, result in results.items() if result[0] == victim.ip}
    assert there, runs
    # (jobs queued there at the signal run too; only jobs sent after it must not)
    sent = {job_id: at for job_id, ip, at in r["runs"] if ip == victim.ip}
    assert all(sent[i] < signalled_at for i in there), (there, sent, signalled_at, results)
    assert all(len(ips) == 1 or ips[0] == victim.ip for ips in runs.values()), runs  # given back


def test_node_sigterm_terminates_its_jobs(lan, nodes, client) -> None:
    """SIGTERM to a node mid-run: its running jobs come back Terminated, reported once;
    every other job finishes on the other nodes; the node exits 0."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.5}], reentrant=False)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    victim.signal(signal.SIGTERM)
    r = c.report()
    assert victim.proc is not None and victim.proc.wait(30) == 0, victim.log()
    assert r["ok"], r["stderr"]
    reported = Counter(job_id for job_id, *_ in r["finals"])
    assert sorted(reported) == list(range(1, 13)) and set(reported.values()) == {1}, reported
    statuses = Counter()
    for job_id, status, host, result in r["jobs"]:
        statuses[status] += 1
        if status == FINISHED:
            assert result[0] in NODE_IPS[1:] and result[1] == (job_id - 1) ** 2 + 1
        else:  # killed while running, or cancelled while queued there
            assert status in (TERMINATED, DispyJob.Cancelled) and host == victim.ip, (job_id, status, host)
    assert statuses[TERMINATED] >= 2, statuses  # the two it was running


# -- a node goes silent: frozen, or its cable cut -----------------------------------------------

@pytest.mark.parametrize("how", ["sigstop", "long-cut"])
def test_silent_node_is_presumed_dead_then_readmitted(lan, nodes, client, how) -> None:
    """A node that says nothing for more than 5 x pulse_interval (SIGSTOP, or its cable
    cut while its TCP connection stays open): its jobs run again elsewhere; once it is
    back (SIGCONT / cable restored) it is set up again and runs later jobs; the late
    results of the jobs it had are not reported a second time."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 6, "dur": 2.0},
                {"count": 12, "dur": 0.3, "wait_init": [NODE_IPS[0], 2]}], reentrant=True)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    if how == "sigstop":
        victim.signal(signal.SIGSTOP)
    else:
        lan.cut(victim.ip)
    try:
        c.expect(f"CLOSED {victim.ip}", timeout=20)  # presumed dead (5 s of silence)
        time.sleep(1.0)
    finally:
        if how == "sigstop":
            victim.signal(signal.SIGCONT)
        else:
            lan.restore(victim.ip)
    r = c.report()
    results = check_exactly_once(r, 18)
    runs = runs_by_job(r)
    had = {job_id for job_id, ips in runs.items() if job_id <= 6 and ips[0] == victim.ip}
    assert had, runs
    assert all(results[i][0] != victim.ip and len(runs[i]) == 2 for i in had), (had, runs, results)
    assert inits_of(r, victim.ip) == 2, r["inits"]
    later_there = [i for i in range(7, 19) if results[i][0] == victim.ip]
    assert later_there, f"the node was not used again: {results}"


def test_long_cut_without_reentrant_abandons_once(lan, nodes, client) -> None:
    """A cable cut past 5 x pulse_interval without reentrant: the jobs sent to the node
    end Abandoned, reported once; when the cable is back the node finishes them and
    sends their results, which are not reported again; the node is used again."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 6, "dur": 2.0},
                {"count": 12, "dur": 0.3, "wait_init": [NODE_IPS[0], 2]}], reentrant=False)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    lan.cut(victim.ip)
    try:
        c.expect(f"CLOSED {victim.ip}", timeout=20)
        time.sleep(1.0)
    finally:
        lan.restore(victim.ip)
    r = c.report()
    assert r["ok"], r["stderr"]
    reported = Counter(job_id for job_id, *_ in r["finals"])
    assert sorted(reported) == list(range(1, 19)) and set(reported.values()) == {1}, reported
    runs = runs_by_job(r)
    abandoned = {job_id for job_id, status, *_ in r["jobs"] if status == ABANDONED}
    assert abandoned == {i for i in range(1, 7) if runs[i] == [victim.ip]}, (abandoned, runs)
    assert abandoned, runs
    for job_id, status, host, result in r["jobs"]:
        if job_id not in abandoned:
            assert status == FINISHED and result[1] == (job_id - 1) ** 2 + 1, (job_id, status, result)
    assert inits_of(r, victim.ip) == 2, r["inits"]
    assert any(result[0] == victim.ip for job_id, _, _, result in r["jobs"] if job_id > 6)


def test_client_cable_cut_every_node_presumed_dead_then_back(lan, nodes, client) -> None:
    """The client's own cable is cut past 5 x pulse_interval: every node is presumed
    dead at once and every job is queued again (reentrant) with nowhere to go; when the
    cable is back the nodes are set up again and every job finishes, reported once."""
    nodes(cpus=2)
    c = client([{"count": 12, "dur": 2.0}], reentrant=True)
    c.expect("PHASE 0")
    c.wait_started(None, 6)
    lan.cut(CLIENT_IP)
    try:
        for ip in NODE_IPS:
            c.expect(f"CLOSED {ip}", timeout=20)
        time.sleep(1.0)
    finally:
        lan.restore(CLIENT_IP)
    r = c.report()
    results = check_exactly_once(r, 12)
    runs = runs_by_job(r)
    assert all(inits_of(r, ip) == 2 for ip in NODE_IPS), r["inits"]
    assert sum(1 for ips in runs.values() if len(ips) >= 2) >= 6, runs  # the jobs that were running
    assert {result[0] for result in results.values()} <= set(NODE_IPS)


def test_cut_while_sending_large_arguments(lan, nodes, client) -> None:
    """The cable is cut before jobs with 4 MB of arguments each are submitted: the
    client's writes to that node stall (past its write limit) until the node is presumed
    dead; those jobs then run elsewhere, once; after the cable is back the node is set
    up again and runs later jobs."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 24, "dur": 0.3, "pad": 4 << 20, "gate": "gate"},
                {"count": 6, "dur": 0.3, "wait_init": [NODE_IPS[0], 2]}], reentrant=True)
    c.expect("READY")
    lan.cut(victim.ip)
    try:
        c.open_gate()
        c.expect("PHASE 0")
        c.expect(f"CLOSED {victim.ip}", timeout=20)
        time.sleep(1.0)
    finally:
        lan.restore(victim.ip)
    r = c.report()
    results = check_exactly_once(r, 30)
    assert all(result[4] == (4 << 20 if i <= 24 else 0) for i, result in results.items())
    runs = runs_by_job(r)
    stalled = {i for i, ips in runs.items() if i <= 24 and ips[0] == victim.ip}
    assert stalled and all(results[i][0] != victim.ip for i in stalled), (stalled, runs)
    assert inits_of(r, victim.ip) == 2, r["inits"]
    assert any(results[i][0] == victim.ip for i in range(25, 31)), results


def test_short_cut_loses_nothing(lan, nodes, client) -> None:
    """A cable cut for 1.5 s (well under 5 x pulse_interval) and put back: TCP carries on,
    nothing is presumed dead or sent twice, every job finishes on the node it went to."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.0}], reentrant=True)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    cut_at = time.time()
    lan.cut(victim.ip)
    try:
        # (not longer: TCP's retransmission backoff may keep the node silent up to about
        # twice the cut, plus up to a pulse interval before it, and 5 s means dead)
        time.sleep(1.5)
    finally:
        lan.restore(victim.ip)
    restored_at = time.time()
    r = c.report()
    results = check_exactly_once(r, 12)
    # the cut was real: results of jobs that ended on the node meanwhile came after it
    reported_at = {job_id: at for job_id, _, _, at in r["finals"]}
    held = [i for i, result in results.items()
            if result[0] == victim.ip and cut_at < result[3] < restored_at]
    assert held and all(reported_at[i] > restored_at for i in held), (held, results)
    runs = runs_by_job(r)
    assert all(len(ips) == 1 for ips in runs.values()), runs
    assert all(results[i][0] == runs[i][0] for i in results), (runs, results)
    assert any(result[0] == victim.ip for result in results.values())
    assert r["closes"] == [], r["closes"]
    assert all(inits_of(r, ip) == 1 for ip in NODE_IPS), r["inits"]


# -- the client dies -----------------------------------------------------------------------------

def test_killed_client_results_are_recovered_from_every_node(lan, nodes, client) -> None:
    """SIGKILL the client while its jobs run on three hosts; a new client program on the
    client host gets every result with recover_jobs(recover_file)."""
    nodes(cpus=2)
    c = client([{"count": 6, "dur": 3.0}], recover_file="recover.db")
    c.expect("PHASE 0")
    c.wait_started(None, 6)  # (no result can have reached the client yet)
    c.proc.kill()
    c.proc.wait(10)
    path = os.path.join(c.dir, "recover.db")
    assert os.path.exists(path)
    out = subprocess.run([*lan.client, sys.executable, "-c", RECOVER, path], capture_output=True,
                         text=True, timeout=120, cwd=c.dir)
    assert out.returncode == 0, out.stderr
    recovered = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(job_id for job_id, *_ in recovered) == list(range(1, 7)), (recovered, out.stderr)
    for job_id, status, host, result in recovered:
        assert status == FINISHED, (job_id, status, out.stderr)
        assert result[1] == (job_id - 1) ** 2 + 1 and host == result[0]
    assert {result[0] for *_, result in recovered} == set(NODE_IPS)  # from every node
    assert not os.path.exists(path), "everything was recovered: the file goes"


def test_killed_client_results_survive_a_node_crash_and_restart(lan, nodes, client) -> None:
    """The client is killed; its jobs finish on three hosts, their results kept on disk
    (the client's connection is gone); then one node crashes (SIGKILL) and is started
    again on the same address and dest_path_prefix: recover_jobs still gets every result,
    those of the crashed node from the restarted process."""
    victim, *_ = nodes(cpus=2)
    # Every job must still be running when the client dies (a result it got before is
    # rightly not recovered): the six start within a moment of each other, but on a loaded
    # machine that moment can exceed a second or two, so the jobs last well beyond it.
    c = client([{"count": 6, "dur": 6.0}], recover_file="recover.db")
    c.expect("PHASE 0")
    c.wait_started(None, 6)
    c.proc.kill()
    c.proc.wait(10)
    store = os.path.join(victim.prefix, ".undelivered")

    def kept() -> int:
        return sum(len(files) for _, _, files in os.walk(store)) if os.path.isdir(store) else 0

    deadline = time.monotonic() + 20
    while kept() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kept() == 2, (kept(), victim.log())  # its two jobs, on disk
    victim.kill()
    victim.start()
    path = os.path.join(c.dir, "recover.db")
    out = subprocess.run([*lan.client, sys.executable, "-c", RECOVER, path], capture_output=True,
                         text=True, timeout=120, cwd=c.dir)
    assert out.returncode == 0, out.stderr
    recovered = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(job_id for job_id, *_ in recovered) == list(range(1, 7)), (recovered, out.stderr,
                                                                             victim.log())
    for job_id, status, host, result in recovered:
        assert status == FINISHED and result[1] == (job_id - 1) ** 2 + 1, (job_id, status, result)
    assert sum(1 for *_, result in recovered if result[0] == victim.ip) == 2
    assert not os.path.exists(path)


# -- a node restarts -----------------------------------------------------------------------------

def test_restarted_node_is_found_again_and_used(lan, nodes, client) -> None:
    """SIGKILL a node mid-job and start a new process on its address: with ping_interval
    and reentrant, its jobs rerun elsewhere once, the new process is found and set up,
    and it runs later jobs."""
    victim, *_ = nodes(cpus=2)
    c = client([{"count": 12, "dur": 1.5},
                {"count": 12, "dur": 0.3, "wait_init": [NODE_IPS[0], 2]}],
               reentrant=True, ping_interval=1)
    c.expect("PHASE 0")
    c.wait_started(victim.ip, 2)
    victim.kill()
    time.sleep(1.0)
    victim.start()
    r = c.report()
    results = check_exactly_once(r, 24)
    runs = runs_by_job(r)
    had = {job_id for job_id, ips in runs.items() if job_id <= 12 and ips[0] == victim.ip}
    assert had and all(results[i][0] != victim.ip for i in had), (had, results)
    assert inits_of(r, victim.ip) == 2, r["inits"]
    assert any(results[i][0] == victim.ip for i in range(13, 25)), results


# -- chaos ---------------------------------------------------------------------------------------

def chaos_results(r: dict, count: int, t0: float, capsys, what: str) -> Counter:
    """Check a chaos run (every job once, right), print what it did; jobs per node."""
    elapsed = time.monotonic() - t0
    results = check_exactly_once(r, count)
    reruns = sum(1 for ips in runs_by_job(r).values() if len(ips) > 1)
    per_node = Counter(result[0] for result in results.values())
    with capsys.disabled():
        print(f"\n{what}, {elapsed:.1f} s (jobs {r['elapsed']:.1f} s); jobs per node "
              f"{dict(sorted(per_node.items()))}; jobs sent more than once {reruns}; node set-ups "
              f"{dict(Counter(ip for ip, _ in r['inits']))}; presumed dead or lost "
              f"{dict(Counter(ip for ip, _ in r['closes']))}")
    assert reruns >= 1, "no job was ever lost with a node"
    assert set(per_node) == set(NODE_IPS)
    return per_node


def test_chaos_kill_and_restart_nodes_round_robin(lan, nodes, client, capsys) -> None:
    """Many short reentrant jobs while one node after another is SIGKILLed and started
    again every few seconds: every result arrives once and is right."""
    count = int(os.environ.get("DISPY_CHAOS_JOBS", "2000"))
    started = nodes(cpus=2)
    t0 = time.monotonic()
    # Jobs sleep 0-0.1 s: about 120 jobs/s on 6 CPUs, so 2000 jobs see several kills.
    c = client([{"count": count, "dur": -0.1}], reentrant=True, ping_interval=1,
               timeout=max(120, count / 20))
    c.expect("PHASE 0")
    kills = restarts = 0
    k = 0
    while not c.done():
        time.sleep(1.0 if kills == 0 else 3.0)
        if c.done():
            break
        victim = started[k % 3]
        k += 1
        victim.kill()
        kills += 1
        time.sleep(0.5)
        victim.start()
        restarts += 1
    r = c.report(timeout=max(180, count / 10))
    assert kills >= 2, "the jobs were done before the chaos began: raise DISPY_CHAOS_JOBS"
    chaos_results(r, count, t0, capsys, f"chaos: {count} jobs, {kills} kills, {restarts} restarts")


def test_chaos_mixed_faults_round_robin(lan, nodes, client, capsys) -> None:
    """The same jobs under every kind of fault in turn, one node at a time: SIGKILL and
    restart, SIGSTOP for 6 s then SIGCONT, cable cut for 6 s then restored (the silent
    ones outlast 5 x pulse_interval, so the node is presumed dead and comes back)."""
    count = int(os.environ.get("DISPY_CHAOS_JOBS", "2000"))
    started = nodes(cpus=2)
    t0 = time.monotonic()
    c = client([{"count": count, "dur": -0.1}], reentrant=True, ping_interval=1,
               timeout=max(120, count / 20))
    c.expect("PHASE 0")
    faults: Counter[str] = Counter()
    k = 0
    while not c.done():
        time.sleep(1.0 if k == 0 else 2.0)
        if c.done():
            break
        victim, fault = started[k % 3], ("kill", "stop", "cut")[(k + k // 3) % 3]
        k += 1
        faults[fault] += 1
        if fault == "kill":
            victim.kill()
            time.sleep(0.5)
            victim.start()
            continue
        if fault == "stop":
            victim.signal(signal.SIGSTOP)
        else:
            lan.cut(victim.ip)
        try:
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline and not c.done():
                time.sleep(0.1)
        finally:
            if fault == "stop":
                victim.signal(signal.SIGCONT)
            else:
                lan.restore(victim.ip)
    r = c.report(timeout=max(180, count / 10))
    assert sum(faults.values()) >= 2, "the jobs were done before the chaos began"
    chaos_results(r, count, t0, capsys, f"mixed chaos: {count} jobs, faults {dict(faults)}")
