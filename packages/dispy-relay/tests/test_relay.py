"""dispynetrelay in-process on loopback addresses (from which it sends no discovery
request): what clients are told and when, the --scheduler_node announcements, and every
datagram and connection it refuses. The relay on a network of namespaces, with real
nodes, clients and dispyscheduler: integration-tests/test_it_relay_netns.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from dispy_core import aio, auth, messages
from dispy_core.discovery import build_request, parse_announce
from dispy_core.errors import AuthenticationError
from dispy_core.messages import (
    Compute,
    ErrorReport,
    InfoRequest,
    Message,
    NodeAnnounce,
    Ping,
    Pong,
    RelayNodes,
    Welcome,
)
from dispy_relay.relay import Relay, RelayConfig

RELAY = "127.0.0.30"
NODE = "127.0.0.31"
CLIENT = "127.0.0.32"
SECRET = "unit-secret"


def announcement(ip: str = NODE, port: int = 9701, secret: str = SECRET, *, name: str = "n1", cpus: int = 2,
                 when: float | None = None) -> bytes:
    msg = NodeAnnounce(time.time() if when is None else when, ip, port, name, cpus)
    parts, _ = messages.encode(msg)
    return auth.seal_datagram(auth.derive_key(secret), NodeAnnounce.TYPE, b"".join(bytes(p) for p in parts))


class Client:
    """A raw client connection to the relay: messages in a queue."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.channel: aio.Channel | None = None

    async def connect(self, port: int, secret: str = SECRET) -> Client:
        self.channel = await aio.open_channel(
            RELAY, port, secret=secret, software="test", timeout=5,
            on_message=lambda ch, m: None if isinstance(m, Welcome) else self.inbox.put_nowait(m),
            on_close=lambda ch, exc: self.inbox.put_nowait(None))
        return self

    def send(self, msg: Message) -> None:
        assert self.channel is not None
        self.channel.send(msg)

    async def next(self, timeout: float = 5.0) -> Message | None:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


class Running:
    def __init__(self, relay: Relay, task: asyncio.Task[None]) -> None:
        self.relay = relay
        self.task = task

    @property
    def port(self) -> int:
        return self.relay.listening[0][1]

    @property
    def announce_port(self) -> int:
        return self.relay.announce_ports[0][1]

    def datagram(self, data: bytes, source: str = NODE) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            s.sendto(data, (RELAY, self.announce_port))


