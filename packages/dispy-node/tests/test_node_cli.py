"""The dispynode command: option checks, what each option does, signals, the console."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from node_testkit import TestClient, client_test, ship_by_value, value

from dispy_core.messages import InfoRequest, NodeInfo
from dispy_core.testing import NodeProcess, wait_until
from dispy_node.options import machine_cpus

ship_by_value(__name__)

CLI = [sys.executable, "-m", "dispy_node.cli"]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "-i", "127.0.0.1", "-p", "0", "--daemon", *args],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("cpus", ["0", str(machine_cpus() + 1), str(-machine_cpus())])
def test_bad_cpu_counts_exit_2_naming_the_range(cpus):
    p = _run_cli("-c", cpus)
    assert p.returncode == 2, p.stderr
    n = machine_cpus()
    assert f"invalid CPU count {cpus}" in p.stderr and f"1..{n}" in p.stderr
    if n > 1:
        assert f"-{n - 1}..-1" in p.stderr


@pytest.mark.parametrize("args,text", [
    (["--max_file_size", "10x"], "invalid --max_file_size"),
    (["--msg_timeout", "0"], "invalid --msg_timeout"),
    (["-p", "70000"], "invalid port 70000"),
    (["-i", "no-such-host.invalid"], "invalid --ip_addr"),
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    (["--certfile", "/nonexistent/c.pem"], "certfile '/nonexistent/c.pem' does not exist"),
    (["--ping_interval", "5"], "invalid --ping_interval 5: must be at least 10 seconds"),
    (["--host", "no-such-host.invalid"], "invalid --ip_addr"),  # dispy's other name of -i
    (["--admin_secret", "x", "-s", "x"], "--admin_secret must differ from --secret"),
    (["--init", "init.py"], "--init: node-wide globals from a module are not supported yet"),
])
def test_other_bad_options_exit_2(args, text):
    p = subprocess.run([*CLI, "--daemon", *args], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and text in p.stderr, p.stderr


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def test_addresses_port_name_cpus_debug():
    port = _free_port("127.0.0.2")
    with NodeProcess("127.0.0.2", "-i", "127.0.0.3", "-c", "1", "--name", "twin", "-d", port=port) as node:
        assert wait_until(lambda: "127.0.0.3" in node.log, 5)
        assert f"dispynode twin serving 1 CPUs at 127.0.0.2:{port}\n" in node.log
        assert f"dispynode twin serving 1 CPUs at 127.0.0.3:{port}\n" in node.log
        assert " DEBUG " in node.log  # -d
        node.ip = "127.0.0.3"  # the second address serves too, and says so

        async def body(c: TestClient):
            info = await c.request(InfoRequest())
            assert isinstance(info, NodeInfo)
            assert (info.name, info.ip_addr, info.port, info.cpus) == ("twin", "127.0.0.3", port, 1)

        client_test(node, body, secret="")


def stamp(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def test_cpus_limits_jobs_running_at_once_across_computations():
    with NodeProcess("127.0.0.6", "-c", "1") as node:

        async def body(c: TestClient):
            a = await c.ready(stamp)
            b = await c.ready(stamp)
            ids_a, ids_b = c.submit(a, (0.2,), (0.2,)), c.submit(b, (0.2,), (0.2,))
            spans = [value(r) for r in await c.wait_results(a, ids_a)]
            spans += [value(r) for r in await c.wait_results(b, ids_b)]
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:]):
                assert start >= end - 0.01  # one at a time

        client_test(node, body, secret="")


def test_sigterm_terminates_jobs_cleans_up_and_exits_0(tmp_path):
    prefix = tmp_path / "prefix"
    pid_file = tmp_path / "job.pid"
    node = NodeProcess("127.0.0.5", dest_path_prefix=str(prefix))
    try:

        async def body(c: TestClient):
            reply = await c.compute(record_pid_and_sleep)
            c.submit(reply.compute_id, (str(pid_file), 60))
            # the file exists before the job has written its pid into it
            assert await asyncio.to_thread(
                wait_until, lambda: pid_file.exists() and pid_file.read_text().strip(), 5)
            job_pid = int(pid_file.read_text())
            family = psutil.Process(node.proc.pid).children(recursive=True)  # zygote, host, workers
            assert job_pid in {p.pid for p in family}
            start = time.monotonic()
            assert await asyncio.to_thread(node.stop) == 0  # SIGTERM while the job runs
            assert time.monotonic() - start < 10
            _, alive = psutil.wait_procs(family, timeout=5)
            assert not alive, alive
            assert not os.path.exists(reply.dest_path)
            assert wait_until(lambda: "shutting down" in node.log, 10), node.log

        client_test(node, body, secret="")
    finally:
        node.stop()


def record_pid_and_sleep(path, seconds):
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)


def test_msg_timeout_closes_silent_connections():
    with NodeProcess("127.0.0.7", "--msg_timeout", "0.5") as node:
        start = time.monotonic()
        with socket.create_connection((node.ip, node.port), timeout=10) as s:
            assert s.recv(100) == b""  # closed by the node
        assert time.monotonic() - start < 8  # (well before the socket's own 10 s)
        assert wait_until(lambda: "no handshake within 0.5 s" in node.log, 5)


def test_clean_removes_leftovers(tmp_path):
    prefix = tmp_path / "prefix"
    with NodeProcess("127.0.0.8", dest_path_prefix=str(prefix)):
        pass
    (prefix / "old-computation").mkdir()  # as a computation with cleanup=False leaves it
    (prefix / "old-computation" / "f").write_text("x")
    with open(prefix / ".dispynode-prefix", "a") as fh:  # (the node records what it makes)
        fh.write('"old-computation"\n')
    with NodeProcess("127.0.0.8", dest_path_prefix=str(prefix)):
        assert (prefix / "old-computation").exists()  # not without --clean
    with NodeProcess("127.0.0.8", "--clean", dest_path_prefix=str(prefix)):
        assert not (prefix / "old-computation").exists()
    # what the node did not make is never removed: --clean refuses, and the node stops
    (prefix / "users").mkdir()
    with pytest.raises(RuntimeError, match="it holds files dispynode did not create: users/; nothing was removed"):
        NodeProcess("127.0.0.8", "--clean", dest_path_prefix=str(prefix))
    assert (prefix / "users").is_dir()


# -- the console ------------------------------------------------------------------------
def _read_until(fd: int, pattern: str, timeout: float = 15.0) -> str:
    text = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text):
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} in {text!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF before {pattern!r} in {text!r}"
            text += chunk.decode()
    return text


def _console_node(tmp_path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([*CLI, "-i", "127.0.0.9", "-p", "0", "--dest_path_prefix", str(tmp_path), *args],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    return proc, master


def test_console_status_and_quit(tmp_path):
    proc, master = _console_node(tmp_path)
    try:
        out = proc.stdout.fileno()
        _read_until(out, r"serving \d+ CPUs at 127\.0\.0\.9:\d+")
        os.write(master, b"\n")
        assert "no computations" in _read_until(out, r"no computations")
        os.write(master, b"quit\n")
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


def test_daemon_ignores_the_terminal(tmp_path):
    proc, master = _console_node(tmp_path, "--daemon")
    try:
        _read_until(proc.stdout.fileno(), r"serving \d+ CPUs")
        os.write(master, b"quit\n")
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
