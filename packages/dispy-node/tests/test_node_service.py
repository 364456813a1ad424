"""Service windows: the pure window logic (service.py) on a fake clock, the options'
checks, and a node in this process whose clock the test moves across the window."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import types

import pytest
from node_testkit import TestClient, run, ship_by_value

from dispy_core.errors import ConfigError
from dispy_core.messages import ComputationClosed, ComputeFailed
from dispy_core.status import JobStatus
from dispy_node.options import NodeConfig
from dispy_node.server import Node
from dispy_node.service import DAY, MAX_DELAY, Action, Phase, ServiceClock, ServiceWindow, parse_time

ship_by_value(__name__)

CLI = [sys.executable, "-m", "dispy_node.cli"]


def at(hhmm: str) -> float:
    h, m = hhmm.split(":")
    return int(h) * 3600 + int(m) * 60


def window(start: str | None = None, stop: str | None = None, end: str | None = None) -> ServiceWindow:
    w = ServiceWindow.from_options(start, stop, end)
    assert w is not None
    return w


class FakeClock:
    def __init__(self, hhmm: str) -> None:
        self.now = datetime.datetime(2024, 3, 1) + datetime.timedelta(seconds=at(hhmm))

    def set(self, hhmm: str, days: int = 0) -> None:
        day = self.now.replace(hour=0, minute=0, second=0, microsecond=0) + datetime.timedelta(days=days)
        self.now = day + datetime.timedelta(seconds=at(hhmm))

    def __call__(self) -> datetime.datetime:
        return self.now


# -- parsing and checks -----------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("00:00", 0), ("8:05", 8 * 3600 + 300), ("23:59", DAY - 60)])
def test_parse_time(text, seconds):
    assert parse_time(text, "service_start") == seconds


@pytest.mark.parametrize("text", ["24:00", "12:60", "1200", "12:5", "noon", "", "-1:00", "12:00:00"])
def test_bad_times_name_the_option(text):
    with pytest.raises(ConfigError, match=r"--service_stop .*HH:MM"):
        parse_time(text, "service_stop")


def test_no_options_no_window():
    assert ServiceWindow.from_options(None, None, None) is None
    assert NodeConfig().service_window is None


@pytest.mark.parametrize("args,match", [
    (("09:00", None, None), "--service_start needs --service_stop or --service_end"),
    (("09:00", "09:00", None), "--service_stop .* same time as --service_start"),
    (("09:00", None, "09:00"), "--service_end .* same time as --service_start"),
    (("09:00", "18:00", "17:00"), "--service_stop 18:00 must not come after --service_end 17:00"),
    (("17:00", "09:00", "08:00"), "--service_stop 09:00 must not come after --service_end 08:00"),
    (("9", "17:00", None), "--service_start"),
    (("09:00", None, "25:00"), "--service_end"),
])
def test_bad_windows(args, match):
    with pytest.raises(ConfigError, match=match):
        ServiceWindow.from_options(*args)
    with pytest.raises(ConfigError, match=match):
        NodeConfig(service_start=args[0], service_stop=args[1], service_end=args[2])


# -- phases -----------------------------------------------------------------------------
@pytest.mark.parametrize("hhmm,phase", [
    ("08:59", Phase.CLOSED), ("09:00", Phase.SERVING), ("11:59", Phase.SERVING),
    ("12:00", Phase.STOPPED), ("16:59", Phase.STOPPED), ("17:00", Phase.CLOSED), ("00:00", Phase.CLOSED),
])
def test_phases_of_a_day_window(hhmm, phase):
    assert window("09:00", "12:00", "17:00").phase(at(hhmm)) is phase


@pytest.mark.parametrize("hhmm,phase", [
    ("16:59", Phase.CLOSED), ("17:00", Phase.SERVING), ("23:59", Phase.SERVING), ("00:00", Phase.SERVING),
    ("05:59", Phase.SERVING), ("06:00", Phase.STOPPED), ("07:59", Phase.STOPPED), ("08:00", Phase.CLOSED),
    ("12:00", Phase.CLOSED),
])
def test_phases_of_a_window_across_midnight(hhmm, phase):
    assert window("17:00", "06:00", "08:00").phase(at(hhmm)) is phase


def test_phases_without_stop_or_end_or_start():
    only_end = window("17:00", None, "08:00")
    assert [only_end.phase(at(t)) for t in ("16:00", "17:00", "07:59", "08:00")] == \
        [Phase.CLOSED, Phase.SERVING, Phase.SERVING, Phase.CLOSED]
    only_stop = window("17:00", "08:00", None)  # never closed: held until the next start
    assert [only_stop.phase(at(t)) for t in ("16:59", "17:00", "07:59", "08:00")] == \
        [Phase.STOPPED, Phase.SERVING, Phase.SERVING, Phase.STOPPED]
    no_start = window(None, None, "06:00")  # from midnight
    assert [no_start.phase(at(t)) for t in ("00:00", "05:59", "06:00", "23:59")] == \
        [Phase.SERVING, Phase.SERVING, Phase.CLOSED, Phase.CLOSED]


def test_next_change():
    w = window("17:00", "06:00", "08:00")
    assert w.next_change(at("16:00")) == 3600  # to the start
    assert w.next_change(at("23:00")) == 7 * 3600  # to the stop, across midnight
    assert w.next_change(at("07:30")) == 1800  # to the end
    assert w.next_change(at("08:00")) == 9 * 3600


def test_descriptions_and_refusals():
    w = window("17:00", "06:00", "08:00")
    assert w.describe() == "from 17:00, no new jobs from 06:00, closed from 08:00 (daily)"
    assert "--service_start 17:00 until --service_end 08:00" in w.refusal(Phase.CLOSED)
    assert "--service_stop 06:00 until --service_start 17:00" in w.refusal(Phase.STOPPED)


# -- the clock: every transition ---------------------------------------------------------
def test_clock_through_two_days():
    clock = FakeClock("12:00")
    sc = ServiceClock(window("17:00", "06:00", "08:00"), clock)
    assert sc.update() == [Action.HOLD, Action.CLOSE_ALL]  # started outside: closed
    assert not sc.serving and sc.phase is Phase.CLOSED
    assert sc.delay() == MAX_DELAY  # five hours away: looks again in a minute
    assert sc.update() == []
    clock.set("16:59")
    assert sc.update() == [] and 60 <= sc.delay() <= 60.1
    clock.set("17:00")
    assert sc.update() == [Action.RELEASE] and sc.serving
    clock.set("23:59")
    assert sc.update() == []
    clock.set("00:30", days=1)  # across midnight: still serving
    assert sc.update() == []
    clock.set("06:00")
    assert sc.update() == [Action.HOLD] and sc.phase is Phase.STOPPED
    clock.set("08:00")
    assert sc.update() == [Action.CLOSE_ALL] and sc.phase is Phase.CLOSED
    clock.set("17:00")
    assert sc.update() == [Action.RELEASE]


def test_clock_jumps():
    clock = FakeClock("18:00")
    sc = ServiceClock(window("17:00", "06:00", "08:00"), clock)
    assert sc.update() == []  # started inside
    clock.set("09:00", days=1)  # e.g. the machine slept over the stop and the end
    assert sc.update() == [Action.HOLD, Action.CLOSE_ALL]
    clock.set("07:00", days=1)  # clock set back into the stopped part: still held
    assert sc.update() == []
    assert sc.phase is Phase.STOPPED
    clock.set("20:00")
    assert sc.update() == [Action.RELEASE]


def test_clock_started_between_stop_and_end():
    sc = ServiceClock(window("09:00", "12:00", "17:00"), FakeClock("13:00"))
    assert sc.update() == [Action.HOLD]
    assert "--service_stop 12:00" in sc.refusal()


# -- the command line ---------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "-i", "127.0.0.1", "-p", "0", "--daemon", *args],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args,text", [
    (["--service_start", "25:00", "--service_end", "08:00"], "--service_start '25:00'"),
    (["--service_start", "17:00", "--service_stop", "6"], "--service_stop '6'"),
    (["--service_start", "17:00"], "--service_start needs --service_stop or --service_end"),
])
def test_bad_service_options_exit_2(args, text):
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert text in r.stderr


def test_service_options_are_saved_and_read(tmp_path):
    path = tmp_path / "node.cfg"
    r = _cli("--service_start", "17:00", "--service_stop", "06:00", "--service_end", "08:00",
             "--unsafe_setup", "--save_config", str(path))
    assert r.returncode == 0, r.stderr
    text = path.read_text()
    for line in ("service_start = 17:00", "service_stop = 06:00", "service_end = 08:00", "unsafe_setup = true"):
        assert line in text
    bad = tmp_path / "bad.cfg"
    bad.write_text(text.replace("08:00", "8h"))
    r = _cli("--config", str(bad))
    assert r.returncode == 2 and "--service_end '8h'" in r.stderr


# -- a node moved across its window --------------------------------------------------------
def sleep_for(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_node_follows_its_window(tmp_path):
    """Closed at start (refused), serving at the start (jobs run), held at the stop (a
    queued job waits, the running one finishes), closed at the end (the waiting job
    ends, the client gets ComputationClosed), serving again the next day."""

    async def main() -> None:
        cfg = NodeConfig(ip_addrs=["127.0.0.1"], port=0, cpus=1, name="svc", dest_path_prefix=str(tmp_path),
                         service_start="17:00", service_stop="06:00", service_end="08:00")
        node = Node(cfg)
        clock = FakeClock("12:00")
        assert node.service is not None
        node.service.clock = clock
        runner = asyncio.create_task(node.run())
        try:
            while not node.listening:
                await asyncio.sleep(0.02)
            where = types.SimpleNamespace(ip="127.0.0.1", port=node.listening[0][1])
            client = await TestClient.connect(where, secret="")  # type: ignore[arg-type]
            reply = await client.compute(sleep_for)
            assert isinstance(reply, ComputeFailed)
            assert "outside its service window" in reply.error and "--service_start 17:00" in reply.error

            clock.set("17:00")
            node._service_tick()
            cid = await client.ready(sleep_for)
            assert [r.status for r in await client.run_jobs(cid, (0,))] == [JobStatus.Finished]

            clock.set("06:00", days=1)
            [running, held] = client.submit(cid, (0.5,), (0,))
            await asyncio.sleep(0.2)  # the first job is running
            node._service_tick()
            [first] = await client.wait_results(cid, [running])
            assert first.status == JobStatus.Finished  # running jobs go on
            await asyncio.sleep(0.3)
            assert held not in client.results.get(cid, {})  # the queued one waits
            assert "outside its service window" in node.status()["state"]

            clock.set("08:00")
            node._service_tick()
            [second] = await client.wait_results(cid, [held])
            assert second.status in (JobStatus.Cancelled, JobStatus.Terminated)
            closed = await client.next_reply()
            assert isinstance(closed, ComputationClosed) and closed.compute_id == cid
            assert not node.comps

            clock.set("17:00")
            node._service_tick()
            cid = await client.ready(sleep_for)
            assert [r.status for r in await client.run_jobs(cid, (0,))] == [JobStatus.Finished]
            client.close()
        finally:
            node.stop()
            await runner

    run(main(), timeout=60)
