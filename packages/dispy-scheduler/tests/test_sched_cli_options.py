"""dispyscheduler's options: parsing, defaults, validation (exit 2 naming the option),
--save_config / --config, and how main runs the daemon (a fake: no server is started)."""

from __future__ import annotations

import asyncio
import configparser
import logging
import os
import signal
import stat
import sys
import types
from typing import Any

import pytest

from dispy_core import certgen, config
from dispy_scheduler import cli
from dispy_scheduler.options import SchedulerConfig, default_dest_path_prefix, default_ip_addr

LOCAL = ["-i", "127.0.0.1"]


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch):
    """main's daemon: records what it would run (nothing here starts a server)."""
    runs: list[tuple[SchedulerConfig, bool]] = []

    async def serve(cfg: SchedulerConfig, interactive: bool) -> None:
        runs.append((cfg, interactive))

    monkeypatch.setattr(cli, "_serve", serve)
    return runs


def cfg_of(*argv: str) -> SchedulerConfig:
    parser = cli.build_parser()
    return cli.config_from_args(cli.parse_args(parser, list(argv)))


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


# -- defaults --------------------------------------------------------------------------
def test_defaults():
    cfg = cfg_of(*LOCAL)
    assert cfg.ip_addrs == ["127.0.0.1"] and cfg.ext_ip_addrs == []
    assert (cfg.port, cfg.node_port, cfg.scheduler_port) == (
        config.client_port(), config.node_port(), config.scheduler_port()) == (9700, 9701, 9702)
    assert cfg.nodes == [] and cfg.policy == "default"
    assert cfg.node_secret == cfg.cluster_secret == ""
    assert cfg.pulse_interval is None and cfg.ping_interval is None
    assert cfg.zombie_interval == 60.0 and cfg.msg_timeout == config.MsgTimeout
    assert cfg.max_file_size == 0
    assert cfg.dest_path_prefix == default_dest_path_prefix()
    assert default_dest_path_prefix().endswith(os.path.join("dispy", "scheduler"))
    assert not (cfg.cooperative or cfg.cleanup_nodes or cfg.clean or cfg.debug or cfg.ipv4_udp_multicast)


def test_default_address_is_the_host_names():
    assert cfg_of().ip_addrs == [default_ip_addr()]


def test_ports_follow_dispy_port_unless_given():
    cfg = cfg_of(*LOCAL, "--dispy_port", "5000")
    assert (cfg.port, cfg.node_port, cfg.scheduler_port) == (5000, 5001, 5002)
    cfg = cfg_of(*LOCAL, "--dispy_port", "5000", "--node_port", "7000", "-p", "0")
    assert (cfg.port, cfg.node_port, cfg.scheduler_port) == (0, 7000, 5002)
    cfg = cfg_of(*LOCAL, "--port", "6000", "--scheduler_port", "0")
    assert (cfg.port, cfg.node_port, cfg.scheduler_port) == (6000, 9701, 0)


def test_dispy_names_of_address_options():
    # dispy's -i/--host, --ext_host and -n/--node (the documentation's cloud and SSH sections)
    cfg = cfg_of("--host", "127.0.0.1", "--host", "127.0.0.2", "--ext_host", "gw.example",
                 "--node", "127.0.0.5:9000")
    assert cfg.ip_addrs == ["127.0.0.1", "127.0.0.2"] and cfg.ext_ip_addrs == ["gw.example"]
    assert cfg.announced_addr("127.0.0.1") == "gw.example"
    assert cfg.node_addresses() == [("127.0.0.5", 9000)]


def test_values_are_carried():
    cfg = cfg_of("-i", "127.0.0.1", "-i", "127.0.0.2", "--ext_ip_addr", "gw.example", "--node_secret", "n",
                 "--cluster_secret", "c", "--pulse_interval", "1", "--ping_interval", "1000",
                 "--zombie_interval", "0.5", "--max_file_size", "2k", "--cooperative", "--cleanup_nodes",
                 "--clean", "--msg_timeout", "3", "--dest_path_prefix", "/tmp/x", "--ipv4_udp_multicast", "-d")
    assert cfg.ip_addrs == ["127.0.0.1", "127.0.0.2"] and cfg.ext_ip_addrs == ["gw.example"]
    assert cfg.announced_addr("127.0.0.1") == "gw.example"
    assert cfg.announced_addr("127.0.0.2") == "127.0.0.2"  # no --ext_ip_addr for the second
    assert cfg.announced_addr("10.0.0.9") == "10.0.0.9"
    assert (cfg.node_secret, cfg.cluster_secret) == ("n", "c")
    assert (cfg.pulse_interval, cfg.ping_interval, cfg.zombie_interval) == (1.0, 1000.0, 0.5)
    assert cfg.max_file_size == 2048 and cfg.msg_timeout == 3.0 and cfg.dest_path_prefix == "/tmp/x"
    assert cfg.cooperative and cfg.cleanup_nodes and cfg.clean and cfg.ipv4_udp_multicast and cfg.debug


