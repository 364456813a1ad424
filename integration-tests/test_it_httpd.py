"""dispy.httpd (the web monitor) with real dispynodes on 127.0.0.x and a real browser.

The browser tests (marked ``browser``) drive Debian's chromium through Playwright (the
``browser`` fixture): the monitor in two browsers at once, a manage action, cancelling a
running job from the node page, the token, the CSRF value, a bad field, HTTPS. Each saves
screenshots under its temporary directory. The others use plain HTTP: dispy 4's usage
(server on a cluster, jobs, ``shutdown()``), the job counters, several clusters with a
SharedJobCluster. Every node is named explicitly; nothing here broadcasts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dispy
from dispy.httpd import DispyHTTPServer
from dispy_core.certgen import generate
from dispy_core.testing import NodeProcess, SchedulerProcess, wait_until

#: Seconds a browser assertion may wait for the page to show something.
SHOW = 20_000  # ms (Playwright's unit)

#: DISPY_DOCS_SCREENSHOT=docs/img/monitor.png also saves the monitor test's screenshot
#: there (how the README's picture is made).
DOCS_SCREENSHOT = os.environ.get("DISPY_DOCS_SCREENSHOT")


def held(path):
    """A job that runs until ``path`` exists (the test decides when it finishes)."""
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.02)
    return path


def square(n):
    return n * n


def fails(n):
    raise ValueError(f"bad input {n}")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # recover files


@pytest.fixture
def node2() -> Iterator[NodeProcess]:
    with NodeProcess("127.0.0.2", "-c", "2") as n:
        yield n


def ready(cluster: dispy.JobCluster, timeout: float = 30.0) -> None:
    assert wait_until(lambda: cluster.status().nodes, timeout), "no node joined"


def snapshot(server: DispyHTTPServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/snapshot", timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def counts(page: Any) -> dict[str, str]:
    return {key: page.inner_text(f"#n-{key}") for key in ("submitted", "running", "done", "failed", "pending")}


# -- dispy 4's usage ---------------------------------------------------------------------------
def test_dispy4_program_runs_unchanged(node2: NodeProcess) -> None:
    cluster = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    try:
        server = DispyHTTPServer(cluster, port=0)  # as dispy 4 (port: the kernel's choice here)
        assert server.url == f"http://127.0.0.1:{server.port}/"  # loopback by default: no token
        jobs = [cluster.submit(i) for i in range(6)]
        assert [job() for job in jobs] == [i * i for i in range(6)]
        cluster.wait()
        # the monitor got there within a second or so (the server watches the cluster)
        assert wait_until(lambda: snapshot(server)["clusters"][0]["jobs"]["done"] == 6, 20)
        snap = snapshot(server)["clusters"][0]
        assert snap["name"] == "square"
        assert snap["jobs"] == {"submitted": 6, "running": 0, "done": 6, "failed": 0, "pending": 0}
        assert [n["ip_addr"] for n in snap["nodes"]] == ["127.0.0.2"]
        assert snap["nodes"][0]["jobs_done"] == 6
        server.shutdown()
        with pytest.raises(OSError):
            snapshot(server)
    finally:
        cluster.close()


def test_job_counts_of_the_engine(node2: NodeProcess, tmp_path: Path) -> None:
    """Engine.job_counts(): done = finished, failed = raised, cancelled, terminated."""
    release = str(tmp_path / "release")
    cluster = dispy.JobCluster(held, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    try:
        ready(cluster)
        runtime = cluster._runtime
        assert runtime is not None
        assert runtime.job_counts() == {"submitted": 0, "running": 0, "done": 0, "failed": 0, "pending": 0}
        running = [cluster.submit(release) for _ in range(2)]
        assert wait_until(lambda: runtime.job_counts()["running"] == 2, 20), runtime.job_counts()
        assert runtime.job_counts() == {"submitted": 2, "running": 2, "done": 0, "failed": 0, "pending": 2}
        cancelled = cluster.submit(str(tmp_path / "never"))
        assert cluster.cancel(cancelled) == 0
        cancelled()
        Path(release).touch()
        assert [job() for job in running] == [release, release]
        cluster.wait()
        assert runtime.job_counts() == {"submitted": 3, "running": 0, "done": 2, "failed": 1, "pending": 0}
    finally:
        cluster.close()

    with dispy.JobCluster(fails, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)]) as cluster:
        jobs = [cluster.submit(i) for i in range(3)]
        cluster.wait()
        assert all(job.status == dispy.DispyJob.Terminated for job in jobs)
        assert cluster._runtime is not None
        assert cluster._runtime.job_counts() == {"submitted": 3, "running": 0, "done": 0, "failed": 3, "pending": 0}


def test_several_clusters_and_a_shared_one(node2: NodeProcess) -> None:
    other = NodeProcess("127.0.0.3", "-c", "1")
    try:
        with SchedulerProcess("127.0.0.4", [other.addr]) as sched:
            local = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
            shared = dispy.SharedJobCluster(fails, scheduler_node=f"127.0.0.4:{sched.port}", host="127.0.0.4")
            server = DispyHTTPServer(local, port=0, poll_sec=1)
            try:
                server.add_cluster(shared)
                [local.submit(i) for i in range(3)]
                [shared.submit(i) for i in range(2)]
                local.wait()
                shared.wait()

                def shown() -> dict[str, Any]:
                    return {c["name"]: c for c in snapshot(server)["clusters"]}

                assert wait_until(lambda: shown().get("fails", {}).get("jobs", {}).get("failed") == 2
                                  and shown()["square"]["jobs"]["done"] == 3, 20), shown()
                assert shown()["fails"]["jobs"]["submitted"] == 2  # the client's own bookkeeping
                server.del_cluster(local)
                assert wait_until(lambda: list(shown()) == ["fails"], 20)
            finally:
                server.shutdown()
                shared.close()
                local.close()
    finally:
        other.stop()


# -- in a browser --------------------------------------------------------------------------------
@pytest.mark.browser
def test_monitor_updates_two_browsers_as_jobs_finish(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster = dispy.JobCluster(held, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    # poll_sec 600: neither the server's sampling period nor the pages' fallback polling
    # comes round during the test: what they show is pushed to them (notify + SSE)
    server = DispyHTTPServer(cluster, port=0, poll_sec=600)
    try:
        ready(cluster)
        # two browsers (contexts share nothing: cookies, cache, connections)
        pages = [browser.new_context(viewport={"width": 1360, "height": 860}).new_page() for _ in range(2)]
        for page in pages:
            page.goto(server.url)
            expect(page.locator("#nodes tbody tr[data-ip='127.0.0.2']")).to_be_visible(timeout=SHOW)
            expect(page.locator("#nodes tbody tr[data-ip='127.0.0.2'] td.cpus")).to_have_text("2")

        # two jobs held on the node, released; then two more (the node has 2 CPUs: no job
        # waits behind a held one, whatever order the node runs them in)
        first, second = str(tmp_path / "first"), str(tmp_path / "second")
        jobs = [cluster.submit(first) for _ in range(2)]
        for page in pages:
            expect(page.locator("#n-submitted")).to_have_text("2", timeout=SHOW)
            expect(page.locator("#n-running")).to_have_text("2", timeout=SHOW)
            expect(page.locator("#n-done")).to_have_text("0")
            expect(page.locator("#nodes tbody tr[data-ip='127.0.0.2'] td.busy")).to_have_text("2")
        pages[0].screenshot(path=str(tmp_path / "monitor-running.png"), full_page=True)

        Path(first).touch()
        for job in jobs:
            job()
        for page in pages:  # both pages see the same change (one does not take it from the other)
            expect(page.locator("#n-done")).to_have_text("2", timeout=SHOW)
            expect(page.locator("#n-running")).to_have_text("0")
            expect(page.locator("#n-pending")).to_have_text("0")
        jobs += [cluster.submit(second) for _ in range(2)]
        for page in pages:
            expect(page.locator("#n-submitted")).to_have_text("4", timeout=SHOW)
            expect(page.locator("#n-pending")).to_have_text("2")
        Path(second).touch()
        cluster.wait()
        for page in pages:
            expect(page.locator("#n-done")).to_have_text("4", timeout=SHOW)
            expect(page.locator("#n-running")).to_have_text("0")
            expect(page.locator("#nodes tbody tr[data-ip='127.0.0.2'] td.jobs-done")).to_have_text("4")
            # the pictures: a line for the cluster, a bar for the node
            assert page.locator("#chart-finished path.line").count() == 1
            assert page.locator("#chart-load rect.bar-busy").count() == 1
        pages[1].screenshot(path=str(tmp_path / "monitor-done.png"), full_page=True)
        if DOCS_SCREENSHOT:
            shutil.copy(tmp_path / "monitor-done.png", DOCS_SCREENSHOT)

        server.shutdown()  # the pages keep the final state and say the server stopped
        for page in pages:
            expect(page.locator("#live-text")).to_contain_text("stopped", timeout=SHOW)
            expect(page.locator("#n-done")).to_have_text("4")
    finally:
        server.shutdown(wait=False)
        cluster.close()


@pytest.mark.browser
def test_manage_sets_a_nodes_cpus(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    server = DispyHTTPServer(cluster, port=0)
    try:
        ready(cluster)
        page = browser.new_context().new_page()
        page.goto(server.url + "static/manage.html")
        row = page.locator("tr[data-ip='127.0.0.2']")
        expect(row.locator("input.cpus")).to_have_value("2", timeout=SHOW)
        row.locator("input.cpus").fill("1")
        row.locator("button.set-cpus").click()
        result = page.locator("[data-result='square']")
        expect(result).to_contain_text("returned", timeout=SHOW)
        assert json.loads(result.inner_text().split("returned:", 1)[1]) == {"square": {"127.0.0.2": 1}}
        assert wait_until(lambda: cluster.status().nodes[0].cpus == 1, 10)
        expect(row.locator("input.cpus")).to_have_value("1", timeout=SHOW)
        page.screenshot(path=str(tmp_path / "manage.png"), full_page=True)

        # the monitor shows it too
        monitor = browser.new_context().new_page()
        monitor.goto(server.url)
        expect(monitor.locator("tr[data-ip='127.0.0.2'] td.cpus")).to_have_text("1", timeout=SHOW)

        # add a node: it joins the cluster, and the page shows what allocate_node returned
        with NodeProcess("127.0.0.3", "-c", "1") as other:
            page.locator("#add-host").fill(other.ip)
            page.locator("#add-port").fill(str(other.port))
            page.locator("#add-cpus").fill("1")
            page.locator("#add-node button").click()
            expect(page.locator("#add-result")).to_have_text('add_node returned: {\n  "square": {\n    "127.0.0.3": 0\n  }\n}',
                                                             timeout=SHOW)
            assert wait_until(lambda: "127.0.0.3" in [n.ip_addr for n in cluster.status().nodes], 20)
            expect(page.locator("tr[data-ip='127.0.0.3'] input.cpus")).to_have_value("1", timeout=SHOW)
    finally:
        server.shutdown(wait=False)
        cluster.close()


@pytest.mark.browser
def test_cancel_a_running_job_from_the_node_page(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster = dispy.JobCluster(held, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    server = DispyHTTPServer(cluster, port=0)
    try:
        ready(cluster)
        job = cluster.submit(str(tmp_path / "never"))
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 20)
        page = browser.new_context().new_page()
        page.goto(server.url + "static/node.html?key=127.0.0.2")
        row = page.locator(f"tr[data-uid='{job._uid}']")
        expect(row).to_contain_text(repr((str(tmp_path / "never"),)), timeout=SHOW)  # str() of its args
        page.screenshot(path=str(tmp_path / "node.png"), full_page=True)
        row.locator("input[type=checkbox]").check()
        page.locator("#cancel-jobs").click()
        result = page.locator("[data-result='held']")
        expect(result).to_contain_text("returned", timeout=SHOW)
        assert json.loads(result.inner_text().split("returned:", 1)[1]) == {"held": {str(job._uid): 0}}
        job()
        assert job.status == dispy.DispyJob.Cancelled
        expect(page.locator(f"tr[data-uid='{job._uid}']")).to_have_count(0, timeout=SHOW)
    finally:
        server.shutdown(wait=False)
        cluster.close()


@pytest.mark.browser
def test_job_arguments_hidden_when_asked(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster = dispy.JobCluster(held, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    server = DispyHTTPServer(cluster, port=0, show_job_args=False)
    try:
        ready(cluster)
        job = cluster.submit(str(tmp_path / "release"))
        assert wait_until(lambda: job.status == dispy.DispyJob.Running, 20)
        page = browser.new_context().new_page()
        page.goto(server.url + "static/node.html?key=127.0.0.2")
        row = page.locator(f"tr[data-uid='{job._uid}']")
        expect(row).to_contain_text("(hidden)", timeout=SHOW)
        assert "release" not in row.inner_text()
        detail = page.evaluate("async () => (await fetch('/api/detail?key=127.0.0.2')).text()")
        assert "release" not in detail
        (tmp_path / "release").touch()
        job()
    finally:
        server.shutdown(wait=False)
        cluster.close()


@pytest.mark.browser
def test_token_csrf_and_bad_fields(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    server = DispyHTTPServer(cluster, port=0, token="correct-horse-battery")
    try:
        ready(cluster)
        base = f"http://127.0.0.1:{server.port}/"
        assert server.url == base + "?token=correct-horse-battery"
        page = browser.new_context().new_page()
        for url, code in ((base, 401), (base + "?token=wrong", 403), (base + "api/snapshot", 401)):
            response = page.goto(url)
            assert response is not None and response.status == code, url
            body = page.content()
            assert "127.0.0.2" not in body and "square" not in body
        page.screenshot(path=str(tmp_path / "refused.png"))

        response = page.goto(server.url)
        assert response is not None and response.status == 200
        assert "token" not in page.url  # the token went into a cookie, out of the address bar
        expect(page.locator("tr[data-ip='127.0.0.2']")).to_be_visible(timeout=SHOW)

        post = """async ([headers, body]) => {
            const r = await fetch('/api/act/set_cpus', {method: 'POST', headers, body});
            return [r.status, await r.text()];
        }"""
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, text = page.evaluate(post, [form, "node=127.0.0.2&cpus=1"])  # no CSRF value
        assert status == 403 and "X-Dispy-CSRF" in text
        csrf = page.get_attribute("meta[name=dispy-csrf]", "content")
        status, text = page.evaluate(post, [dict(form, **{"X-Dispy-CSRF": csrf}), "node=127.0.0.2&cpus=lots"])
        assert status == 400 and json.loads(text) == {"error": "the field 'cpus' must be a whole number, not 'lots'"}
        assert cluster.status().nodes[0].cpus == 2  # nothing changed

        # a script outside the pages: the bearer token works, and POSTs still need the CSRF value
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/api/act/set_cpus", body="node=127.0.0.2&cpus=1",
                     headers={"Authorization": "Bearer correct-horse-battery", **form})
        resp = conn.getresponse()
        assert resp.status == 403 and b"square" not in resp.read()
        conn.close()
    finally:
        server.shutdown(wait=False)
        cluster.close()


@pytest.mark.browser
def test_https_with_a_generated_certificate(browser: Any, node2: NodeProcess, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    key, cert = generate()
    (tmp_path / "monitor.key").write_bytes(key)
    (tmp_path / "monitor.pem").write_bytes(cert)
    cluster = dispy.JobCluster(square, nodes=[dispy.NodeAllocate(node2.ip, port=node2.port)])
    server = DispyHTTPServer(cluster, port=0, certfile=str(tmp_path / "monitor.pem"),
                             keyfile=str(tmp_path / "monitor.key"))
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ready(cluster)
        # the certificate is self-signed (as dispy-certgen makes them): the browser is told to accept it
        page = browser.new_context(ignore_https_errors=True).new_page()
        page.goto(server.url)
        expect(page.locator("tr[data-ip='127.0.0.2']")).to_be_visible(timeout=SHOW)
        [cluster.submit(i) for i in range(3)]
        cluster.wait()
        expect(page.locator("#n-done")).to_have_text("3", timeout=SHOW)
        page.screenshot(path=str(tmp_path / "https.png"), full_page=True)
    finally:
        server.shutdown(wait=False)
        cluster.close()
