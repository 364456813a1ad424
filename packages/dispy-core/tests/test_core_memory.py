"""What a peer costs in memory: nothing set aside for what a header only announces, a
small staging area until the peer is authenticated, and a closed connection freed at once
(no reference cycle waiting for the cyclic collector, no timer holding it)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dispy_core import aio
from dispy_core.aio import Channel
from dispy_core.connection import HANDSHAKE_FRAME_LIMIT, Connection
from dispy_core.framing import FLAG_MAC, MAC_SIZE, FrameDecoder, pack_header
from dispy_core.listen import ChannelServer
from dispy_core.messages import Hello

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


@contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """(current, peak) bytes allocated since the block began."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        yield lambda: tuple(n - base for n in tracemalloc.get_traced_memory())  # type: ignore[return-value]
    finally:
        tracemalloc.stop()


def receive(dec: FrameDecoder, data: bytes, step: int = 64 * KIB) -> None:
    """Feed ``data`` as recv_into would, ``step`` bytes at a time at most."""
    pos = 0
    while pos < len(data):
        with dec.get_buffer() as buf:
            n = min(len(buf), step, len(data) - pos)
            buf[:n] = data[pos:pos + n]
        dec.buffer_updated(n)
        pos += n


def test_a_header_announcing_a_gibibyte_costs_nothing_until_the_bytes_come():
    dec = FrameDecoder(2 * GIB)
    header, body = pack_header(3, GIB), bytes(3 * MIB)
    with traced() as used:
        receive(dec, header)
        assert used()[1] < 512 * KIB  # before: bytearray(1 GiB) at once
        receive(dec, body)
        current, peak = used()
        # what arrived, at most doubled (plus the slices receive() makes): never 1 GiB
        assert current <= 2 * len(body) and peak <= 2 * len(body) + 256 * KIB


def test_a_large_frame_still_arrives_whole_and_in_order():
    body = os.urandom(5 * MIB + 123)
    mac = b"m" * MAC_SIZE
    dec = FrameDecoder(GIB)
    receive(dec, pack_header(9, len(body), FLAG_MAC) + body + mac + pack_header(1, 3) + b"abc", step=300 * KIB)
    big, small = dec.next_frame(), dec.next_frame()
    assert big is not None and small is not None and dec.idle
    assert big.type == 9 and bytes(big.body) == body and big.mac == mac
    assert small.type == 1 and bytes(small.body) == b"abc"


def test_an_unauthenticated_connection_starts_small():
    with traced() as used:
        conns = [Connection(initiator=False, secret="s") for _ in range(20)]
        # before: a 256 KiB staging area each, although handshake frames are at most 4 KiB
        assert used()[0] / len(conns) < 32 * KIB
        for conn in conns:  # and a handshake frame fills none beyond its small size
            with conn.get_buffer() as buf:
                assert len(buf) >= 2 * (HANDSHAKE_FRAME_LIMIT + 32)


def test_the_staging_area_grows_for_a_burst_and_shrinks_back_after_it():
    burst = (pack_header(1, 1000) + bytes(1000)) * 1000
    small = pack_header(1, 10) + bytes(10)
    frames = 0
    with traced() as used:
        dec = FrameDecoder(HANDSHAKE_FRAME_LIMIT)
        dec.max_frame_size = GIB  # authenticated: the limit is raised
        for _ in range(3):  # reads that fill the area make it grow
            receive(dec, burst, step=1 << 30)
            frames += sum(1 for _ in iter(dec.next_frame, None))
        assert used()[1] >= 128 * KIB
        receive(dec, small)  # a small read after the burst
        frames += sum(1 for _ in iter(dec.next_frame, None))
        assert used()[0] < 32 * KIB
    assert frames == 3001


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counts free anything: what lives in a cycle stays (and fails)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def serve(timeout: float) -> tuple[ChannelServer, int, list[weakref.ref[Any]], list[Channel]]:
    """A ChannelServer on 127.0.0.1 whose channels (and their transports, once closed) are
    tracked by weak references; a channel is kept (list 4) only while its connection is
    open, as the daemons keep theirs."""
    refs: list[weakref.ref[Any]] = []
    open_: list[Channel] = []

    def closed(ch: Channel, exc: BaseException | None) -> None:
        open_.remove(ch)
        if ch.transport is not None:
            refs.append(weakref.ref(ch.transport))

    def new_channel() -> Channel:
        ch = Channel(Connection(initiator=False, secret="s", software="test"), None, closed)
        refs.append(weakref.ref(ch))
        open_.append(ch)
        return ch

    server = ChannelServer(new_channel, ssl=None, timeout=timeout, log=logging.getLogger("test"))
    port = await server.listen("127.0.0.1", 0)
    return server, port, refs, open_


async def settle(cond: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    assert cond()


def test_closed_channels_are_freed_without_the_cyclic_collector(no_gc):
    async def main() -> None:
        # A long handshake deadline: before, its timer kept every channel alive until then.
        server, port, refs, open_ = await serve(timeout=300)
        loop = asyncio.get_running_loop()
        hello = Connection(initiator=True, secret="s").data_to_send()
        probes = [  # (bytes sent, whether the server answers them)
            (b"GET / HTTP/1.1\r\n\r\n", True),  # not dispy: Denied
            (pack_header(Hello.TYPE, 100) + b"{" * 50, False),  # a truncated handshake frame
            (pack_header(Hello.TYPE, 4) + b"\xa0\xa0{}", True),  # not UTF-8: an error raised from another
            (pack_header(Hello.TYPE, 2 * GIB), True),  # a huge announced length: Denied
            (b"".join(bytes(memoryview(p).cast("B")) for p in hello), True),  # a Hello: Challenge; then gone
            (b"", False),  # idle, then gone
        ]
        for data, answered in probes:
            for _ in range(5):
                made = len(refs)
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setblocking(False)
                await settle(lambda: len(refs) > made)  # the server has its channel
                if data:
                    await loop.sock_sendall(sock, data)
                if answered:  # it has parsed what was sent
                    assert await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                sock.close()
        # and a real peer: handshake done (the deadline cancelled then), messages, close
        ch = await aio.open_channel("127.0.0.1", port, secret="s")
        ch.close()
        del ch
        await settle(lambda: not open_)
        await settle(lambda: all(r() is None for r in refs))
        server.close()

    asyncio.run(main())


def test_an_idle_connection_is_still_closed_at_its_deadline(no_gc):
    async def main() -> None:
        server, port, refs, open_ = await serve(timeout=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        writer.close()
        await settle(lambda: not open_ and all(r() is None for r in refs))
        server.close()

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
def test_listeners_queue_a_burst_of_thousands():
    # asyncio's default backlog (100) made a burst of 2,000 connections wait for SYN retries.
    async def main() -> str:
        server = ChannelServer(lambda: Channel(Connection(initiator=False)), ssl=None, timeout=5,
                               log=logging.getLogger("test"))
        port = await server.listen("127.0.0.1", 0)
        try:  # a listener's Send-Q is its backlog (capped by net.core.somaxconn)
            return subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                                  check=True).stdout
        finally:
            server.close()

    backlog = int(asyncio.run(main()).split()[2])
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    assert backlog == min(4096, somaxconn) and backlog > 100


def test_daemons_raise_their_open_files_limit_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    code = ("import logging, resource; from dispy_core.daemon_cli import raise_file_limit; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
            "print(raise_file_limit('dispynode', logging.getLogger('t')), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == int(out[1]) > 256
