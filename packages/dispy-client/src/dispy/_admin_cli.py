"""The ``dispyadmin`` command: manage dispynodes (CPUs, service times, serve count) from a
browser, independently of any client.

It serves :class:`dispy._admin_web.AdminBackend` over a :class:`dispy.admin.NodeAdmin` on
``http://<http_host>:<http_port>/`` (127.0.0.1:8181 by default: nothing beyond this host
can reach it unless a host is given, and then a token is needed, printed with the URL)
and prints one line, exactly::

    dispyadmin serving <url>

Nodes: ``-i`` (repeatable, "host" or "host:port"). Without any, it looks for nodes by
UDP discovery sealed with the admin secret (only nodes with that admin secret answer).
The admin secret: ``--secret``, a ``--config`` file, or the console's ``secret`` command
(typed at the terminal, not echoed: it stays out of the process list).

Console (stdin of a terminal, unless ``--daemon``): ``status`` or an empty line (the
nodes), ``secret``, ``scan``, ``quit`` / ``exit``, ``help``. SIGINT and SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from dispy_core import config, daemon_cli, inifile
from dispy_core.console import CommandConsole
from dispy_core.errors import ConfigError
from dispy_core.web import WebServer

from .__about__ import __version__
from ._admin_web import AdminBackend
from .admin import NodeAdmin

__all__ = ["main", "build_parser"]

log = logging.getLogger("dispy.admin")

CONFIG_SECTION = "dispyadmin"
_NOT_SAVED = ("save_config", "config", "help", "version")

HELP = """\
commands:
  status (or an empty line)  the nodes and their state
  secret                     type the admin secret (not shown; as --secret)
  scan                       look for nodes again, and ask every node now
  quit, exit                 stop dispyadmin
  help                       this list"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispyadmin",
        description="Manage dispynodes started with --admin_secret from a browser: see their state, "
                    "set their CPUs, service times and serve count.")
    p.add_argument("--secret", default="",
                   help="the nodes' admin secret (dispynode --admin_secret); to keep it out of the process "
                        "list put it in a --config file or type it at the console's 'secret' command")
    p.add_argument("-i", "--host", "--node", dest="host", action="append", default=None, metavar="NODE",
                   help="a node to manage, 'host' or 'host:port' (repeatable); without any, nodes are "
                        "looked for by UDP discovery")
    p.add_argument("--node_port", type=int, default=None, metavar="N",
                   help=f"the nodes' port (default {config.node_port()})")
    p.add_argument("--http_host", default="127.0.0.1", metavar="ADDR",
                   help="address of the web pages (default 127.0.0.1: this host only); any other "
                        "needs a token (--http_token, or one made up and printed)")
    p.add_argument("--http_port", type=int, default=8181, metavar="N",
                   help="port of the web pages (default 8181; 0 picks a free one)")
    p.add_argument("--http_token", default=None, metavar="TOKEN",
                   help="token every browser must give (?token=...) to see or change anything; made up "
                        "when --http_host is not a loopback address and none is given")
    p.add_argument("--http_certfile", default=None, metavar="PATH",
                   help="serve the web pages over HTTPS with this PEM certificate (and key)")
    p.add_argument("--http_keyfile", default=None, metavar="PATH",
                   help="the private key for --http_certfile, if it is not in that file")
    p.add_argument("--certfile", default=None, metavar="PATH",
                   help="for nodes serving TLS: their --certfile (presented to them)")
    p.add_argument("--keyfile", default=None, metavar="PATH",
                   help="the private key for --certfile, if it is not in that file")
    p.add_argument("--poll_interval", type=float, default=60.0, metavar="SEC",
                   help="ask every node for its state every SEC seconds (default 60)")
    p.add_argument("--ping_interval", type=float, default=600.0, metavar="SEC",
                   help="without -i: look for nodes again every SEC seconds (default 600)")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    daemon_cli.add_common_options(p, "dispyadmin", __version__, "nothing")
    return p


