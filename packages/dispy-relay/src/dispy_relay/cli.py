"""The ``dispynetrelay`` command: options, logging, signals, the terminal, running the relay.

On start it prints one line per address clients can name, exactly::

    dispynetrelay serving clients at <ip>:<port>

SIGINT, SIGTERM, and ``exit`` or ``quit`` at its terminal stop it (exit 0); a second
signal while it is stopping exits 1 at once. Bad options exit 2 naming the option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from dispy_core import config, daemon_cli, inifile, netif, tls
from dispy_core.console import CommandConsole
from dispy_core.errors import ConfigError

from .__about__ import __version__
from .relay import DEFAULT_PING_INTERVAL, Relay, RelayConfig

__all__ = ["main", "build_parser", "config_from_args", "Console", "format_status", "CONFIG_SECTION"]

log = logging.getLogger(__name__)

#: Section of --save_config / --config files.
CONFIG_SECTION = "dispynetrelay"
#: Never saved (host-specific, or the config options themselves).
_NOT_SAVED = ("ip_addr", "save_config", "config", "help", "version")

HELP = """\
commands:
  status (or an empty line)  the nodes the relay knows and the clients it tells
  quit                       stop now (as SIGTERM)
  exit                       stop (as SIGINT; a relay has nothing to finish)
  help                       this list"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispynetrelay",
        description="Find the dispy nodes of this network and tell clients and dispyschedulers on other "
                    "networks (where UDP discovery does not reach) where they are. Clients name the relay "
                    "like a node: JobCluster(compute, nodes=['RELAY'], secret=...).",
    )
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument("-i", "--ip_addr", "--host", dest="ip_addr", action="append", default=None, metavar="ADDR",
                   help="address to serve on (repeatable): clients connect to it, nodes announce themselves "
                        "to it, and discovery requests go to its network (not from loopback addresses); "
                        "default: the address of the default route's interface")
    p.add_argument("--scheduler_node", action="append", default=None, metavar="HOST",
                   help="a client or dispyscheduler to tell of the nodes (repeatable): one sealed "
                        "announcement per node, sent to HOST's --scheduler_port at start, whenever a node "
                        "is found and every --ping_interval; the client must be discovering nodes "
                        "(a wildcard in nodes, or dispyscheduler without -n)")
    p.add_argument("-p", "--dispy_port", type=int, default=None, metavar="N",
                   help=f"base of the port family (default {config.DispyPort}): --scheduler_port defaults to "
                        "N, --relay_port and --node_port to N + 1")
    p.add_argument("--relay_port", type=int, default=None, metavar="N",
                   help=f"TCP port clients and dispyschedulers connect to (default {config.node_port()}, "
                        "the node port, so that the relay is named like a node; 0 picks a free one)")
    p.add_argument("--scheduler_port", type=int, default=None, metavar="N",
                   help=f"UDP port where nodes' announcements arrive (dispynode --scheduler_node RELAY "
                        f"--scheduler_port N), and the port of the --scheduler_node hosts (default "
                        f"{config.client_port()}, the client port)")
    p.add_argument("--node_port", type=int, default=None, metavar="N",
                   help=f"port the dispynodes listen on: discovery requests go there (default "
                        f"{config.node_port()})")
    p.add_argument("-s", "--secret", default="",
                   help="the cluster's secret (the nodes' --secret, JobCluster(secret=...)): only clients and "
                        "node datagrams with it are heard")
    p.add_argument("--certfile", default=None, metavar="PATH",
                   help="serve clients over TLS with this PEM certificate (the cluster's certfile)")
    p.add_argument("--keyfile", default=None, metavar="PATH",
                   help="the private key for --certfile, if it is not in that file")
    p.add_argument("--ipv4_udp_multicast", action="store_true",
                   help=f"send IPv4 discovery requests to multicast group {config.IPv4MulticastGroup} instead "
                        "of broadcasting them (for nodes started with --ipv4_udp_multicast)")
    low, high = netif.PING_INTERVAL_RANGE
    p.add_argument("--ping_interval", type=float, default=None, metavar="SEC",
                   help=f"ask the nodes again, and announce them to --scheduler_node hosts, every SEC "
                        f"seconds ({low:g} to {high:g}; default {DEFAULT_PING_INTERVAL:g})")
    daemon_cli.add_common_options(p, "dispynetrelay", __version__, "host-specific ones: -i")
    return p


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments merged with ``--config``'s file (the command line wins)."""
    return inifile.parse_args(parser, argv, CONFIG_SECTION, _NOT_SAVED)