def test_nodes_are_repeatable_with_optional_ports():
    cfg = cfg_of(*LOCAL, "-n", "node1", "--nodes", "10.1.2.3:1234", "-n", "[::1]:99", "-n", "fe80::1",
                 "--node_port", "8000")
    assert cfg.nodes == ["node1", "10.1.2.3:1234", "[::1]:99", "fe80::1"]
    assert cfg.node_addresses() == [("node1", 8000), ("10.1.2.3", 1234), ("::1", 99), ("fe80::1", 8000)]


def test_policy_flags():
    assert cfg_of(*LOCAL, "--fair_cluster_scheduler").policy == "fair"
    assert cfg_of(*LOCAL, "--early_cluster_scheduler").policy == "early"


def test_policy_flags_exclude_each_other(capsys):
    rc, _, err = run_main(capsys, *LOCAL, "--fair_cluster_scheduler", "--early_cluster_scheduler")
    assert rc == 2 and "not allowed with argument" in err and "--fair_cluster_scheduler" in err, err


def test_httpd_defaults_are_safe():
    # off; with --httpd: this host only (loopback), dispy's HTTPServerPort, no token, HTTP
    cfg = cfg_of(*LOCAL)
    assert not cfg.httpd
    cfg = cfg_of(*LOCAL, "--httpd")
    assert cfg.httpd and (cfg.http_host, cfg.http_port) == ("127.0.0.1", config.HTTPServerPort) == ("127.0.0.1", 8181)
    assert cfg.http_token is None and cfg.http_certfile is None and cfg.http_keyfile is None


def test_httpd_values_are_carried(certs):
    cert, key = str(certs / "cert.pem"), str(certs / "key.pem")
    cfg = cfg_of(*LOCAL, "--httpd", "--http_host", "127.0.0.7", "--http_port", "0", "--http_token", "s3cret",
                 "--http_certfile", cert, "--http_keyfile", key)
    assert (cfg.httpd, cfg.http_host, cfg.http_port, cfg.http_token) == (True, "127.0.0.7", 0, "s3cret")
    assert (cfg.http_certfile, cfg.http_keyfile) == (cert, key)


@pytest.mark.parametrize(("args", "text"), [
    (["--httpd", "--http_port", "65536"], "invalid --http_port 65536: must be in 0..65535"),
    (["--httpd", "--http_port", "-1"], "invalid --http_port -1"),
    (["--httpd", "--http_token", ""], "invalid --http_token: give 1 to 256 printable characters"),
    (["--httpd", "--http_token", "a b"], "invalid --http_token"),
    (["--httpd", "--http_keyfile", "k.pem"], "--http_keyfile needs --http_certfile"),
    (["--httpd", "--http_certfile", "/nonexistent/h.pem"],
     "--http_certfile/--http_keyfile: certfile '/nonexistent/h.pem' does not exist"),
    # the web monitor's options without it: refused, not ignored
    (["--http_port", "9000"], "--http_port: options of the web monitor, which runs only with --httpd"),
    (["--http_host", "127.0.0.2", "--http_token", "t"], "--http_host, --http_token: options of the web monitor"),
])
def test_bad_httpd_option_exits_2_naming_it(capsys, no_daemon, args, text):
    rc, _, err = run_main(capsys, *LOCAL, *args)
    assert rc == 2 and text in err, err
    assert no_daemon == []


def test_unloadable_http_certificate_exits_2(certs, capsys, no_daemon):
    rc, _, err = run_main(capsys, *LOCAL, "--httpd", "--http_certfile", str(certs / "garbage.pem"))
    assert rc == 2 and "--http_certfile/--http_keyfile: can't load the key and certificate" in err, err
    assert no_daemon == []