class AdminConsole(CommandConsole):
    """dispyadmin's commands on a terminal (see the module's doc)."""

    greeting = "Enter 'help' for the commands, or an empty line for the nodes."
    help = HELP
    quit_said = exit_said = "stopping dispyadmin"

    def __init__(self, admin: NodeAdmin, *, quit: Any, exit: Any = None, stdin: Any = None,
                 stdout: Any = None) -> None:
        super().__init__(quit=quit, exit=exit or quit, stdin=stdin, stdout=stdout)
        self.admin = admin

    def status_text(self) -> str:
        return format_nodes(self.admin.nodes())

    def _secret(self, line: str) -> None:
        if not line:
            self.say("admin secret unchanged")
            return
        self.say("admin secret set; asking the nodes")
        _in_thread(self.admin.set_secret, line)

    def other_command(self, cmd: str, args: list[str]) -> bool:
        if cmd == "secret" and not args:
            self.ask_secret("type the admin secret and Enter (not shown):", self._secret)
        elif cmd == "scan" and not args:
            self.say("looking for nodes" if not self.admin.named else "asking the nodes")
            _in_thread(self.admin.scan)
        else:
            return False
        return True


def _in_thread(fn: Any, *args: Any) -> None:
    """Run ``fn`` off the event loop (it waits for nodes to answer)."""
    threading.Thread(target=fn, args=args, name="dispyadmin-command", daemon=True).start()


def format_nodes(nodes: list[dict[str, Any]]) -> str:
    """The console's table of nodes."""
    if not nodes:
        return "no nodes yet"
    rows = [("Node", "Name", "CPUs", "Busy", "Jobs done", "Serve", "Service", "State")]
    for n in nodes:
        info = n["info"]
        if info is None:
            rows.append((n["key"], "", "", "", "", "", "", n["error"]))
            continue
        times = "/".join(t or "-" for t in (info["service_start"], info["service_stop"], info["service_end"]))
        rows.append((n["key"], info["name"], f"{info['cpus']}/{info['max_cpus']}", str(info["busy"]),
                     str(info["jobs_done"]), str(info["serve"]), times, info["state"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


async def _serve(args: argparse.Namespace, interactive: bool) -> None:
    server: WebServer | None = None

    def changed() -> None:
        if server is not None:
            server.notify()

    admin = NodeAdmin(args.secret, args.host or (), node_port=args.node_port, certfile=args.certfile,
                      keyfile=args.keyfile, poll_interval=args.poll_interval,
                      ping_interval=args.ping_interval, on_change=changed)
    server = WebServer(AdminBackend(admin), host=args.http_host, port=args.http_port, token=args.http_token,
                       certfile=args.http_certfile, keyfile=args.http_keyfile,
                       poll_sec=min(args.poll_interval, 5.0))
    server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"dispyadmin serving {server.url}", flush=True)
    if not admin.secret:
        log.warning("no admin secret yet (--secret, or the 'secret' command): nodes are listed without details")
    admin.start()
    if interactive:
        AdminConsole(admin, quit=stop.set).start()
    try:
        await stop.wait()
    finally:
        server.shutdown(wait=False)
        await asyncio.to_thread(admin.close)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = inifile.parse_args(parser, argv, CONFIG_SECTION, _NOT_SAVED)
    if args.save_config is not None:
        return inifile.save_command(build_parser(), args, CONFIG_SECTION, _NOT_SAVED, "dispyadmin", "none")
    if args.node_port is not None and not 0 < args.node_port <= 65535:
        parser.error(f"invalid --node_port {args.node_port}: must be in 1..65535")
    if not args.poll_interval > 0 or not args.ping_interval > 0:
        parser.error("--poll_interval and --ping_interval must be > 0 seconds")
    daemon_cli.start_logging("dispyadmin", args.debug)
    interactive = not args.daemon and sys.stdin is not None and sys.stdin.isatty()
    try:
        asyncio.run(_serve(args, interactive))
    except (OSError, ConfigError) as exc:
        log.error("dispyadmin could not start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
