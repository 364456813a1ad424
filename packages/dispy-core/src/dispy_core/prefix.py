"""A daemon's ``--dest_path_prefix``: what the daemon created there, and ``--clean``.

Rule: a daemon removes only what it created. A user may point ``--dest_path_prefix`` at a
directory holding their own files (by mistake, or to share a disk); those are never
touched, by ``--clean`` or by anything else the daemon does.

Each daemon keeps a *record* in the prefix, the file ``.<daemon>-prefix`` (for example
``.dispynode-prefix``): a comment line, then one JSON string per line, each the path
(relative to the prefix, ``/``-separated) of a directory the daemon created there, when
the daemon did not create its parent too (so ``a`` stands for ``a/b/c`` made at once).
A directory the daemon created is written to the record before anything is put in it, and
the record is replaced atomically (written to ``.<daemon>-prefix.<pid>.tmp``, then renamed),
so a crash leaves an old or a new record, never a torn one.

``--clean`` looks before it writes anything: it lists the prefix, and if any top-level entry
is neither the record (nor its temporary) nor the first part of a recorded path, it refuses
(:class:`CleanRefused`, naming what is there) and removes nothing. Otherwise it removes every
recorded entry. A prefix that held other files when the daemon first used it is used all the
same, but ``--clean`` refuses it for as long as they are there.

This module is shared by dispynode and dispyscheduler (neither depends on the other); like
:mod:`dispy_core.daemon_cli` it is daemon-side code, doing file I/O only when called.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["DaemonPrefix", "CleanRefused", "remove_tree"]

log = logging.getLogger(__name__)

#: How many names a refusal lists before "(and N more)".
_LISTED = 5


class CleanRefused(ConfigError):
    """Raised by :meth:`DaemonPrefix.clean` when the prefix holds entries the daemon did not
    create; the message names them, and nothing has been removed."""


def remove_tree(path: str) -> None:
    """Remove a file, link or directory tree (a link is removed, never followed), making
    read-only parts writable first; logs what stays."""

    def retry(func: Any, p: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError as exc:
            log.warning("could not remove %s: %s", p, exc)

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:  # pragma: no cover - Python 3.11
        shutil.rmtree(path, onerror=retry)


def _valid(rel: Any) -> bool:
    """A recorded path: relative, '/'-separated, no '.', '..' or empty parts."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        return False
    return all(p not in ("", ".", "..") for p in rel.split("/"))


