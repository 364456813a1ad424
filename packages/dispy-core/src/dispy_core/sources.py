"""The source text of code shipped by value, so that job tracebacks on nodes show it.

A traceback line is the code object's file name (``co_filename``) and line number; the
source line under it is looked up by that file name in :mod:`linecache`. Code shipped by
value comes from files the node doesn't have (the client's ``__main__`` script, its own
modules, notebook cells), so without help a node's tracebacks would show file names and
line numbers only. :func:`dispy_core.serialization.dumps` keeps each code object's real
file name and reports which files the pickled code came from; the client reads those
files' text with :func:`read_sources` and sends it as the ``sources`` field of
:class:`~dispy_core.messages.Compute` (and, for files only a job's own code or arguments
use, of :class:`~dispy_core.messages.JobSpec`): control data, ``{file name: text}``,
never pickled. The node checks it with :func:`check_sources` and the processes that run
user code register it with :func:`install_sources` before they run it.

Code with no file behind it (``python -c``, code typed at an old-style interactive
prompt: ``<string>``, ``<stdin>``) has no text to send: its frames show the file name and
line number, as Python's own tracebacks do.
"""

from __future__ import annotations

import linecache
import logging
from collections.abc import Container, Iterable
from typing import Any

__all__ = ["MAX_SOURCE_CHARS", "MAX_NAME_CHARS", "read_sources", "check_sources", "install_sources"]

log = logging.getLogger(__name__)

#: A file larger than this (in characters) is not sent: its frames show file names and
#: line numbers only. Real source files are far smaller; this bounds what a generated
#: module can add to every computation.
MAX_SOURCE_CHARS = 1 << 20
#: Longest file name accepted from a peer.
MAX_NAME_CHARS = 4096


def read_sources(names: Iterable[str], skip: Container[str] = ()) -> dict[str, str]:
    """``{name: text}`` for the files ``names`` (code objects' ``co_filename``) whose
    text this process can read, except those in ``skip`` (already sent).

    Uses :mod:`linecache`, so it also finds what is not on disk but registered there:
    notebook cells (IPython registers each cell) and Python 3.13's interactive prompt.
    Names with no text are left out, and so is ``<string>``, the name of all code that
    ``exec()``, ``compile()`` and ``python -c`` make: the text linecache holds under it
    (Python 3.13 keeps ``python -c``'s there) may be another code's.
    """
    out: dict[str, str] = {}
    for name in sorted(set(names)):
        if (name in skip or not isinstance(name, str) or not name or name == "<string>"
                or len(name) > MAX_NAME_CHARS):
            continue
        linecache.checkcache(name)  # the file may have changed since it was cached
        lines = linecache.getlines(name)
        if not lines:
            continue
        text = "".join(lines)
        if len(text) > MAX_SOURCE_CHARS:
            log.debug("source of %s is %d characters; not sent (job tracebacks show its line "
                      "numbers only)", name, len(text))
            continue
        out[name] = text
    return out


def check_sources(value: Any) -> dict[str, str]:
    """``value`` if it is a well-formed ``sources`` field from a peer; ValueError (with
    the reason) if not."""
    if not isinstance(value, dict):
        raise ValueError(f"sources must be a mapping of file names to text, not {type(value).__name__}")
    for name, text in value.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or "\0" in name:
            raise ValueError(f"sources: bad file name {str(name)[:80]!r}")
        if not isinstance(text, str):
            raise ValueError(f"sources: the text of {name[:80]!r} is not a string")
    return value


def install_sources(sources: dict[str, str]) -> None:
    """Make tracebacks in this process show ``sources`` (from :func:`check_sources`)
    under their file names.

    The entries are registered the way :mod:`linecache` registers code it did not read
    from disk (no modification time), so ``linecache.checkcache`` keeps them: the client's
    text wins over a file the node may have at the same path (the code that runs is the
    client's).
    """
    for name, text in sources.items():
        # Split at "\n" only, as the client's linecache did (str.splitlines would also
        # split at form feeds and other separators and shift the line numbers).
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        lines = [line + "\n" for line in lines]
        linecache.cache[name] = (len(text), None, lines, name)
