"""The ``dispynode`` command: options, logging, signals, and running a :class:`Node`.

This is the only module that configures logging handlers or prints. On start it prints
one line per listening address to stdout, exactly::

    dispynode <name> serving <cpus> CPUs at <ip>:<port>

so that users (and tests, with ``-p 0``) see where it serves. SIGINT and SIGTERM shut the
node down cleanly (jobs terminated, cleanup run, directories removed) and it exits 0.
Bad options exit 2 with a message naming the allowed values.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from dispy_core import config, tls
from dispy_core.errors import ConfigError

from .__about__ import __version__
from .console import Console
from .options import NodeConfig, default_dest_path_prefix, default_ip_addr, machine_cpus, resolve_cpus
from .server import Node

__all__ = ["main", "build_parser", "config_from_args"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispynode",
        description="Run dispy jobs on this machine for dispy clients (JobCluster, SharedJobCluster).",
    )
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages (a trace of execution)")
    p.add_argument("-c", "--cpus", type=int, default=None, metavar="N",
                   help="CPUs to use: N > 0 uses N (at most this machine's), N < 0 leaves -N unused; "
                        "default: all")
    p.add_argument("-i", "--ip_addr", action="append", default=None, metavar="ADDR",
                   help="address to serve on (repeatable); default: the address of this host's name")
    p.add_argument("-p", "--node_port", type=int, default=None, metavar="N",
                   help=f"port for clients, TCP and UDP (default {config.node_port()}; 0 picks a free one)")
    p.add_argument("--name", default=None, help="name of this node (default: the host name)")
    p.add_argument("-s", "--secret", default="",
                   help="shared secret: only clients with the same secret may use this node")
    p.add_argument("--dest_path_prefix", default=None, metavar="PATH",
                   help=f"directory under which computations' files are kept (default {default_dest_path_prefix()})")
    p.add_argument("--clean", action="store_true",
                   help="remove what earlier runs left under dest_path_prefix, at start")
    p.add_argument("--msg_timeout", type=float, default=config.MsgTimeout, metavar="SEC",
                   help=f"seconds a peer has to complete the handshake (default {config.MsgTimeout:g})")
    p.add_argument("--max_file_size", default="0", metavar="N[k|m|g|t]",
                   help="largest file accepted from a client; 0 (default) means no limit")
    p.add_argument("--certfile", default=None, metavar="PATH",
                   help="serve clients over TLS with this PEM certificate (and key, unless --keyfile); "
                        "clients must present the same certificate (JobCluster(certfile=...))")
    p.add_argument("--keyfile", default=None, metavar="PATH",
                   help="the private key for --certfile, if it is not in that file")
    p.add_argument("--daemon", action="store_true",
                   help="don't read commands from stdin (the default when stdin is not a terminal)")
    p.add_argument("--version", action="version", version=f"dispynode {__version__}")
    return p


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except OSError as exc:
        raise ConfigError(f"invalid --ip_addr {text!r}: not an IP address or known host name ({exc})") from None


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Turn parsed arguments into a NodeConfig; raises ConfigError naming the bad option."""
    try:
        max_file_size = config.parse_size(args.max_file_size)
    except ValueError as exc:
        raise ConfigError(f"invalid --max_file_size: {exc}") from None
    kwargs = {}
    if args.name is not None:
        kwargs["name"] = args.name
    if args.dest_path_prefix is not None:
        kwargs["dest_path_prefix"] = args.dest_path_prefix
    cfg = NodeConfig(
        ip_addrs=[_address(a) for a in (args.ip_addr or [default_ip_addr()])],
        port=config.node_port() if args.node_port is None else args.node_port,
        cpus=resolve_cpus(args.cpus, machine_cpus()),
        secret=args.secret,
        clean=args.clean,
        msg_timeout=args.msg_timeout,
        max_file_size=max_file_size,
        debug=args.debug,
        certfile=args.certfile,
        keyfile=args.keyfile,
        **kwargs,
    )
    if cfg.certfile is not None:
        tls.server_context(cfg.certfile, cfg.keyfile)  # a bad file is reported before starting
    return cfg


async def _serve(cfg: NodeConfig, interactive: bool) -> None:
    node = Node(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.stop)

    def started(node: Node) -> None:
        for ip, port in node.listening:
            print(f"dispynode {cfg.name} serving {cfg.cpus} CPUs at {ip}:{port}", flush=True)
        if interactive:
            Console(node.status, node.stop).start()

    await node.run(started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    logging.basicConfig(level=logging.DEBUG if cfg.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s dispynode %(levelname)s %(message)s")
    interactive = not args.daemon and sys.stdin is not None and sys.stdin.isatty()
    try:
        asyncio.run(_serve(cfg, interactive))
    except OSError as exc:
        log.error("dispynode could not start: %s", exc)
        return 1
    except RuntimeError as exc:
        log.error("dispynode failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
