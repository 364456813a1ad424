"""dispynode's networking options: -i with IPv6, --ext_ip_addr, --dispy_port,
--scheduler_node/--scheduler_port (announcements) and the address picking behind
discovery replies. Every datagram here is unicast on loopback; nothing broadcasts or
joins a multicast group (groups are never joined on loopback addresses)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from node_testkit import SECRET, TestClient, run

from dispy_core import auth, config, messages
from dispy_core.errors import ConfigError
from dispy_core.messages import DiscoverReply, DiscoverRequest, InfoRequest, NodeAnnounce, NodeInfo
from dispy_core.testing import NodeProcess
from dispy_node import announce
from dispy_node.cli import build_parser, config_from_args
from dispy_node.discovery import join_groups, pick_address, served_networks
from dispy_node.options import NodeConfig


def cfg_of(*argv: str) -> NodeConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_follow_dispy_port() -> None:
    cfg = cfg_of("-i", "127.0.0.1")
    assert (cfg.port, cfg.scheduler_port) == (config.node_port(), config.client_port())
    assert (cfg.scheduler_node, cfg.ext_ip_addrs, cfg.ipv4_udp_multicast) == (None, [], False)
    cfg = cfg_of("-i", "127.0.0.1", "--dispy_port", "12000")
    assert (cfg.port, cfg.scheduler_port) == (12001, 12000)
    cfg = cfg_of("-i", "127.0.0.1", "--dispy_port", "12000", "-p", "0", "--scheduler_port", "5000")
    assert (cfg.port, cfg.scheduler_port) == (0, 5000)


@pytest.mark.parametrize(("argv", "match"), [
    (["--dispy_port", "0"], "--dispy_port 0: must be in 1..65534"),
    (["--scheduler_port", "0"], "--scheduler_port 0: must be in 1..65535"),
    (["--ext_ip_addr", "1.2.3.4", "--ext_ip_addr", "1.2.3.5"], "2 --ext_ip_addr given for 1 -i"),
    (["--scheduler_node", "no-such-host.invalid"], "invalid --scheduler_node"),
])
def test_bad_options(argv: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg_of("-i", "127.0.0.1", *argv)


def test_addresses_are_canonical_and_ext_addresses_pair_in_order() -> None:
    cfg = cfg_of("-i", "0:0::1", "-i", "127.0.0.2", "--ext_host", "gw.example.com",
                 "--scheduler_host", "[::1]", "--ipv4_udp_multicast")
    assert cfg.ip_addrs == ["::1", "127.0.0.2"] and cfg.scheduler_node == "::1"
    assert cfg.announced_addr("::1") == "gw.example.com"
    assert cfg.announced_addr("127.0.0.2") == "127.0.0.2"  # no second --ext_ip_addr
    assert cfg.ipv4_udp_multicast


def test_pick_address_for_both_families() -> None:
    nets = served_networks(["127.0.0.1", "::1"])
    assert pick_address(nets, "127.0.0.9") == "127.0.0.1"  # lo is 127.0.0.0/8
    assert pick_address(nets, "::1") == "::1"
    assert pick_address(nets, "fe80::1%lo") is None
    assert pick_address(served_networks(["127.0.0.2"]), "127.0.0.1") is None  # not an interface address: /32


def test_groups_are_never_joined_on_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert join_groups(s, ["127.0.0.1"]) == []
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        assert join_groups(s, ["::1"]) == []


def test_announce_datagram_and_source_address() -> None:
    data = announce.announce_datagram("s", "10.0.0.5", 9801, "n", 3, now=100.0)
    type_, body = auth.open_datagram(auth.derive_key("s"), data)
    msg = messages.decode(type_, memoryview(body))
    assert msg == NodeAnnounce(time=100.0, ip_addr="10.0.0.5", port=9801, name="n", cpus=3)
    assert announce.source_address(["::1", "127.0.0.1"], "127.0.0.7") == "127.0.0.1"
    assert announce.source_address(["127.0.0.2", "::1"], "::1") == "::1"
    assert announce.source_address(["127.0.0.2"], "::1") is None


def test_announcer_sends_unicast_while_idle() -> None:
    async def main() -> list[NodeAnnounce]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            cfg = NodeConfig(ip_addrs=["127.0.0.1"], port=9999, name="ann", cpus=2, secret="s",
                             ext_ip_addrs=["127.0.0.3"], scheduler_node="127.0.0.1",
                             scheduler_port=rx.getsockname()[1])
            idle = [True]
            task = asyncio.get_running_loop().create_task(
                announce.Announcer(cfg, 9801, lambda: idle[0]).run())
            loop = asyncio.get_running_loop()
            got = []
            try:
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(rx, 2048), 5)
                assert addr[0] == "127.0.0.1"
                got.append(messages.decode(*_open("s", data)))
                idle[0] = False  # a client set up a computation: no more announcements
                await asyncio.sleep(announce.REPEAT_AFTER + 0.5)
                with pytest.raises(BlockingIOError):
                    rx.recvfrom(2048)
            finally:
                task.cancel()
            return got  # type: ignore[return-value]

    (msg,) = run(main(), timeout=15)
    assert (msg.ip_addr, msg.port, msg.name, msg.cpus) == ("127.0.0.3", 9801, "ann", 2)
    assert abs(msg.time - time.time()) < 10


def _open(secret: str, data: bytes) -> tuple[int, memoryview]:
    type_, body = auth.open_datagram(auth.derive_key(secret), data)
    return type_, memoryview(body)


def test_ext_ip_addr_is_announced_in_node_info_and_discover_reply() -> None:
    with NodeProcess("127.0.0.2", "-s", SECRET, "--ext_ip_addr", "127.0.0.3") as node:
        async def info() -> NodeInfo:
            c = await TestClient.connect(node)
            try:
                c.send(InfoRequest())
                msg = await c.recv()
                assert isinstance(msg, NodeInfo)
                return msg
            finally:
                c.close()

        assert run(info()).ip_addr == "127.0.0.3"
        # A unicast request from the node's own (/32) network is answered with the
        # announced address.
        msg = DiscoverRequest(nonce="ab" * 16, time=time.time())
        parts, _ = messages.encode(msg)
        data = auth.seal_datagram(auth.derive_key(SECRET), DiscoverRequest.TYPE, b"".join(bytes(p) for p in parts))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            s.sendto(data, ("127.0.0.2", node.port))
            reply = messages.decode(*_open(SECRET, s.recvfrom(2048)[0]))
        assert isinstance(reply, DiscoverReply)
        assert (reply.ip_addr, reply.port, reply.nonce) == ("127.0.0.3", node.port, "ab" * 16)


def test_node_serves_ipv6_loopback() -> None:
    with NodeProcess("::1", "-s", SECRET) as node:
        assert f"serving {node.cpus} CPUs at ::1:{node.port}" in node.log

        async def info() -> NodeInfo:
            c = await TestClient.connect(node)
            try:
                c.send(InfoRequest())
                msg = await c.recv()
                assert isinstance(msg, NodeInfo)
                return msg
            finally:
                c.close()

        assert run(info()).ip_addr == "::1"
