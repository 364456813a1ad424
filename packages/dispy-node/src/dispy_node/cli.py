"""The ``dispynode`` command: options, logging, signals, and running a :class:`Node`.

This is the only module that configures logging handlers or prints. On start it prints
one line per listening address to stdout, exactly::

    dispynode <name> serving <cpus> CPUs at <ip>:<port>

so that users (and tests, with ``-p 0``) see where it serves. SIGINT is a graceful stop
(no new computations or jobs; the jobs in the node finish and their results go out),
SIGTERM terminates (running jobs are killed, their clients get them Terminated); both run
the cleanups, remove the directories and exit 0. A second signal while the node is
ending kills its processes and exits 1 at once.
Bad options exit 2 with a message naming the allowed values.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from collections.abc import Sequence

from dispy_core import config, daemon_cli, inifile, netif, tls
from dispy_core.errors import ConfigError

from .__about__ import __version__
from .announce import ANNOUNCE_INTERVAL
from .console import Console
from .options import NODE_PING_INTERVAL_MIN, NodeConfig, default_dest_path_prefix, default_ip_addr, machine_cpus, resolve_cpus
from .server import Node

__all__ = ["main", "build_parser", "config_from_args"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispynode",
        description="Run dispy jobs on this machine for dispy clients (JobCluster, SharedJobCluster).",
        epilog="Deployment files (a Dockerfile, a systemd unit) ship with dispy-node: "
               "python -m dispy_node.deploy lists them.",
    )
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages (a trace of execution)")
    p.add_argument("-c", "--cpus", type=int, default=None, metavar="N",
                   help="CPUs to use: N > 0 uses N (at most this machine's), N < 0 leaves -N unused; "
                        "default: all")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addr", action="append", default=None, metavar="ADDR",
                   help="address to serve on (repeatable; --host is another name); default: the address of "
                        "the default route's interface, else of the first other interface that is up, else "
                        "127.0.0.1 (the choice is logged; a client on this host finds the node at any of them)")
    p.add_argument("-p", "--node_port", type=int, default=None, metavar="N",
                   help=f"port for clients, TCP and UDP (default {config.node_port()}; 0 picks a free one)")
    p.add_argument("--ext_ip_addr", "--ext_host", dest="ext_ip_addr", action="append", default=None,
                   metavar="ADDR",
                   help="address to announce to clients instead of the -i address, e.g. a NAT gateway's "
                        "that forwards this node's port here (repeatable: one per -i address, in order)")
    p.add_argument("--dispy_port", type=int, default=None, metavar="N",
                   help=f"base of the port family (default {config.DispyPort}): the node listens on N + 1 "
                        "(unless -p is given) and --scheduler_port defaults to N")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"answer IPv4 discovery sent to multicast group {config.IPv4MulticastGroup} (clients "
                        "with ipv4_udp_multicast=True) instead of broadcasts; IPv6 discovery always "
                        f"uses group {config.IPv6MulticastGroup}")
    p.add_argument("--scheduler_node", "--scheduler_host", dest="scheduler_node", default=None,
                   metavar="ADDR",
                   help="announce this node to the client (JobCluster with wildcard nodes) at ADDR by "
                        "unicast UDP, at start and every 30 s until a client uses the node; for a "
                        "client on another network, which discovery broadcasts don't reach")
    p.add_argument("--scheduler_port", type=int, default=None, metavar="N",
                   help=f"the client port --scheduler_node announcements go to (default {config.client_port()}, "
                        "or --dispy_port's)")
    p.add_argument("--ping_interval", type=float, default=None, metavar="SEC",
                   help=f"while no client uses the node, announce it to --scheduler_node every SEC seconds "
                        f"(at least {NODE_PING_INTERVAL_MIN:g}; default {ANNOUNCE_INTERVAL:g}); without "
                        "--scheduler_node the node announces itself nowhere (it never broadcasts)")
    p.add_argument("--name", default=None, help="name of this node (default: the host name)")
    p.add_argument("-s", "--secret", default="",
                   help="shared secret: only clients with the same secret may use this node")
    p.add_argument("--dest_path_prefix", default=None, metavar="PATH",
                   help=f"directory under which computations' files are kept (default {default_dest_path_prefix()})")
    p.add_argument("--clean", action="store_true",
                   help="remove what earlier runs left under dest_path_prefix, at start")
    p.add_argument("--msg_timeout", type=float, default=config.MsgTimeout, metavar="SEC",
                   help=f"timeout of socket I/O with clients: seconds a client has to complete the "
                        f"handshake, and to take data the node is sending it before the connection is "
                        f"closed as stuck (default {config.MsgTimeout:g})")
    p.add_argument("--max_file_size", default="0", metavar="N[k|m|g|t]",
                   help="largest file accepted from a client; 0 (default) means no limit")
    p.add_argument("--certfile", default=None, metavar="PATH",
                   help="serve clients over TLS with this PEM certificate (and key, unless --keyfile); "
                        "clients must present the same certificate (JobCluster(certfile=...))")
    p.add_argument("--keyfile", default=None, metavar="PATH",
                   help="the private key for --certfile, if it is not in that file")
    p.add_argument("--serve", type=int, default=-1, metavar="N",
                   help="quit after serving computations from N clients (default -1: no limit)")
    p.add_argument("--client_shutdown", action="store_true",
                   help="let a computation's cleanup call dispynode_shutdown() to shut the node down")
    p.add_argument("--force_cleanup", action="store_true",
                   help="remove a computation's files when it closes even if its client asked to "
                        "keep them (cleanup=False)")
    p.add_argument("--zombie_interval", type=float, default=60.0, metavar="MINUTES",
                   help="close the computations of a client that sent nothing for this long while "
                        "it has no jobs running (default 60)")
    p.add_argument("--service_start", default=None, metavar="HH:MM",
                   help="start serving at this time of day (24-hour; daily; default 00:00 when "
                        "--service_stop or --service_end is given); outside the window the node "
                        "refuses computations and ignores discovery")
    p.add_argument("--service_stop", default=None, metavar="HH:MM",
                   help="from this time of day start no new jobs (running jobs finish; queued ones "
                        "wait for the next --service_start)")
    p.add_argument("--service_end", default=None, metavar="HH:MM",
                   help="at this time of day close all computations, terminating their jobs; the "
                        "node keeps running and serves again from the next --service_start")
    p.add_argument("--unsafe_setup", action="store_true",
                   help="accepted for compatibility with dispy 4.x; changes nothing here (setup "
                        "always runs in the computation's own process, whose globals jobs see)")
    p.add_argument("--admin_secret", default="", metavar="SECRET",
                   help="let dispyadmin (with --secret SECRET) see this node's state and change its CPUs, "
                        "service times and serve count; must differ from --secret. Without it the node "
                        "refuses every admin request. To keep it out of the process list, put it in a "
                        "--config file, or type it at the console's admin_secret command")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="(dispy's module of node-wide globals: not supported yet; refused with a message)")
    daemon_cli.add_common_options(p, "dispynode", __version__, "node-specific ones: -i, -p, --name")
    return p


#: Section of --save_config / --config files.
CONFIG_SECTION = "dispynode"
#: Options that are never saved or read from a config file: node-specific ones and the
#: config options themselves.
_NOT_SAVED = ("ip_addr", "ext_ip_addr", "node_port", "name", "save_config", "config", "help", "version")


def _address(text: str, option: str = "--ip_addr") -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))  # canonical text, IPv6 too
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_address(socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)[0][4][0]))
    except OSError as exc:
        raise ConfigError(f"invalid {option} {text!r}: not an IP address or known host name ({exc})") from None


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Turn parsed arguments into a NodeConfig; raises ConfigError naming the bad option."""
    if args.init is not None:
        raise ConfigError("--init: node-wide globals from a module are not supported yet; give each "
                          "computation what it needs with depends and setup")
    try:
        max_file_size = config.parse_size(args.max_file_size)
    except ValueError as exc:
        raise ConfigError(f"invalid --max_file_size: {exc}") from None
    if args.dispy_port is not None and not 0 < args.dispy_port < 65535:
        raise ConfigError(f"invalid --dispy_port {args.dispy_port}: must be in 1..65534")
    kwargs = {}
    if args.name is not None:
        kwargs["name"] = args.name
    if args.dest_path_prefix is not None:
        kwargs["dest_path_prefix"] = args.dest_path_prefix
    cfg = NodeConfig(
        ip_addrs=[_address(a) for a in (args.ip_addr or [default_ip_addr()])],
        port=config.node_port(args.dispy_port) if args.node_port is None else args.node_port,
        cpus=resolve_cpus(args.cpus, machine_cpus()),
        secret=args.secret,
        clean=args.clean,
        msg_timeout=args.msg_timeout,
        max_file_size=max_file_size,
        debug=args.debug,
        certfile=args.certfile,
        keyfile=args.keyfile,
        serve=args.serve,
        client_shutdown=args.client_shutdown,
        force_cleanup=args.force_cleanup,
        zombie_interval=args.zombie_interval,
        service_start=args.service_start,
        service_stop=args.service_stop,
        service_end=args.service_end,
        # --ext_ip_addr is announced as given (a host name a NAT gateway is known by is fine)
        ext_ip_addrs=list(args.ext_ip_addr or []),
        ipv4_udp_multicast=args.ipv4_udp_multicast,
        scheduler_node=None if args.scheduler_node is None else _address(args.scheduler_node, "--scheduler_node"),
        scheduler_port=config.client_port(args.dispy_port) if args.scheduler_port is None else args.scheduler_port,
        ping_interval=args.ping_interval,
        admin_secret=args.admin_secret or "",
        **kwargs,
    )
    if cfg.certfile is not None:
        tls.server_context(cfg.certfile, cfg.keyfile)  # a bad file is reported before starting
    return cfg


