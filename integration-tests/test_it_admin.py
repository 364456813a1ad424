"""dispyadmin against real dispynodes on 127.0.0.x: one with the matching --admin_secret,
one with another, one without. The admin API (dispy.admin.NodeAdmin) lists all three,
with details only for the first; its changes (CPUs, service times, serve count) change
that node, as seen by JobClusters using it; the others refuse, saying why. Admin
connections can't do what clients do, and client connections can't do what admin ones
do. The dispyadmin command serves it all on web pages, and takes its options from
--config files."""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import dispy
from dispy.admin import AdminError, NodeAdmin
from dispy_core import messages as m
from dispy_core.connection import Connection
from dispy_core.testing import NodeProcess, node_python, wait_until

SECRET = "admin-secret-1"


def nodes_of(*procs):
    return [dispy.NodeAllocate(p.ip, port=p.port) for p in procs]


def hhmm(minutes_from_now: int) -> str:
    t = datetime.datetime.now() + datetime.timedelta(minutes=minutes_from_now)
    return t.strftime("%H:%M")


def span(seconds):
    import time

    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def meet(directory, me, other):
    """Runs until job ``other`` runs too (or 60 s pass): True if they ran at once."""
    import os
    import time

    open(os.path.join(directory, me), "w").close()
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(os.path.join(directory, other)):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def three(start_node):
    """(matching, other secret, no admin secret) nodes."""
    a = start_node("127.0.0.151", "-c", "2", "--admin_secret", SECRET, "--name", "matching")
    b = start_node("127.0.0.152", "-c", "1", "--admin_secret", "another one", "--name", "other")
    c = start_node("127.0.0.153", "-c", "1", "--name", "plain")
    return a, b, c


def test_lists_every_node_with_details_only_where_the_secret_matches(three):
    a, b, c = three
    with NodeAdmin(SECRET, [a.addr, b.addr, c.addr]) as admin:
        admin.refresh()
        nodes = {n["key"]: n for n in admin.nodes()}
        assert list(nodes) == [a.addr, b.addr, c.addr]
        info = nodes[a.addr]["info"]
        assert info["name"] == "matching" and info["cpus"] == 2 and info["serve"] == -1
        assert info["service_start"] is None and info["busy"] == 0 and info["state"] == "serving"
        assert info["avail_info"]["memory"] > 0 and not nodes[a.addr]["error"]
        assert nodes[b.addr]["info"] is None and nodes[b.addr]["refused"]
        assert "--admin_secret differs from dispyadmin's --secret" in nodes[b.addr]["error"]
        assert nodes[c.addr]["info"] is None and nodes[c.addr]["refused"]
        assert "takes no admin requests: it was started without --admin_secret" in nodes[c.addr]["error"]
        # refusals are logged by the nodes
        assert wait_until(lambda: "authentication failed" in b.log or "closed client connection" in b.log, 10)
        assert wait_until(lambda: "without --admin_secret" in c.log, 10)


def test_other_nodes_refuse_every_change_and_nothing_changes(three):
    a, b, c = three
    with NodeAdmin(SECRET, [b.addr, c.addr]) as admin:
        for node, why in ((b, "differs"), (c, "without --admin_secret")):
            for change in (lambda k: admin.set_cpus(k, 1), lambda k: admin.set_serve(k, 1),
                           lambda k: admin.set_service_times(k, "01:00", "02:00")):
                with pytest.raises(AdminError, match=why) as exc:
                    change(node.addr)
                assert exc.value.refused
    # the nodes still serve their clients as they were
    for node in (b, c):
        with dispy.JobCluster(span, nodes=nodes_of(node)) as cluster:
            assert cluster.submit(0)() is not None
    assert "serving" in b.log and "holding jobs" not in b.log + c.log


