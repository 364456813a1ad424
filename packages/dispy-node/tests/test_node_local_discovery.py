"""Discovery requests a client sends to its own host's addresses (unicast, on loopback
here): each node answers those sent to an address it serves, naming that address, even
when several nodes on the host share the port; one sent to a loopback address no node
serves is answered with a node's own address. Nothing here broadcasts."""

from __future__ import annotations

import socket
import time

from node_testkit import SECRET

from dispy_core import auth, messages
from dispy_core.messages import DiscoverReply, DiscoverRequest
from dispy_core.testing import NodeProcess
from dispy_node.discovery import address_socket, local_requester


def ask(target: tuple[str, int], nonce: str) -> DiscoverReply:
    parts, _ = messages.encode(DiscoverRequest(nonce=nonce, time=time.time()))
    data = auth.seal_datagram(auth.derive_key(SECRET), DiscoverRequest.TYPE, b"".join(bytes(p) for p in parts))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        s.sendto(data, target)
        type_, body = auth.open_datagram(auth.derive_key(SECRET), s.recvfrom(2048)[0])
    reply = messages.decode(type_, memoryview(body))
    assert isinstance(reply, DiscoverReply) and reply.nonce == nonce
    return reply


def test_nodes_sharing_the_port_each_answer_at_their_own_address() -> None:
    with NodeProcess("127.0.0.2", "-s", SECRET) as first, \
            NodeProcess("127.0.0.3", "-s", SECRET, port=first.port) as second:
        assert second.port == first.port
        for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.2"):
            reply = ask((ip, first.port), "cd" * 16)
            assert (reply.ip_addr, reply.port) == (ip, first.port)
        # 127.0.0.1 is served by neither: a node there answers with its own address
        assert ask(("127.0.0.1", first.port), "ef" * 16).ip_addr in ("127.0.0.2", "127.0.0.3")


def test_local_requester_is_a_loopback_source_answered_in_its_family() -> None:
    assert local_requester("127.0.0.1", ["198.18.8.1", "127.0.0.5"]) == "198.18.8.1"
    assert local_requester("::1", ["198.18.8.1", "fd00::2"]) == "fd00::2"
    assert local_requester("::1", ["198.18.8.1"]) is None
    assert local_requester("10.0.0.4", ["198.18.8.1"]) is None  # the LAN: network match only
    assert local_requester("not-an-ip", ["198.18.8.1"]) is None


def test_address_socket_binds_the_served_address_and_skips_unscoped_link_local() -> None:
    sock = address_socket("127.0.0.4", 0)
    assert sock is not None
    with sock:
        assert sock.getsockname()[0] == "127.0.0.4"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    assert address_socket("fe80::1", 0) is None
