"""TLS for client-node connections: one shared self-signed certificate.

dispy's model (as in dispy 4) is a single key and certificate pair, made once with
``dispy-certgen`` and copied to every node and client. The node serves with it, and the
client uses it too, both ways:

* the client verifies the node against that certificate (it is its own CA; host names
  are not checked, since nodes are addressed by IP address), and
* the client presents it as its client certificate, which the node requires and
  verifies the same way: a client without the certificate can't use a TLS node.

The dispy handshake (the shared ``secret``) still runs inside the TLS connection.
``keyfile`` may be None when the key is stored in ``certfile`` (as ``dispy-certgen
cluster.pem`` writes it).
"""

from __future__ import annotations

import os
import ssl

from .errors import ConfigError

__all__ = ["server_context", "client_context", "TLS_HINT"]

#: What to check when a TLS handshake fails; appended to the user-facing messages.
TLS_HINT = "does the node use --certfile and this cluster the same certfile?"


def _readable(path: str | os.PathLike[str] | None, what: str) -> str:
    if path is None or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(f"{what} must be the path of a PEM file, not {path!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{what} {path!r} does not exist")
    if not os.path.isfile(path):
        raise ConfigError(f"{what} {path!r} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"can't read {what} {path!r}: {exc.strerror or exc}") from None
    return path


def _load(ctx: ssl.SSLContext, certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None) -> None:
    cert = _readable(certfile, "certfile")
    key = _readable(keyfile, "keyfile") if keyfile is not None else None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        where = f"certfile {cert!r}" + (f" with keyfile {key!r}" if key else "")
        hint = "" if key else " (if the key is in a separate file, give it as keyfile)"
        raise ConfigError(f"can't load the key and certificate from {where}: {exc.reason or exc}{hint}") from None
    try:
        ctx.load_verify_locations(cafile=cert)
    except ssl.SSLError as exc:
        raise ConfigError(f"can't use certfile {cert!r} to verify peers: {exc.reason or exc}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2


def server_context(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The node's context: serves ``certfile`` and requires clients to present it too.

    Raises ConfigError naming the file if one is missing, unreadable or not a valid
    key/certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(ctx, certfile, keyfile)
    return ctx


def client_context(certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The client's context: presents ``certfile`` and accepts only nodes serving it.

    Host names are not checked (nodes are addressed by IP address); the certificate is.
    Raises ConfigError like :func:`server_context`.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    _load(ctx, certfile, keyfile)
    return ctx
