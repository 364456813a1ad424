"""Which files a node already holds in a computation directory, so that a client reusing a
``dest_path`` left with ``cleanup=False`` need not send them again.

The client describes each file it would send as a :class:`~dispy_core.messages.FileDigest`
(name, size, mtime, SHA-256). The node answers with the names of the files it holds
*identical* (:meth:`FileDigest.same_file`); those travel as ``Compute.kept``, without
their bytes, and are checked once more when the Compute arrives (a computation sharing
the directory may have replaced one meanwhile: the node then names it in
``ComputeFailed.missing`` and the client sends it).

Hashing a large file takes a while, so digests are cached by the file's identity
(device, inode, size, mtime and ctime in nanoseconds: any write or replacement changes
one of them) and computed in a thread, never in the node's event loop. Files are opened
with ``O_NOFOLLOW`` and must be regular files: a link planted in the directory can't
make the node read (or vouch for) a file elsewhere. Only plain base names are looked at.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable

from dispy_core.messages import FileDigest

from .paths import FileRefused, check_file_name

__all__ = ["DigestCache", "check_digests", "MAX_QUERY_FILES"]

#: Files one FilesQuery may ask about (more is a malformed request).
MAX_QUERY_FILES = 10_000

_CHUNK = 1 << 20
_Identity = tuple[int, int, int, int, int]


class DigestCache:
    """SHA-256 digests of files on this node, cached by identity (thread safe)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[_Identity, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.hashed = 0  # files actually read and hashed (cache misses), for tests and logs

    def digest(self, path: str) -> FileDigest | None:
        """The digest of the regular file at ``path`` (not following a final symbolic
        link), or None if there is no such file."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            with self._lock:
                hit = self._cache.get(path)
                if hit is not None and hit[0] == ident:
                    self._cache.move_to_end(path)
                    sha = hit[1]
                else:
                    sha = ""
            if not sha:
                h = hashlib.sha256()
                while chunk := os.read(fd, _CHUNK):
                    h.update(chunk)
                sha = h.hexdigest()
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != ident[2:]:
                    return None  # written while we read it: vouch for nothing
                with self._lock:
                    self.hashed += 1
                    self._cache[path] = (ident, sha)
                    self._cache.move_to_end(path)
                    while len(self._cache) > self.max_entries:
                        self._cache.popitem(last=False)
            return FileDigest(os.path.basename(path), st.st_size, st.st_mtime, sha, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd)

    def held(self, directory: str | None, wanted: Iterable[FileDigest]) -> list[str]:
        """Names of the ``wanted`` files that ``directory`` holds identical (none if
        there is no such directory)."""
        if directory is None:
            return []
        names = []
        for want in wanted:
            try:
                check_file_name(want.name)
            except FileRefused:
                continue  # never a file we would have written: not held
            have = self.digest(os.path.join(directory, want.name))
            if have is not None and have.same_file(want):
                names.append(want.name)
        return names

    def missing(self, directory: str | None, kept: list[FileDigest]) -> list[str]:
        """Names of the ``kept`` files that ``directory`` no longer holds identical."""
        held = set(self.held(directory, kept))
        return [k.name for k in kept if k.name not in held]


def check_digests(files: object, what: str) -> list[FileDigest]:
    """A peer's list of FileDigest: a list of at most :data:`MAX_QUERY_FILES` records with
    plain base names, each name once; raises FileRefused with the reason."""
    if not isinstance(files, list) or not all(isinstance(f, FileDigest) for f in files):
        raise FileRefused(f"malformed {what}: expected a list of file digests")
    if len(files) > MAX_QUERY_FILES:
        raise FileRefused(f"malformed {what}: more than {MAX_QUERY_FILES} files")
    seen: set[str] = set()
    for f in files:
        check_file_name(f.name)
        if f.name in seen:
            raise FileRefused(f"malformed {what}: {f.name!r} twice")
        seen.add(f.name)
    return files
