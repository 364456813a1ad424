"""Malformed messages and floods of refused connections against real daemons on 127.0.0.1.

A Hello with fields of the wrong JSON type gets a Denied frame, not an ERROR traceback in
the node's log; a node that once answered the client's handshake with garbage is tried
again, like one that did not answer; a node that sends a file with a time os.utime can't
take costs the client nothing; and 2,000 refused connections leave a few log lines and a
summary, not 2,000 warnings. ``DISPY_FUZZ_SCALE`` (a float, default 1) multiplies the
flood sizes for a long run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import threading
import time

import pytest

import dispy
from dispy_core import codec, serialization
from dispy_core import messages as m
from dispy_core.aio import Channel
from dispy_core.connection import Connection
from dispy_core.framing import FrameDecoder, pack_header
from dispy_core.status import JobStatus
from dispy_core.testing import NodeProcess, SchedulerProcess, unused_port, wait_until

SCALE = float(os.environ.get("DISPY_FUZZ_SCALE", "1") or 1)


def double(x):
    return 2 * x


def frame(type_: int, fields: dict) -> bytes:
    parts, n = codec.encode_body(fields)
    return pack_header(type_, n, 0) + b"".join(bytes(memoryview(p).cast("B")) for p in parts)


def raw_frame(type_: int, json_text: str) -> bytes:
    text = json_text.encode()
    body = len(text).to_bytes(4, "big") + (0).to_bytes(4, "big") + text
    return pack_header(type_, len(body), 0) + body


def exchange(addr: tuple[str, int], data: bytes, timeout: float = 10.0) -> list[m.Message]:
    """Send ``data`` on a new connection; the messages the peer sent until it closed."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    decoder = FrameDecoder(1 << 20)
    decoder.feed(received)
    out = []
    while (f := decoder.next_frame()) is not None:
        out.append(m.decode(f.type, f.body))
    return out


def no_errors(log: str) -> bool:
    return "Traceback" not in log and " ERROR " not in log


def test_a_hello_of_wrong_types_gets_denied_and_no_traceback(node):
    nonce = "ab" * 32
    probes = {
        "nonce must be a string, got int": frame(m.Hello.TYPE, {"protocol": 1, "nonce": 123, "software": "x"}),
        "nonce must be a string, got null": frame(m.Hello.TYPE, {"protocol": 1, "nonce": None, "software": "x"}),
        "software must be a string, got list": frame(m.Hello.TYPE, {"protocol": 1, "nonce": nonce, "software": ["x"]}),
        "key_id must be a string, got dict": frame(m.Hello.TYPE, {"protocol": 1, "nonce": nonce, "software": "",
                                                                   "key_id": {"a": 1}}),
        # Python's json parser gives up on this depth (3.11, 3.12) or parses it (3.13):
        # either way it is refused, for one reason or the other.
        "nested too deeply|nonce must be a string, got list":
            raw_frame(m.Hello.TYPE, '{"protocol":1,"nonce":' + "[" * 1500 + "]" * 1500 + "}"),
        "lone surrogate": raw_frame(m.Hello.TYPE, '{"protocol":1,"nonce":"ab","software":"\\ud800"}'),
    }
    for reason, data in probes.items():
        replies = exchange((node.ip, node.port), data)
        assert len(replies) == 1 and isinstance(replies[0], m.Denied), (reason, replies)
        assert any(r in replies[0].reason for r in reason.split("|")), (reason, replies)
        assert "malformed Hello message" in replies[0].reason
    # The node still serves a cluster, and said nothing alarming.
    with dispy.JobCluster(double, nodes=[dispy.NodeAllocate(node.ip, port=node.port)]) as cluster:
        assert cluster.submit(21)() == 42
    assert wait_until(lambda: "closed client connection" in node.log)
    assert no_errors(node.log), node.log


def test_a_node_that_answered_garbage_is_tried_again(caplog):
    """A fake node answers the cluster's Hello with a Challenge whose nonce is an int, then
    goes away; a real node then starts at that address and the cluster uses it."""
    port = unused_port()
    server = socket.create_server(("127.0.0.1", port))
    answered = threading.Event()

    def fake_node() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)  # the Hello
            conn.sendall(frame(m.Challenge.TYPE, {"nonce": 123, "proof": "cd" * 32}))
            answered.set()
            conn.recv(4096)  # until the client hangs up
        server.close()

    thread = threading.Thread(target=fake_node, daemon=True)
    thread.start()
    caplog.set_level(logging.INFO)
    with dispy.JobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", port=port)]) as cluster:
        assert answered.wait(30)
        thread.join(30)
        job = cluster.submit(21)
        with NodeProcess("127.0.0.1", "-c", "1", port=port) as node:
            assert cluster.wait(timeout=60), "the node that once answered garbage was given up"
            assert (job.status, job.result) == (dispy.DispyJob.Finished, 42)
            assert no_errors(node.log)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert re.search(rf"can't use node 127\.0\.0\.1:{port}: malformed Challenge message: nonce must be a "
                     r"string, got int; will keep trying", text), text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], text


