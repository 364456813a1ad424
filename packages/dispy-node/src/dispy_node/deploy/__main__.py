"""``python -m dispy_node.deploy``: list, print or copy dispynode's deployment files.

    python -m dispy_node.deploy                    # the files, and what each is for
    python -m dispy_node.deploy Dockerfile         # print one (redirect it to a file)
    python -m dispy_node.deploy --copy DIR         # write them all into DIR

``--copy`` refuses (exit 1, writing nothing) when DIR already holds a file of the same
name, unless ``--force`` is given: an operator's edited copy is not overwritten silently.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import FILES, text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dispy_node.deploy",
        description="dispynode's deployment files (a Dockerfile, a systemd unit), shipped with dispy-node.",
    )
    p.add_argument("name", nargs="?", choices=list(FILES), help="print this file")
    p.add_argument("--copy", metavar="DIR", help="write every file into DIR (made if missing)")
    p.add_argument("--force", action="store_true", help="with --copy: overwrite files already in DIR")
    return p


def copy(directory: str, force: bool = False) -> list[str]:
    """Write every file into ``directory``; return their paths. Refuses (FileExistsError,
    nothing written) if one exists there already and ``force`` is false."""
    targets = [os.path.join(directory, name) for name in FILES]
    if not force:
        present = [t for t in targets if os.path.lexists(t)]
        if present:
            raise FileExistsError(f"{', '.join(present)} already exist(s); nothing was written "
                                  "(--force overwrites)")
    os.makedirs(directory, exist_ok=True)
    for name, target in zip(FILES, targets):
        with open(target, "w", encoding="utf-8") as f:
            f.write(text(name))
    return targets


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.copy is not None:
        if args.name is not None:
            build_parser().error("give a file name or --copy, not both")
        try:
            for path in copy(args.copy, args.force):
                print(path)
        except OSError as e:
            print(f"python -m dispy_node.deploy: {e}", file=sys.stderr)
            return 1
        return 0
    if args.name is not None:
        sys.stdout.write(text(args.name))
        return 0
    here = os.path.dirname(os.path.abspath(__file__))
    print(f"dispynode's deployment files (in {here}):")
    for name, what in FILES.items():
        print(f"  {name:<18} {what}")
    print("print one: python -m dispy_node.deploy NAME; copy all: python -m dispy_node.deploy --copy DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
