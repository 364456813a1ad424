"""The interactive menu: commands on a fake node, then a real dispynode whose stdin is a
pty (cpus, stop/start, help, exit) driven while a client runs jobs on it."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

import pytest
from node_testkit import TestClient, client_test, ship_by_value, value

from dispy_core.errors import ConfigError
from dispy_core.status import JobStatus
from dispy_core.testing import console_commands, wait_until
from dispy_node.console import HELP, Console

ship_by_value(__name__)

CLI = [sys.executable, "-m", "dispy_node.cli"]


# -- commands, on a fake node ---------------------------------------------------------------
class FakeNode:
    def __init__(self) -> None:
        self.cpus, self.held, self.calls = 4, False, []

    def status(self) -> dict[str, Any]:
        return {"name": "fake", "cpus": self.cpus, "busy": 1, "jobs_done": 7, "listening": [("127.0.0.1", 1)],
                "state": "stopped" if self.held else "serving",
                "computations": [{"compute_id": "abc", "name": "compute", "client": ("127.0.0.1", 5),
                                  "state": "ready", "cpus": 2, "pending": 3, "running": 1, "done": 7}]}

    def set_cpus(self, n: int) -> int:
        if n == 0 or n > 8:
            raise ConfigError(f"invalid CPU count {n}: --cpus must be in 1..8 or -7..-1")
        self.cpus = n if n > 0 else 8 + n
        return self.cpus

    def pause_jobs(self, reason: str = "operator") -> None:
        self.held = True

    def resume_jobs(self, reason: str = "operator") -> bool:
        self.held = False
        return True


@pytest.fixture
def console():
    node = FakeNode()
    with console_commands(Console, node) as (say, calls):
        yield say, node, calls


def test_status_and_empty_line(console):
    say, _, _ = console
    for line in ("", "status", "STATUS"):
        text = say(line)
        assert "CPUs: 4 (1 busy), jobs done: 7" in text and "state: serving" in text
        assert re.search(r"abc\s+compute\s+127\.0\.0\.1:5\s+ready\s+2\s+3\s+1\s+7", text), text


def test_cpus(console):
    say, node, _ = console
    assert "using 2 CPUs" in say("cpus 2") and node.cpus == 2
    assert "using 6 CPUs" in say("cpus -2") and node.cpus == 6
    assert "--cpus must be in 1..8" in say("cpus 0") and node.cpus == 6
    assert "uses 6 CPUs; usage: cpus N" in say("cpus")
    assert "usage: cpus N" in say("cpus many")


def test_admin_secret_is_the_next_line_as_typed(console):
    say, node, _ = console
    secrets_set = []

    def set_admin_secret(secret: str) -> None:
        if secret == "cluster":
            raise ConfigError("the admin secret must differ from the cluster secret (--secret)")
        secrets_set.append(secret)

    node.set_admin_secret = set_admin_secret
    assert "type the admin secret" in say("admin_secret")
    assert "admin secret set" in say("Mixed Case SECRET")  # not lower-cased, not a command
    assert secrets_set == ["Mixed Case SECRET"]
    say("admin_secret")
    assert "must differ from the cluster secret" in say("cluster")
    say("admin_secret")
    assert "unchanged" in say("") and secrets_set == ["Mixed Case SECRET"]
    assert "CPUs: 4" in say("")  # back to commands
    assert "admin_secret" in say("help")


def test_stop_start_quit_exit(console):
    say, node, calls = console
    assert "stopped" in say("stop") and node.held
    assert "started: running jobs on 4 CPUs" in say("start") and not node.held
    say("exit")
    say("quit")
    assert calls == ["exit", "quit"]


def test_help_and_unknown(console):
    say, _, calls = console
    assert say("help").strip() == HELP
    text = say("reboot now")
    assert "unknown command 'reboot now'" in text and HELP in text
    assert "unknown command" in say("stop please")  # no arguments to stop
    assert calls == []


# -- a real node on a terminal ---------------------------------------------------------------
def timed_sleep(seconds):
    import time

    start = time.time()
    time.sleep(seconds)
    return (start, time.time())


def overlaps(spans):
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


class Terminal:
    """A dispynode whose stdin is a pty; reads what it prints."""

    def __init__(self, tmp_path, ip: str, *args: str) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([*CLI, "-i", ip, "-p", "0", "--dest_path_prefix", str(tmp_path), *args],
                                     stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(slave)
        self.master = master
        self.text = ""
        m = re.search(r"serving (\d+) CPUs at (\S+):(\d+)", self.read_until(r"serving \d+ CPUs at \S+:\d+"))
        assert m
        self.ip, self.port = m.group(2), int(m.group(3))

    def read_until(self, pattern: str, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.text)):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.text!r}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                assert chunk, f"EOF before {pattern!r} in {self.text!r}"
                self.text += chunk.decode()
        seen, self.text = self.text[:m.end()], self.text[m.end():]
        return seen

    def say(self, line: str, expect: str) -> str:
        os.write(self.master, line.encode() + b"\n")
        return self.read_until(expect)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_menu_drives_a_real_node(tmp_path):
    term = Terminal(tmp_path, "127.0.0.21", "-c", "2")
    try:
        term.read_until("Enter 'help'")
        assert "CPUs: 2 (0 busy)" in term.say("", r"no computations")
        term.say("help", r"exit\s+finish the jobs")
        term.say("bogus", r"unknown command 'bogus'")

        async def body(c: TestClient) -> None:
            cid = await c.ready(timed_sleep)
            spans = [r.result for r in await c.run_jobs(cid, (0.3,), (0.3,))]
            assert all(spans)
            await asyncio.to_thread(term.say, "cpus 1", r"using 1 CPUs")
            results = await c.run_jobs(cid, (0.3,), (0.3,), (0.3,))
            assert [r.status for r in results] == [JobStatus.Finished] * 3
            assert not overlaps([value(r) for r in results]), "two jobs ran at once after 'cpus 1'"
            await asyncio.to_thread(term.say, "cpus 5", r"--cpus must be in")

            await asyncio.to_thread(term.say, "stop", r"stopped: no new computations")
            [held] = c.submit(cid, (0,))
            await asyncio.sleep(0.5)
            assert held not in c.results.get(cid, {}), "a job started while the node was stopped"
            refused = await c.compute(timed_sleep)
            assert "stopped by its operator" in getattr(refused, "error", "")
            status = await asyncio.to_thread(term.say, "status", r"Done\s*\n.*\n")
            assert "stopped (console 'stop')" in status
            await asyncio.to_thread(term.say, "start", r"started: running jobs on 1 CPUs")
            [result] = await c.wait_results(cid, [held])
            assert result.status == JobStatus.Finished

        client_test(term, body, secret="")  # type: ignore[arg-type]
        term.say("exit", r"stopping dispynode once the jobs in it are done")
        assert term.proc.wait(15) == 0
    finally:
        term.close()


def test_menu_quit_terminates_a_running_job(tmp_path):
    term = Terminal(tmp_path, "127.0.0.22", "-c", "1")
    try:

        async def body(c: TestClient) -> None:
            cid = await c.ready(timed_sleep)
            [job] = c.submit(cid, (60,))
            await asyncio.to_thread(wait_until, lambda: "1 busy" in term.say("", r"state:"), 10)
            await asyncio.to_thread(term.say, "quit", r"terminating dispynode")
            [result] = await c.wait_results(cid, [job])
            assert result.status == JobStatus.Terminated

        client_test(term, body, secret="")  # type: ignore[arg-type]
        assert term.proc.wait(15) == 0
    finally:
        term.close()