def test_httpd_options_in_help(capsys):
    rc, out, _ = run_main(capsys, "--help")
    assert rc == 0
    text = " ".join(out.split())
    for option in ("--httpd", "--http_host ADDR", "--http_port N", "--http_token TOKEN", "--http_certfile PATH",
                   "--http_keyfile PATH"):
        assert option in text, option
    assert "(default 127.0.0.1: this host only)" in text and "(default 8181; 0 picks a free one)" in text


def test_httpd_options_round_trip_through_a_config_file(tmp_path, capsys, no_daemon):
    path = tmp_path / "sched.cfg"
    rc, _, err = run_main(capsys, "--httpd", "--http_host", "127.0.0.3", "--http_port", "8282",
                          "--http_token", "tok", "--save_config", str(path))
    assert rc == 0, err
    assert dict(parse_ini(path.read_text())["dispyscheduler"]) == {
        "httpd": "true", "http_host": "127.0.0.3", "http_port": "8282", "http_token": "tok"}
    rc, _, err = run_main(capsys, *LOCAL, "--daemon", "--config", str(path), "--http_port", "0")
    assert rc == 0, err
    (cfg, _), = no_daemon
    assert (cfg.httpd, cfg.http_host, cfg.http_port, cfg.http_token) == (True, "127.0.0.3", 0, "tok")


def test_version(capsys):
    rc, out, _ = run_main(capsys, "--version")
    assert rc == 0 and out.strip() == "dispyscheduler 0.1.0"


# -- validation ------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "text"), [
    (["-p", "70000"], "invalid -p/--port 70000: must be in 0..65535"),
    (["--port", "-1"], "invalid -p/--port -1: must be in 0..65535"),
    (["--scheduler_port", "65536"], "invalid --scheduler_port 65536: must be in 0..65535"),
    (["--node_port", "0"], "invalid --node_port 0: must be in 1..65535"),
    (["--dispy_port", "0"], "invalid --dispy_port 0: must be in 1..65533"),
    (["--dispy_port", "65534"], "invalid --dispy_port 65534: must be in 1..65533"),
    (["--pulse_interval", "0.5"], "invalid --pulse_interval 0.5: must be from 1 to 600 seconds"),
    (["--pulse_interval", "601"], "invalid --pulse_interval 601: must be from 1 to 600 seconds"),
    (["--pulse_interval", "nan"], "invalid --pulse_interval nan"),
    (["--ping_interval", "0"], "invalid --ping_interval 0: must be from 1 to 1000 seconds"),
    (["--ping_interval", "1001"], "invalid --ping_interval 1001: must be from 1 to 1000 seconds"),
    (["--zombie_interval", "0"], "invalid --zombie_interval 0: must be > 0 minutes"),
    (["--max_file_size", "10x"], "invalid --max_file_size: invalid size '10x'"),
    (["--max_file_size", "-1"], "invalid --max_file_size"),
    (["--msg_timeout", "0"], "invalid --msg_timeout 0: must be > 0 seconds"),
    (["--msg_timeout", "soon"], "argument --msg_timeout: invalid float value: 'soon'"),
    (["--dest_path_prefix", ""], "--dest_path_prefix must not be empty"),
    (["-n", "host:port"], "invalid --nodes 'host:port'"),
    (["-n", "192.168.1.*"], "invalid --nodes '192.168.1.*'"),
    (["-n", "host:0"], "invalid --nodes 'host:0': the port must be in 1..65535"),
    (["-n", "host:70000"], "invalid --nodes 'host:70000': the port must be in 1..65535"),
    (["-n", "[::1"], "invalid --nodes '[::1'"),
    (["--ext_ip_addr", "a", "--ext_ip_addr", "b"], "2 --ext_ip_addr given for 1 -i addresses"),
    (["--node_keyfile", "k.pem"], "--node_keyfile needs --node_certfile"),
    (["--cluster_keyfile", "k.pem"], "--cluster_keyfile needs --cluster_certfile"),
    (["--node_certfile", "/nonexistent/n.pem"], "--node_certfile/--node_keyfile: certfile '/nonexistent/n.pem' "
                                                "does not exist"),
    (["--cluster_certfile", "/nonexistent/c.pem"], "--cluster_certfile/--cluster_keyfile: certfile "
                                                   "'/nonexistent/c.pem' does not exist"),
])
def test_bad_option_exits_2_naming_it(capsys, no_daemon, args, text):
    rc, _, err = run_main(capsys, *LOCAL, *args)
    assert rc == 2 and text in err, err
    assert no_daemon == []


