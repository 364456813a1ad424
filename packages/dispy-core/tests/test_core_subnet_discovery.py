"""Discovery's requests to each local network: which networks and broadcast addresses
(interfaces faked), and how a failed send is handled. Nothing here sends a datagram off
this host: sockets are faked, or bound to 127.0.0.1 and never sent from."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
import types
from collections import namedtuple
from typing import Any

import pytest

from dispy_core import config, discovery, netif
from dispy_core.discovery import Discovery, _Sender, interface_targets
from dispy_core.netif import Network
from dispy_core.nodes import parse_nodes

Addr = namedtuple("Addr", "family address netmask broadcast ptp")
Stats = namedtuple("Stats", "isup")


def fake_psutil(monkeypatch: pytest.MonkeyPatch, addrs: dict[str, list[Addr]], up: dict[str, bool]) -> None:
    module = types.ModuleType("psutil")
    module.net_if_addrs = lambda: addrs  # type: ignore[attr-defined]
    module.net_if_stats = lambda: {name: Stats(isup) for name, isup in up.items()}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psutil", module)


def v4(address: str, netmask: str | None, broadcast: str | None = None, ptp: str | None = None) -> Addr:
    return Addr(netif.socket.AF_INET, address, netmask, broadcast, ptp)


def test_ipv4_networks_with_their_broadcast_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_psutil(monkeypatch, {
        "lo": [v4("127.0.0.1", "255.0.0.0")],
        "eth0": [v4("10.1.2.5", "255.255.255.0", "10.1.2.255"),
                 v4("10.7.0.9", "255.255.0.0"),  # no broadcast configured: the network's last address
                 Addr(netif.socket.AF_INET6, "fd00::2", None, None, None)],
        "eth1": [v4("192.168.7.3", "255.255.255.0", "192.168.7.255")],  # down
        "wg0": [v4("10.99.0.1", "255.255.255.255", None, "10.99.0.2")],  # point-to-point
        "p31": [v4("198.18.0.0", "255.255.255.254")],  # a /31 has no broadcast address
    }, {"lo": True, "eth0": True, "eth1": False, "wg0": True, "p31": True})
    assert netif.ipv4_networks() == [
        Network("eth0", "10.1.2.5", "10.1.2.255"),
        Network("eth0", "10.7.0.9", "10.7.255.255"),
        Network("wg0", "10.99.0.1", None),
        Network("p31", "198.18.0.0", None),
    ]


def test_ipv4_networks_without_psutil_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read-only requests about this host's interfaces: the same primary addresses as
    # psutil tells (where it is installed), or at least well-formed records.
    real = netif.ipv4_networks()
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    if not sys.platform.startswith("linux"):
        assert netif.ipv4_networks() == []
        return
    found = netif.ipv4_networks()
    assert all(not n.address.startswith("127.") for n in found)
    assert set(found) <= set(real)


NETS = [Network("eth0", "10.1.2.5", "10.1.2.255"), Network("eth1", "192.168.7.3", "192.168.7.255"),
        Network("wg0", "10.99.0.1", None),
        Network("eth0", "10.1.2.6", "10.1.2.255")]  # a second address on the same network


def matcher(nodes: Any) -> Any:
    specs = parse_nodes(nodes, 9701)
    return lambda ip: any(s.wildcard and s.matches(ip) for s in specs)


@pytest.mark.parametrize(("nodes", "hosts", "multicast", "targets"), [
    (None, [], False, [("10.1.2.5", "10.1.2.255"), ("192.168.7.3", "192.168.7.255")]),
    (["*"], [], False, [("10.1.2.5", "10.1.2.255"), ("192.168.7.3", "192.168.7.255")]),
    (["10.1.2.*"], [], False, [("10.1.2.5", "10.1.2.255")]),  # only the networks the spec fits
    (["172.16.*"], [], False, []),
    (["10.1.2.*", "192.168.7.9"], [], False, [("10.1.2.5", "10.1.2.255")]),  # explicit ones add none
    (None, ["192.168.7.3"], False, [("192.168.7.3", "192.168.7.255")]),  # host= restricts
    (["10.1.2.*"], ["192.168.7.3"], False, []),
    (["10.1.2.6"], [], False, []),  # not a wildcard
    (["10.1.2.?*"], [], False, [("10.1.2.5", "10.1.2.255")]),  # each broadcast address once
    (None, ["10.1.2.6"], False, [("10.1.2.6", "10.1.2.255")]),
    (None, [], True, [("10.1.2.5", config.IPv4MulticastGroup), ("192.168.7.3", config.IPv4MulticastGroup),
                      ("10.99.0.1", config.IPv4MulticastGroup)]),  # the group once per interface
])
def test_interface_targets(nodes: Any, hosts: list[str], multicast: bool, targets: list[tuple[str, str]]) -> None:
    match = None if nodes is None else matcher(nodes)
    assert interface_targets(NETS, hosts, match, multicast) == targets


class FakeSocket:
    """Records datagrams; ``unreachable`` destinations fail as with no route there."""

    def __init__(self, bind: str, unreachable: set[str]) -> None:
        self.bind = bind
        self.unreachable = unreachable
        self.sent: list[tuple[str, int]] = []

    def sendto(self, data: bytes, dest: tuple[str, int]) -> int:
        if dest[0] in self.unreachable:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        self.sent.append(dest)
        return len(data)

    def getsockname(self) -> tuple[str, int]:
        return (self.bind, 9700)


def sender(sock: FakeSocket, *dests: str, asks_host: bool = False) -> _Sender:
    return _Sender(sock, None, [(d, 9701) for d in dests], asks_host)  # type: ignore[arg-type]


def test_no_route_to_one_target_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(discovery, "local_addresses", lambda: ["127.0.0.1", "10.1.2.5"])
    d = Discovery("s", 9701, lambda r: None)
    d.nonce = "n"
    wildcard = FakeSocket("0.0.0.0", {"255.255.255.255"})
    eth0 = FakeSocket("10.1.2.5", set())
    d._senders = [sender(wildcard, "255.255.255.255", asks_host=True), sender(eth0, "10.1.2.255")]
    with caplog.at_level(logging.DEBUG, logger="dispy.discovery"):
        d._send()
    assert wildcard.sent == [("127.0.0.1", 9701), ("10.1.2.5", 9701)]  # this host's addresses still
    assert eth0.sent == [("10.1.2.255", 9701)]
    assert any(r.levelno == logging.DEBUG and "255.255.255.255" in r.getMessage() and "unreachable" in r.getMessage()
               for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_request_that_can_go_nowhere_off_this_host_is_told_once_and_kept(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(discovery, "local_addresses", lambda: ["127.0.0.1"])
    d = Discovery("s", 9701, lambda r: None)
    d.nonce = "n"
    wildcard = FakeSocket("0.0.0.0", {"255.255.255.255"})
    d._senders = [sender(wildcard, "255.255.255.255", asks_host=True)]
    with caplog.at_level(logging.DEBUG, logger="dispy.discovery"):
        d._send()
        d._send()
    told = [r.getMessage() for r in caplog.records if "could leave this host" in r.getMessage()]
    assert len(told) == 1 and "Network is unreachable" in told[0]
    # kept for the cluster's warning that no node serves it (a node here may still answer)
    assert d.stranded == "broadcast from 0.0.0.0: Network is unreachable"
    assert wildcard.sent == [("127.0.0.1", 9701)] * 2
    wildcard.unreachable.clear()  # a route appeared
    d._send()
    assert d.stranded == ""


def test_one_socket_per_matched_network_bound_to_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sockets are bound (to 127.0.0.1, port 0) and closed; nothing is sent.
    nets = [Network("fake0", "127.0.0.1", "127.255.255.255")]
    monkeypatch.setattr(discovery, "ipv4_networks", lambda: nets)

    async def main() -> None:
        d = Discovery("s", 9701, lambda r: None)
        await d._update_interfaces(d._targets())
        assert list(d._interfaces) == [("127.0.0.1", "127.255.255.255")]
        s = d._interfaces[("127.0.0.1", "127.255.255.255")]
        assert s.sock.getsockname()[0] == "127.0.0.1" and s.dests == [("127.255.255.255", 9701)]
        nets.clear()  # the interface went away: its socket is closed
        await d._update_interfaces(d._targets())
        assert d._interfaces == {} and d._senders == []
        await asyncio.sleep(0)
        assert s.sock.fileno() == -1

    asyncio.run(main())


def test_with_host_no_socket_of_its_own_per_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "ipv4_networks", lambda: [Network("fake0", "127.0.0.1", "127.255.255.255")])

    async def main() -> None:
        d = Discovery("s", 9701, lambda r: None, hosts=["127.0.0.1"])
        assert d._targets() == [("127.0.0.1", "127.255.255.255")]  # sent from host='s own socket
        await d._update_interfaces(d._targets())
        assert d._interfaces == {}

    asyncio.run(main())
