"""The INI files of ``--save_config [FILE]`` and ``--config FILE``, shared by the daemons'
command lines (dispynode, dispyscheduler).

A file has one section, named after the program, with one ``key = value`` line per
option whose value differs from the parser's default. Keys are argparse ``dest`` names;
flags are ``true``/``false``; a repeatable option (``action="append"``) holds one value
per line. Options in ``not_saved`` (host-specific ones, and the config options
themselves) are never written, and a file naming one is refused, so that a saved file
can be used on another host.

Reading a file is the one I/O here; the CLI decides what to do with the values (they
become the parser's defaults, so the command line overrides them).
"""

from __future__ import annotations

import argparse
import configparser
import io
import os
from collections.abc import Collection
from typing import Any

from .errors import ConfigError

__all__ = ["save_config", "read_config", "write_config"]

#: Options of every such CLI that are never in a file, whatever the program adds.
_MACHINERY = frozenset({"save_config", "config", "help", "version"})


def _saveable(parser: argparse.ArgumentParser, not_saved: Collection[str]) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in not_saved and a.option_strings}


def _is_append(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def save_config(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str,
                not_saved: Collection[str], program: str) -> str:
    """The text of a config file holding the options in ``args`` that differ from
    ``parser``'s defaults, leaving out ``not_saved``; its comment names ``program``."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.add_section(section)
    for dest, action in _saveable(parser, not_saved).items():
        value = getattr(args, dest)
        if value == action.default:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif _is_append(action) and isinstance(value, list):
            text = "\n".join(str(v) for v in value)  # continuation lines, one value each
        else:
            text = str(value)
        cp.set(section, dest, text)
    out = io.StringIO()
    out.write(f"# {program} configuration ({program} --config FILE)\n")
    cp.write(out)
    return out.getvalue()


def read_config(parser: argparse.ArgumentParser, path: str, section: str,
                not_saved: Collection[str]) -> dict[str, Any]:
    """The options in config file ``path`` (one ``[section]``), as argparse defaults:
    converted with each option's ``type``, flags as booleans, repeatable options as
    lists. ConfigError naming the file and the key if the file is unusable."""
    cp = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"can't read --config {path!r}: {exc}") from None
    unknown_sections = [s for s in cp.sections() if s != section]
    if unknown_sections or not cp.has_section(section):
        raise ConfigError(f"--config {path!r}: expected one [{section}] section, "
                          f"found {cp.sections() or 'none'}")
    actions = _saveable(parser, not_saved)
    specific = [d for d in not_saved if d not in _MACHINERY]
    values: dict[str, Any] = {}
    for key, text in cp.items(section):
        action = actions.get(key)
        if action is None:
            hint = ""
            if specific:
                names = ", ".join(specific[:-1]) + (" and " if len(specific) > 1 else "") + specific[-1]
                hint = f" (host-specific options such as {names} can't be set in a config file)"
            raise ConfigError(f"--config {path!r}: unknown option {key!r}; allowed: "
                              f"{', '.join(sorted(actions))}{hint}")
        convert = action.type if callable(action.type) else str
        try:
            if action.nargs == 0:  # a flag
                values[key] = cp.getboolean(section, key)
            elif _is_append(action):
                values[key] = [convert(line.strip()) for line in text.splitlines() if line.strip()]
            else:
                values[key] = convert(text)
        except ValueError as exc:
            raise ConfigError(f"--config {path!r}: invalid value {text!r} for {key}: {exc}") from None
    return values


def write_config(path: str, text: str) -> None:
    """Write a saved configuration to ``path``, readable by its owner only (it may hold
    secrets). Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    except OSError:
        os.close(fd)
        raise
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)
