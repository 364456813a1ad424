"""dispynode options --save_config/--config, --serve, --client_shutdown and
--zombie_interval, against real nodes on 127.0.0.x."""

from __future__ import annotations

import asyncio
import configparser
import os
import subprocess
import sys
import time

from node_testkit import SECRET, TestClient, client_test, ship_by_value, value

from dispy_core.messages import ComputationClosed, ComputeFailed, InfoRequest, NodeInfo
from dispy_core.testing import NodeProcess, wait_until
from dispy_node.options import machine_cpus

ship_by_value(__name__)

CLI = [sys.executable, "-m", "dispy_node.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--daemon", *args], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def _comp_dirs(node: NodeProcess) -> list[str]:
    return [e for e in os.listdir(node.dest_path_prefix) if not e.startswith(".")]


def double(x):
    return 2 * x


# -- --save_config / --config ----------------------------------------------------------
def test_save_config_to_stdout_leaves_out_node_specific_options():
    p = _cli("-c", "1", "-s", "s3%cret", "--zombie_interval", "2.5", "--serve", "3", "-d",
             "-i", "127.0.0.1", "-p", "0", "--name", "n1", "--save_config")
    assert p.returncode == 0, p.stderr
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(p.stdout)
    assert cp.sections() == ["dispynode"]
    assert dict(cp["dispynode"]) == {"cpus": "1", "secret": "s3%cret", "zombie_interval": "2.5",
                                     "serve": "3", "debug": "true", "daemon": "true"}
    assert "not saved (node-specific): --ip_addr, --node_port, --name" in p.stderr


def test_saved_config_is_used_and_command_line_overrides(tmp_path):
    cfg = tmp_path / "node.cfg"
    p = _cli("-c", "1", "-s", "from-file", "--msg_timeout", "7", "--save_config", str(cfg))
    assert p.returncode == 0 and p.stdout == "", p.stderr
    assert cfg.stat().st_mode & 0o077 == 0  # it holds the secret
    with NodeProcess("127.0.0.4", "--config", str(cfg)) as node:
        assert node.cpus == 1

        async def body(c: TestClient):
            info = await c.request(InfoRequest())
            assert isinstance(info, NodeInfo) and info.cpus == 1

        client_test(node, body, secret="from-file")  # fails unless the secret is the file's
    if machine_cpus() > 1:
        with NodeProcess("127.0.0.4", "--config", str(cfg), "-c", "2") as node:
            assert node.cpus == 2  # the command line wins


