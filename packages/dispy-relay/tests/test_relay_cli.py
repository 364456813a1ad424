"""The dispynetrelay command line: every option described and used, bad values refused
(exit 2, naming the option), --save_config/--config, and the real command started and
stopped (on a loopback address: it sends no discovery request from one)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dispy_core import config
from dispy_core.errors import ConfigError
from dispy_core.testing import RelayProcess, wait_until
from dispy_relay import cli

OPTIONS = ["-d", "--debug", "-i", "--ip_addr", "--scheduler_node", "-p", "--dispy_port", "--relay_port",
           "--scheduler_port", "--node_port", "-s", "--secret", "--certfile", "--keyfile", "--ipv4_udp_multicast",
           "--ping_interval", "--daemon", "--save_config", "--config", "--version"]


def cfg(*argv: str):
    return cli.config_from_args(cli.parse_args(cli.build_parser(), ["-i", "127.0.0.1", *argv]))


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text, option
    for action in cli.build_parser()._actions:
        assert action.help, action.option_strings  # none undescribed


def test_defaults_follow_the_port_family():
    c = cfg()
    assert (c.relay_port, c.scheduler_port, c.node_port) == (config.node_port(), config.client_port(),
                                                             config.node_port())
    c = cfg("-p", "5000")
    assert (c.relay_port, c.scheduler_port, c.node_port) == (5001, 5000, 5001)
    c = cfg("-p", "5000", "--relay_port", "6000", "--scheduler_port", "6001", "--node_port", "6002")
    assert (c.relay_port, c.scheduler_port, c.node_port) == (6000, 6001, 6002)


def test_every_option_reaches_the_config(tmp_path):
    c = cfg("-i", "127.0.0.2", "--scheduler_node", "10.0.0.1", "--scheduler_node", "10.0.0.2", "-s", "x",
            "--ipv4_udp_multicast", "--ping_interval", "5", "-d")
    assert c.ip_addrs == ["127.0.0.1", "127.0.0.2"]
    assert c.scheduler_nodes == ["10.0.0.1", "10.0.0.2"]
    assert (c.secret, c.ipv4_udp_multicast, c.ping_interval, c.debug) == ("x", True, 5.0, True)


@pytest.mark.parametrize(("argv", "message"), [
    (["--relay_port", "70000"], "invalid --relay_port 70000"),
    (["--scheduler_port", "-1"], "invalid --scheduler_port -1"),
    (["-p", "0"], "invalid --dispy_port 0"),
    (["--ping_interval", "0.1"], "ping_interval must be a number of seconds from 1 to 1000"),
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    (["--certfile", "/nonexistent/cert.pem"], "cert.pem"),
])
def test_bad_values_exit_2_naming_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-i", "127.0.0.1", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_config_with_a_bad_value_is_a_config_error():
    with pytest.raises(ConfigError):
        cfg("--relay_port", "65536")


def test_save_config_and_config(tmp_path, capsys):
    path = tmp_path / "relay.ini"
    assert cli.main(["-i", "127.0.0.1", "-s", "sec", "--scheduler_node", "10.0.0.1", "--relay_port", "4000",
                     "--ping_interval", "7", "--save_config", str(path)]) == 0
    text = path.read_text()
    assert "[dispynetrelay]" in text and "127.0.0.1" not in text  # -i is host-specific
    c = cfg("--config", str(path))
    assert (c.secret, c.scheduler_nodes, c.relay_port, c.ping_interval) == ("sec", ["10.0.0.1"], 4000, 7.0)
    c = cfg("--config", str(path), "--relay_port", "4001")  # the command line wins
    assert c.relay_port == 4001


def test_the_command_starts_serves_and_stops():
    with RelayProcess("127.0.0.33", "-s", "sec", "--scheduler_port", "0") as relay:
        assert relay.port > 0 and relay.alive()
        assert wait_until(lambda: "serving loopback addresses only: no discovery requests" in relay.log, 10), relay.log
        rc = relay.stop()
    assert rc == 0


def test_version():
    out = subprocess.run([sys.executable, "-m", "dispy_relay.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("dispynetrelay ")
