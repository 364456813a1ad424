"""JobCluster's networking options without sending anything: host lists, node specs with
IPv6 addresses and ports, the local address picked per node, where discovery requests
go, ping_interval validation and NodeAnnounce handling. No test here opens a socket that
sends a datagram (the route lookup connects a UDP socket, which sends nothing)."""

from __future__ import annotations

import time

import pytest

import dispy
from dispy_core import discovery as _discovery
from dispy_core.discovery import Discovery, bind_addresses, destination, parse_announce
from dispy_core.netif import canonical, check_ping_interval, host_list, local_address
from dispy_core.nodes import parse_nodes, split_host_port
from dispy_core import auth, config
from dispy_core.errors import ConfigError
from dispy_core.messages import DiscoverReply, NodeAnnounce


def compute(x):
    return x


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", None)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("node-7:9000", ("node-7", 9000)),
    ("::1", ("::1", None)),
    ("fd77::2", ("fd77::2", None)),
    ("[::1]", ("::1", None)),
    ("[::1]:9000", ("::1", 9000)),
    ("10.0.0.*:9000", ("10.0.0.*", 9000)),
])
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["[::1", "[::1]9000", "127.0.0.1:http", "[::1]:x"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid node"):
        split_host_port(text)


def test_ipv6_node_specs() -> None:
    specs = parse_nodes(["[::1]:9000", "0:0::1", "fd77::*", ("::1", 9100), "127.0.0.1:9200"], dispy_port=12000)
    assert [(s.host, s.port) for s in specs] == [
        ("::1", 9000), ("::1", 12001), ("fd77::*", 12001), ("::1", 9100), ("127.0.0.1", 9200)]
    assert specs[2].wildcard and specs[2].matches("fd77::2") and not specs[2].matches("10.0.0.2")
    assert specs[1].matches("::1")
    assert dispy.NodeAllocate("[::1]").host == "::1"


def test_dispy_port_shifts_client_and_node_ports() -> None:
    assert parse_nodes(["127.0.0.1"], dispy_port=15000)[0].port == 15001
    assert (config.client_port(15000), config.node_port(15000)) == (15000, 15001)
    saved = config.DispyPort
    try:
        config.DispyPort = 16000
        assert parse_nodes(["127.0.0.1"])[0].port == 16001 and config.client_port() == 16000
    finally:
        config.DispyPort = saved


def test_host_lists() -> None:
    assert host_list("host", None, resolve=True) == []
    assert host_list("host", "127.0.0.1", resolve=True) == ["127.0.0.1"]
    assert host_list("host", ["[::1]", "localhost"], resolve=True)[0] == "::1"
    assert host_list("ext_host", "gw.example.com", resolve=False) == ["gw.example.com"]
    for bad in ([], [""], 5, ["127.0.0.1", 7]):
        with pytest.raises(ConfigError, match="host must be a host name or IP address"):
            host_list("host", bad, resolve=True)
    with pytest.raises(ConfigError, match="not an IP address or known host name"):
        host_list("host", "no-such-host.invalid", resolve=True)
    assert canonical("0:0:0::1") == "::1" and canonical("name") == "name"


def test_local_address_per_node() -> None:
    assert local_address([], "127.0.0.1") is None
    assert local_address(["127.0.0.1", "::1"], "::1") == "::1"
    assert local_address(["::1", "127.0.0.1"], "127.0.0.5") == "127.0.0.1"
    assert local_address(["::1"], "127.0.0.5") is None  # none of its family: the kernel picks
    # several of the node's family: the one the routing table uses toward it (lo's 127.0.0.1)
    assert local_address(["127.0.0.3", "127.0.0.1"], "127.0.0.5") == "127.0.0.1"
    assert local_address(["127.0.0.3", "127.0.0.4"], "127.0.0.5") == "127.0.0.3"  # else the first
    assert local_address(["127.0.0.3"], "node.example.com") == "127.0.0.3"


@pytest.mark.parametrize("value", [0, 0.5, 1001, "10", True, -1])
def test_ping_interval_range(value: object) -> None:
    with pytest.raises(ConfigError, match="ping_interval must be a number of seconds from 1 to 1000"):
        check_ping_interval(value)
    with pytest.raises(ConfigError, match="ping_interval"):
        dispy.JobCluster(compute, nodes=["127.0.0.1"], ping_interval=value)


def test_ping_interval_accepted() -> None:
    assert check_ping_interval(None) is None and check_ping_interval(1) == 1.0
    assert check_ping_interval(1000) == 1000.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ipv4_udp_multicast": "yes"}, "ipv4_udp_multicast must be True or False"),
    ({"host": 5}, "host must be"),
    ({"ext_host": ["gw", 5]}, "ext_host must be"),
    ({"ext_ip_addr": 5}, "ext_host must be"),
])
def test_networking_options_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dispy.JobCluster(compute, nodes=["127.0.0.1"], **kwargs)


def test_where_discovery_sends() -> None:
    assert bind_addresses([], ipv6=False) == ["0.0.0.0"]
    assert bind_addresses([], ipv6=True) == ["0.0.0.0", "::"]
    assert bind_addresses(["10.0.0.1", "fd77::1", "10.0.0.1"], ipv6=False) == ["10.0.0.1", "fd77::1"]
    assert destination("10.0.0.1", 9701, ipv4_multicast=False) == (_discovery.BROADCAST_ADDR, 9701)
    assert destination("10.0.0.1", 9701, ipv4_multicast=True) == ("239.255.61.59", 9701)
    assert destination("fd77::1", 9701, ipv4_multicast=False) == ("ff05::b409:3171:9705:5134:6159", 9701)
    assert config.IPv4MulticastGroup == "239.255.61.59"
    assert config.IPv6MulticastGroup == "ff05::b409:3171:9705:5134:6159"


def announcement(secret: str, when: float, ip: str = "10.0.0.9") -> bytes:
    body = _discovery._encode(NodeAnnounce(time=when, ip_addr=ip, port=9801, name="a", cpus=2))
    return auth.seal_datagram(auth.derive_key(secret), NodeAnnounce.TYPE, body)


def test_announcements_count_as_replies() -> None:
    now = time.time()
    assert parse_announce("s", announcement("s", now)) is not None
    assert parse_announce("other", announcement("s", now)) is None
    assert parse_announce("s", announcement("s", now - 3600)) is None  # stale (a replay)
    got: list[DiscoverReply] = []
    d = Discovery("s", 9701, got.append)
    d._datagram(announcement("s", now), ("10.0.0.9", 9700))
    d._datagram(announcement("s", now, ip=""), ("10.0.0.7", 9700))  # no address: the sender's
    d._datagram(announcement("x", now), ("10.0.0.8", 9700))
    assert [(r.ip_addr, r.port, r.cpus) for r in got] == [("10.0.0.9", 9801, 2), ("10.0.0.7", 9801, 2)]
