"""dispy_core.web without a browser: the server's routes, token, CSRF value, Host check,
400s, live updates to several streams at once, HTTPS; MonitorBackend's actions.

The server listens on 127.0.0.1 with a port of the kernel's choosing (port=0); requests
are plain http.client ones, as a script or a curious user would send them.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
import time
from typing import Any

import pytest

import dispy_core.web as web
from dispy_core.certgen import generate
from dispy_core.errors import ConfigError, DispyError
from dispy_core.nodes import DispyNode, DispyNodeAvailInfo
from dispy_core.testing import wait_until
from dispy_core.web import MonitorBackend, WebInputError, WebServer


class FakeView:
    """A ClusterView with one node whose state the test changes."""

    def __init__(self, name: str = "compute", ip: str = "127.0.0.9") -> None:
        self.name = name
        self.node = DispyNode(ip, "n9", 4)
        self.node.avail_info = DispyNodeAvailInfo(90.0, 1 << 30, 1 << 32, 0.0)
        self.counts = {"submitted": 3, "running": 1, "done": 1, "failed": 1, "pending": 1}
        self.calls: list[tuple[Any, ...]] = []
        self.jobs = [{"uid": "7", "job_id": "job-7", "args": "(1, 'secret')", "kwargs": "{}",
                      "start_time": 1.0}]

    def job_counts(self) -> dict[str, int]:
        return dict(self.counts)

    def nodes(self) -> list[DispyNode]:
        return [self.node]

    def node_jobs(self, ip_addr: str) -> list[dict[str, Any]]:
        return list(self.jobs) if ip_addr == self.node.ip_addr else []

    def cancel(self, uid: str) -> Any:
        if uid not in {j["uid"] for j in self.jobs}:
            raise KeyError(uid)
        self.calls.append(("cancel", uid))
        return 0

    def set_node_cpus(self, node: str, cpus: int) -> Any:
        self.calls.append(("set_node_cpus", node, cpus))
        return cpus

    def allocate_node(self, node: str) -> Any:
        self.calls.append(("allocate_node", node))
        return 0

    def deallocate_node(self, node: str) -> Any:
        self.calls.append(("deallocate_node", node))
        return 0

    def close_node(self, node: str) -> Any:
        raise RuntimeError("the node is gone")

    def add_node(self, host: str, port: int | None, cpus: int) -> Any:
        self.calls.append(("add_node", host, port, cpus))
        return 0


@pytest.fixture
def view() -> FakeView:
    return FakeView()


@pytest.fixture
def server(view: FakeView):
    backend = MonitorBackend(title="test <monitor>")
    backend.add(view)
    srv = WebServer(backend, port=0, poll_sec=0.2)
    srv.start()
    yield srv
    srv.shutdown(wait=False)


def request(srv: WebServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10,
                                                                       context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def csrf_of(srv: WebServer, headers: dict[str, str] | None = None) -> str:
    status, _, body = request(srv, "GET", "/", headers=headers)
    assert status == 200, body
    found = re.search(rb'<meta name="dispy-csrf" content="([^"]+)"', body)
    assert found, body[:500]
    return found.group(1).decode()


def act(srv: WebServer, action: str, fields: Any, csrf: str | None, *, form: bool = False,
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if csrf is not None:
        hdrs["X-Dispy-CSRF"] = csrf
    if form:
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        body = fields.encode()
    else:
        hdrs["Content-Type"] = "application/json"
        body = json.dumps(fields).encode()
    status, _, data = request(srv, "POST", f"/api/act/{action}", body, hdrs)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


class Stream:
    """An /api/events reader in a thread: the snapshots it got, in order."""

    def __init__(self, srv: WebServer, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        self.conn.request("GET", "/api/events", headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type") == "text/event-stream"
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event, data = "", ""
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and event:
                    with self.lock:
                        self.events.append((event, json.loads(data)))
                    event, data = "", ""
        except (OSError, ValueError):
            pass

    def snapshots(self) -> list[dict[str, Any]]:
        with self.lock:
            return [d for e, d in self.events if e == "snapshot"]

    def kinds(self) -> list[str]:
        with self.lock:
            return [e for e, _ in self.events]

    def close(self) -> None:
        self.conn.close()


# -- the API names ---------------------------------------------------------------------------
def test_public_names() -> None:
    assert web.__all__ == ["WebInputError", "Backend", "WebServer", "ClusterView", "MonitorBackend"]
    assert issubclass(WebInputError, DispyError)


def test_constructor_refuses_bad_arguments() -> None:
    backend = MonitorBackend()
    with pytest.raises(ConfigError, match="port"):
        WebServer(backend, port=70000)
    with pytest.raises(ConfigError, match="poll_sec"):
        WebServer(backend, poll_sec=0)
    with pytest.raises(ConfigError, match="token"):
        WebServer(backend, token="")
    with pytest.raises(ConfigError, match="certfile"):
        WebServer(backend, keyfile="/nonexistent.key")
    with pytest.raises(ConfigError, match="DocumentRoot"):
        WebServer(backend, document_root="/nonexistent/dir")


def test_port_in_use_is_a_clear_error(server: WebServer) -> None:
    other = WebServer(MonitorBackend(), port=server.port)
    with pytest.raises(OSError, match=f"can't listen on 127.0.0.1:{server.port}"):
        other.start()


# -- pages, snapshot, detail ------------------------------------------------------------------
def test_pages_and_snapshot(server: WebServer, view: FakeView) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"test &lt;monitor&gt;" in body  # the title, escaped
    assert "script-src 'self'" in headers["content-security-policy"]
    for name in ("common.css", "common.js", "monitor.js", "node.html", "manage.html", "favicon.svg"):
        status, _, _ = request(server, "GET", f"/static/{name}")
        assert status == 200, name
    for bad in ("/static/../_server.py", "/static/%2e%2e%2f_server.py", "/static/.hidden", "/nope"):
        status, _, _ = request(server, "GET", bad)
        assert status == 404, bad
    status, _, body = request(server, "GET", "/api/snapshot")
    snap = json.loads(body)
    assert status == 200 and snap["version"] >= 1 and snap["page"] == "monitor"
    (cluster,) = snap["clusters"]
    assert cluster["name"] == "compute" and cluster["jobs"] == view.counts
    (node,) = cluster["nodes"]
    assert node["ip_addr"] == "127.0.0.9" and node["cpus"] == 4
    assert node["avail_info"]["memory"] == 1 << 30


def test_detail_and_show_job_args(server: WebServer, view: FakeView) -> None:
    status, _, body = request(server, "GET", "/api/detail?key=127.0.0.9")
    detail = json.loads(body)
    assert status == 200 and detail["clusters"][0]["jobs"][0]["args"] == "(1, 'secret')"
    status, _, body = request(server, "GET", "/api/detail?key=127.0.0.99")
    assert status == 404 and "127.0.0.99" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/api/detail")
    assert status == 400 and "key" in json.loads(body)["error"]

    hidden = MonitorBackend(show_job_args=False)
    hidden.add(view)
    job = hidden.detail("n9")["clusters"][0]["jobs"][0]
    assert job["args"] == "" and job["kwargs"] == "" and job["uid"] == "7"


# -- actions, CSRF, 400s ------------------------------------------------------------------------
def test_actions_call_the_views_and_return_what_they_returned(server: WebServer, view: FakeView) -> None:
    csrf = csrf_of(server)
    assert act(server, "set_cpus", {"cluster": "compute", "node": "127.0.0.9", "cpus": "2"}, csrf) == \
        (200, {"result": {"compute": {"127.0.0.9": 2}}})
    assert act(server, "deallocate_node", "node=127.0.0.9&node=n9", csrf, form=True) == \
        (200, {"result": {"compute": {"127.0.0.9": 0, "n9": 0}}})
    status, body = act(server, "close_node", {"node": ["127.0.0.9"]}, csrf)
    assert status == 200 and body["result"]["compute"]["127.0.0.9"] == {"error": "RuntimeError: the node is gone"}
    assert act(server, "cancel_jobs", {"uid": ["7", "8"]}, csrf) == \
        (200, {"result": {"compute": {"7": 0}, "(none)": {"8": "no running or queued job has this uid"}}})
    assert act(server, "add_node", {"host": "127.0.0.10", "port": "9701", "cpus": "1"}, csrf)[0] == 200
    assert view.calls == [("set_node_cpus", "127.0.0.9", 2), ("deallocate_node", "127.0.0.9"),
                          ("deallocate_node", "n9"), ("cancel", "7"), ("add_node", "127.0.0.10", 9701, 1)]


@pytest.mark.parametrize("action, fields, message", [
    ("set_cpus", {"node": "127.0.0.9"}, "the field 'cpus' is missing"),
    ("set_cpus", {"node": "127.0.0.9", "cpus": "two"}, "the field 'cpus' must be a whole number, not 'two'"),
    ("set_cpus", {"cpus": "2"}, "the field 'node' is missing"),
    ("set_cpus", {"node": ["a", "b"], "cpus": "2"}, "the field 'node' is given 2 times"),
    ("set_cpus", {"cluster": "other", "node": "a", "cpus": "2"}, "no cluster named 'other'"),
    ("add_node", {"host": "a", "port": "70000"}, "the field 'port' must be in 1-65535"),
    ("add_node", {"host": "a b"}, "must be a host name or IP address"),
    ("cancel_jobs", {}, "the field 'uid' is missing"),
    ("close_node", {"node": {"x": 1}}, "expected a string or a list of strings"),
])
def test_bad_fields_get_400_with_a_message(server: WebServer, view: FakeView, action: str,
                                           fields: dict[str, Any], message: str) -> None:
    status, body = act(server, action, fields, csrf_of(server))
    assert status == 400, body
    assert message in body["error"]
    assert "Traceback" not in body["error"]
    assert view.calls == []


def test_bad_bodies_get_400_and_unknown_actions_404(server: WebServer) -> None:
    csrf = csrf_of(server)
    for ctype, body in (("application/json", b"{not json"), ("application/json", b"[1, 2]"),
                        ("text/xml", b"<a/>"), ("application/x-www-form-urlencoded", b"\xff\xfe")):
        status, _, data = request(server, "POST", "/api/act/set_cpus", body,
                                  {"X-Dispy-CSRF": csrf, "Content-Type": ctype})
        assert status == 400, (ctype, data)
        assert json.loads(data)["error"]
    status, body = act(server, "format_disk", {}, csrf)
    assert status == 404 and body == {"error": "unknown action: format_disk"}


def test_post_without_the_csrf_value_is_refused(server: WebServer, view: FakeView) -> None:
    fields = {"node": "127.0.0.9", "cpus": "1"}
    status, body = act(server, "set_cpus", fields, None)
    assert status == 403 and "X-Dispy-CSRF" in body
    status, body = act(server, "set_cpus", fields, "forged")
    assert status == 403
    # the right value, but sent by a page of another site
    status, body = act(server, "set_cpus", fields, csrf_of(server), headers={"Origin": "http://evil.example"})
    assert status == 403 and "another site" in body
    assert view.calls == []


def test_host_header_must_be_loopback_without_a_token(server: WebServer) -> None:
    status, _, body = request(server, "GET", "/api/snapshot", headers={"Host": f"rebound.example:{server.port}"})
    assert status == 403 and b"Host" in body and b"clusters" not in body
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "127.0.0.1"):
        assert request(server, "GET", "/api/snapshot", headers={"Host": host})[0] == 200


# -- token ---------------------------------------------------------------------------------------
def test_token_is_made_beyond_loopback() -> None:
    srv = WebServer(MonitorBackend(), host="0.0.0.0", port=0)  # not started: nothing listens
    assert srv.token and len(srv.token) >= 20
    assert WebServer(MonitorBackend(), host="127.0.0.1").token is None
    assert WebServer(MonitorBackend(), host="::1").token is None
    assert WebServer(MonitorBackend(), host="localhost").token is None


def test_token_is_required_when_in_force(view: FakeView) -> None:
    backend = MonitorBackend()
    backend.add(view)
    srv = WebServer(backend, port=0, token="s3cret-token", poll_sec=0.2)
    srv.start()
    try:
        assert srv.url == f"http://127.0.0.1:{srv.port}/?token=s3cret-token"
        for path in ("/", "/api/snapshot", "/api/events", "/api/detail?key=n9", "/static/common.js"):
            status, _, body = request(srv, "GET", path)
            assert status == 401, path
            assert b"127.0.0.9" not in body and b"compute" not in body
            status, _, body = request(srv, "GET", path, headers={"Authorization": "Bearer wrong"})
            assert status == 403 and b"wrong token" in body and b"127.0.0.9" not in body
        status, _, body = request(srv, "GET", "/?token=nope")
        assert status == 403 and b"compute" not in body
        status, _, body = request(srv, "POST", "/api/act/set_cpus", b"node=n9&cpus=1",
                                  {"X-Dispy-CSRF": srv.csrf})
        assert status == 401 and view.calls == []

        # ?token= sets the cookie and sends the browser to the same URL without the token
        status, headers, _ = request(srv, "GET", "/static/node.html?key=n9&token=s3cret-token")
        assert status == 303 and headers["location"] == "/static/node.html?key=n9"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        assert request(srv, "GET", "/api/snapshot", headers=jar)[0] == 200
        assert request(srv, "GET", "/api/snapshot", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        csrf = csrf_of(srv, jar)
        assert act(srv, "set_cpus", {"node": "n9", "cpus": "1"}, csrf, headers=jar)[0] == 200
        # with a token any Host is fine: a page on another site can't know the token
        assert request(srv, "GET", "/api/snapshot", headers={**jar, "Host": "myhost.example"})[0] == 200
    finally:
        srv.shutdown(wait=False)


# -- live updates ------------------------------------------------------------------------------
def test_every_stream_gets_every_update(server: WebServer, view: FakeView) -> None:
    first, second = Stream(server), Stream(server)
    try:
        assert wait_until(lambda: first.snapshots() and second.snapshots(), 10)
        assert first.snapshots()[0]["clusters"][0]["jobs"]["done"] == 1
        for done in (2, 3, 4):
            view.counts["done"] = done
            server.notify()
            # each stream sees each change: one reading doesn't take it from the other
            assert wait_until(lambda: all(s.snapshots()[-1]["clusters"][0]["jobs"]["done"] == done
                                          for s in (first, second)), 10), (first.events, second.events)
        versions = [s["version"] for s in first.snapshots()]
        assert versions == sorted(set(versions))
        # an unchanged state sends nothing new
        count = len(first.snapshots())
        server.notify()
        time.sleep(0.5)
        assert len(first.snapshots()) == count
    finally:
        first.close()
        second.close()


def test_shutdown_sends_the_final_state_then_closes(view: FakeView) -> None:
    backend = MonitorBackend()
    backend.add(view)
    srv = WebServer(backend, port=0, poll_sec=60)  # no sampling between: only shutdown's
    srv.start()
    streams = [Stream(srv), Stream(srv)]
    assert wait_until(lambda: all(s.snapshots() for s in streams), 10)
    view.counts["done"] = 99
    srv.shutdown()
    for s in streams:
        s.thread.join(10)
        assert s.snapshots()[-1]["clusters"][0]["jobs"]["done"] == 99
        assert s.kinds()[-1] == "closed"
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


# -- HTTPS -----------------------------------------------------------------------------------------
def test_https(tmp_path, view: FakeView) -> None:
    key, cert = generate()
    (tmp_path / "web.key").write_bytes(key)
    (tmp_path / "web.pem").write_bytes(cert)
    backend = MonitorBackend()
    backend.add(view)
    srv = WebServer(backend, port=0, certfile=str(tmp_path / "web.pem"), keyfile=str(tmp_path / "web.key"))
    srv.start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "web.pem"))
        ctx.check_hostname = False  # the generated certificate names no host
        status, _, body = request(srv, "GET", "/api/snapshot", context=ctx)
        assert status == 200 and json.loads(body)["clusters"][0]["name"] == "compute"
        # plain HTTP to the HTTPS port gets no data
        try:
            body = request(srv, "GET", "/api/snapshot")[2]
        except (http.client.HTTPException, OSError):
            body = b""
        assert b"compute" not in body
    finally:
        srv.shutdown(wait=False)
    with pytest.raises(ConfigError, match="certfile"):
        WebServer(backend, port=0, certfile=str(tmp_path / "missing.pem")).start()


# -- MonitorBackend ---------------------------------------------------------------------------------
def test_monitor_backend_history_and_clusters() -> None:
    backend = MonitorBackend()
    a, b = FakeView("a"), FakeView("b", "127.0.0.8")
    backend.add(a)
    backend.add(b)
    snap = backend.snapshot()
    assert [c["name"] for c in snap["clusters"]] == ["a", "b"]
    assert [p[1] for p in snap["clusters"][0]["history"]] == [2]
    backend.snapshot()  # unchanged: no new point
    a.counts["done"] = 5
    assert [p[1] for p in backend.snapshot()["clusters"][0]["history"]] == [2, 6]
    assert MonitorBackend.act(backend, "set_cpus", {"cluster": ["*"], "node": ["x"], "cpus": ["1"]}) == \
        {"a": {"x": 1}, "b": {"x": 1}}
    backend.remove(a)
    assert [c["name"] for c in backend.snapshot()["clusters"]] == ["b"]
    with pytest.raises(KeyError):
        backend.act("nope", {})
    with pytest.raises(KeyError):
        backend.detail("127.0.0.9")


def test_document_root_serves_the_users_files(tmp_path, view: FakeView) -> None:
    (tmp_path / "monitor.html").write_text('<meta name="dispy-csrf" content="{{csrf}}"><h1>{{title}} mine</h1>')
    (tmp_path / "mine.js").write_text("console.log('mine')")
    backend = MonitorBackend(title="T")
    backend.add(view)
    srv = WebServer(backend, port=0, document_root=str(tmp_path))
    srv.start()
    try:
        status, _, body = request(srv, "GET", "/")
        assert status == 200 and b"<h1>T mine</h1>" in body
        csrf = csrf_of(srv)
        assert csrf == srv.csrf
        status, headers, body = request(srv, "GET", "/static/mine.js")
        assert status == 200 and body == b"console.log('mine')" and headers["content-type"].startswith("text/javascript")
        assert request(srv, "GET", "/static/common.js")[0] == 404  # the shipped files are not mixed in
        assert act(srv, "set_cpus", {"node": "n9", "cpus": "3"}, csrf) == (200, {"result": {"compute": {"n9": 3}}})
    finally:
        srv.shutdown(wait=False)


def test_shutdown_closes_idle_connections(view: FakeView) -> None:
    backend = MonitorBackend()
    backend.add(view)
    srv = WebServer(backend, port=0)
    srv.start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/api/snapshot")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Connection") != "close"
    resp.read()  # the connection stays open (HTTP/1.1 keep-alive), its thread waiting
    srv.shutdown()
    assert conn.sock is not None
    conn.sock.settimeout(5)
    assert conn.sock.recv(1) == b""  # closed by the server, not left to its idle timeout
    conn.close()
