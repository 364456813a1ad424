"""dispyadmin without nodes: naming nodes, the console's commands, the pages' backend
refusing bad fields (HTTP 400 material) before anything is sent to a node."""

from __future__ import annotations

import pytest

from dispy._admin_cli import AdminConsole, format_nodes
from dispy._admin_web import AdminBackend
from dispy.admin import AdminNode, NodeAdmin, parse_node
from dispy_core.errors import ConfigError
from dispy_core.messages import AdminNodeInfo
from dispy_core.testing import console_commands, wait_until
from dispy_core.web import WebInputError


@pytest.mark.parametrize("text,want", [
    ("127.0.0.5", ("127.0.0.5", 9701)), ("127.0.0.5:1234", ("127.0.0.5", 1234)),
    ("::1", ("::1", 9701)), ("[::1]:80", ("::1", 80)), (" localhost:9 ", ("127.0.0.1", 9)),
])
def test_parse_node(text, want):
    assert parse_node(text, 9701) == want


@pytest.mark.parametrize("text,why", [
    ("127.0.0.5:0", "port must be a number in 1..65535"), ("127.0.0.5:x", "port must be"),
    (":80", "no host"), ("no-such-host.invalid", "not an IP address or known host name"),
])
def test_parse_node_refuses(text, why):
    with pytest.raises(ConfigError, match=why):
        parse_node(text, 9701)


def test_a_record_says_why_it_has_no_details():
    node = AdminNode("127.0.0.5", 9701, error="127.0.0.5:9701: the node's --admin_secret differs", refused=True)
    d = node.as_dict()
    assert d == {"key": "127.0.0.5:9701", "host": "127.0.0.5", "port": 9701, "info": None,
                 "error": "the node's --admin_secret differs", "refused": True, "updated": 0.0}
    info = AdminNodeInfo("n", "127.0.0.5", 9701, 2, 4, service_stop="18:00", state="serving")
    text = format_nodes([AdminNode("127.0.0.5", 9701, info=info).as_dict(), d])
    assert "127.0.0.5:9701  n     2/4" in text and "-/18:00/-" in text and "differs" in text


class FakeAdmin:
    named = True

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.secret = ""

    def nodes(self):
        return [AdminNode("127.0.0.5", 9701, error="unreachable").as_dict()]

    def set_secret(self, secret: str) -> None:
        self.calls.append(("secret", secret))

    def scan(self) -> None:
        self.calls.append(("scan",))


def test_console_commands():
    admin = FakeAdmin()
    with console_commands(AdminConsole, admin) as (say, calls):
        assert "127.0.0.5:9701" in say("") and "unreachable" in say("status")
        assert "type the admin secret" in say("secret")
        assert "admin secret set" in say("Secret With CAPS")
        assert wait_until(lambda: ("secret", "Secret With CAPS") in admin.calls, 5)
        say("secret")
        assert "unchanged" in say("")
        assert "asking the nodes" in say("scan")
        assert wait_until(lambda: ("scan",) in admin.calls, 5)
        assert "secret" in say("help") and "scan" in say("nonsense")
        say("quit")
        say("exit")
        assert calls == ["quit", "exit"]
    assert ("secret", "") not in admin.calls


def test_backend_refuses_bad_fields_before_asking_a_node():
    admin = NodeAdmin("s", ["127.0.0.5:9"])  # nothing listens there; nothing may be asked
    asked = []
    admin._ask = lambda node, msg: asked.append(msg)  # type: ignore[method-assign]
    backend = AdminBackend(admin)
    for action, fields, why in [
        ("set_cpus", {"node": ["127.0.0.5:9"]}, "missing field 'cpus'"),
        ("set_cpus", {"node": ["127.0.0.5:9"], "cpus": ["x"]}, "'cpus' must be a whole number"),
        ("set_cpus", {"cpus": ["1"]}, "missing field 'node'"),
        ("set_cpus", {"node": ["127.0.0.9:9"], "cpus": ["1"]}, "no node '127.0.0.9:9' here"),
        ("set_serve", {"node": ["127.0.0.5:9"], "serve": ["0"]}, "invalid serve count 0"),
        ("set_serve", {"node": ["127.0.0.5:9"], "serve": ["1", "2"]}, "given 2 times"),
        ("set_service_times", {"node": ["127.0.0.5:9"], "end": ["7pm"]}, "invalid service end time '7pm'"),
        ("add_node", {"host": ["127.0.0.6"], "port": ["70000"]}, "invalid port 70000"),
        ("add_node", {}, "missing field 'host'"),
    ]:
        with pytest.raises(WebInputError, match=why):
            backend.act(action, fields)
    with pytest.raises(KeyError):
        backend.act("reboot", {})
    with pytest.raises(KeyError):
        backend.detail("127.0.0.99:1")
    assert asked == []
    snap = backend.snapshot()
    assert snap["secret_set"] and not snap["discovery"] and snap["nodes"][0]["key"] == "127.0.0.5:9"
    admin.close()


def test_an_unreachable_node_is_listed_with_the_reason():
    admin = NodeAdmin("s", ["127.0.0.5:9"], timeout=5)
    admin.refresh()
    node = admin.node("127.0.0.5")
    assert node["info"] is None and not node["refused"] and "can't connect" in node["error"], node
    admin.close()


def test_no_secret_refuses_without_connecting():
    admin = NodeAdmin("", ["127.0.0.5:9"])
    admin.refresh()
    assert "no admin secret given" in admin.node("127.0.0.5:9")["error"]
    admin.close()
