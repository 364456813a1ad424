"""dispy_core.inifile: the --save_config / --config files of the daemons' CLIs."""

from __future__ import annotations

import argparse
import configparser
import os
import stat

import pytest

from dispy_core import inifile
from dispy_core.errors import ConfigError

NOT_SAVED = ("host", "save_config", "config", "help", "version")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prog")
    p.add_argument("--host", default=None)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--ratio", type=float, default=None)
    p.add_argument("--secret", default="")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--peer", action="append", default=None)
    p.add_argument("--save_config", nargs="?", const="-", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--version", action="version", version="1")
    p.add_argument("positional", nargs="?")  # not an option: never saved
    return p


def test_saves_what_differs_from_the_defaults_except_not_saved():
    p = parser()
    args = p.parse_args(["--host", "h", "--count", "3", "--ratio", "0.5", "--secret", "a%b", "--flag",
                         "--peer", "x", "--peer", "y:1", "--save_config", "pos"])
    text = inifile.save_config(p, args, "sect", NOT_SAVED, "prog")
    assert text.startswith("# prog configuration (prog --config FILE)\n")
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp.sections() == ["sect"]
    assert dict(cp["sect"]) == {"ratio": "0.5", "secret": "a%b", "flag": "true", "peer": "x\ny:1"}


def test_round_trip(tmp_path):
    p = parser()
    args = p.parse_args(["--count", "7", "--ratio", "2", "--flag", "--peer", "x", "--peer", "y", "--secret", "%s"])
    path = tmp_path / "c.ini"
    inifile.write_config(str(path), inifile.save_config(p, args, "sect", NOT_SAVED, "prog"))
    values = inifile.read_config(parser(), str(path), "sect", NOT_SAVED)
    assert values == {"count": 7, "ratio": 2.0, "flag": True, "peer": ["x", "y"], "secret": "%s"}
    # as defaults, the command line wins
    p = parser()
    p.set_defaults(**values)
    args = p.parse_args(["--count", "9"])
    assert (args.count, args.ratio, args.flag, args.peer) == (9, 2.0, True, ["x", "y"])


def test_flags_read_as_booleans(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("[sect]\nflag = no\n")
    assert inifile.read_config(parser(), str(path), "sect", NOT_SAVED) == {"flag": False}


@pytest.mark.parametrize(("text", "message"), [
    ("[sect]\nhost = h\n", "unknown option 'host'; allowed: count, flag, peer, ratio, secret "
                           "(host-specific options such as host can't be set in a config file)"),
    ("[sect]\nsave_config = x\n", "unknown option 'save_config'"),
    ("[sect]\nbogus = 1\n", "unknown option 'bogus'"),
    ("[sect]\ncount = many\n", "invalid value 'many' for count"),
    ("[sect]\nflag = perhaps\n", "invalid value 'perhaps' for flag"),
    ("[other]\ncount = 1\n", "expected one [sect] section, found ['other']"),
    ("[sect]\ncount = 1\n[more]\n", "expected one [sect] section, found ['sect', 'more']"),
    ("count = 1\n", "can't read --config"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "c.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        inifile.read_config(parser(), str(path), "sect", NOT_SAVED)
    assert message in str(exc.value) and repr(str(path)) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="can't read --config"):
        inifile.read_config(parser(), str(tmp_path / "missing.ini"), "sect", NOT_SAVED)


def test_write_config_is_owner_only_even_over_an_existing_file(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("old, longer text")
    os.chmod(path, 0o644)
    inifile.write_config(str(path), "[sect]\n")
    assert path.read_text() == "[sect]\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(OSError):
        inifile.write_config(str(tmp_path / "no" / "c.ini"), "")


# -- what the daemons' CLIs do with the files ---------------------------------------------
def cli_parser() -> argparse.ArgumentParser:
    p = parser()
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fast", action="store_true")
    group.add_argument("--slow", action="store_true")
    return p


def test_parse_args_lets_the_command_line_win(tmp_path):
    path = tmp_path / "saved.ini"
    p = cli_parser()
    saved = p.parse_args(["--count", "5", "--peer", "a", "--peer", "b", "--fast"])
    path.write_text(inifile.save_config(p, saved, "sect", NOT_SAVED, "prog"))
    args = inifile.parse_args(cli_parser(), ["--config", str(path)], "sect", NOT_SAVED)
    assert (args.count, args.peer, args.fast, args.slow) == (5, ["a", "b"], True, False)
    # a repeatable option replaces the file's list; a group's option the file's choice
    args = inifile.parse_args(cli_parser(), ["--config", str(path), "--count", "7", "--peer", "c", "--slow"],
                              "sect", NOT_SAVED)
    assert (args.count, args.peer, args.fast, args.slow) == (7, ["c"], False, True)
    assert inifile.parse_args(cli_parser(), ["--count", "2"], "sect", NOT_SAVED).count == 2


def test_parse_args_exits_2_on_an_unusable_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        inifile.parse_args(cli_parser(), ["--config", str(tmp_path / "missing.ini")], "sect", NOT_SAVED)
    assert exc.value.code == 2 and "can't read --config" in capsys.readouterr().err


def test_save_command(tmp_path, capsys):
    args = parser().parse_args(["--host", "h", "--count", "4", "--save_config"])
    assert inifile.save_command(parser(), args, "sect", NOT_SAVED, "prog", "host-specific") == 0
    out, err = capsys.readouterr()
    assert out == inifile.save_config(parser(), args, "sect", NOT_SAVED, "prog")
    assert "count = 4" in out and "host" not in out.replace("# prog", "")
    assert err == "prog: not saved (host-specific): --host\n"
    path = tmp_path / "saved.ini"
    args = parser().parse_args(["--count", "4", "--save_config", str(path)])
    assert inifile.save_command(parser(), args, "sect", NOT_SAVED, "prog", "host-specific") == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and "count = 4" in path.read_text()
    assert capsys.readouterr() == ("", "")
    args = parser().parse_args(["--save_config", str(tmp_path / "no" / "such" / "dir.ini")])
    assert inifile.save_command(parser(), args, "sect", NOT_SAVED, "prog", "host-specific") == 1
    assert "prog: can't save the configuration in " in capsys.readouterr().err