def _port(option: str, value: int | None, default: int) -> int:
    port = default if value is None else value
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid {option} {port}: must be in 0..65535")
    return port


def config_from_args(args: argparse.Namespace) -> RelayConfig:
    """Turn parsed arguments into a RelayConfig; raises ConfigError naming the bad option."""
    base = args.dispy_port
    if base is not None and not 0 < base < 65535:
        raise ConfigError(f"invalid --dispy_port {base}: must be in 1..65534 (the node port is N + 1)")
    ping = DEFAULT_PING_INTERVAL
    if args.ping_interval is not None:
        checked = netif.check_ping_interval(args.ping_interval)
        assert checked is not None
        ping = checked
    if args.keyfile and not args.certfile:
        raise ConfigError("--keyfile needs --certfile")
    cfg = RelayConfig(
        ip_addrs=netif.host_list("--ip_addr", args.ip_addr or [netif.default_ip_addr()], resolve=True),
        relay_port=_port("--relay_port", args.relay_port, config.node_port(base)),
        scheduler_port=_port("--scheduler_port", args.scheduler_port, config.client_port(base)),
        node_port=_port("--node_port", args.node_port, config.node_port(base)),
        scheduler_nodes=list(args.scheduler_node or []),
        secret=args.secret,
        certfile=args.certfile,
        keyfile=args.keyfile,
        ipv4_udp_multicast=args.ipv4_udp_multicast,
        ping_interval=ping,
        debug=args.debug,
    )
    if cfg.certfile is not None:
        tls.server_context(cfg.certfile, cfg.keyfile)  # a bad file is reported before starting
    return cfg


def format_status(st: dict[str, Any]) -> str:
    """The status table for a :meth:`Relay.status` snapshot."""
    where = ", ".join(f"{ip}:{port}" for ip, port in st["listening"]) or "(not listening)"
    lines = [f"dispynetrelay at {where}"]
    if st["nodes"]:
        rows = [("Node", "Name", "CPUs", "Heard", "How")] + [
            (f"{n['ip_addr']}:{n['port']}", str(n["name"])[:24], str(n["cpus"]), f"{n['heard']:.0f}s ago", n["how"])
            for n in st["nodes"]]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    else:
        lines.append("  no nodes known yet")
    lines.append(f"  clients told: {', '.join(st['clients']) or 'none connected'}")
    if st["scheduler_nodes"]:
        lines.append(f"  --scheduler_node: {', '.join(st['scheduler_nodes'])}")
    return "\n".join(lines)


class Console(CommandConsole):
    """The relay's commands at its terminal: ``status``, ``quit``, ``exit``, ``help``."""

    greeting = "Enter 'help' for the commands, or an empty line for the relay's status."
    help = HELP
    quit_said = "stopping dispynetrelay"
    exit_said = "stopping dispynetrelay"

    def __init__(self, relay: Relay, *, quit: Any, exit: Any, stdin: TextIO | None = None,
                 stdout: TextIO | None = None) -> None:
        super().__init__(quit=quit, exit=exit, stdin=stdin, stdout=stdout)
        self.relay = relay

    def status_text(self) -> str:
        return format_status(self.relay.status())


async def _serve(cfg: RelayConfig, interactive: bool) -> None:
    relay = Relay(cfg)
    end = daemon_cli.end_on_signals(relay, lambda: log.warning("dispynetrelay: stopping at once (second signal)"))

    def started(relay: Relay) -> None:
        for ip, port in relay.listening:
            print(f"dispynetrelay serving clients at {ip}:{port}", flush=True)
        if interactive:
            Console(relay, quit=lambda: end(False), exit=lambda: end(True)).start()

    await relay.run(started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.save_config is not None:
        return inifile.save_command(build_parser(), args, CONFIG_SECTION, _NOT_SAVED, "dispynetrelay",
                                    "host-specific")
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    daemon_cli.start_logging("dispynetrelay", cfg.debug)
    return daemon_cli.run_daemon("dispynetrelay", args, lambda interactive: _serve(cfg, interactive), log)


if __name__ == "__main__":
    sys.exit(main())