def test_config_with_unknown_or_bad_keys_exits_2(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[dispynode]\ncpus = 1\nip_addr = 127.0.0.1\n")
    p = _cli("--config", str(cfg))
    assert p.returncode == 2 and "unknown option 'ip_addr'" in p.stderr, p.stderr
    cfg.write_text("[dispynode]\nmsg_timeout = soon\n")
    p = _cli("--config", str(cfg))
    assert p.returncode == 2 and "invalid value 'soon' for msg_timeout" in p.stderr, p.stderr
    p = _cli("--config", str(tmp_path / "missing.cfg"))
    assert p.returncode == 2 and "can't read --config" in p.stderr, p.stderr


# -- --serve ---------------------------------------------------------------------------
def test_serve_1_quits_after_the_first_client_and_refuses_a_second():
    with NodeProcess("127.0.0.4", "-s", SECRET, "--serve", "1") as node:

        async def main():
            first = await TestClient.connect(node)
            second = await TestClient.connect(node)
            try:
                cid = await first.ready(double)
                refused = await second.compute(double)
                assert isinstance(refused, ComputeFailed) and "--serve 1" in refused.error
                assert [value(r) for r in await first.run_jobs(cid, (4,))] == [8]
                assert node.alive()
                await first.close_computation(cid)
            finally:
                first.close()
                second.close()

        asyncio.run(asyncio.wait_for(main(), 30))
        assert node.proc.wait(15) == 0, node.log
        assert wait_until(lambda: "(--serve 1); quitting" in node.log, 10), node.log


def test_serve_counts_a_client_that_disconnects():
    # (--zombie_interval: how long a computation whose client left waits for it)
    with NodeProcess("127.0.0.4", "-s", SECRET, "--serve", "1", "--zombie_interval", "0.01") as node:

        async def body(c: TestClient):
            await c.ready(double)

        client_test(node, body)  # disconnects with its computation open
        assert node.proc.wait(15) == 0, node.log
        assert _comp_dirs(node) == []


# -- --client_shutdown -----------------------------------------------------------------
def shutdown_in_cleanup():
    dispynode_shutdown()  # noqa: F821


def shutdown_in_job(x):
    dispynode_shutdown()  # noqa: F821
    return x


def test_client_shutdown_from_cleanup():
    with NodeProcess("127.0.0.4", "-s", SECRET, "--client_shutdown") as node:

        async def body(c: TestClient):
            cid = await c.ready(shutdown_in_job, cleanup=shutdown_in_cleanup)
            assert [value(r) for r in await c.run_jobs(cid, (1,))] == [1]
            assert node.alive()  # a job's call is ignored
            reply = await c.close_computation(cid)
            assert reply.error is None

        client_test(node, body)
        assert node.proc.wait(15) == 0, node.log
        assert wait_until(lambda: "has effect only in the computation's setup or cleanup" in node.log, 10), node.log
        assert wait_until(lambda: "called dispynode_shutdown(): shutting down after its cleanup" in node.log, 10), node.log


def test_dispynode_shutdown_without_the_option_only_warns():
    with NodeProcess("127.0.0.4", "-s", SECRET) as node:

        async def body(c: TestClient):
            cid = await c.ready(double, cleanup=shutdown_in_cleanup)
            assert (await c.close_computation(cid)).error is None
            cid = await c.ready(double)  # still serving
            assert [value(r) for r in await c.run_jobs(cid, (2,))] == [4]

        client_test(node, body)
        time.sleep(0.5)
        assert node.alive()
        assert wait_until(lambda: "ignored: the node runs without --client_shutdown" in node.log, 10), node.log


# -- --zombie_interval -----------------------------------------------------------------
def test_bad_zombie_interval_and_serve_exit_2():
    for args, text in ((["--zombie_interval", "0"], "invalid --zombie_interval"),
                       (["--serve", "0"], "invalid --serve")):
        p = _cli("-i", "127.0.0.1", "-p", "0", *args)
        assert p.returncode == 2 and text in p.stderr, p.stderr


def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_silent_client_is_a_zombie_but_its_running_jobs_finish():
    with NodeProcess("127.0.0.4", "-s", SECRET, "--zombie_interval", "0.02") as node:

        async def body(c: TestClient):
            cid = await c.ready(sleepy)
            assert len(_comp_dirs(node)) == 1
            (job,) = c.submit(cid, (3,))  # runs longer than the interval: not closed under it
            (r,) = await c.wait_results(cid, [job], timeout=10)
            assert value(r) == 3
            # Then silence: the computation is closed while the connection stays open.
            reply = await c.next_reply(timeout=10)
            assert isinstance(reply, ComputationClosed) and reply.compute_id == cid
            assert wait_until(lambda: _comp_dirs(node) == [], 5)
            assert not c.channel.closed
            info = await c.request(InfoRequest())  # the node still serves this client
            assert isinstance(info, NodeInfo)

        client_test(node, body)
        assert wait_until(lambda: "(--zombie_interval); closing it" in node.log, 10), node.log


def test_silent_client_with_no_jobs_is_closed_within_seconds():
    with NodeProcess("127.0.0.4", "-s", SECRET, "--zombie_interval", "0.02") as node:

        async def body(c: TestClient):
            start = time.monotonic()
            await c.ready(double)
            assert len(_comp_dirs(node)) == 1
            assert await asyncio.to_thread(wait_until, lambda: _comp_dirs(node) == [], 6)
            assert time.monotonic() - start > 1.0  # not before the interval
            assert not c.channel.closed

        client_test(node, body)
