"""The node as a network peer: NodeInfo, discovery datagrams, bad peers (wrong secret,
garbage, oversized frames), cancel, and computations whose client or host goes away."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import time
import uuid

import psutil
import pytest
from node_testkit import SECRET, TestClient, client_test, run, ship_by_value, value

from dispy_core import auth, messages, serialization
from dispy_core.aio import open_channel
from dispy_core.errors import AuthenticationError
from dispy_core.framing import FLAG_MAC, pack_header
from dispy_core.messages import (
    CancelJob,
    ComputationClosed,
    DiscoverReply,
    DiscoverRequest,
    ErrorReport,
    InfoRequest,
    AckResults,
    NodeInfo,
    NodeLeaving,
    Pulse,
    Resume,
    Resumed,
    SubmitJobs,
)
from dispy_core.testing import NodeProcess
from dispy_node.undelivered import ResultStore
from dispy_core.status import JobStatus
from dispy_core.testing import wait_until

ship_by_value(__name__)


def square(x):
    return x * x


def test_node_info(node):
    async def body(c: TestClient):
        info = await c.request(InfoRequest())
        assert isinstance(info, NodeInfo)
        assert (info.name, info.ip_addr, info.port) == ("test-node", "127.0.0.1", node.port)
        assert info.cpus == node.cpus and info.max_cpus >= info.cpus
        assert info.python_version == platform.python_version()
        assert info.software.startswith("dispy-node ")
        a = info.avail_info
        assert a is not None and 0 <= a.cpu <= 100 and a.memory > 0 and a.disk > 0 and 0 <= a.swap <= 100

    client_test(node, body)


def test_unknown_requests_get_an_error_report(node):
    async def body(c: TestClient):
        reply = await c.request(DiscoverRequest("x", time.time()))
        assert isinstance(reply, ErrorReport) and "DiscoverRequest" in reply.reason
        reply = await c.request(CancelJob("nope", 1))
        assert isinstance(reply, ErrorReport) and reply.compute_id == "nope"
        reply = await c.request(messages.CloseComputation("nope"))
        assert isinstance(reply, ComputationClosed) and "not set up" in reply.error
        # jobs for an unknown computation come back Terminated, not lost
        (r,) = await c.wait_results("nope", c.submit("nope", (1,)))
        assert r.status == JobStatus.Terminated and "not set up" in r.exception

    client_test(node, body)


# -- discovery --------------------------------------------------------------------------
def _discover(node, secret, sent_at=None, timeout=2.0):
    key = auth.derive_key(secret)
    nonce = uuid.uuid4().hex
    parts, _ = messages.encode(DiscoverRequest(nonce, time.time() if sent_at is None else sent_at))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(auth.seal_datagram(key, DiscoverRequest.TYPE, b"".join(bytes(p) for p in parts)),
                    ("127.0.0.1", node.port))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
    finally:
        sock.close()
    type_, body = auth.open_datagram(key, data)
    reply = messages.decode(type_, memoryview(body))
    assert isinstance(reply, DiscoverReply) and reply.nonce == nonce
    return reply


def test_discovery_answers_the_sender_only_when_sealed_and_fresh(node):
    reply = _discover(node, SECRET)
    assert (reply.ip_addr, reply.port, reply.name, reply.cpus) == ("127.0.0.1", node.port, "test-node", node.cpus)
    assert _discover(node, "another secret", timeout=0.5) is None
    assert _discover(node, SECRET, sent_at=time.time() - 600, timeout=0.5) is None


# -- bad peers --------------------------------------------------------------------------
def _still_serves(node):
    async def body(c: TestClient):
        assert isinstance(await c.request(InfoRequest()), NodeInfo)

    client_test(node, body)


def test_wrong_secret_is_refused_and_node_still_serves(node):
    async def wrong():
        with pytest.raises(AuthenticationError):
            await open_channel(node.ip, node.port, secret="wrong", timeout=10)

    run(wrong())
    _still_serves(node)


def _raw_exchange(node, data, timeout=10.0):
    """Send raw bytes; return everything the node sends until it closes the socket."""
    with socket.create_connection((node.ip, node.port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_garbage_is_refused_and_node_still_serves(node):
    got = _raw_exchange(node, b"GET / HTTP/1.0\r\n\r\n" * 4)
    assert got.startswith(b"DSPY")  # a Denied frame telling why
    assert b"not a dispy frame" in got
    _still_serves(node)


def test_oversized_frames_are_refused_and_node_still_serves(node):
    # before the handshake: the header alone is enough to refuse it
    got = _raw_exchange(node, pack_header(1, 1 << 30))
    assert b"exceeds the limit" in got

    # after the handshake
    async def body(c: TestClient):
        c.channel.transport.write(pack_header(SubmitJobs.TYPE, 1 << 40, FLAG_MAC))
        msg = await c.recv()
        assert type(msg).__name__ == "Closed"

    client_test(node, body)
    assert wait_until(lambda: "exceeds the limit" in node.log, 5)
    _still_serves(node)


# -- cancel -----------------------------------------------------------------------------
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


def stubborn(seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return "done"


def test_cancel_running_and_queued_jobs(node):
    async def body(c: TestClient):
        cid = await c.ready(sleeper, cpus=1)
        long_id, queued_id, after_id = c.submit(cid, (30,), (30,), (0,))
        await asyncio.sleep(0.5)  # the first job is running
        c.send(CancelJob(cid, queued_id))
        c.send(CancelJob(cid, long_id))
        long_r, queued_r, after_r = await c.wait_results(cid, [long_id, queued_id, after_id], timeout=10)
        assert queued_r.status == JobStatus.Cancelled
        assert long_r.status == JobStatus.Terminated and "KeyboardInterrupt" in long_r.exception
        assert after_r.status == JobStatus.Finished and value(after_r) == 0
        # After many short jobs the worker holds several; cancelling one it holds but
        # has not started drops it there, and the running one is still interrupted.
        await c.run_jobs(cid, *[(0,)] * 40)
        long_id, queued_id = c.submit(cid, (30,), (30,))
        await asyncio.sleep(0.5)
        c.send(CancelJob(cid, queued_id))
        c.send(CancelJob(cid, long_id))
        long_r, queued_r = await c.wait_results(cid, [long_id, queued_id], timeout=10)  # well before the 30 s jobs end
        assert queued_r.status == JobStatus.Cancelled
        assert long_r.status == JobStatus.Terminated and "KeyboardInterrupt" in long_r.exception
        await c.close_computation(cid)

    client_test(node, body)


def test_cancel_kills_a_job_that_ignores_keyboard_interrupt(node):
    async def body(c: TestClient):
        cid = await c.ready(stubborn, cpus=1)
        (job_id,) = c.submit(cid, (60,))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        c.send(CancelJob(cid, job_id))
        (r,) = await c.wait_results(cid, [job_id], timeout=15)
        assert 4 < time.monotonic() - start < 30  # killed after the grace, not after the job's 60 s
        assert r.status == JobStatus.Terminated
        assert r.exception == f"job {job_id}: cancelled; worker process killed by signal SIGKILL (9)"
        assert [value(r) for r in await c.run_jobs(cid, (0,))] == ["done"]  # a new worker
        await c.close_computation(cid)

    client_test(node, body)


def test_timeouts_count_from_each_job_s_start_and_end_it_clearly(node):
    async def body(c: TestClient):
        cid = await c.ready(sleeper, cpus=1)
        # One CPU: the second and third jobs start only when the one before ends, so a
        # timeout counted from submission would end them; from their start it does not.
        ok = c.submit(cid, (0.6,), (0.6,), (0.6,), timeout=1.2)
        late, after = c.submit(cid, (30,), (0,), timeout=1)
        results = await c.wait_results(cid, [*ok, late, after], timeout=20)
        assert [r.status for r in results] == [JobStatus.Finished] * 3 + [JobStatus.Terminated, JobStatus.Finished]
        text = results[3].exception
        assert text.endswith(f"TimeoutError: job {late} ran longer than its timeout of 1 s and was terminated\n")
        assert "time.sleep(seconds)" in text and "KeyboardInterrupt" not in text  # where it was
        assert 0.9 < results[3].end_time - results[3].start_time < 10
        # Not positive: refused, the computation goes on. (Not a number: the SubmitJobs
        # is malformed, refused where it is decoded; see dispy-core's test_core_validation.)
        bad = c.submit(cid, (0,), timeout=-1) + c.submit(cid, (0,), timeout=0)
        for r in await c.wait_results(cid, bad):
            assert r.status == JobStatus.Terminated and "timeout must be a positive number" in r.exception
        await c.close_computation(cid)

    client_test(node, body)


def test_timeout_kills_a_job_that_ignores_keyboard_interrupt(node):
    async def body(c: TestClient):
        cid = await c.ready(stubborn, cpus=1)
        (job_id,) = c.submit(cid, (60,), timeout=0.5)
        (r,) = await c.wait_results(cid, [job_id], timeout=20)
        assert r.status == JobStatus.Terminated
        assert r.exception == (f"TimeoutError: job {job_id} ran longer than its timeout of 0.5 s and was "
                               "terminated (it went on after KeyboardInterrupt, so its worker process was "
                               "killed by signal SIGKILL (9))\n")
        assert [value(r) for r in await c.run_jobs(cid, (0,))] == ["done"]  # a new worker
        await c.close_computation(cid)

    client_test(node, body)


def test_a_draining_node_says_so_and_gives_back_jobs_sent_after():
    async def body(c: TestClient):
        cid = await c.ready(sleeper, cpus=1)
        running, queued = c.submit(cid, (1.5,), (0.2,))
        await asyncio.sleep(0.3)
        node.proc.send_signal(signal.SIGINT)
        notice = await c.next_reply()
        assert isinstance(notice, NodeLeaving) and notice.compute_id == cid and notice.jobs == []
        assert "is shutting down" in notice.reason
        late = c.submit(cid, (0,), (0,), timeout=7)
        back = await c.next_reply()
        assert isinstance(back, NodeLeaving) and [s.job_id for s in back.jobs] == late
        assert back.jobs[0].timeout == 7 and serialization.loads(back.jobs[0].args) == ((0,), {})
        # What the node had, it finishes.
        results = await c.wait_results(cid, [running, queued])
        assert [value(r) for r in results] == [1.5, 0.2]
        assert late[0] not in c.results[cid]

    with NodeProcess("127.0.0.1", "-s", SECRET) as node:
        client_test(node, body)
        assert node.proc.wait(20) == 0


def test_close_with_terminate(node):
    async def body(c: TestClient):
        cid = await c.ready(sleeper, cpus=1)
        running, queued = c.submit(cid, (30,), (30,))
        await asyncio.sleep(0.3)
        start = time.monotonic()
        closed = await c.close_computation(cid, terminate=True)
        assert time.monotonic() - start < 20 and closed.error is None  # not the jobs' 30 s
        r_run, r_queued = await c.wait_results(cid, [running, queued], timeout=1)
        assert r_run.status == JobStatus.Terminated and r_queued.status == JobStatus.Cancelled

    client_test(node, body)


# -- peers that go away -----------------------------------------------------------------
def kill_host(_):
    os.kill(os.getppid(), signal.SIGKILL)  # a worker's parent is its computation's host
    time.sleep(5)


def test_host_death_fails_the_computation_clearly(node):
    async def body(c: TestClient):
        cid = await c.ready(kill_host, cpus=1)
        (job_id,) = c.submit(cid, (0,))
        report = await c.next_reply(timeout=10)
        assert isinstance(report, ErrorReport) and report.compute_id == cid
        assert "host process" in report.reason and "exited unexpectedly" in report.reason
        (r,) = await c.wait_results(cid, [job_id], timeout=1)
        assert r.status == JobStatus.Terminated and "host process" in r.exception
        (late,) = await c.run_jobs(cid, (0,))
        assert late.status == JobStatus.Terminated
        closed = await c.close_computation(cid)
        assert "host process" in closed.error
        cid = await c.ready(square)  # the node goes on
        assert [value(r) for r in await c.run_jobs(cid, (3,))] == [9]

    client_test(node, body)


def record_pid_and_sleep(path, seconds):
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)


def test_a_vanished_client_s_jobs_go_on_then_its_computation_closes(tmp_path):
    """A client's connection is lost: its running job is not killed at once (it may come
    back, or recover_jobs); once --zombie_interval passes without it, the job is
    terminated and the computation closed."""
    pid_file = tmp_path / "job.pid"
    state = {}
    with NodeProcess("127.0.0.5", "-s", SECRET, "--zombie_interval", "0.03") as node:  # 1.8 s

        async def body(c: TestClient):
            reply = await c.compute(record_pid_and_sleep, cpus=1)
            state["dir"], state["cid"] = reply.dest_path, reply.compute_id
            state["ids"] = c.submit(reply.compute_id, (str(pid_file), 60))
            assert await asyncio.to_thread(
                wait_until, lambda: pid_file.exists() and pid_file.read_text().strip(), 5)

        client_test(node, body)
        job_pid = int(pid_file.read_text())
        time.sleep(0.5)
        assert psutil.pid_exists(job_pid), "the job was killed as soon as the client left"
        assert wait_until(lambda: not os.path.exists(state["dir"]), 10), "directory not removed"
        assert wait_until(lambda: not psutil.pid_exists(job_pid), 5), "job still running"
        _still_serves(node)

        async def recover(c: TestClient):  # the terminated job's result was kept
            c.send(Resume(state["cid"]))
            got = await c.wait_results(state["cid"], state["ids"])
            reply = await c.next_reply()
            assert isinstance(reply, Resumed) and reply.running is False
            return got

        [result] = client_test(node, recover)
        assert result.status == JobStatus.Terminated, result


def test_results_of_a_vanished_client_are_kept_on_disk_resumed_and_acknowledged(node):
    """Results a client did not acknowledge survive its connection: another connection
    resumes the computation (jobs still queued run on and report there), gets every
    kept result again, and its acknowledgements delete them."""
    state = {}

    async def first(c: TestClient):
        cid = await c.ready(slow_double, cpus=1)
        state["cid"] = cid
        [done] = await c.run_jobs(cid, (1, 0.0))  # delivered, but never acknowledged
        assert value(done) == 2
        state["ids"] = [done.job_id] + c.submit(cid, (2, 0.3), (3, 0.3))

    client_test(node, first)
    cid, ids = state["cid"], state["ids"]

    def stored() -> int:
        store = ResultStore(node.dest_path_prefix)
        store.scan()
        return store.count(cid)

    assert wait_until(lambda: stored() == 3, 10)

    async def again(c: TestClient):
        c.send(Resume(cid))
        results = await c.wait_results(cid, ids)
        reply = await c.next_reply()
        assert isinstance(reply, Resumed) and reply.running is True and reply.unfinished == 0
        c.send(AckResults(cid, ids))
        assert await asyncio.to_thread(wait_until, lambda: stored() == 0, 5)
        # the computation goes on with this connection
        [four] = await c.run_jobs(cid, (4, 0.0))
        assert value(four) == 8
        await c.close_computation(cid)
        return [value(r) for r in results]

    assert client_test(node, again) == [2, 4, 6]


def test_pulses_carry_availability(node):
    async def body(c: TestClient):
        reply = await c.compute(slow_double, pulse_interval=1.0)
        pulse = await c.next_reply(timeout=5)
        assert isinstance(pulse, Pulse) and pulse.compute_id == reply.compute_id
        assert pulse.avail_info is not None and pulse.avail_info.memory > 0 and 0 <= pulse.avail_info.cpu <= 100
        await c.close_computation(reply.compute_id)

    client_test(node, body)


def slow_double(x, pause):
    time.sleep(pause)
    return 2 * x


def test_clean_removes_undelivered_results(tmp_path):
    prefix = str(tmp_path)

    async def body(c: TestClient):
        cid = await c.ready(slow_double, cpus=1)
        [r] = await c.run_jobs(cid, (5, 0.0))  # never acknowledged: kept once the client is gone
        return cid

    with NodeProcess("127.0.0.5", "-s", SECRET, dest_path_prefix=prefix) as node:
        cid = client_test(node, body)
        store = ResultStore(prefix)
        assert wait_until(lambda: store.scan() == 1, 10)
    with NodeProcess("127.0.0.5", "-s", SECRET, dest_path_prefix=prefix) as node:
        assert wait_until(lambda: "1 undelivered job results kept" in node.log, 5), node.log
    with NodeProcess("127.0.0.5", "-s", SECRET, "--clean", dest_path_prefix=prefix) as node:
        assert os.listdir(os.path.join(prefix, ".undelivered")) == []  # made again, empty
        assert ResultStore(prefix).scan() == 0 and cid