async def _serve(cfg: NodeConfig, interactive: bool) -> None:
    node = Node(cfg)

    def at_once() -> None:
        log.warning("dispynode %s: stopping at once (second signal): killing its processes, "
                    "skipping cleanup", cfg.name)
        node.kill_processes()

    # SIGINT (or ``exit``): finish the jobs, then stop; SIGTERM (or ``quit``): terminate
    # the jobs and stop. Either, once the node is ending: end at once.
    end = daemon_cli.end_on_signals(node, at_once)

    def started(node: Node) -> None:
        for ip, port in node.listening:
            print(f"dispynode {cfg.name} serving {cfg.cpus} CPUs at {ip}:{port}", flush=True)
        if interactive:
            Console(node, quit=lambda: end(False), exit=lambda: end(True)).start()

    await node.run(started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # The file's options become defaults: what the command line gives wins.
    args = inifile.parse_args(parser, argv, CONFIG_SECTION, _NOT_SAVED)
    if args.save_config is not None:
        return _save(args)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    daemon_cli.start_logging("dispynode", cfg.debug)
    if cfg.ping_interval is not None and cfg.scheduler_node is None:
        log.warning("--ping_interval %g has no effect without --scheduler_node: this node announces "
                    "itself only to that address (it never broadcasts); clients find it by asking",
                    cfg.ping_interval)
    if not args.ip_addr:
        _log_chosen_address(cfg.ip_addrs[0])
    if args.unsafe_setup:
        log.warning("--unsafe_setup changes nothing in this dispynode: setup always runs in the "
                    "computation's own process (forked for it), and jobs are forked from that process, "
                    "so they see setup's globals, which is what dispy 4.x's unsafe setup was for; "
                    "the node's own process never runs user code")
    return daemon_cli.run_daemon("dispynode", args, lambda interactive: _serve(cfg, interactive), log)


def _log_chosen_address(ip: str) -> None:
    address, why = netif.choose_ip_addr()  # asked again for the reason: the same answer
    log.info("no -i given: serving %s%s", ip, f" ({why})" if address == ip else "")


def _save(args: argparse.Namespace) -> int:
    # a fresh parser: its defaults, not --config's, so that everything in effect is saved
    # (the file is readable by its owner only: it may hold the secret)
    return inifile.save_command(build_parser(), args, CONFIG_SECTION, _NOT_SAVED, "dispynode", "node-specific")


if __name__ == "__main__":
    sys.exit(main())