class DaemonPrefix:
    """The prefix directory ``path`` of the daemon ``daemon`` (``"dispynode"``,
    ``"dispyscheduler"``). Create it, then :meth:`clean` (if asked) and :meth:`open`;
    directories made with :meth:`mkdir` or announced with :meth:`record` are the daemon's.

    Several daemons may share a prefix (nodes on one host with the default prefix): the
    record on disk is the truth, and every change to it is read, changed and written back
    under an exclusive ``flock`` of the prefix directory (and :attr:`lock` in this
    process, reentrant, which a caller may hold to make a name and record it in one step).
    """

    def __init__(self, path: str, daemon: str) -> None:
        self.path = os.path.realpath(path)
        self.daemon = daemon
        self.record_name = f".{daemon}-prefix"
        self.lock = threading.RLock()
        self._depth = 0  # nesting of _locked() in this process (flock is taken once)

    @property
    def record_path(self) -> str:
        return os.path.join(self.path, self.record_name)

    # -- the record ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None  # nothing to guard yet (clean() of a missing prefix)
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                yield
            finally:
                self._depth = 0
                if fd is not None:
                    os.close(fd)  # releases the flock

    def _read(self) -> set[str]:
        try:
            with open(self.record_path, encoding="utf-8", errors="surrogateescape") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return set()
        out = set()
        for line in lines:
            if not line.startswith('"'):
                continue  # the comment, or a line of a record from an older version
            try:
                rel = json.loads(line)
            except ValueError:
                continue
            if _valid(rel):
                out.add(rel)
        return out

    def _write(self, recorded: set[str]) -> None:
        header = (f"# {self.daemon} created the entries of this directory listed below (one JSON "
                  f"string a line); '{self.daemon} --clean' removes only these, and refuses while "
                  "anything else is here.\n")
        tmp = os.path.join(self.path, f"{self.record_name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(header)
            for rel in sorted(recorded):
                fh.write(json.dumps(rel) + "\n")
        os.replace(tmp, self.record_path)

    def _own(self, name: str, recorded: set[str]) -> bool:
        """Whether top-level entry ``name`` is the daemon's."""
        if name == self.record_name or (name.startswith(self.record_name + ".") and name.endswith(".tmp")):
            return True  # the record, or a temporary of it a crash left
        return any(rel == name or rel.startswith(name + "/") for rel in recorded)

    def foreign(self) -> list[str]:
        """Top-level entries of the prefix the daemon did not create (directories with a
        trailing '/'), sorted; [] when the prefix does not exist."""
        with self._locked():
            try:
                entries = list(os.scandir(self.path))
            except FileNotFoundError:
                return []
            recorded = self._read()
            return sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
                          for e in entries if not self._own(e.name, recorded))

    # -- start ----------------------------------------------------------------------------
    def clean(self) -> int:
        """``--clean``: remove every entry the record lists; returns how many were there.

        Raises :class:`CleanRefused` (before anything is removed or written) if the prefix
        holds anything else. A prefix that does not exist is clean already.
        """
        if not os.path.lexists(self.path):
            return 0
        if not os.path.isdir(self.path):
            raise CleanRefused(f"--clean: refusing to clean {self.path}: it is not a directory")
        with self._locked():
            foreign = self.foreign()
            if foreign:
                shown = ", ".join(foreign[:_LISTED])
                more = f" (and {len(foreign) - _LISTED} more)" if len(foreign) > _LISTED else ""
                raise CleanRefused(
                    f"--clean: refusing to clean {self.path}: it holds files {self.daemon} did not "
                    f"create: {shown}{more}; nothing was removed. Point --dest_path_prefix at a "
                    "directory of its own (a new or empty one)")
            recorded = self._read()
            removed = 0
            for rel in sorted(recorded):
                if any(rel.startswith(other + "/") for other in recorded):
                    continue  # inside another recorded entry: removed with it
                path = os.path.join(self.path, *rel.split("/"))
                if os.path.lexists(path):
                    remove_tree(path)
                    removed += 1
            for name in os.listdir(self.path):  # temporaries of the record a crash left
                if name != self.record_name and self._own(name, set()):
                    remove_tree(os.path.join(self.path, name))
            if os.path.lexists(self.record_path):
                self._write(set())
            return removed

    def open(self) -> None:
        """Create the prefix if it is missing (mode 0711: whoever uses it may reach their
        own directory but can't list the others), tidy the record (entries that are gone
        are dropped) and write it."""
        with self.lock:
            if not os.path.isdir(self.path):
                os.makedirs(self.path, mode=0o711, exist_ok=True)
                os.chmod(self.path, 0o711)
            with self._locked():
                self._write({rel for rel in self._read()
                             if os.path.lexists(os.path.join(self.path, *rel.split("/")))})
                foreign = self.foreign()
        if foreign:
            log.info("%s holds entries %s did not create (%s%s): it is used, but --clean will "
                     "refuse to clean it", self.path, self.daemon, ", ".join(foreign[:_LISTED]),
                     f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else "")

    # -- what the daemon creates ----------------------------------------------------------
    @staticmethod
    def _within(rel: str, recorded: set[str]) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:i]) in recorded for i in range(1, len(parts) + 1))

    def created(self, rel: str) -> bool:
        """True if the daemon created ``rel`` (relative to the prefix) or a directory
        holding it."""
        with self._locked():
            return self._within(rel, self._read())

    def record(self, rel: str) -> None:
        """Note that the daemon created directory ``rel`` (relative, '/'-separated)."""
        if not _valid(rel):
            raise ValueError(f"not a relative path: {rel!r}")
        with self._locked():
            recorded = self._read()
            if not self._within(rel, recorded):
                self._write(recorded | {rel})

    def forget(self, rel: str) -> None:
        """Directory ``rel`` is gone: drop it (and anything recorded inside it)."""
        with self._locked():
            recorded = self._read()
            gone = {r for r in recorded if r == rel or r.startswith(rel + "/")}
            if gone:
                self._write(recorded - gone)

    def mkdir(self, rel: str, mode: int = 0o700, exist_ok: bool = True) -> str:
        """The directory ``rel`` under the prefix, created (and recorded) if there is no
        entry of that name; returns its path. An existing entry is left as it is (or,
        without ``exist_ok``, FileExistsError is raised)."""
        if not _valid(rel):
            raise ValueError(f"not a relative path: {rel!r}")
        path = os.path.join(self.path, *rel.split("/"))
        with self._locked():
            if os.path.lexists(path):
                if not exist_ok:
                    raise FileExistsError(f"{path} exists")
                return path
            # recorded first: a crash in between leaves a name the next start drops, never
            # a directory of ours that the record does not list
            fresh = not self.created(rel)
            if fresh:
                self.record(rel)
            try:
                os.mkdir(path, mode)  # never follows a link: any entry there is EEXIST
            except BaseException as exc:
                if fresh:
                    self.forget(rel)
                if isinstance(exc, FileExistsError) and exist_ok:
                    return path  # made meanwhile by someone else: not ours
                raise
            os.chmod(path, mode)  # exactly this mode, whatever the umask
            return path