def test_config_checks_its_own_fields():
    from dispy_core.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid scheduling policy 'fastest'"):
        SchedulerConfig(policy="fastest")
    with pytest.raises(ConfigError, match="-i/--ip_addr"):
        SchedulerConfig(ip_addrs=[])


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    assert certgen.main([str(d / "one.pem")]) == 0
    assert certgen.main([str(d / "cert.pem"), "--keyfile", str(d / "key.pem")]) == 0
    (d / "garbage.pem").write_text("not a certificate\n")
    return d


def test_tls_files_are_loaded_node_pair_as_client_cluster_pair_as_server(certs, monkeypatch):
    from dispy_core import tls

    calls: list[tuple[str, str, str | None]] = []
    real_client, real_server = tls.client_context, tls.server_context

    def client(cert: str, key: str | None = None) -> Any:
        calls.append(("client", cert, key))
        return real_client(cert, key)

    def server(cert: str, key: str | None = None) -> Any:
        calls.append(("server", cert, key))
        return real_server(cert, key)

    monkeypatch.setattr(tls, "client_context", client)
    monkeypatch.setattr(tls, "server_context", server)
    one, cert, key = str(certs / "one.pem"), str(certs / "cert.pem"), str(certs / "key.pem")
    cfg = cfg_of(*LOCAL, "--node_certfile", one, "--cluster_certfile", cert, "--cluster_keyfile", key)
    assert (cfg.node_certfile, cfg.node_keyfile, cfg.cluster_certfile, cfg.cluster_keyfile) == (one, None, cert, key)
    assert calls == [("client", one, None), ("server", cert, key)]


def test_unloadable_tls_file_exits_2(certs, capsys):
    rc, _, err = run_main(capsys, *LOCAL, "--cluster_certfile", str(certs / "garbage.pem"))
    assert rc == 2 and "--cluster_certfile/--cluster_keyfile: can't load the key and certificate" in err, err
    # a key without the certificate it belongs to
    rc, _, err = run_main(capsys, *LOCAL, "--node_certfile", str(certs / "one.pem"),
                          "--node_keyfile", str(certs / "key.pem"))
    assert rc == 2 and "--node_certfile/--node_keyfile: can't load" in err, err


# -- --save_config / --config --------------------------------------------------------------
def parse_ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    return cp


def test_save_config_to_stdout_leaves_out_host_specific_options(capsys, no_daemon):
    rc, out, err = run_main(capsys, "-i", "127.0.0.1", "--ext_ip_addr", "gw", "--node_secret", "n%1",
                            "-n", "a", "-n", "b:5", "--fair_cluster_scheduler", "-p", "0",
                            "--pulse_interval", "5", "--max_file_size", "1m", "-d", "--save_config")
    assert rc == 0, err
    assert no_daemon == []  # saving does not start the scheduler
    assert out.startswith("# dispyscheduler configuration")
    cp = parse_ini(out)
    assert cp.sections() == ["dispyscheduler"]
    assert dict(cp["dispyscheduler"]) == {"node_secret": "n%1", "nodes": "a\nb:5", "fair_cluster_scheduler": "true",
                                          "port": "0", "pulse_interval": "5.0", "max_file_size": "1m",
                                          "debug": "true"}
    assert "not saved (host-specific): --ip_addr, --ext_ip_addr" in err


def test_save_config_to_a_file_owner_only(tmp_path, capsys):
    path = tmp_path / "sched.cfg"
    path.write_text("old")
    os.chmod(path, 0o644)
    rc, out, err = run_main(capsys, "--cluster_secret", "c", "--save_config", str(path))
    assert rc == 0 and out == "" and err == "", err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the secrets
    assert dict(parse_ini(path.read_text())["dispyscheduler"]) == {"cluster_secret": "c"}


def test_save_config_to_an_unwritable_place_exits_1(tmp_path, capsys):
    rc, _, err = run_main(capsys, "--save_config", str(tmp_path / "no" / "such" / "dir.cfg"))
    assert rc == 1 and "can't save the configuration" in err


