"""``dispy-certgen``: make the self-signed key and certificate a dispy cluster shares.

::

    dispy-certgen cluster.pem                      # key and certificate in one file
    dispy-certgen cert.pem --keyfile key.pem       # in two files
    dispy-certgen cluster.pem --days 365 --cn mycluster --force

Copy the file(s) to every node (over a secure channel, e.g. ssh) and start the nodes
with ``dispynode --certfile cluster.pem`` (``--keyfile key.pem`` for a separate key);
clients use ``JobCluster(..., certfile="cluster.pem")``. Existing files are never
overwritten unless ``--force`` is given; a file holding the key is written with mode
0600. Built on the ``cryptography`` package (a dependency of dispy-core).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Sequence

from .__about__ import __version__

__all__ = ["generate", "main"]

DEFAULT_DAYS = 3650
DEFAULT_CN = "dispy"


def generate(days: int = DEFAULT_DAYS, common_name: str = DEFAULT_CN) -> tuple[bytes, bytes]:
    """A new (private key, self-signed certificate) pair, both PEM, valid ``days`` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        # The one certificate is both the trust anchor and what each side presents.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=True,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _write(path: str, data: bytes, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)  # an existing file overwritten with --force gets the mode too
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
    finally:
        if fd >= 0:
            os.close(fd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispy-certgen",
        description="Write a self-signed key and certificate pair for TLS between dispy clients "
                    "and nodes (dispynode --certfile, JobCluster(certfile=...)).",
    )
    p.add_argument("certfile", help="file for the certificate (and the key, unless --keyfile is given)")
    p.add_argument("--keyfile", default=None, metavar="PATH",
                   help="write the private key to this file instead of into certfile")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, metavar="N",
                   help=f"days the certificate is valid (default {DEFAULT_DAYS})")
    p.add_argument("--cn", "--common-name", dest="cn", default=DEFAULT_CN, metavar="NAME",
                   help=f"the certificate's common name (default {DEFAULT_CN!r})")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--version", action="version", version=f"dispy-certgen {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error(f"--days must be at least 1, not {args.days}")
    if not args.cn:
        parser.error("--cn must not be empty")
    if args.keyfile is not None and os.path.abspath(args.keyfile) == os.path.abspath(args.certfile):
        parser.error("--keyfile must differ from certfile (omit --keyfile to write both into one file)")
    targets = [args.certfile] + ([args.keyfile] if args.keyfile else [])
    if not args.force:
        existing = [t for t in targets if os.path.lexists(t)]
        if existing:
            print(f"dispy-certgen: {', '.join(existing)} already exist{'s' * (len(existing) == 1)}; "
                  "not overwriting (use --force)", file=sys.stderr)
            return 1
    try:
        key_pem, cert_pem = generate(args.days, args.cn)
    except ImportError:
        print("dispy-certgen: needs the 'cryptography' package: pip install cryptography",
              file=sys.stderr)
        return 1
    try:
        if args.keyfile:
            _write(args.keyfile, key_pem, 0o600, args.force)
            _write(args.certfile, cert_pem, 0o644, args.force)
        else:
            _write(args.certfile, key_pem + cert_pem, 0o600, args.force)
    except OSError as exc:
        print(f"dispy-certgen: can't write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.keyfile:
        print(f"wrote the private key to {args.keyfile} (mode 0600) and the certificate to {args.certfile}")
    else:
        print(f"wrote the private key and certificate to {args.certfile} (mode 0600)")
    print(f"valid {args.days} days; copy to every node and client (over a secure channel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
