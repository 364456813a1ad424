"""Make docs/img/monitor.png (the README's picture of the monitor).

Two dispynodes on 127.0.0.2 and 127.0.0.3 (nothing broadcasts), a JobCluster running jobs
of a few lengths, dispy.httpd's monitor, and Debian's chromium driven by Playwright (as the
browser tests do) taking the picture while jobs run. Run it from the checkout:

    python docs/img/make_monitor_png.py
"""

from __future__ import annotations

import os
import random
import re
import sys
import time

import dispy
from dispy.httpd import DispyHTTPServer
from dispy_core.testing import NodeProcess, wait_until
from playwright.sync_api import expect, sync_playwright

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitor.png")


def compute(seconds):
    import time

    time.sleep(seconds)
    return seconds


def main() -> int:
    with NodeProcess("127.0.0.2", "-c", "2") as a, NodeProcess("127.0.0.3", "-c", "2") as b:
        cluster = dispy.JobCluster(compute, nodes=[dispy.NodeAllocate(n.ip, port=n.port) for n in (a, b)])
        server = DispyHTTPServer(cluster, port=0, poll_sec=2)
        try:
            assert wait_until(lambda: len(cluster.status().nodes) == 2, 30)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1360, "height": 820})
                page.goto(server.url)
                rng = random.Random(7)
                for _ in range(80):
                    cluster.submit(round(rng.uniform(0.3, 1.5), 2))
                # a picture mid-run: some done, some running, some waiting
                expect(page.locator("#n-done")).to_have_text(re.compile(r"^[3-9]\d$"), timeout=60_000)
                time.sleep(1.5)
                page.screenshot(path=OUT)
                browser.close()
            cluster.wait()
        finally:
            server.shutdown(wait=False)
            cluster.close()
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
