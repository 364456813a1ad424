"""This host's addresses and the daemons' default address (netif), and which of them
discovery asks directly. The interfaces and the routing table are faked: nothing here
opens a socket or sends anything."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from dispy_core import netif
from dispy_core.discovery import host_targets
from dispy_core.nodes import parse_nodes

LO = ("lo", True, ["127.0.0.1", "::1"])


def fake(monkeypatch: pytest.MonkeyPatch, route: str | None,
         interfaces: list[tuple[str, bool, list[str]]] | None) -> None:
    def route_source(target: str) -> str | None:
        assert target == netif.ROUTE_PROBE  # only ever asks about the default route
        return route

    monkeypatch.setattr(netif, "_route_source", route_source)
    monkeypatch.setattr(netif, "_interfaces", lambda: interfaces)


def test_default_route_interface_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, "192.0.2.7", [LO, ("eth1", True, ["10.9.9.9"]), ("eth0", True, ["192.0.2.7"])])
    assert netif.choose_ip_addr() == ("192.0.2.7", "the address of the default route's interface")
    assert netif.default_ip_addr() == "192.0.2.7"


def test_without_default_route_an_interface_that_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, None, [LO, ("eth0", False, ["10.0.0.2"]), ("wlan0", True, ["169.254.3.4"]),
                             ("dv0", True, ["fe80::1", "198.18.8.1"])])
    ip, why = netif.choose_ip_addr()
    # not the down interface, not loopback, not IPv6; link-local only when nothing else
    assert ip == "198.18.8.1" and why.startswith("no default route")
    fake(monkeypatch, None, [LO, ("wlan0", True, ["169.254.3.4"])])
    assert netif.default_ip_addr() == "169.254.3.4"


@pytest.mark.parametrize("interfaces", [[LO], None], ids=["loopback-only", "no-psutil"])
def test_only_loopback_gives_127_0_0_1(monkeypatch: pytest.MonkeyPatch, interfaces: Any) -> None:
    fake(monkeypatch, None, interfaces)
    assert netif.choose_ip_addr() == ("127.0.0.1", "no interface but loopback has an IPv4 address")


def test_a_loopback_route_source_is_not_taken_for_a_default_route(monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, "127.0.0.1", [LO, ("dv0", True, ["198.18.8.1"])])
    assert netif.default_ip_addr() == "198.18.8.1"


def test_local_addresses_loopback_first_interfaces_up_no_link_local_v6(monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, None, [("dv0", True, ["198.18.8.1", "fe80::1", "fd00::2"]), LO,
                             ("eth0", False, ["10.0.0.2"]), ("dv1", True, ["198.18.8.1"])])
    assert netif.local_addresses() == ["127.0.0.1", "::1", "198.18.8.1", "fd00::2"]


def test_local_addresses_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    fake(monkeypatch, "192.0.2.7", None)
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: [
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.1.1", 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.7", 0))])
    assert netif.local_addresses() == ["127.0.0.1", "::1", "192.0.2.7", "127.0.1.1"]


def matcher(nodes: Any) -> Any:
    specs = [s for s in parse_nodes(nodes) if s.wildcard]
    return lambda ip: any(s.matches(ip) for s in specs)


HERE = ["127.0.0.1", "::1", "10.1.2.5", "192.168.7.3", "fd00::2"]


@pytest.mark.parametrize(("bind", "nodes", "targets"), [
    ("0.0.0.0", None, ["127.0.0.1", "10.1.2.5", "192.168.7.3"]),
    ("::", None, ["::1", "fd00::2"]),
    ("0.0.0.0", ["10.1.2.*"], ["10.1.2.5"]),  # only the local addresses that fit
    ("0.0.0.0", ["10.1.2.*", "127.*"], ["127.0.0.1", "10.1.2.5"]),
    ("10.1.2.5", ["172.16.*"], []),
    ("0.0.0.0", ["10.1.2.9", "192.168.*"], ["192.168.7.3"]),  # an explicit node adds none
])
def test_discovery_asks_this_host_s_addresses_that_a_wildcard_fits(bind: str, nodes: Any,
                                                                   targets: list[str]) -> None:
    assert host_targets(bind, HERE, matcher(nodes)) == targets
