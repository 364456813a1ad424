"""dispyscheduler --httpd against real daemons on 127.0.0.x: a dispyscheduler subprocess
(its nodes named with -n: it never broadcasts) and dispynode subprocesses, two
SharedJobCluster clients from two addresses, and the web monitor read and driven over its
HTTP API as the pages do (and in a browser, in the browser-marked test).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import threading
from pathlib import Path
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler

import dispy
from dispy_core.certgen import generate
from dispy_core.testing import NodeProcess, SchedulerProcess, wait_until

Finished = dispy.DispyJob.Finished
_URL = re.compile(r"dispyscheduler web monitor at (\S+)")
#: Milliseconds a browser assertion may wait for the page to show something.
SHOW = 20_000


def square(x, seconds):
    import time
    time.sleep(seconds)
    return x * x


def setup_offset(base):
    global offset
    offset = base
    return 0


def plus_offset(x):
    return x + offset  # noqa: F821 - setup_offset's global


def held(path):
    """A job that runs until ``path`` exists (the test decides when it finishes)."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the clients' recover files


class Web:
    """The scheduler's web monitor as a page's script uses it."""

    def __init__(self, sched: SchedulerProcess, cafile: str | None = None) -> None:
        # HTTPS: the scheduler's certificate (self-signed) is the one trusted
        self.ssl = None if cafile is None else ssl.create_default_context(cafile=cafile)
        if self.ssl is not None:
            self.ssl.check_hostname = False  # (made for no host name in particular)
        assert wait_until(lambda: _URL.search(sched.log), 30), sched.log
        m = _URL.search(sched.log)
        assert m is not None
        self.url = m.group(1)  # ready to open: with ?token= when one is in force
        parts = urllib.parse.urlsplit(self.url)
        self.base = f"{parts.scheme}://{parts.netloc}/"
        query = urllib.parse.parse_qs(parts.query)
        self.token = query["token"][0] if "token" in query else None
        page = self.get("", raw=True)
        m = re.search(r'name="dispy-csrf" content="([^"]+)"', page)
        assert m is not None, page
        self.csrf = m.group(1)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, raw: bool = False) -> Any:
        req = urllib.request.Request(self.base + path, headers=self._headers())
        with urllib.request.urlopen(req, timeout=20, context=self.ssl) as resp:
            body = resp.read().decode()
        return body if raw else json.loads(body)

    def snapshot(self) -> dict[str, Any]:
        return self.get("api/snapshot")  # type: ignore[no-any-return]

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.snapshot()["clusters"]}

    def jobs_on(self, ip: str, cluster: str) -> list[dict[str, Any]]:
        """The node page's list of jobs running there for that cluster."""
        for c in self.get(f"api/detail?key={ip}")["clusters"]:
            if c["name"] == cluster:
                return c["jobs"]  # type: ignore[no-any-return]
        return []

    def act(self, action: str, fields: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.base + "api/act/" + action, data=json.dumps(fields).encode(),
                                     method="POST", headers={**self._headers(), "X-Dispy-CSRF": self.csrf,
                                                             "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60, context=self.ssl) as resp:
            return json.loads(resp.read())["result"]


@pytest.fixture
def nodes():
    started = [NodeProcess("127.0.0.2", "-c", "2"), NodeProcess("127.0.0.3", "-c", "2")]
    yield started
    for n in started:
        n.stop()


@pytest.fixture
def node2():
    with NodeProcess("127.0.0.2", "-c", "2") as n:
        yield n


@pytest.fixture
def start_scheduler():
    started: list[SchedulerProcess] = []

    def start(nodes: list[NodeProcess], *args: str) -> SchedulerProcess:
        s = SchedulerProcess("127.0.0.1", [n.addr for n in nodes], "--httpd", "--http_port", "0", *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def shared(sched: SchedulerProcess, host: str) -> dispy.SharedJobCluster:
    return dispy.SharedJobCluster(square, scheduler_node=f"127.0.0.1:{sched.port}", host=host,
                                  loglevel=logging.WARNING)


def run(cluster: dispy.SharedJobCluster, n: int, seconds: float = 0.05) -> None:
    jobs = [cluster.submit(i, seconds) for i in range(n)]
    assert [job() for job in jobs] == [i * i for i in range(n)]
    assert all(job.status == Finished for job in jobs)


def test_snapshot_lists_each_client_s_cluster_with_nodes_and_counts(nodes, start_scheduler):
    sched = start_scheduler(nodes)
    web = Web(sched)
    assert web.url.startswith("http://127.0.0.1:") and web.token is None  # loopback: no token needed
    assert web.clusters() == {}
    one, two = shared(sched, "127.0.0.4"), shared(sched, "127.0.0.5")
    names = ("square @ 127.0.0.4", "square @ 127.0.0.5")
    try:
        assert wait_until(lambda: set(web.clusters()) == set(names), 30), web.clusters()
        # the counts follow the jobs: a first batch on one cluster, then more on both
        run(one, 3)
        assert wait_until(lambda: web.clusters()[names[0]]["jobs"] == {
            "submitted": 3, "running": 0, "done": 3, "failed": 0, "pending": 0}, 30), web.clusters()
        assert web.clusters()[names[1]]["jobs"]["submitted"] == 0
        threads = [threading.Thread(target=run, args=(c, 4)) for c in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert wait_until(lambda: [web.clusters()[n]["jobs"] for n in names] == [
            {"submitted": 7, "running": 0, "done": 7, "failed": 0, "pending": 0},
            {"submitted": 4, "running": 0, "done": 4, "failed": 0, "pending": 0}], 30), web.clusters()
        clusters = web.clusters()
        for name, done in zip(names, (7, 4)):
            table = {n["ip_addr"]: n for n in clusters[name]["nodes"]}
            assert set(table) == {"127.0.0.2", "127.0.0.3"}, table
            assert all(n["cpus"] == 2 for n in table.values())
            assert sum(n["jobs_done"] for n in table.values()) == done
            assert len(clusters[name]["history"]) >= 1  # the chart's points
        # a node's detail: its record in each cluster
        detail = web.get("api/detail?key=127.0.0.2")
        assert sorted(c["name"] for c in detail["clusters"]) == sorted(names)
        # a cluster that closes leaves the monitor
        one.close()
        assert wait_until(lambda: set(web.clusters()) == {names[1]}, 30), web.clusters()
    finally:
        one.close()
        two.close()
    assert wait_until(lambda: web.clusters() == {}, 30), web.clusters()


def test_set_cpus_changes_the_node_and_cancel_ends_a_job(node2, start_scheduler):
    sched = start_scheduler([node2])
    web = Web(sched)
    one, two = shared(sched, "127.0.0.4"), shared(sched, "127.0.0.5")
    try:
        name = "square @ 127.0.0.4"
        assert wait_until(lambda: [len(c["nodes"]) for c in web.clusters().values()] == [1, 1], 30), \
            web.clusters()
        result = web.act("set_cpus", {"cluster": name, "node": "127.0.0.2", "cpus": "1"})
        assert result == {name: {"127.0.0.2": 1}}
        # the pool is shared: the node has 1 CPU for every cluster now
        assert wait_until(lambda: [c["nodes"][0]["cpus"] for c in web.clusters().values()] == [1, 1], 30), \
            web.clusters()
        # (logged as the change is made; the test reads the daemon's output from a pipe)
        assert wait_until(lambda: "node 127.0.0.2: 1 of its 2 CPUs used" in sched.log, 10), sched.log
        # with one CPU, one job runs at a time: a long one runs, the next waits
        long = one.submit(0, 60)
        queued = one.submit(1, 60)
        assert wait_until(lambda: web.clusters()[name]["jobs"]["running"] == 1, 30), web.clusters()
        (running,) = web.jobs_on("127.0.0.2", name)
        assert running["job_id"] == str(long.id) and "not shown" in running["args"]
        result = web.act("cancel_jobs", {"cluster": name, "uid": [running["uid"]]})
        assert result == {name: {running["uid"]: 0}}
        long()
        assert long.status == dispy.DispyJob.Cancelled
        # the queued one runs now; cancel it too, and the counts say so
        assert wait_until(lambda: web.clusters()[name]["jobs"]["running"] == 1, 30), web.clusters()
        (running,) = web.jobs_on("127.0.0.2", name)
        assert running["job_id"] == str(queued.id)
        assert web.act("cancel_jobs", {"cluster": name, "uid": [running["uid"]]}) == {name: {running["uid"]: 0}}
        queued()
        assert queued.status == dispy.DispyJob.Cancelled
        assert wait_until(lambda: web.clusters()[name]["jobs"] == {
            "submitted": 2, "running": 0, "done": 0, "failed": 2, "pending": 0}, 30), web.clusters()
        # back to both CPUs; bad input is a 400 with a message
        assert web.act("set_cpus", {"cluster": name, "node": "127.0.0.2", "cpus": "2"}) == {name: {"127.0.0.2": 2}}
        with pytest.raises(urllib.error.HTTPError) as exc:
            web.act("set_cpus", {"cluster": name, "node": "127.0.0.2", "cpus": "many"})
        assert exc.value.code == 400 and "whole number" in exc.value.read().decode()
        # deallocate, then allocate again: what the engine returned, per node
        assert web.act("deallocate_node", {"cluster": name, "node": ["127.0.0.2"]}) == {name: {"127.0.0.2": 0}}
        assert web.act("allocate_node", {"cluster": name, "node": ["127.0.0.2"]}) == {name: {"127.0.0.2": 0}}
        run(one, 2)
        # a node that serves neither cluster
        assert web.act("deallocate_node", {"cluster": "*", "node": ["127.0.0.9"]}) == {
            name: {"127.0.0.9": -1}, "square @ 127.0.0.5": {"127.0.0.9": -1}}
    finally:
        one.close()
        two.close()


def test_add_node_and_close_node(nodes, start_scheduler):
    sched = start_scheduler(nodes[:1])
    web = Web(sched)
    # the client's nodes: the scheduler's (a wildcard), each set up with setup_args (100,)
    one = dispy.SharedJobCluster(plus_offset, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.4",
                                 setup=setup_offset, nodes=[dispy.NodeAllocate("*", setup_args=(100,))],
                                 loglevel=logging.WARNING)
    name = "plus_offset @ 127.0.0.4"
    try:
        assert wait_until(lambda: [n["ip_addr"] for n in web.clusters().get(name, {}).get("nodes", [])]
                          == ["127.0.0.2"], 30), web.clusters()
        # a node the scheduler was not started with, added for this cluster
        assert web.act("add_node", {"cluster": name, "host": "127.0.0.3", "port": str(nodes[1].port),
                                    "cpus": "1"}) == {name: {"127.0.0.3": 0}}
        assert wait_until(lambda: sorted(n["ip_addr"] for n in web.clusters()[name]["nodes"])
                          == ["127.0.0.2", "127.0.0.3"], 30), (web.clusters(), sched.log)
        assert {n["ip_addr"]: n["cpus"] for n in web.clusters()[name]["nodes"]}["127.0.0.3"] == 1
        # close the computation on the first node: its jobs go to the added one, which was
        # set up as the client's spec says (its setup_args)
        assert web.act("close_node", {"cluster": name, "node": ["127.0.0.2"]}) == {name: {"127.0.0.2": 0}}
        jobs = [one.submit(i) for i in range(3)]
        assert [job() for job in jobs] == [100, 101, 102], [job.exception for job in jobs]
        assert {job.ip_addr for job in jobs} == {"127.0.0.3"}
    finally:
        one.close()


def test_a_token_in_force_is_needed(node2, start_scheduler):
    sched = start_scheduler([node2], "--http_token", "s3cret-token")
    web = Web(sched)
    assert web.url.endswith("/?token=s3cret-token") and web.token == "s3cret-token"
    assert web.snapshot()["clusters"] == []  # with the token (Authorization: Bearer)
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
        for path in ("api/snapshot", "", "api/detail?key=127.0.0.2"):
            req = urllib.request.Request(web.base + path, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(req, timeout=10)
            assert exc.value.code == code, (path, headers)
            assert "refused" in exc.value.read().decode()
    # an action without the token: refused, nothing done
    req = urllib.request.Request(web.base + "api/act/set_cpus", data=b'{"node": "127.0.0.2", "cpus": "1"}',
                                 method="POST", headers={"X-Dispy-CSRF": web.csrf,
                                                         "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 401
    # the wrong token in the URL
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(web.base + "?token=wrong", timeout=10)
    assert exc.value.code == 403


def test_https_with_the_http_certificate(node2, start_scheduler, tmp_path):
    key, cert = generate()
    (tmp_path / "web.key").write_bytes(key)
    (tmp_path / "web.pem").write_bytes(cert)
    sched = start_scheduler([node2], "--http_certfile", str(tmp_path / "web.pem"),
                            "--http_keyfile", str(tmp_path / "web.key"))
    web = Web(sched, cafile=str(tmp_path / "web.pem"))
    assert web.url.startswith("https://127.0.0.1:")
    one = shared(sched, "127.0.0.4")
    try:
        assert wait_until(lambda: "square @ 127.0.0.4" in web.clusters(), 30), web.clusters()
        run(one, 2)
        assert wait_until(lambda: web.clusters()["square @ 127.0.0.4"]["jobs"]["done"] == 2, 30), web.clusters()
    finally:
        one.close()
    # plain HTTP to the HTTPS port gets nothing
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(web.base.replace("https:", "http:") + "api/snapshot", timeout=10).read()


@pytest.mark.browser
def test_monitor_page_shows_both_clusters_and_their_counts(browser, nodes, start_scheduler, tmp_path):
    from playwright.sync_api import expect

    sched = start_scheduler(nodes)
    web = Web(sched)
    one = dispy.SharedJobCluster(held, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.4",
                                 loglevel=logging.WARNING)
    two = dispy.SharedJobCluster(held, scheduler_node=f"127.0.0.1:{sched.port}", host="127.0.0.5",
                                 loglevel=logging.WARNING)
    names = ["held @ 127.0.0.4", "held @ 127.0.0.5"]
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    try:
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.goto(web.url)
        select = page.locator("#cluster")
        # both clusters (and "all") to choose from
        expect(select.locator("option")).to_have_count(3, timeout=SHOW)
        texts = select.locator("option").all_inner_texts()
        assert texts[0] == "* (all clusters)" and sorted(texts[1:]) == names, texts
        expect(page.locator("#nodes tbody tr[data-ip='127.0.0.2']")).to_be_visible(timeout=SHOW)
        expect(page.locator("#nodes tbody tr[data-ip='127.0.0.3']")).to_be_visible()

        jobs_one = [one.submit(first) for _ in range(3)]
        jobs_two = [two.submit(second) for _ in range(2)]
        # all clusters: the sums; one cluster chosen: its own
        select.select_option("*")
        expect(page.locator("#n-submitted")).to_have_text("5", timeout=SHOW)
        expect(page.locator("#n-running")).to_have_text("5", timeout=SHOW)
        select.select_option(names[0])
        expect(page.locator("#n-submitted")).to_have_text("3")
        expect(page.locator("#n-done")).to_have_text("0")
        page.screenshot(path=str(tmp_path / "scheduler-monitor-running.png"), full_page=True)

        Path(first).touch()
        for job in jobs_one:
            assert job() == first
        expect(page.locator("#n-done")).to_have_text("3", timeout=SHOW)
        expect(page.locator("#n-running")).to_have_text("0")
        expect(page.locator("#n-pending")).to_have_text("0")
        select.select_option(names[1])
        expect(page.locator("#n-running")).to_have_text("2")
        expect(page.locator("#n-done")).to_have_text("0")
        Path(second).touch()
        for job in jobs_two:
            assert job() == second
        expect(page.locator("#n-done")).to_have_text("2", timeout=SHOW)
        select.select_option("*")
        expect(page.locator("#n-done")).to_have_text("5")
        page.screenshot(path=str(tmp_path / "scheduler-monitor-done.png"), full_page=True)

        # a cluster that closes leaves the page
        one.close()
        expect(select.locator("option")).to_have_count(1, timeout=SHOW)
        assert select.locator("option").all_inner_texts() == [names[1]]
        expect(page.locator("#n-done")).to_have_text("2")
        page.screenshot(path=str(tmp_path / "scheduler-monitor-one-left.png"), full_page=True)
    finally:
        Path(first).touch()  # (the jobs end whatever failed: close() waits for them)
        Path(second).touch()
        one.close()
        two.close()
    assert (tmp_path / "scheduler-monitor-done.png").stat().st_size > 0


@pytest.mark.browser
def test_manage_page_sets_cpus_of_a_scheduler_node(browser, node2, start_scheduler, tmp_path):
    from playwright.sync_api import expect

    sched = start_scheduler([node2], "--http_token", "tok-en")
    web = Web(sched)
    one, two = shared(sched, "127.0.0.4"), shared(sched, "127.0.0.5")
    name = "square @ 127.0.0.4"
    try:
        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        page.goto(web.url.replace("/?token=", "/static/manage.html?token="))  # the token, then the page
        section = page.locator(f"section[data-cluster='{name}']")
        row = section.locator("tr[data-ip='127.0.0.2']")
        expect(row.locator("input.cpus")).to_have_value("2", timeout=SHOW)
        row.locator("input.cpus").fill("1")
        row.locator("button.set-cpus").click()
        result = page.locator(f"[data-result='{name}']")
        expect(result).to_contain_text("returned", timeout=SHOW)
        assert json.loads(result.inner_text().split("returned:", 1)[1]) == {name: {"127.0.0.2": 1}}
        # the node's CPUs are the pool's: both clusters' pages show 1
        for cluster in (name, "square @ 127.0.0.5"):
            expect(page.locator(f"section[data-cluster='{cluster}'] tr[data-ip='127.0.0.2'] input.cpus")) \
                .to_have_value("1", timeout=SHOW)
        page.screenshot(path=str(tmp_path / "scheduler-manage.png"), full_page=True)
        assert wait_until(lambda: "node 127.0.0.2: 1 of its 2 CPUs used" in sched.log, 10), sched.log
        run(one, 2)  # jobs still run there
    finally:
        one.close()
        two.close()