def test_config_round_trip_and_command_line_wins(tmp_path, capsys, no_daemon):
    path = tmp_path / "sched.cfg"
    rc, _, err = run_main(capsys, "--node_secret", "from-file", "--cluster_secret", "cs", "-p", "0",
                          "--scheduler_port", "7777", "-n", "a", "-n", "b:5", "--fair_cluster_scheduler",
                          "--zombie_interval", "2.5", "--max_file_size", "1k", "--cooperative",
                          "--save_config", str(path))
    assert rc == 0, err

    rc, _, err = run_main(capsys, *LOCAL, "--daemon", "--config", str(path))
    assert rc == 0, err
    (cfg, interactive), = no_daemon
    assert not interactive
    assert (cfg.node_secret, cfg.cluster_secret, cfg.port, cfg.scheduler_port) == ("from-file", "cs", 0, 7777)
    assert cfg.nodes == ["a", "b:5"] and cfg.policy == "fair"
    assert (cfg.zombie_interval, cfg.max_file_size, cfg.cooperative) == (2.5, 1024, True)

    no_daemon.clear()
    rc, _, err = run_main(capsys, *LOCAL, "--daemon", "--config", str(path), "-p", "1234", "-n", "c",
                          "--early_cluster_scheduler", "--node_secret", "cmd")
    assert rc == 0, err
    (cfg, _), = no_daemon
    assert (cfg.port, cfg.node_secret, cfg.cluster_secret) == (1234, "cmd", "cs")
    assert cfg.nodes == ["c"]  # replaces the file's list, not added to it
    assert cfg.policy == "early"  # replaces the file's policy: not a conflict


def test_save_config_merges_config(tmp_path, capsys):
    path = tmp_path / "sched.cfg"
    path.write_text("[dispyscheduler]\nnode_secret = x\nnodes = a\n  b\n")
    rc, out, err = run_main(capsys, "--config", str(path), "--clean", "--save_config")
    assert rc == 0, err
    assert dict(parse_ini(out)["dispyscheduler"]) == {"node_secret": "x", "nodes": "a\nb", "clean": "true"}


