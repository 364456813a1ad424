"""The ``dispyscheduler`` command: options, logging, signals, and running the daemon.

This is the only module that configures logging handlers or prints. On start it prints
one line per address clients can connect to, exactly::

    dispyscheduler serving clients at <ip>:<port>

and with ``--httpd`` the web monitor's address, ready to open (with its token)::

    dispyscheduler web monitor at http://127.0.0.1:8181/

SIGINT is a graceful stop (no new clusters are admitted; the running ones finish and
close), SIGTERM terminates (every computation is closed, its jobs terminated); both exit
0. A second signal while the scheduler is ending exits 1 at once.
Bad options exit 2 with a message naming the option and its allowed values.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dispy_core import config, daemon_cli, inifile, netif, tls
from dispy_core.errors import ConfigError

from .__about__ import __version__
from .console import Console
from .options import (
    HTTP_HOST,
    HTTP_PORT,
    PULSE_INTERVAL_RANGE,
    SchedulerConfig,
    default_dest_path_prefix,
    default_ip_addr,
)

__all__ = ["main", "build_parser", "config_from_args", "parse_args", "CONFIG_SECTION"]

log = logging.getLogger(__name__)

#: Section of --save_config / --config files.
CONFIG_SECTION = "dispyscheduler"
#: Options never saved or read from a config file: host-specific ones (so that a saved
#: file can be used on another host) and the config options themselves.
_NOT_SAVED = ("ip_addr", "ext_ip_addr", "save_config", "config", "help", "version")
#: The scheduling policy flags (they exclude each other) and the policy each picks.
_POLICY_FLAGS = {"fair_cluster_scheduler": "fair", "early_cluster_scheduler": "early"}


class Served(Protocol):
    """What the CLI needs of :class:`dispy_scheduler.daemon.Daemon`."""

    @property
    def listening(self) -> list[tuple[str, int]]: ...
    @property
    def closing(self) -> bool: ...
    async def run(self, started: Callable[[Any], None]) -> None: ...
    def stop(self) -> None: ...
    def drain(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    @property
    def web_url(self) -> str | None: ...


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispyscheduler",
        description="Share dispy nodes between several clients (SharedJobCluster) at once.",
    )
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages (a trace of execution)")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addr", action="append", default=None, metavar="ADDR",
                   help="address to serve on (repeatable; the first is the one used toward nodes and "
                        "clients); default: the address of the default route's interface, else of the "
                        "first other interface that is up, else 127.0.0.1 (the choice is logged)")
    p.add_argument("--ext_ip_addr", "--ext_host", dest="ext_ip_addr", action="append", default=None, metavar="ADDR",
                   help="address to announce instead of the -i address, e.g. a NAT gateway's that "
                        "forwards the scheduler's ports here (repeatable: one per -i address, in order)")
    p.add_argument("-p", "--port", type=int, default=None, metavar="N",
                   help=f"UDP port where node discovery replies and node announcements arrive (default "
                        f"{config.client_port()}, or --dispy_port's; 0 picks a free one)")
    p.add_argument("--scheduler_port", type=int, default=None, metavar="N",
                   help=f"TCP port SharedJobCluster clients connect to (default {config.scheduler_port()}, "
                        "or --dispy_port's + 2; 0 picks a free one)")
    p.add_argument("--node_port", type=int, default=None, metavar="N",
                   help=f"port the dispynodes listen on (default {config.node_port()}, or --dispy_port's + 1)")
    p.add_argument("--dispy_port", type=int, default=None, metavar="N",
                   help=f"base of the port family (default {config.DispyPort}): -p defaults to N, "
                        "--node_port to N + 1 and --scheduler_port to N + 2")
    p.add_argument("-n", "--nodes", "--node", dest="nodes", action="append", default=None, metavar="HOST[:PORT]",
                   help="a node to use (repeatable): host name or IP address, optionally with its port; "
                        "when given, the scheduler contacts exactly these and never broadcasts")
    p.add_argument("--node_secret", default="",
                   help="shared secret of the nodes (their --secret): only nodes with it are used")
    p.add_argument("--cluster_secret", default="",
                   help="shared secret of the clients (SharedJobCluster(secret=...)): only clients "
                        "with it are served")
    p.add_argument("--node_certfile", default=None, metavar="PATH",
                   help="talk to nodes over TLS with this PEM certificate (the nodes' --certfile)")
    p.add_argument("--node_keyfile", default=None, metavar="PATH",
                   help="the private key for --node_certfile, if it is not in that file")
    p.add_argument("--cluster_certfile", default=None, metavar="PATH",
                   help="serve clients over TLS with this PEM certificate (SharedJobCluster(certfile=...))")
    p.add_argument("--cluster_keyfile", default=None, metavar="PATH",
                   help="the private key for --cluster_certfile, if it is not in that file")
    low, high = PULSE_INTERVAL_RANGE
    p.add_argument("--pulse_interval", type=float, default=None, metavar="SEC",
                   help=f"nodes send a pulse every SEC seconds ({low:g} to {high:g}); a node silent for "
                        "5 x SEC is taken as dead")
    low, high = netif.PING_INTERVAL_RANGE
    p.add_argument("--ping_interval", type=float, default=None, metavar="SEC",
                   help=f"repeat node discovery every SEC seconds ({low:g} to {high:g}), for nodes that "
                        "missed earlier requests")
    p.add_argument("--zombie_interval", type=float, default=60.0, metavar="MINUTES",
                   help="take a client or node silent this long as gone (default 60)")
    p.add_argument("--max_file_size", default="0", metavar="N[k|m|g|t]",
                   help="largest file accepted from a client; 0 (default) means no limit")
    p.add_argument("--cooperative", action="store_true",
                   help="let clients change the CPUs of nodes")
    p.add_argument("--cleanup_nodes", action="store_true",
                   help="make nodes always clean up after a computation, even one with cleanup=False")
    p.add_argument("--clean", action="store_true",
                   help="remove what earlier runs left under dest_path_prefix, at start")
    p.add_argument("--msg_timeout", type=float, default=config.MsgTimeout, metavar="SEC",
                   help=f"timeout of socket I/O (default {config.MsgTimeout:g}): seconds a peer has to answer "
                        "or complete the handshake, and a client connection whose client takes none of "
                        "the data waiting for it for that long is closed as stuck (it may resume)")
    p.add_argument("--dest_path_prefix", default=None, metavar="PATH",
                   help="directory where results that could not be delivered are kept "
                        f"(default {default_dest_path_prefix()})")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--fair_cluster_scheduler", action="store_true",
                        help="run jobs from the clusters in turn (the one that waited longest first)")
    policy.add_argument("--early_cluster_scheduler", action="store_true",
                        help="run jobs from the cluster created first, first")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"send IPv4 discovery to multicast group {config.IPv4MulticastGroup} instead of "
                        "broadcasting it")
    p.add_argument("--httpd", action="store_true",
                   help="serve the web monitor: every cluster using the scheduler (named 'name @ client "
                        "address'), its jobs and nodes, live in a browser, with job cancelling and node "
                        "management; the URL to open is printed at start")
    p.add_argument("--http_host", default=HTTP_HOST, metavar="ADDR",
                   help=f"address the web monitor listens on (default {HTTP_HOST}: this host only); "
                        "any other address needs a token (--http_token, or one made up and printed)")
    p.add_argument("--http_port", type=int, default=HTTP_PORT, metavar="N",
                   help=f"TCP port of the web monitor (default {HTTP_PORT}; 0 picks a free one)")
    p.add_argument("--http_token", default=None, metavar="TOKEN",
                   help="token every browser must give to see or change anything (the URL printed at "
                        "start carries it); default: none on a loopback --http_host, else a random one")
    p.add_argument("--http_certfile", default=None, metavar="PATH",
                   help="serve the web monitor over HTTPS with this PEM certificate (not the "
                        "--cluster_certfile: browsers trust certificates of their own)")
    p.add_argument("--http_keyfile", default=None, metavar="PATH",
                   help="the private key for --http_certfile, if it is not in that file")
    daemon_cli.add_common_options(p, "dispyscheduler", __version__, "host-specific ones: -i, --ext_ip_addr")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, merged with ``--config``'s file: the command line wins (a -n given
    there replaces the file's list, a policy flag the file's policy). Exits 2
    (argparse's error) on bad options or an unusable file."""
    return inifile.parse_args(parser, argv, CONFIG_SECTION, _NOT_SAVED)


