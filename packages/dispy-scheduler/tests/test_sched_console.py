"""dispyscheduler's terminal: the status table and the commands, on a fake daemon (reading
them from stdin is dispy_core.console's, tested in dispy-core)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dispy_core.testing import console_commands
from dispy_scheduler.console import HELP, Console, format_status

STATUS: dict[str, Any] = {
    "listening": [("127.0.0.1", 9702), ("::1", 9702)],
    "policy": "fair",
    "nodes": [
        {"ip_addr": "127.0.0.5", "port": 9701, "name": "server-one", "cpus": 8, "running": 3, "done": 120,
         "cpu_time": 3723.31},
        {"ip_addr": "fe80::6", "port": 9801, "name": "two", "cpus": 2, "running": 0, "done": 0,
         "cpu_time": 0.0},
    ],
    "clusters": [
        {"name": "compute", "client": "127.0.0.9:40000", "state": "running", "exclusive": False,
         "queued": 17, "running": 3, "done": 120},
        {"name": "render", "client": "127.0.0.10:40001", "state": "waiting", "exclusive": True,
         "queued": 4, "running": 0, "done": 0},
    ],
}


class FakeDaemon:
    def __init__(self, st: dict[str, Any] = STATUS) -> None:
        self.st = st
        self.asked = 0

    def status(self) -> dict[str, Any]:
        self.asked += 1
        return self.st


def test_format_status():
    text = format_status(STATUS)
    lines = text.splitlines()
    assert lines[0] == "dispyscheduler at 127.0.0.1:9702, [::1]:9702, policy: fair"
    assert re.fullmatch(r"\s+Node\s+Name\s+CPUs\s+Running\s+Done\s+Node time", lines[1]), lines[1]
    assert re.fullmatch(r"\s+127\.0\.0\.5:9701\s+server-one\s+8\s+3\s+120\s+3723\.3s", lines[2]), lines[2]
    assert re.fullmatch(r"\s+\[fe80::6\]:9801\s+two\s+2\s+0\s+0\s+0\.0s", lines[3]), lines[3]
    assert lines[4] == ""
    assert re.fullmatch(r"\s+Cluster\s+Client\s+State\s+Exclusive\s+Queued\s+Running\s+Done", lines[5]), lines[5]
    assert re.fullmatch(r"\s+compute\s+127\.0\.0\.9:40000\s+running\s+no\s+17\s+3\s+120", lines[6]), lines[6]
    assert re.fullmatch(r"\s+render\s+127\.0\.0\.10:40001\s+waiting\s+yes\s+4\s+0\s+0", lines[7]), lines[7]
    assert len(lines) == 8
    # columns line up: each cell starts where its header does
    assert lines[2].index("server-one") == lines[1].index("Name") == lines[3].index("two")
    assert lines[6].index("running") == lines[5].index("State") == lines[7].index("waiting")


def test_format_status_empty():
    text = format_status({"listening": [("127.0.0.1", 9702)], "policy": "default", "nodes": [], "clusters": []})
    assert text == "dispyscheduler at 127.0.0.1:9702, policy: default\n  no nodes\n  no clusters"


def test_format_status_names_the_web_monitor():
    text = format_status({"listening": [("127.0.0.1", 9702)], "policy": "default", "nodes": [], "clusters": [],
                          "web": "http://127.0.0.1:8181/?token=abc"})
    assert text.splitlines()[:2] == ["dispyscheduler at 127.0.0.1:9702, policy: default",
                                     "web monitor at http://127.0.0.1:8181/?token=abc"]


@pytest.fixture
def console():
    daemon = FakeDaemon()
    with console_commands(Console, daemon) as (say, calls):
        yield say, daemon, calls


def test_status_and_empty_line(console):
    say, daemon, calls = console
    for n, line in enumerate(("", "status", "  STATUS ")):
        assert say(line) == format_status(STATUS) + "\n"
        assert daemon.asked == n + 1
    assert calls == []


def test_quit_and_exit(console):
    say, _, calls = console
    assert "terminating dispyscheduler" in say("quit") and calls == ["quit"]
    assert "once the running computations are done" in say("Exit") and calls == ["quit", "exit"]


def test_help_and_unknown(console):
    say, daemon, calls = console
    assert say("help").strip() == HELP
    text = say("reboot now")
    assert "unknown command 'reboot now'" in text and HELP in text
    assert "unknown command 'quit now'" in say("quit now")  # no arguments to quit
    assert "unknown command 'status all'" in say("status all")
    assert calls == [] and daemon.asked == 0
