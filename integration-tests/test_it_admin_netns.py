"""dispyadmin's discovery (no -i), inside a network namespace this test creates.

Broadcasting is only allowed where the test owns the whole network: a fresh namespace
with a veth pair on a test-only subnet (10.231.9.0/24). Two nodes serve there, one with
dispyadmin's admin secret and one with another; NodeAdmin without named nodes finds the
first (its discovery request is sealed with the admin secret) and not the second, even
though the first is outside its service window (no client would find it). Nothing here
touches the host's own network namespace.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest

from dispy_core.testing import node_python

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create a network namespace",
    ),
]

ADMIN = textwrap.dedent("""
    import json, sys, time
    from dispy.admin import NodeAdmin
    admin = NodeAdmin("admin-ns", ping_interval=2, poll_interval=1)
    admin.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(n["info"] for n in admin.nodes()):
        time.sleep(0.1)
    time.sleep(3)  # the other node had as long to answer as this one, and more
    print(json.dumps(admin.nodes()))
    admin.close()
""")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def netns():
    name = f"dispy-adm-{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        ns = ("ip", "netns", "exec", name)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "link", "add", "dv0", "type", "veth", "peer", "name", "dv1")
        sh(*ns, "ip", "addr", "add", "10.231.9.1/24", "dev", "dv0")
        sh(*ns, "ip", "addr", "add", "10.231.9.2/24", "dev", "dv1")
        sh(*ns, "ip", "addr", "add", "10.231.9.3/24", "dev", "dv1")
        sh(*ns, "ip", "link", "set", "dv0", "up")
        sh(*ns, "ip", "link", "set", "dv1", "up")
        sh(*ns, "ip", "route", "add", "default", "dev", "dv0")  # where 255.255.255.255 goes
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _node(ns, ip, *args):
    prefix = tempfile.mkdtemp(prefix="dispy-netns-node-")
    proc = subprocess.Popen([*ns, node_python(), "-m", "dispy_node.cli", "-i", ip, "--daemon",
                             "--dest_path_prefix", prefix, "-c", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # log lines may come first (the service window)
        seen.append(line)
        if f"at {ip}:9701" in line:
            break
    else:
        raise AssertionError("".join(seen))
    # the rest of its output: read so that the node never blocks on a full pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, prefix


def test_discovery_finds_only_nodes_with_the_admin_secret(netns):
    later = (datetime.datetime.now() + datetime.timedelta(hours=2)).strftime("%H:%M")
    later2 = (datetime.datetime.now() + datetime.timedelta(hours=3)).strftime("%H:%M")
    started = [_node(netns, "10.231.9.2", "--admin_secret", "admin-ns", "--name", "mine",
                     "--service_start", later, "--service_stop", later2),
               _node(netns, "10.231.9.3", "--admin_secret", "not-mine", "--name", "theirs")]
    try:
        out = subprocess.run([*netns, sys.executable, "-c", ADMIN], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        assert [n["key"] for n in nodes] == ["10.231.9.2:9701"], (nodes, out.stderr)
        assert nodes[0]["info"]["name"] == "mine"
        assert nodes[0]["info"]["state"].startswith("outside its service window")
    finally:
        for proc, prefix in started:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(prefix, ignore_errors=True)
