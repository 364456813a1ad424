"""dispy_core.tls (SSLContexts from certfile/keyfile) and the dispy-certgen command."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import subprocess
import sys

import pytest

from dispy_core import certgen, tls
from dispy_core.errors import ConfigError


def run_certgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispy_core.certgen", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    assert certgen.main([str(d / "one.pem")]) == 0
    assert certgen.main([str(d / "cert.pem"), "--keyfile", str(d / "key.pem"), "--days", "2", "--cn", "x"]) == 0
    assert certgen.main([str(d / "other.pem")]) == 0
    return d


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- dispy-certgen ------------------------------------------------------------------------
def test_certgen_command_writes_key_and_cert_in_one_file(tmp_path):
    done = run_certgen(str(tmp_path / "cluster.pem"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "cluster.pem").read_text()
    assert "PRIVATE KEY" in text and "BEGIN CERTIFICATE" in text
    assert mode(tmp_path / "cluster.pem") == 0o600


def test_certgen_separate_key_file_and_options(pair):
    from cryptography import x509

    assert "PRIVATE KEY" not in (pair / "cert.pem").read_text()
    assert "PRIVATE KEY" in (pair / "key.pem").read_text()
    assert mode(pair / "key.pem") == 0o600
    cert = x509.load_pem_x509_certificate((pair / "cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=x"
    # (the *_utc properties are cryptography 42's; the lowest allowed, 41, has the others)
    if hasattr(cert, "not_valid_after_utc"):
        validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    else:
        validity = cert.not_valid_after - cert.not_valid_before
    days = validity.total_seconds() / 86400
    assert 2 <= days < 2.1


def test_certgen_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "cluster.pem"
    target.write_text("keep me")
    done = run_certgen(str(target))
    assert done.returncode == 1
    assert "--force" in done.stderr and "cluster.pem" in done.stderr
    assert target.read_text() == "keep me"
    # a separate key file that exists also stops it, before anything is written
    (tmp_path / "key.pem").write_text("old key")
    assert run_certgen(str(tmp_path / "new.pem"), "--keyfile", str(tmp_path / "key.pem")).returncode == 1
    assert not (tmp_path / "new.pem").exists()
    os.chmod(target, 0o644)
    done = run_certgen(str(target), "--force")
    assert done.returncode == 0, done.stderr
    assert "BEGIN CERTIFICATE" in target.read_text()
    assert mode(target) == 0o600


def test_certgen_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        certgen.main([str(tmp_path / "a.pem"), "--days", "0"])
    with pytest.raises(SystemExit):
        certgen.main([str(tmp_path / "a.pem"), "--keyfile", str(tmp_path / "a.pem")])
    assert not (tmp_path / "a.pem").exists()


# -- contexts -----------------------------------------------------------------------------
def test_contexts_require_and_verify_the_certificate(pair):
    for ctx in (tls.server_context(pair / "one.pem"), tls.client_context(pair / "one.pem")):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert tls.client_context(pair / "one.pem").check_hostname is False
    assert tls.server_context(pair / "cert.pem", pair / "key.pem").verify_mode == ssl.CERT_REQUIRED


def test_context_errors_name_the_file(tmp_path, pair):
    with pytest.raises(ConfigError, match="missing.pem.*does not exist"):
        tls.server_context(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="keyfile .*nokey.pem"):
        tls.client_context(pair / "cert.pem", tmp_path / "nokey.pem")
    with pytest.raises(ConfigError, match="not a regular file"):
        tls.client_context(tmp_path)
    with pytest.raises(ConfigError, match="cert.pem.*keyfile"):
        tls.server_context(pair / "cert.pem")  # the key is elsewhere
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="junk.pem"):
        tls.client_context(junk)
    if os.geteuid() != 0:
        unreadable = tmp_path / "unreadable.pem"
        unreadable.write_bytes((pair / "one.pem").read_bytes())
        os.chmod(unreadable, 0)
        with pytest.raises(ConfigError, match="can't read"):
            tls.client_context(unreadable)


async def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext | None) -> bytes:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.read(5))
            await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        writer.write(b"hello")
        data = await asyncio.wait_for(reader.read(5), 10)
        writer.close()
        return data
    finally:
        server.close()


def test_mutual_tls_with_the_same_certificate(pair):
    assert asyncio.run(_exchange(tls.server_context(pair / "one.pem"), tls.client_context(pair / "one.pem"))) == b"hello"
    server = tls.server_context(pair / "cert.pem", pair / "key.pem")
    assert asyncio.run(_exchange(server, tls.client_context(pair / "cert.pem", pair / "key.pem"))) == b"hello"


def test_another_certificate_is_refused(pair):
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_exchange(tls.server_context(pair / "one.pem"), tls.client_context(pair / "other.pem")))


def test_client_without_certificate_is_refused(pair):
    # Verifies the node but presents no certificate: the node requires one.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pair / "one.pem")
    try:
        data = asyncio.run(_exchange(tls.server_context(pair / "one.pem"), ctx))
    except (ssl.SSLError, ConnectionError):
        return
    assert data == b""  # TLS 1.3: the refusal arrives after the client's handshake