def test_set_cpus_changes_a_running_cluster_and_later_ones(three, tmp_path):
    a = three[0]
    with NodeAdmin(SECRET, [a.addr]) as admin, dispy.JobCluster(span, nodes=nodes_of(a)) as cluster:
        assert cluster.submit(0)() is not None  # set up with the node's 2 CPUs
        record = admin.set_cpus(a.addr, 1)
        assert record["info"]["cpus"] == 1
        jobs = [cluster.submit(0.5) for _ in range(3)]
        spans = sorted(job() for job in jobs)
        assert all(s is not None for s in spans), [j.exception for j in jobs]
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, spans  # one at a time
        assert admin.set_cpus(a.addr, 2)["info"]["cpus"] == 2
    with dispy.JobCluster(meet, nodes=nodes_of(a)) as cluster:
        jobs = [cluster.submit(str(tmp_path), "a", "b"), cluster.submit(str(tmp_path), "b", "a")]
        assert [job() for job in jobs] == [True, True]  # two at once again
    # a bad count is refused by the node, which keeps its CPUs and its details
    with NodeAdmin(SECRET, [a.addr]) as admin:
        with pytest.raises(AdminError, match="refused: invalid CPU count 999") as exc:
            admin.set_cpus(a.addr, 999)
        assert exc.value.refused
        admin.refresh()
        assert admin.node(a.addr)["info"]["cpus"] == 2


def test_service_times_hold_and_release_jobs(three):
    a = three[0]
    with NodeAdmin(SECRET, [a.addr]) as admin, dispy.JobCluster(span, nodes=nodes_of(a)) as cluster:
        assert cluster.submit(0)() is not None
        start, stop = hhmm(120), hhmm(180)
        info = admin.set_service_times(a.addr, start, stop, None)["info"]
        assert (info["service_start"], info["service_stop"], info["service_end"]) == (start, stop, None)
        assert info["state"].startswith("outside its service window")
        job = cluster.submit(0)  # held: the node starts no job now
        admin.refresh()
        assert admin.node(a.addr)["info"]["busy"] == 0
        assert job.status in (dispy.DispyJob.Created, dispy.DispyJob.Running)
        assert admin.set_service_times(a.addr)["info"]["state"] == "serving"
        assert job() is not None  # released
    with pytest.raises(Exception, match="service"):
        with NodeAdmin(SECRET, [a.addr]) as admin:
            admin.set_service_times(a.addr, "10:00", "10:00")  # refused by the node (or here)


def test_serve_count_makes_the_node_quit_after_its_clients(start_node):
    node = start_node("127.0.0.154", "-c", "1", "--admin_secret", SECRET)
    with NodeAdmin(SECRET, [node.addr]) as admin:
        assert admin.set_serve(node.addr, 1)["info"]["serve"] == 1
        with dispy.JobCluster(span, nodes=nodes_of(node)) as cluster:
            assert cluster.submit(0)() is not None
        assert wait_until(lambda: not node.alive(), 30), node.log
        assert wait_until(lambda: "quitting" in node.log, 10), node.log


# -- what each connection may do ---------------------------------------------------------------
def _exchange(node: NodeProcess, msg: m.Message, *, secret: str = "", key_id: str = "") -> list[m.Message]:
    """Handshake (admin when key_id is given), send ``msg``, collect the replies until the
    node closes the connection or answers."""
    conn = Connection(initiator=True, secret=secret, key_id=key_id, frame_macs=True if key_id else None)
    got: list[m.Message] = []
    with socket.create_connection((node.ip, node.port), timeout=10) as s:
        sent = False
        while True:
            for part in conn.data_to_send():
                s.sendall(part)
            data = s.recv(65536)
            if not data:
                return got
            conn.feed(data)
            while (reply := conn.next_message()) is not None:
                if isinstance(reply, m.Welcome) and not sent:
                    for part in conn.send(msg):
                        s.sendall(part)
                    sent = True
                elif not isinstance(reply, m.Welcome):
                    got.append(reply)
                    if not isinstance(reply, m.AdminRefused) or key_id == "":
                        return got