def config_from_args(args: argparse.Namespace) -> SchedulerConfig:
    """Turn parsed arguments into a SchedulerConfig; raises ConfigError naming the bad
    option. The TLS files are loaded, so that a bad one is reported before starting."""
    try:
        max_file_size = config.parse_size(args.max_file_size)
    except ValueError as exc:
        raise ConfigError(f"invalid --max_file_size: {exc}") from None
    base = args.dispy_port
    if base is not None and not 0 < base < 65534:
        raise ConfigError(f"invalid --dispy_port {base}: must be in 1..65533 (the scheduler port is N + 2)")
    policies = [p for flag, p in _POLICY_FLAGS.items() if getattr(args, flag)]
    if len(policies) > 1:  # both from --config (the command line can't give both)
        raise ConfigError("--fair_cluster_scheduler and --early_cluster_scheduler exclude each other")
    cfg = SchedulerConfig(
        ip_addrs=netif.host_list("--ip_addr", args.ip_addr or [default_ip_addr()], resolve=True),
        # --ext_ip_addr is announced as given (a host name a NAT gateway is known by is fine)
        ext_ip_addrs=list(args.ext_ip_addr or []),
        port=config.client_port(base) if args.port is None else args.port,
        scheduler_port=config.scheduler_port(base) if args.scheduler_port is None else args.scheduler_port,
        node_port=config.node_port(base) if args.node_port is None else args.node_port,
        nodes=list(args.nodes or []),
        node_secret=args.node_secret,
        cluster_secret=args.cluster_secret,
        node_certfile=args.node_certfile,
        node_keyfile=args.node_keyfile,
        cluster_certfile=args.cluster_certfile,
        cluster_keyfile=args.cluster_keyfile,
        pulse_interval=args.pulse_interval,
        ping_interval=args.ping_interval,
        zombie_interval=args.zombie_interval,
        max_file_size=max_file_size,
        cooperative=args.cooperative,
        cleanup_nodes=args.cleanup_nodes,
        clean=args.clean,
        msg_timeout=args.msg_timeout,
        dest_path_prefix=default_dest_path_prefix() if args.dest_path_prefix is None else args.dest_path_prefix,
        policy=policies[0] if policies else "default",
        ipv4_udp_multicast=args.ipv4_udp_multicast,
        debug=args.debug,
        httpd=args.httpd,
        http_host=args.http_host,
        http_port=args.http_port,
        http_token=args.http_token,
        http_certfile=args.http_certfile,
        http_keyfile=args.http_keyfile,
    )
    # The scheduler is a client of the nodes and a server of the clusters.
    if cfg.node_certfile is not None:
        try:
            tls.client_context(cfg.node_certfile, cfg.node_keyfile)
        except ConfigError as exc:
            raise ConfigError(f"--node_certfile/--node_keyfile: {exc}") from None
    if cfg.cluster_certfile is not None:
        try:
            tls.server_context(cfg.cluster_certfile, cfg.cluster_keyfile)
        except ConfigError as exc:
            raise ConfigError(f"--cluster_certfile/--cluster_keyfile: {exc}") from None
    if cfg.http_certfile is not None:
        try:
            tls.server_context(cfg.http_certfile, cfg.http_keyfile)
        except ConfigError as exc:
            raise ConfigError(f"--http_certfile/--http_keyfile: {exc}") from None
    return cfg