def flood(addr: tuple[str, int], n: int) -> None:
    """``n`` connections that each send garbage and wait for the daemon to close them."""
    for _ in range(n):
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while sock.recv(4096):
                pass


def stop_and_read(daemon: NodeProcess | SchedulerProcess) -> None:
    """SIGTERM, and read the daemon's output to its end (stop() would close the pipe)."""
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(30)
    assert wait_until(lambda: "connections refused in the last" in daemon.log, 10), daemon.log
    daemon.stop()


def test_refused_connections_are_summarised_not_logged_one_by_one(start_node):
    node = start_node("127.0.0.1", "-c", "1")
    n = max(50, int(2000 * SCALE))
    flood((node.ip, node.port), n)
    stop_and_read(node)  # the summary of what was not written yet comes when it stops
    lines = [line for line in node.log.splitlines() if "closed client connection" in line]
    assert len(lines) == 5, lines  # the first few, as they came
    counted = re.findall(r"connections refused in the last (?:minute|\d+ s)(?: \(5 logged above\))?: "
                         r"not a dispy frame \(([\d,]+)\)", node.log)
    assert sum(int(c.replace(",", "")) for c in counted) == n, node.log
    assert len(node.log) < 10_000, f"{len(node.log)} bytes of log for {n} refused connections"
    assert no_errors(node.log), node.log


def test_refused_clients_of_the_scheduler_are_logged_and_summarised(node):
    with SchedulerProcess("127.0.0.1", [node.addr]) as scheduler:
        n = max(20, int(300 * SCALE))
        flood(("127.0.0.1", scheduler.port), n)
        replies = exchange(("127.0.0.1", scheduler.port), frame(m.Hello.TYPE, {"protocol": 1, "nonce": 7, "software": ""}))
        assert isinstance(replies[0], m.Denied) and "nonce must be a string, got int" in replies[0].reason
        stop_and_read(scheduler)
    lines = [line for line in scheduler.log.splitlines() if "closed client connection" in line]
    assert len(lines) == 6, lines  # 5 of the flood, and the malformed Hello (another reason)
    counted = re.findall(r"connections refused in the last (?:minute|\d+ s) \(\d+ logged above\): "
                         r"not a dispy frame \(([\d,]+)\)", scheduler.log)
    assert sum(int(c.replace(",", "")) for c in counted) == n, scheduler.log
    assert no_errors(scheduler.log), scheduler.log