def test_an_admin_connection_cannot_set_up_a_computation(three):
    a = three[0]
    compute = m.Compute("c" * 32, "evil", "program", [], [])
    got = _exchange(a, compute, secret=SECRET, key_id=m.ADMIN_KEY_ID)
    assert len(got) == 1 and isinstance(got[0], m.AdminRefused)
    assert "Compute is not an admin request" in got[0].reason
    assert wait_until(lambda: "it sent Compute, which is not an admin request" in a.log, 10)
    assert "evil" not in a.log


def test_a_client_connection_cannot_send_admin_requests(three):
    a = three[0]
    got = _exchange(a, m.AdminSetCpus(1))
    assert len(got) == 1 and isinstance(got[0], m.AdminRefused)
    assert "authenticated with the node's admin secret" in got[0].reason
    with NodeAdmin(SECRET, [a.addr]) as admin:
        admin.refresh()
        assert admin.node(a.addr)["info"]["cpus"] == 2


# -- the dispyadmin command and its web API ------------------------------------------------------
def _start_dispyadmin(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "dispy._admin_cli", "--daemon", "--http_port", "0",
                             "--poll_interval", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.match(r"dispyadmin serving (\S+)", line)
        if found:
            return proc, found.group(1)
    proc.wait(10)
    raise AssertionError("dispyadmin did not start")


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_dispyadmin_command_serves_the_nodes_and_reads_its_secret_from_config(three, tmp_path):
    a, b, c = three
    config = tmp_path / "admin.ini"
    saved = subprocess.run([sys.executable, "-m", "dispy._admin_cli", "--secret", SECRET, "--save_config",
                            str(config)], capture_output=True, text=True, timeout=30)
    assert saved.returncode == 0, saved.stderr
    assert SECRET in config.read_text() and oct(os.stat(config).st_mode & 0o777) == "0o600"
    proc, url = _start_dispyadmin("--config", str(config), "-i", a.addr, "-i", b.addr, "-i", c.addr,
                                  "--http_host", "127.0.0.155", "--http_token", "tok-123")
    try:
        assert SECRET not in " ".join(psutil_cmdline(proc.pid))
        base = url.split("?")[0]
        assert _get(base + "api/snapshot")[0] in (401, 403)  # no token
        assert _get(base + "api/snapshot", "wrong")[0] in (401, 403)

        def details():
            status, text = _get(base + "api/snapshot", "tok-123")
            snap = json.loads(text) if status == 200 else {"nodes": []}
            return [n for n in snap["nodes"] if n["info"] is not None] and snap
        snap = wait_until(details, 30) and details()
        assert [n["key"] for n in snap["nodes"]] == [a.addr, b.addr, c.addr]
        assert [n["info"] is not None for n in snap["nodes"]] == [True, False, False]
        assert snap["secret_set"] and not snap["discovery"]
    finally:
        proc.terminate()
        proc.wait(20)


def psutil_cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0")]


def test_dispyadmin_bad_options_exit_2():
    p = subprocess.run([sys.executable, "-m", "dispy._admin_cli", "--daemon", "--node_port", "70000"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "invalid --node_port 70000" in p.stderr
    p = subprocess.run([sys.executable, "-m", "dispy._admin_cli", "--daemon", "-i", "no-such-host.invalid"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "invalid node 'no-such-host.invalid'" in p.stdout + p.stderr


def test_the_web_api_changes_a_node_and_shows_what_came_back(three):
    """The AdminBackend's actions through a real WebServer (port 0), as the pages call them."""
    from dispy._admin_web import AdminBackend
    from dispy_core.web import WebServer

    a, b, _ = three
    with NodeAdmin(SECRET, [a.addr, b.addr]) as admin:
        server = WebServer(AdminBackend(admin), port=0, token="t0k")
        server.start()
        try:
            base = f"http://127.0.0.1:{server.port}/"

            def post(action, fields, csrf=server.csrf, token="t0k"):
                req = urllib.request.Request(base + "api/act/" + action, data=json.dumps(fields).encode(),
                                             method="POST", headers={"Content-Type": "application/json",
                                                                     "X-Dispy-CSRF": csrf,
                                                                     "Authorization": f"Bearer {token}"})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        return r.status, json.loads(r.read())
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read().decode()

            status, body = post("set_cpus", {"node": [a.addr, b.addr], "cpus": "1"})
            assert status == 200, body
            first, second = body["result"]
            assert first == {"node": a.addr, "ok": True, "info": first["info"]} and first["info"]["cpus"] == 1
            assert second["ok"] is False and second["error"] == "the node's --admin_secret differs from dispyadmin's --secret"
            status, body = post("set_serve", {"node": [a.addr], "serve": "many"})
            assert status == 400 and "'serve' must be a whole number" in body
            status, body = post("set_service_times", {"node": [a.addr], "start": "25:00", "stop": "26:00"})
            assert status == 400 and "invalid service start time '25:00'" in body
            status, body = post("set_cpus", {"cpus": "1"})
            assert status == 400 and "missing field 'node'" in body
            assert post("set_cpus", {"node": [a.addr], "cpus": "2"}, token="bad")[0] in (401, 403)
            assert post("set_cpus", {"node": [a.addr], "cpus": "2"}, csrf="bad")[0] == 403
            admin.refresh()
            assert admin.node(a.addr)["info"]["cpus"] == 1  # the refused posts changed nothing
            status, body = post("add_node", {"host": "127.0.0.153", "port": str(three[2].port)})
            assert status == 200 and "without --admin_secret" in body["result"]["error"]
            status, detail = _get(base + "api/detail?key=" + a.addr, "t0k")
            assert status == 200 and json.loads(detail)["info"]["cpus"] == 1
        finally:
            server.shutdown()


# -- in a browser ------------------------------------------------------------------------------
#: Seconds a browser assertion may wait for the page to show something.
SHOW = 20_000


@pytest.mark.browser
def test_the_admin_page_sets_a_nodes_cpus_in_a_browser(browser, three, tmp_path):
    from playwright.sync_api import expect

    a, b, c = three
    proc, url = _start_dispyadmin("--secret", SECRET, "-i", a.addr, "-i", b.addr, "-i", c.addr,
                                  "--http_host", "127.0.0.155", "--http_token", "tok-456")
    try:
        assert url.endswith("?token=tok-456")
        base = url.split("?")[0]
        # without the token, or with another, nothing is shown
        stranger = browser.new_context().new_page()
        assert stranger.goto(base).status in (401, 403)
        assert stranger.goto(base + "?token=nope").status in (401, 403)

        page = browser.new_context(viewport={"width": 1500, "height": 800}).new_page()
        page.goto(url)
        row = page.locator(f"tr[data-key='{a.addr}']")
        expect(row.locator("td.cpus")).to_have_text(re.compile(r"^2 of \d+$"), timeout=SHOW)
        for other, why in ((b, "differs from dispyadmin's --secret"), (c, "without --admin_secret")):
            expect(page.locator(f"tr[data-key='{other.addr}'] td.reason")).to_contain_text(why, timeout=SHOW)
        row.locator("input.tick").check()
        page.locator("#cpus").fill("1")
        page.locator("#set-cpus button").click()
        result = page.locator("#result")
        expect(result).to_contain_text(f"returned: {a.addr}: done; now 1 of ", timeout=SHOW)
        expect(result).to_contain_text("CPUs, serve no limit, service – / – / –, serving")
        expect(row.locator("td.cpus")).to_have_text(re.compile(r"^1 of \d+$"), timeout=SHOW)
        page.screenshot(path=str(tmp_path / "admin.png"), full_page=True)

        # the node's own page: its serve count
        page.goto(base + "static/admin_node.html?key=" + a.addr)
        expect(page.locator("#cpus")).to_have_value("1", timeout=SHOW)
        page.locator("#serve").fill("5")
        page.locator("#set-serve button").click()
        expect(page.locator("#result")).to_contain_text(f"{a.addr}: done; now 1 of ", timeout=SHOW)
        expect(page.locator("#result")).to_contain_text("serve 0 of 5")
        # a value the node refuses: the page says why
        page.locator("#cpus").fill("999")
        page.locator("#set-cpus button").click()
        expect(page.locator("#result")).to_contain_text(f"{a.addr}: not changed: refused: invalid CPU count 999",
                                                        timeout=SHOW)
        expect(page.locator("#details")).to_contain_text("Serve clients5", timeout=SHOW)
        page.screenshot(path=str(tmp_path / "admin_node.png"), full_page=True)
        # a node whose secret differs: its page says why, with no forms
        page.goto(base + "static/admin_node.html?key=" + b.addr)
        expect(page.locator("#reason")).to_contain_text("differs", timeout=SHOW)
        expect(page.locator("#changes")).to_be_hidden()
    finally:
        proc.terminate()
        proc.wait(20)
    with NodeAdmin(SECRET, [a.addr]) as admin:
        admin.refresh()
        info = admin.node(a.addr)["info"]
        assert (info["cpus"], info["serve"]) == (1, 5)


def test_dispynode_admin_secret_from_a_config_file(tmp_path):
    config = tmp_path / "node.ini"
    saved = subprocess.run([node_python(), "-m", "dispy_node.cli", "--admin_secret", SECRET, "-c", "1",
                            "--save_config", str(config)], capture_output=True, text=True, timeout=30)
    assert saved.returncode == 0, saved.stderr
    assert f"admin_secret = {SECRET}" in config.read_text()
    with NodeProcess("127.0.0.156", "--config", str(config)) as node:
        assert SECRET not in " ".join(psutil_cmdline(node.proc.pid))
        with NodeAdmin(SECRET, [node.addr]) as admin:
            assert admin.set_cpus(node.addr, 1)["info"]["cpus"] == 1


def test_named_nodes_are_never_discovered(three):
    a = three[0]
    with NodeAdmin(SECRET, [a.addr], poll_interval=1) as admin:
        admin.start()
        admin.scan()
        assert admin.named and [t.name for t in admin._threads] == ["dispyadmin-poll"]
        assert [n["key"] for n in admin.nodes()] == [a.addr]


def _admin_session(node: NodeProcess, msg: m.Message) -> tuple[bytes, list[m.Message]]:
    """One admin conversation: what this side sent (every byte), and what came back."""
    conn = Connection(initiator=True, secret=SECRET, key_id=m.ADMIN_KEY_ID, frame_macs=True)
    sent, got = b"", []
    with socket.create_connection((node.ip, node.port), timeout=10) as s:
        while True:
            for part in conn.data_to_send():
                data = bytes(memoryview(part).cast("B"))
                sent += data
                s.sendall(data)
            data = s.recv(65536)
            if not data:
                return sent, got
            conn.feed(data)
            while (reply := conn.next_message()) is not None:
                if isinstance(reply, m.Welcome):
                    for part in conn.send(msg):
                        data = bytes(memoryview(part).cast("B"))
                        sent += data
                        s.sendall(data)
                else:
                    got.append(reply)
                    return sent, got


def test_a_replayed_admin_session_is_refused(three):
    a = three[0]
    recorded, got = _admin_session(a, m.AdminSetCpus(1))
    assert got[0].cpus == 1
    with NodeAdmin(SECRET, [a.addr]) as admin:
        admin.set_cpus(a.addr, 2)
        with socket.create_connection((a.ip, a.port), timeout=10) as s:  # the same bytes again
            s.sendall(recorded)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert b"authentication failed" in answer  # Denied: the recorded proof is for another nonce
        admin.refresh()
        assert admin.node(a.addr)["info"]["cpus"] == 2
    assert wait_until(lambda: "authentication failed: the secrets differ" in a.log, 10)


def test_a_malformed_admin_request_is_refused_and_logged(three):
    a = three[0]
    bad = object.__new__(m.AdminSetCpus)
    object.__setattr__(bad, "cpus", "all of them")  # what no AdminSetCpus may hold
    _, got = _admin_session(a, bad)
    assert got == []  # the node closed the connection
    assert wait_until(lambda: "closed admin connection from" in a.log and
                      "malformed AdminSetCpus message: cpus must be" in a.log, 10), a.log
    with NodeAdmin(SECRET, [a.addr]) as admin:
        admin.refresh()
        assert admin.node(a.addr)["info"]["cpus"] == 2


# -- secrets typed at the consoles (a pty: what a person at a terminal does) ----------------------
class Pty:
    """A program whose stdin, stdout and stderr are a pty; reads what it shows there."""

    def __init__(self, *cmd: str) -> None:
        import pty

        master, slave = pty.openpty()
        self.proc = subprocess.Popen(list(cmd), stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.master = master
        self.text = ""

    def read_until(self, pattern: str, timeout: float = 20.0) -> str:
        import select

        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.text)):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.text!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"EOF before {pattern!r} in {self.text!r}"
                self.text += chunk.decode(errors="replace")
        seen, self.text = self.text[:found.end()], self.text[found.end():]
        return seen

    def say(self, line: str, expect: str) -> str:
        os.write(self.master, line.encode() + b"\n")
        return self.read_until(expect)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_secrets_typed_at_the_consoles_are_not_shown_and_work(tmp_path):
    node = Pty(node_python(), "-m", "dispy_node.cli", "-i", "127.0.0.157", "-p", "0", "-c", "1",
               "--dest_path_prefix", str(tmp_path / "node"))
    admin = None
    try:
        port = int(re.search(r"serving 1 CPUs at 127\.0\.0\.157:(\d+)", node.read_until(r"at \S+:\d+\s")).group(1))
        addr = f"127.0.0.157:{port}"
        node.read_until("Enter 'help'")
        shown = node.say("admin_secret", "type the admin secret")
        shown += node.say("Node Admin Secret", "admin secret set")
        assert "Node Admin Secret" not in shown  # not echoed
        admin = Pty(sys.executable, "-m", "dispy._admin_cli", "--http_port", "0", "-i", addr, "--poll_interval", "1")
        admin.read_until("dispyadmin serving http://127.0.0.1:")
        admin.read_until("Enter 'help'")
        assert wait_until(lambda: "no admin secret given" in admin.say("", r"\n\S+:\d+ .*\n"), 20)
        shown = admin.say("secret", "type the admin secret")
        shown += admin.say("Node Admin Secret", "admin secret set")
        assert "Node Admin Secret" not in shown
        assert wait_until(lambda: re.search(r"serving", admin.say("status", r"\n\S+:\d+ .*\n")), 20), admin.text
        for proc in (node, admin):
            assert "Node Admin Secret" not in " ".join(psutil_cmdline(proc.proc.pid))
        with NodeAdmin("Node Admin Secret", [addr]) as api:
            assert api.set_cpus(addr, 1)["info"]["cpus"] == 1
        admin.say("quit", "stopping dispyadmin")
        assert admin.proc.wait(20) == 0
    finally:
        if admin is not None:
            admin.close()
        node.close()


def test_a_node_serving_tls_is_managed_with_its_certificate(tmp_path):
    pem = tmp_path / "cluster.pem"
    subprocess.run([sys.executable, "-m", "dispy_core.certgen", str(pem)], check=True, capture_output=True,
                   timeout=60)
    with NodeProcess("127.0.0.158", "-c", "1", "--certfile", str(pem), "--admin_secret", SECRET) as node:
        with NodeAdmin(SECRET, [node.addr], certfile=str(pem)) as admin:
            assert admin.set_serve(node.addr, 3)["info"]["serve"] == 3
        with NodeAdmin(SECRET, [node.addr], timeout=5) as plain:
            plain.refresh()
            record = plain.node(node.addr)
            assert record["info"] is None and "TLS" in record["error"], record
