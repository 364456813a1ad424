"""The INI files of ``--save_config [FILE]`` and ``--config FILE``, shared by the daemons'
command lines (dispynode, dispyscheduler).

A file has one section, named after the program, with one ``key = value`` line per
option whose value differs from the parser's default. Keys are argparse ``dest`` names;
flags are ``true``/``false``; a repeatable option (``action="append"``) holds one value
per line. Options in ``not_saved`` (host-specific ones, and the config options
themselves) are never written, and a file naming one is refused, so that a saved file
can be used on another host.

:func:`parse_args` reads a ``--config`` file into the parser's defaults (so the command
line overrides them), and :func:`save_command` carries out ``--save_config``: the two
things a daemon's CLI does with these files.
"""

from __future__ import annotations

import argparse
import configparser
import io
import os
import sys
from collections.abc import Collection, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["save_config", "read_config", "write_config", "parse_args", "save_command"]

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


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, section: str,
               not_saved: Collection[str]) -> argparse.Namespace:
    """The arguments, merged with ``--config``'s file (one ``[section]``): the command
    line wins. A repeatable option given on the command line replaces the file's list
    (argparse would add to it), and an option of a mutually exclusive group given there
    replaces the file's choice in that group. Exits 2 (argparse's error) on bad options
    or an unusable file."""
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    try:
        values = read_config(parser, args.config, section, not_saved)
    except ConfigError as exc:
        parser.error(str(exc))  # exits 2
    given = {a.dest for a in parser._actions if getattr(args, a.dest, a.default) != a.default}
    for action in parser._actions:
        if _is_append(action) and action.dest in given:
            values.pop(action.dest, None)
    for group in parser._mutually_exclusive_groups:
        dests = [a.dest for a in group._group_actions]
        if given.intersection(dests):
            for dest in dests:
                values.pop(dest, None)
    parser.set_defaults(**values)
    return parser.parse_args(argv)


def save_command(parser: argparse.ArgumentParser, args: argparse.Namespace, section: str,
                 not_saved: Collection[str], program: str, specific: str) -> int:
    """``--save_config [FILE]``: save the options in ``args`` that differ from the
    defaults of ``parser`` (a fresh one, without ``--config``'s defaults, so that
    everything in effect is saved) to FILE, readable by its owner only, or to stdout for
    ``-``. ``not_saved`` options that were given are named on stderr as ``specific``
    (e.g. "host-specific") and left out. Returns the exit status: 0, or 1 if the file
    can't be written (said on stderr)."""
    skipped = [f"--{d}" for d in not_saved if d not in _MACHINERY and getattr(args, d, None) is not None]
    if skipped:
        print(f"{program}: not saved ({specific}): {', '.join(skipped)}", file=sys.stderr)
    text = save_config(parser, args, section, not_saved, program)
    if args.save_config == "-":
        sys.stdout.write(text)
        return 0
    try:
        write_config(args.save_config, text)
    except OSError as exc:
        print(f"{program}: can't save the configuration in {args.save_config!r}: {exc}", file=sys.stderr)
        return 1
    return 0