async def _serve(cfg: SchedulerConfig, interactive: bool) -> None:
    # Imported here: the options, the console and their tests don't need the daemon.
    # (The ignore is for type-checking this package before daemon.py exists.)
    from .daemon import Daemon  # type: ignore[import-not-found,unused-ignore]

    daemon: Served = Daemon(cfg)
    # SIGINT (or ``exit``): admit no new clusters, let the running ones finish and close,
    # then stop; SIGTERM (or ``quit``): close every computation, terminating its jobs,
    # then stop. Either, once the scheduler is ending: end at once.
    end = daemon_cli.end_on_signals(daemon, lambda: log.warning("dispyscheduler: stopping at once (second signal)"))

    def started(daemon: Served) -> None:
        for ip, port in daemon.listening:
            print(f"dispyscheduler serving clients at {ip}:{port}", flush=True)
        if daemon.web_url is not None:
            # ready to open: it carries the token when one is needed
            print(f"dispyscheduler web monitor at {daemon.web_url}", flush=True)
        if interactive:
            Console(daemon, quit=lambda: end(False), exit=lambda: end(True)).start()

    await daemon.run(started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.save_config is not None:
        return _save(args)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    daemon_cli.start_logging("dispyscheduler", cfg.debug)
    if not args.ip_addr:
        address, why = netif.choose_ip_addr()  # asked again for the reason: the same answer
        log.info("no -i given: serving %s%s", cfg.ip_addrs[0], f" ({why})" if address == cfg.ip_addrs[0] else "")
    return daemon_cli.run_daemon("dispyscheduler", args, lambda interactive: _serve(cfg, interactive), log)


def _save(args: argparse.Namespace) -> int:
    # a fresh parser: its defaults, not --config's, so that everything in effect is saved
    # (the file is readable by its owner only: it holds secrets)
    return inifile.save_command(build_parser(), args, CONFIG_SECTION, _NOT_SAVED, "dispyscheduler", "host-specific")


if __name__ == "__main__":
    sys.exit(main())