async def start(**kwargs: Any) -> Running:
    cfg = RelayConfig(ip_addrs=[RELAY], relay_port=0, scheduler_port=kwargs.pop("scheduler_port", 0),
                      node_port=9701, secret=SECRET, **kwargs)
    relay = Relay(cfg)
    started = asyncio.Event()
    task = asyncio.get_running_loop().create_task(relay.run(lambda r: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    return Running(relay, task)


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[Running]:
    r = await start(**kwargs)
    try:
        yield r
    finally:
        r.relay.stop()
        await asyncio.wait_for(r.task, 10)


def with_relay(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the async ``test(relay, ...)`` in a new event loop, with a relay running."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            async with running() as r:
                await test(r, *args, **kwargs)
        asyncio.run(main())
    # pytest must not see the relay argument
    import inspect
    sig = inspect.signature(test)
    run.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])  # type: ignore[attr-defined]
    return run


async def until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@with_relay
async def test_a_client_is_told_of_the_nodes_at_once_and_of_each_one_found_later(relay):
    first = await Client().connect(relay.port)
    first.send(InfoRequest())
    told = await first.next()
    assert isinstance(told, RelayNodes) and told.nodes == [] and told.relay.startswith("dispynetrelay")

    relay.datagram(announcement())  # a node starts (dispynode --scheduler_node RELAY)
    told = await first.next()
    assert isinstance(told, RelayNodes)
    assert [(n.ip_addr, n.port, n.name, n.cpus) for n in told.nodes] == [(NODE, 9701, "n1", 2)]

    second = await Client().connect(relay.port)  # a client asking now gets it at once
    second.send(InfoRequest())
    told = await second.next()
    assert isinstance(told, RelayNodes) and [n.ip_addr for n in told.nodes] == [NODE]
    second.send(Ping(7))
    assert await second.next() == Pong(7)
    first.close()
    second.close()


@with_relay
async def test_a_relay_takes_no_computation_nor_anything_but_questions(relay):
    c = await Client().connect(relay.port)
    c.send(Compute(compute_id="x", name="f", kind="function", payload=[], setup_args=[], files=[], cpus=1,
                   dest_path=None, cleanup_files=True, process_per_job=False, python_version="3.11.0"))
    reply = await c.next()
    assert isinstance(reply, ErrorReport) and "does not take Compute" in reply.reason
    assert relay.relay.clients == set()  # only those that asked are told of nodes
    c.close()


@with_relay
async def test_a_client_with_another_secret_is_refused_and_the_relay_says_so(relay, caplog):
    caplog.set_level(logging.WARNING, logger="dispy_relay")
    with pytest.raises(AuthenticationError):
        await Client().connect(relay.port, secret="another")
    assert await until(lambda: "closed connection from" in caplog.text)
    assert "another secret" in caplog.text
    assert relay.relay.clients == set()


# made when the test runs (an announcement made at collection could be stale by then)
@pytest.mark.parametrize(("make", "reason"), [
    (lambda: announcement(secret="another"), "datagram not signed with this secret"),
    (lambda: b"\x00garbage that is not dispy's", "not a dispy datagram"),
    (lambda: announcement(when=time.time() - 3600), "its time is"),
    (lambda: announcement(ip="127.0.0.99"), "it names node address 127.0.0.99, not its own"),
    (lambda: build_request(SECRET)[1], "only node announcements come to this port"),
], ids=["another-secret", "garbage", "stale", "another-address", "not-an-announcement"])
@with_relay
async def test_refused_datagrams_tell_nothing_and_are_logged_with_their_reason(relay, caplog, make, reason):
    caplog.set_level(logging.WARNING, logger="dispy_relay")
    c = await Client().connect(relay.port)
    c.send(InfoRequest())
    told = await c.next()
    assert isinstance(told, RelayNodes) and told.nodes == []
    relay.datagram(make())
    assert await until(lambda: reason in caplog.text), caplog.text
    assert "ignoring" in caplog.text
    assert relay.relay.nodes == {}
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await c.next(timeout=0.3)  # the client is told nothing
    c.close()


@with_relay
async def test_a_replayed_announcement_is_refused(relay, caplog):
    caplog.set_level(logging.WARNING, logger="dispy_relay")
    data = announcement()
    relay.datagram(data)
    assert await until(lambda: (NODE, 9701) in relay.relay.nodes)
    relay.datagram(data)
    assert await until(lambda: "the same datagram came before (a replay)" in caplog.text), caplog.text


@with_relay
async def test_a_flood_of_refused_datagrams_is_summarised(relay, caplog):
    caplog.set_level(logging.WARNING, logger="dispy_relay")
    for _ in range(40):
        relay.datagram(announcement(secret="another"))
    assert await until(lambda: relay.relay.datagram_refusals._counts.get("authentication failed", 0) == 40)
    relay.relay.datagram_refusals.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("not signed with this secret" in line for line in lines) == 5
    assert any(line.startswith("40 datagrams refused") for line in lines), lines


def test_scheduler_node_hosts_are_told_of_each_node_by_a_sealed_announcement():
    asyncio.run(_scheduler_node())


async def _scheduler_node() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind((CLIENT, 0))  # bound at once (a port found free first may be taken)
        port = listener.getsockname()[1]
        listener.settimeout(5)
        r = await start(scheduler_port=port, scheduler_nodes=[CLIENT])
        try:
            r.datagram(announcement())
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(None, listener.recv, 65536)
            told = parse_announce(SECRET, data)
            assert told is not None and (told.ip_addr, told.port, told.name, told.cpus) == (NODE, 9701, "n1", 2)
            assert parse_announce("another", data) is None  # sealed with the cluster's secret
        finally:
            r.relay.stop()
            await asyncio.wait_for(r.task, 10)


@with_relay
async def test_status_lists_the_nodes_and_the_clients(relay):
    from dispy_relay.cli import Console
    from dispy_core.testing import console_commands

    relay.datagram(announcement())
    assert await until(lambda: relay.relay.nodes)
    c = await Client().connect(relay.port)
    c.send(InfoRequest())
    await c.next()
    with console_commands(Console, relay.relay) as (say, calls):
        text = say("status")
        assert f"{NODE}:9701" in text and "n1" in text and "announced" in text and "127.0.0.1:" in text
        say("quit")
        say("exit")
        assert calls == ["quit", "exit"]
    c.close()


def test_with_certfile_clients_connect_over_tls_with_the_clusters_certificate(tmp_path):
    from dispy_core import certgen, tls

    assert certgen.main([str(tmp_path / "cluster.pem")]) == 0
    assert certgen.main([str(tmp_path / "other.pem")]) == 0

    async def main() -> None:
        async with running(certfile=str(tmp_path / "cluster.pem")) as r:
            c = Client()
            c.channel = await aio.open_channel(
                RELAY, r.port, secret=SECRET, software="test", timeout=5,
                ssl=tls.client_context(str(tmp_path / "cluster.pem")),
                on_message=lambda ch, m: None if isinstance(m, Welcome) else c.inbox.put_nowait(m),
                on_close=lambda ch, exc: c.inbox.put_nowait(None))
            c.send(InfoRequest())
            assert isinstance(await c.next(), RelayNodes)
            c.close()
            with pytest.raises(Exception):  # another certificate: the TLS handshake fails
                await aio.open_channel(RELAY, r.port, secret=SECRET, software="test", timeout=5,
                                       ssl=tls.client_context(str(tmp_path / "other.pem")),
                                       on_message=lambda ch, m: None, on_close=lambda ch, exc: None)
            with pytest.raises(Exception):  # plain TCP to a TLS relay
                await Client().connect(r.port)

    asyncio.run(main())


def test_scheduler_node_announcements_repeat_every_ping_interval():
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            # A port of the kernel's choosing, bound at once: a port found free first and
            # bound later may be taken meanwhile by another suite running alongside.
            listener.bind((CLIENT, 0))
            port = listener.getsockname()[1]
            listener.settimeout(10)
            async with running(scheduler_port=port, scheduler_nodes=[CLIENT], ping_interval=1.0) as r:
                r.datagram(announcement())
                loop = asyncio.get_running_loop()
                for _ in range(3):  # at once, then again each second (the node is not heard again)
                    data = await loop.run_in_executor(None, listener.recv, 65536)
                    told = parse_announce(SECRET, data)
                    assert told is not None and told.ip_addr == NODE

    asyncio.run(main())
