"""Discovery without sending anything: the broadcast decision, and building and checking
the sealed datagrams. No test here opens a UDP socket."""

from __future__ import annotations

from typing import Any

import pytest

import dispy
from dispy_core import discovery as _discovery
from dispy_core.discovery import build_request, needs_discovery, parse_reply
from dispy_core.nodes import parse_nodes
from dispy_core import auth, codec, messages
from dispy_core.testing import wait_until
from dispy_core.messages import DiscoverReply, DiscoverRequest


def compute(x):
    return x


def sealed_reply(secret: str, nonce: str, when: float, ip: str = "127.0.0.5") -> bytes:
    msg = DiscoverReply(nonce=nonce, time=when, ip_addr=ip, port=9801, name="n5", cpus=4)
    body = _discovery._encode(msg)
    return auth.seal_datagram(auth.derive_key(secret), DiscoverReply.TYPE, body)


@pytest.mark.parametrize(("nodes", "broadcast"), [
    (["127.0.0.1"], False),
    ([("127.0.0.1", 9000), dispy.NodeAllocate("127.0.0.2")], False),
    (["localhost", "127.0.0.3"], False),
    (None, True),
    ([], True),
    (["*"], True),
    (["127.0.0.1", "192.168.3.*"], True),
    ([dispy.NodeAllocate("10.*")], True),
])
def test_broadcast_only_for_none_or_wildcards(nodes: object, broadcast: bool) -> None:
    assert needs_discovery(parse_nodes(nodes)) is broadcast


def test_request_round_trip() -> None:
    nonce, datagram = build_request("s3cret", now=1000.0)
    type_, body = auth.open_datagram(auth.derive_key("s3cret"), datagram)
    msg = messages.decode(type_, memoryview(body))
    assert isinstance(msg, DiscoverRequest) and msg.nonce == nonce and msg.time == 1000.0
    assert len(datagram) < 512


def test_reply_accepted_only_with_same_secret_nonce_and_recent_time() -> None:
    nonce, _ = build_request("s")
    good = sealed_reply("s", nonce, 5000.0)
    reply = parse_reply("s", good, nonce, now=5001.0)
    assert reply is not None and (reply.ip_addr, reply.port, reply.cpus) == ("127.0.0.5", 9801, 4)
    assert parse_reply("other", good, nonce, now=5001.0) is None  # another secret
    assert parse_reply("s", sealed_reply("s", "f" * 64, 5000.0), nonce, now=5001.0) is None  # not ours
    assert parse_reply("s", good, nonce, now=5000.0 + 3600) is None  # stale
    assert parse_reply("s", b"garbage", nonce) is None
    assert parse_reply("s", good[:-1] + bytes([good[-1] ^ 1]), nonce, now=5001.0) is None  # tampered
    _, request = build_request("s")
    assert parse_reply("s", request, nonce) is None  # a request is not a reply


def test_explicit_nodes_never_create_a_udp_socket(monkeypatch: pytest.MonkeyPatch, clusters: list) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("discovery started for explicit nodes")

    monkeypatch.setattr(_discovery.Discovery, "__init__", refuse)
    monkeypatch.setattr(_discovery.Discovery, "run", refuse)
    # 127.0.0.9:1 has nothing listening: the cluster retries by TCP, never broadcasts.
    cluster = dispy.JobCluster(compute, nodes=[("127.0.0.9", 1), "127.0.0.8"], loglevel=dispy.logger.CRITICAL)
    clusters.append(cluster)
    assert cluster.submit(1) is not None
    assert not cluster.wait(0.3)
    assert cluster._runtime._discovery is None


@pytest.mark.parametrize(("nodes", "asked"), [
    (None, ["127.0.0.1", "10.1.2.5", "192.168.7.3"]),
    (["10.1.2.*"], ["10.1.2.5"]),
    (["127.0.0.9", "192.168.*"], ["192.168.7.3"]),
])
def test_discovery_asks_only_this_host_s_addresses_that_a_wildcard_fits(
        monkeypatch: pytest.MonkeyPatch, clusters: list, nodes: object, asked: list[str]) -> None:
    # Discovery is replaced before it opens a socket: nothing is sent; what the cluster
    # hands it decides which of this host's addresses it would ask.
    made: list[dict] = []
    init = _discovery.Discovery.__init__

    def record(self: _discovery.Discovery, *args: Any, **kwargs: Any) -> None:
        made.append(kwargs)
        init(self, *args, **kwargs)  # sets attributes only: the sockets are opened by run()

    async def idle(self: object) -> None:
        return None

    monkeypatch.setattr(_discovery.Discovery, "__init__", record)
    monkeypatch.setattr(_discovery.Discovery, "run", idle)
    cluster = dispy.JobCluster(compute, nodes=nodes, loglevel=dispy.logger.CRITICAL)
    clusters.append(cluster)
    cluster.submit(1)
    wait_until(lambda: bool(made), 30)
    assert len(made) == 1
    here = ["127.0.0.1", "::1", "10.1.2.5", "192.168.7.3", "fd00::2"]
    assert _discovery.host_targets("0.0.0.0", here, made[0]["match"]) == asked
    # discover_nodes() adds a wildcard later: its local addresses are asked from then on
    cluster.discover_nodes(["172.16.*"])
    assert made[0]["match"]("172.16.0.4")


def test_reply_node_id_round_trips_and_defaults_for_older_nodes() -> None:
    nonce, _ = build_request("s")
    msg = DiscoverReply(nonce=nonce, time=5000.0, ip_addr="127.0.0.5", port=9801, name="n5", cpus=4,
                        node_id="0123abcd")
    data = auth.seal_datagram(auth.derive_key("s"), DiscoverReply.TYPE, _discovery._encode(msg))
    reply = parse_reply("s", data, nonce, now=5001.0)
    assert reply is not None and reply.node_id == "0123abcd"
    # a reply without the field (a node before it existed) parses, with no id
    fields = {"nonce": nonce, "time": 5000.0, "ip_addr": "127.0.0.5", "port": 9801, "name": "n5", "cpus": 4}
    buffers, _ = codec.encode_body(fields)
    body = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
    data = auth.seal_datagram(auth.derive_key("s"), DiscoverReply.TYPE, body)
    older = parse_reply("s", data, nonce, now=5001.0)
    assert older is not None and older.node_id == ""
