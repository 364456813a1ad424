"""TLS between client and node: ``dispynode --certfile`` and ``JobCluster(certfile=...)``.

Key and certificate pairs are made with the ``dispy-certgen`` command, as a user would.
A client with the node's certificate runs jobs; a plain client, or one with another
certificate, is refused with a warning that names TLS, and the node keeps serving.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

import dispy
from dispy_core.testing import node_python


def square(x):
    return x * x


def certgen(*args: str) -> None:
    cmd = [sys.executable, "-m", "dispy_core.certgen", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    certgen(str(d / "cluster.pem"))
    certgen(str(d / "cert.pem"), "--keyfile", str(d / "key.pem"))
    certgen(str(d / "other.pem"))
    return d


def nodes_of(proc):
    return [dispy.NodeAllocate(proc.ip, port=proc.port)]


def run_squares(proc, **kwargs):
    with dispy.JobCluster(square, nodes=nodes_of(proc), **kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(6)]
        assert cluster.wait(timeout=30) is True
        return [job.result for job in jobs]


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_cluster_with_the_certfile_runs_jobs(start_node, certs):
    proc = start_node("127.0.0.1", "--certfile", str(certs / "cluster.pem"), "-s", "pw")
    assert run_squares(proc, certfile=str(certs / "cluster.pem"), secret="pw") == [i * i for i in range(6)]


def reverse(data):
    return data[::-1]


def test_large_arguments_and_results_cross_tls(start_node, certs):
    proc = start_node("127.0.0.1", "--certfile", str(certs / "cluster.pem"))
    data = bytes(range(256)) * (12 * 4096)  # 12 MB, well past the write buffer limits
    with dispy.JobCluster(reverse, nodes=nodes_of(proc), certfile=str(certs / "cluster.pem")) as cluster:
        jobs = [cluster.submit(data) for _ in range(3)]
        assert cluster.wait(timeout=60) is True
        assert [job.exception for job in jobs] == [None] * 3
        assert all(job.result == data[::-1] for job in jobs)


def test_separate_key_and_cert_files(start_node, certs):
    proc = start_node("127.0.0.1", "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"))
    got = run_squares(proc, certfile=str(certs / "cert.pem"), keyfile=str(certs / "key.pem"))
    assert got == [i * i for i in range(6)]


def test_plain_client_is_told_about_tls_and_node_keeps_serving(start_node, certs, caplog):
    proc = start_node("127.0.0.1", "--certfile", str(certs / "cluster.pem"))
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(square, nodes=nodes_of(proc))
    try:
        job = cluster.submit(3)
        assert cluster.wait(timeout=2) is False
        assert job.status == dispy.DispyJob.Created
    finally:
        cluster.close(timeout=1, terminate=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "can't use node" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per node per reason
    assert "TLS" in warnings[0] and "certfile" in warnings[0] and "127.0.0.1" in warnings[0]
    assert proc.alive()
    assert wait_for(lambda: "TLS handshake with 127.0.0.1" in proc.log)
    assert run_squares(proc, certfile=str(certs / "cluster.pem")) == [i * i for i in range(6)]


def test_cluster_with_another_certificate_is_refused(start_node, certs, caplog):
    proc = start_node("127.0.0.1", "--certfile", str(certs / "cluster.pem"))
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(square, nodes=nodes_of(proc), certfile=str(certs / "other.pem"))
    try:
        cluster.submit(3)
        assert cluster.wait(timeout=2) is False
    finally:
        cluster.close(timeout=1, terminate=True)
    text = caplog.text
    assert "TLS handshake failed" in text and "same certfile" in text
    assert wait_for(lambda: "TLS handshake with" in proc.log)
    assert proc.alive()
    assert run_squares(proc, certfile=str(certs / "cluster.pem")) == [i * i for i in range(6)]


def test_tls_cluster_on_a_plain_node_names_tls(start_node, certs, caplog):
    proc = start_node("127.0.0.1")
    caplog.set_level(logging.WARNING)
    cluster = dispy.JobCluster(square, nodes=nodes_of(proc), certfile=str(certs / "cluster.pem"))
    try:
        cluster.submit(3)
        assert cluster.wait(timeout=2) is False
    finally:
        cluster.close(timeout=1, terminate=True)
    assert "TLS handshake failed" in caplog.text
    assert run_squares(proc) == [i * i for i in range(6)]


def test_node_refuses_a_missing_certfile(tmp_path):
    done = subprocess.run([node_python(), "-m", "dispy_node.cli", "-i", "127.0.0.1", "-p", "0", "--daemon",
                           "--certfile", str(tmp_path / "missing.pem")],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "missing.pem" in done.stderr and "does not exist" in done.stderr