@pytest.mark.parametrize(("text", "message"), [
    ("[dispyscheduler]\nip_addr = 127.0.0.1\n", "unknown option 'ip_addr'"),
    ("[dispyscheduler]\nhttp_prot = 8181\n", "unknown option 'http_prot'"),
    ("[dispyscheduler]\nhttp_port = 8282\n", "--http_port: options of the web monitor, which runs only with --httpd"),
    ("[dispyscheduler]\nhttpd = true\nhttp_port = 70000\n", "invalid --http_port 70000"),
    ("[dispyscheduler]\npulse_interval = soon\n", "invalid value 'soon' for pulse_interval"),
    ("[dispyscheduler]\ncooperative = maybe\n", "invalid value 'maybe' for cooperative"),
    ("[dispynode]\ncpus = 1\n", "expected one [dispyscheduler] section"),
    ("[dispyscheduler]\npulse_interval = 900\n", "invalid --pulse_interval 900"),
    ("[dispyscheduler]\nfair_cluster_scheduler = true\nearly_cluster_scheduler = true\n",
     "--fair_cluster_scheduler and --early_cluster_scheduler exclude each other"),
])
def test_bad_config_file_exits_2(tmp_path, capsys, no_daemon, text, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    rc, _, err = run_main(capsys, *LOCAL, "--config", str(path))
    assert rc == 2 and message in err, err
    assert no_daemon == []


def test_missing_config_file_exits_2(tmp_path, capsys):
    rc, _, err = run_main(capsys, *LOCAL, "--config", str(tmp_path / "missing.cfg"))
    assert rc == 2 and "can't read --config" in err, err


# -- running the daemon (a fake one) ---------------------------------------------------------
class FakeDaemon:
    instances: list[FakeDaemon] = []

    def __init__(self, cfg: SchedulerConfig) -> None:
        self.cfg = cfg
        self.listening = [("127.0.0.1", 4321), ("127.0.0.2", 4322)]
        self.web_url = "http://127.0.0.1:8181/" if cfg.httpd else None
        self.closing = False
        self.calls: list[str] = []
        self.finish_on_end = True
        self.after_start: Any = None
        FakeDaemon.instances.append(self)

    async def run(self, started: Any) -> None:
        self.done = asyncio.Event()
        started(self)
        if self.after_start:
            self.after_start(self)
        await asyncio.wait_for(self.done.wait(), 10)

    def stop(self) -> None:
        self.calls.append("stop")
        self._end()

    def drain(self) -> None:
        self.calls.append("drain")
        self._end()

    def _end(self) -> None:
        self.closing = True
        if self.finish_on_end:
            self.done.set()

    def status(self) -> dict[str, Any]:
        return {"listening": self.listening, "policy": "default", "nodes": [], "clusters": []}


@pytest.fixture
def fake_daemon(monkeypatch):
    module = types.ModuleType("dispy_scheduler.daemon")
    module.Daemon = FakeDaemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dispy_scheduler.daemon", module)
    FakeDaemon.instances = []
    return FakeDaemon


REAL_SERVE = cli._serve  # (the no_daemon fixture replaces it in main)


def serve(monkeypatch, cfg: SchedulerConfig, interactive: bool, after_start: Any,
          finish_on_end: bool = True) -> FakeDaemon:
    """Run the real _serve on a FakeDaemon, calling ``after_start(daemon)`` once started."""
    init = FakeDaemon.__init__

    def setup(self: FakeDaemon, cfg: SchedulerConfig) -> None:
        init(self, cfg)
        self.after_start, self.finish_on_end = after_start, finish_on_end

    FakeDaemon.instances = []
    with monkeypatch.context() as mp:
        mp.setattr(FakeDaemon, "__init__", setup)
        asyncio.run(REAL_SERVE(cfg, interactive))
    (daemon,) = FakeDaemon.instances
    return daemon


@pytest.mark.parametrize(("sig", "call"), [(signal.SIGTERM, "stop"), (signal.SIGINT, "drain")])
def test_serve_prints_where_and_maps_signals(fake_daemon, monkeypatch, capsys, sig, call):
    daemon = serve(monkeypatch, SchedulerConfig(), False, lambda d: os.kill(os.getpid(), sig))
    assert daemon.calls == [call]
    assert capsys.readouterr().out == ("dispyscheduler serving clients at 127.0.0.1:4321\n"
                                       "dispyscheduler serving clients at 127.0.0.2:4322\n")


def test_serve_prints_the_web_monitor_s_url(fake_daemon, monkeypatch, capsys):
    serve(monkeypatch, SchedulerConfig(httpd=True), False, lambda d: os.kill(os.getpid(), signal.SIGTERM))
    assert capsys.readouterr().out == ("dispyscheduler serving clients at 127.0.0.1:4321\n"
                                       "dispyscheduler serving clients at 127.0.0.2:4322\n"
                                       "dispyscheduler web monitor at http://127.0.0.1:8181/\n")


def test_second_signal_ends_at_once(fake_daemon, monkeypatch):
    def signals(d: FakeDaemon) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)

    def fake_exit(code: int) -> None:
        raise SystemExit(code)  # (os._exit never returns)

    monkeypatch.setattr(logging, "shutdown", lambda: None)
    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as exc:
        serve(monkeypatch, SchedulerConfig(), False, signals, finish_on_end=False)
    assert exc.value.code == 1
    (daemon,) = FakeDaemon.instances
    assert daemon.calls == ["drain"]  # the second signal did not get to stop()


def test_console_quit_and_exit_act_as_signals(fake_daemon, monkeypatch):
    consoles: list[Any] = []

    class RecordingConsole:
        def __init__(self, daemon: Any, *, quit: Any, exit: Any) -> None:
            self.daemon, self.quit, self.exit = daemon, quit, exit
            consoles.append(self)

        def start(self) -> None:
            pass

    for command, call in (("quit", "stop"), ("exit", "drain")):
        monkeypatch.setattr(cli, "Console", RecordingConsole)
        FakeDaemon.instances = []
        daemon = serve(monkeypatch, SchedulerConfig(), True,
                       lambda d, c=command: getattr(consoles[-1], c)())
        assert consoles[-1].daemon is daemon and daemon.calls == [call]
    consoles.clear()
    serve(monkeypatch, SchedulerConfig(), False, lambda d: d.stop())
    assert consoles == []  # not interactive: no console