class FakeNode:
    """A dispy node in this process (asyncio, a thread of its own) that sets the
    computation up, and on its first connection sends each job's file with an mtime of
    inf (no file system or os.utime can take it) before the result; on later connections
    it sends only results."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            server = await self.loop.create_server(self._channel, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            await asyncio.Event().wait()

        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass  # stopped

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _channel(self) -> Channel:
        self.connections += 1
        first = self.connections == 1
        return Channel(Connection(initiator=False, software="fake-node"),
                       lambda ch, msg: self._on_message(ch, msg, first))

    def _on_message(self, ch: Channel, msg: m.Message, first: bool) -> None:
        if isinstance(msg, m.InfoRequest):
            ch.send(m.NodeInfo("fake", "127.0.0.1", self.port, 1, 1, "Linux",
                               ".".join(map(str, __import__("sys").version_info[:3])), "fake"))
        elif isinstance(msg, m.Resume):
            ch.send(m.Resumed(msg.compute_id, False))
        elif isinstance(msg, m.Compute):
            ch.send(m.ComputeReady(msg.compute_id, 1, "/tmp"))
        elif isinstance(msg, m.SubmitJobs):
            for spec in msg.jobs:
                if first:
                    ch.send(m.JobFile(msg.compute_id, spec.job_id, "from_fake.txt",
                                      m.FileData("from_fake.txt", b"data", 0o644, float("inf"))))
                args, kwargs = serialization.loads(spec.args)
                result = m.JobResult(spec.job_id, JobStatus.Finished, serialization.dumps(double(*args)),
                                     start_time=time.time(), end_time=time.time())
                ch.send(m.JobResults(msg.compute_id, [result]))
        elif isinstance(msg, m.CloseComputation):
            ch.send(m.ComputationClosed(msg.compute_id))


def test_a_file_time_os_utime_cant_take_costs_the_client_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # where files from jobs are saved
    caplog.set_level(logging.INFO)
    fake = FakeNode()
    try:
        # reentrant: the job the node was running when its connection was dropped (for the
        # malformed message) runs again when it is back
        with dispy.JobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", port=fake.port)],
                              reentrant=True) as cluster:
            job = cluster.submit(21)
            assert cluster.wait(timeout=60)
            assert (job.status, job.result) == (dispy.DispyJob.Finished, 42)
    finally:
        fake.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "malformed JobFile message: in a FileData record, mtime must be a finite number, got inf" in text, text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], text
    assert not list(tmp_path.glob("from_fake.txt*")), "a file with an impossible time was (half) written"


def test_a_discovered_node_that_answered_garbage_is_tried_when_found_again(monkeypatch, caplog):
    """Discovery is replaced before it opens a socket (nothing is broadcast): the test
    hands the cluster the replies a node would send. The first time the node at that
    address answers the handshake with garbage; found again, a real node is there."""
    from dispy_core import discovery

    made: list[discovery.Discovery] = []
    init = discovery.Discovery.__init__

    def record(self: discovery.Discovery, *args: object, **kwargs: object) -> None:
        made.append(self)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    async def idle(self: object) -> None:
        return None

    monkeypatch.setattr(discovery.Discovery, "__init__", record)
    monkeypatch.setattr(discovery.Discovery, "run", idle)
    port = unused_port()
    server = socket.create_server(("127.0.0.1", port))
    answered = threading.Event()

    def fake_node() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(frame(m.Challenge.TYPE, {"nonce": ["x"], "proof": "cd" * 32}))
            answered.set()
            conn.recv(4096)
        server.close()

    thread = threading.Thread(target=fake_node, daemon=True)
    thread.start()
    caplog.set_level(logging.INFO)

    def found(cluster: dispy.JobCluster) -> None:
        reply = m.DiscoverReply("", time.time(), "127.0.0.1", port, "n", 1)
        cluster._runtime.thread.loop.call_soon_threadsafe(made[0].on_reply, reply)

    with dispy.JobCluster(double, nodes=["127.0.0.*"]) as cluster:
        assert wait_until(lambda: bool(made), 30)
        found(cluster)
        assert answered.wait(30)
        thread.join(30)
        job = cluster.submit(21)
        with NodeProcess("127.0.0.1", "-c", "1", port=port) as node:
            assert wait_until(lambda: "will try again when discovery finds it again" in caplog.text, 30), caplog.text
            found(cluster)  # the next round of discovery (ping_interval) finds it again
            assert cluster.wait(timeout=60), "the discovered node that once answered garbage was given up"
            assert (job.status, job.result) == (dispy.DispyJob.Finished, 42)
            assert no_errors(node.log)
    assert "malformed Challenge message: nonce must be a string, got list" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_dispyscheduler_tries_again_a_node_that_answered_garbage():
    """dispyscheduler is a client of its nodes: a -n node that answered its Hello with
    garbage once is tried again, and serves the shared cluster when a real node is there."""
    pytest.importorskip("dispy_scheduler")  # before the fake node starts (client-only suite)
    port = unused_port()
    server = socket.create_server(("127.0.0.1", port))
    answered = threading.Event()

    def fake_node() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(raw_frame(m.Challenge.TYPE, '{"nonce":' + "[" * 1500 + "]" * 1500 + ',"proof":"cd"}'))
            answered.set()
            conn.recv(4096)
        server.close()

    thread = threading.Thread(target=fake_node, daemon=True)
    thread.start()
    with SchedulerProcess("127.0.0.1", [f"127.0.0.1:{port}"]) as scheduler:
        cluster = dispy.SharedJobCluster(double, scheduler_node=f"127.0.0.1:{scheduler.port}", host="127.0.0.1")
        try:
            job = cluster.submit(21)
            assert answered.wait(30), scheduler.log
            thread.join(30)
            with NodeProcess("127.0.0.1", "-c", "1", port=port) as node:
                assert cluster.wait(timeout=60), "dispyscheduler gave up the node that once answered garbage"
                assert (job.status, job.result) == (dispy.DispyJob.Finished, 42)
                assert no_errors(node.log)
        finally:
            cluster.close()
        # (json gives up on this depth on Python 3.11 and 3.12; 3.13 parses it, and the
        # nonce is then not a string)
        assert wait_until(lambda: "nested too deeply" in scheduler.log
                          or "nonce must be a string, got list" in scheduler.log, 10), scheduler.log
        assert no_errors(scheduler.log), scheduler.log
