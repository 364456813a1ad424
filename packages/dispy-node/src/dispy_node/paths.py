"""Where a peer's files may go on this node, and the checks that keep them there.

Rule (SPEC-NOTES, Security): nothing a peer sends is ever written outside its
computation's directory. Every file a peer names must be a plain base name, every size is
checked against ``--max_file_size`` *before* anything is written, a client's ``dest_path``
is taken relative to ``--dest_path_prefix`` (leading ``/`` stripped, ``..`` refused, and
symbolic links may not lead out of the prefix), and files are created with
``O_NOFOLLOW`` so a link planted in a reused directory can't redirect a write.

The main process uses the checks and creates/removes directories; the host and worker
processes write the files (they are the processes that work for the computation).

The prefix (:class:`dispy_core.prefix.DaemonPrefix`): the node records in
``<prefix>/.dispynode-prefix`` every directory it creates there, and removes only those:
``--clean`` refuses a prefix holding anything else (naming it), and a computation's
directory is removed at close only if the node created it (or a directory holding it); a
``dest_path`` naming a directory the node found there is used but left in place. Names
starting with ``.`` at the top of the prefix are the node's own (``.dispynode-prefix``,
``.jobs``, ``.undelivered``): no ``dest_path`` may name or lead into one, through a link
or otherwise.

A ``dest_path`` is followed one component at a time from the prefix, each checked before
the next is made: a component that exists must be a directory, and a link among them must
lead to a directory inside the prefix (not the prefix itself, not a reserved entry); a
missing one is made with ``mkdir``, which never follows a link. So no directory is ever
made outside the prefix, even through a link planted in it.

Job directories (SPEC-NOTES, Execution): a job that brings files of its own
(``dispy_job_depends``) runs in a directory of its own, so that no other job (of this
computation or another, on another CPU or later) ever sees them. That directory holds
the job's files and a symbolic link to every entry of the computation's directory made
when the job starts (files of ``depends``, of ``cluster.send_file``, whatever setup
wrote there, subdirectories), so both are visible by base name; a job
file of the same name as a computation file hides it. Job directories live under
``<prefix>/.jobs/<computation>-<random suffix>/``, outside every computation's directory: a
computation's own listing (or another computation sharing its ``dest_path``) never shows
them, and links made from the computation's directory can't lead into one. They are
removed after the job, and what a killed job left with its computation.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable
from typing import Any

from dispy_core.errors import ConfigError
from dispy_core.messages import FileData
from dispy_core.prefix import DaemonPrefix, remove_tree

from .undelivered import DIRECTORY as UNDELIVERED_DIRECTORY

__all__ = [
    "FileRefused",
    "check_file_name",
    "check_files",
    "prepare_prefix",
    "open_prefix",
    "computation_dir",
    "created_by_node",
    "existing_dest_dir",
    "set_modes",
    "write_files",
    "make_jobs_root",
    "make_job_dir",
    "JOBS_DIRECTORY",
    "remove_tree",
    "remove_job_dirs",
    "link_into_job_dirs",
    "PREFIX_MARKER",
]

log = logging.getLogger(__name__)

#: The node's record of what it created in its prefix (see dispy_core.prefix).
PREFIX_MARKER = ".dispynode-prefix"

#: Under the prefix: one directory per computation, holding its jobs' own directories.
JOBS_DIRECTORY = ".jobs"

#: The node's own entries at the top of the prefix. Every name starting with '.' there is
#: reserved (these and any the node may add later): never a computation's dest_path.
_NODE_ENTRIES = (JOBS_DIRECTORY, UNDELIVERED_DIRECTORY, PREFIX_MARKER)

_BYTES_LIKE = (bytes, bytearray, memoryview)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class FileRefused(ValueError):
    """Raised when a peer's file name, file size or ``dest_path`` breaks the node's rules;
    the message is meant for the client's user."""


def check_file_name(name: Any) -> None:
    """Accept only a plain base name: no directory part, not '.', '..' or empty."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise FileRefused(
            f"refused file name {name!r}: only plain base names are accepted "
            "(no directories, no '..', not empty)"
        )
    try:
        os.fsencode(name)
    except UnicodeError:  # a lone surrogate: no file can have that name here
        raise FileRefused(f"refused file name {name!r}: not a valid file name here") from None


def check_files(files: Any, max_file_size: int) -> None:
    """Check a list of FileData from a peer: names, types and sizes (0 = no size limit)."""
    if not isinstance(files, list):
        raise FileRefused(f"malformed file list: expected a list, got {type(files).__name__}")
    for f in files:
        if not isinstance(f, FileData):
            raise FileRefused(f"malformed file entry: expected FileData, got {type(f).__name__}")
        check_file_name(f.name)
        if not isinstance(f.data, _BYTES_LIKE):
            raise FileRefused(f"malformed file {f.name!r}: its data is not bytes")
        if not isinstance(f.mode, int) or not isinstance(f.mtime, (int, float)):
            raise FileRefused(f"malformed file {f.name!r}: bad mode or mtime")
        size = memoryview(f.data).nbytes
        if max_file_size and size > max_file_size:
            raise FileRefused(
                f"refused file {f.name!r}: it is {size} bytes, more than this node's limit "
                f"of {max_file_size} bytes (dispynode --max_file_size)"
            )


def open_prefix(path: str, clean: bool = False) -> DaemonPrefix:
    """The node's prefix at ``path``, ready: with ``clean`` (``--clean``) what earlier runs
    left is removed first, or :class:`dispy_core.prefix.CleanRefused` is raised (nothing
    removed, nothing written) if the prefix holds anything the node did not create. Then
    the prefix is created if missing and the node's own directories made."""
    prefix = DaemonPrefix(path, "dispynode")
    if clean:
        n = prefix.clean()
        log.info("--clean: removed %d entries earlier runs left in %s", n, prefix.path)
    prefix.open()
    for name in (JOBS_DIRECTORY, UNDELIVERED_DIRECTORY):
        path = prefix.mkdir(name, 0o711 if name == JOBS_DIRECTORY else 0o700)
        if os.path.islink(path) or not os.path.isdir(path):
            # the node writes there: never through a link to elsewhere
            raise ConfigError(f"--dest_path_prefix: {path} must be a directory, not a link or a file; "
                              "remove it or use another prefix")
    return prefix


def prepare_prefix(path: str) -> DaemonPrefix:
    """:func:`open_prefix` without ``--clean``."""
    return open_prefix(path)


def _safe_label(text: str) -> str:
    return _UNSAFE_CHARS.sub("_", text)[:40].strip("._") or "computation"


def _dest_parts(dest_path: Any) -> list[str]:
    """A client's ``dest_path`` as path components under the prefix ([] for none)."""
    if dest_path is not None and not isinstance(dest_path, str):
        raise FileRefused(f"malformed dest_path {dest_path!r}: expected a string")
    rel = (dest_path or "").replace("\\", "/").lstrip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if "\0" in rel or ".." in parts:
        raise FileRefused(
            f"refused dest_path {dest_path!r}: it must stay inside the node's "
            "dest_path_prefix (no '..')"
        )
    try:
        os.fsencode(rel)
    except UnicodeError:
        raise FileRefused(f"refused dest_path {dest_path!r}: not a valid file name here") from None
    if parts and parts[0].startswith("."):
        raise FileRefused(_reserved_message(dest_path, parts[0]))
    return parts


def _reserved_message(dest_path: Any, name: str) -> str:
    return (f"refused dest_path {dest_path!r}: {name!r} is the node's own (names starting with '.' "
            f"at the top of the dest_path_prefix are reserved: {', '.join(_NODE_ENTRIES)}, ...)")


def _checked(prefix: DaemonPrefix, path: str, dest_path: Any) -> str:
    """The real path of ``path`` (an entry that exists), if it is a directory inside the
    prefix that a computation may use; FileRefused otherwise."""
    real = os.path.realpath(path)
    root = prefix.path
    if real == root:  # a link to the prefix: a computation's directory is never the prefix
        raise FileRefused(f"refused dest_path {dest_path!r}: it leads to the node's dest_path_prefix itself")
    if os.path.commonpath([real, root]) != root:
        raise FileRefused(f"refused dest_path {dest_path!r}: it leads out of the node's dest_path_prefix")
    top = os.path.relpath(real, root).split(os.sep, 1)[0]
    if top.startswith("."):
        raise FileRefused(_reserved_message(dest_path, top))
    if not os.path.isdir(real):
        raise FileRefused(f"refused dest_path {dest_path!r}: {os.path.relpath(path, root)!r} "
                          "is not a directory")
    return real


def _walk(prefix: DaemonPrefix, parts: list[str], dest_path: Any, create: bool) -> str | None:
    """Follow ``parts`` from the prefix, checking each component before the next (see the
    module docstring); missing ones are made if ``create`` (and recorded as the node's),
    else None is returned."""
    current = prefix.path
    for part in parts:
        path = os.path.join(current, part)
        if create:
            prefix.mkdir(os.path.relpath(path, prefix.path).replace(os.sep, "/"), 0o700)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if create:
                raise
            return None
        if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise FileRefused(f"refused dest_path {dest_path!r}: {os.path.relpath(path, prefix.path)!r} "
                              "is not a directory")
        current = _checked(prefix, path, dest_path)
    return current


def computation_dir(prefix: DaemonPrefix, dest_path: Any, name: str) -> str:
    """Create (or reuse) a computation's directory under ``prefix``; returns its path.

    ``dest_path`` from the client is made relative to the prefix; without one, a fresh
    unique directory named after the computation is made. Nothing is created before the
    path is known to stay inside the prefix, out of the node's own entries.
    """
    parts = _dest_parts(dest_path)
    if not parts:
        label = _safe_label(name)
        while True:  # a fresh name, as tempfile.mkdtemp would make, but recorded first
            try:
                return prefix.mkdir(f"{label}-{secrets.token_hex(5)}", 0o700, exist_ok=False)
            except FileExistsError:
                continue
    made = _walk(prefix, parts, dest_path, create=True)
    assert made is not None
    return made


def existing_dest_dir(prefix: DaemonPrefix, dest_path: Any) -> str | None:
    """The directory a computation with ``dest_path`` would reuse, if it exists (None
    when it does not, or without a dest_path); creates nothing. Raises FileRefused as
    :func:`computation_dir` does."""
    parts = _dest_parts(dest_path)
    if not parts:
        return None
    return _walk(prefix, parts, dest_path, create=False)


def created_by_node(prefix: DaemonPrefix, directory: str) -> bool:
    """True if the node made ``directory`` (a computation's) or a directory holding it,
    so that it may remove it."""
    rel = os.path.relpath(directory, prefix.path)
    if rel == "." or rel.startswith(".."):
        return False
    return prefix.created(rel.replace(os.sep, "/"))


def write_files(directory: str, files: Iterable[FileData], *, executable: str = "") -> None:
    """Write ``files`` (already checked) into ``directory``.

    An existing file of the same name is replaced (its old mode may forbid writing), and
    the new one is created with O_EXCL | O_NOFOLLOW. ``executable`` names a file that must
    be runnable (the program of a program computation).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for f in files:
        path = os.path.join(directory, f.name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(f.data)
            mode = f.mode & 0o777 or 0o644
            if f.name == executable:
                mode |= 0o700
            os.fchmod(fh.fileno(), mode | 0o600)  # the node must be able to remove it
        if f.mtime:
            os.utime(path, (f.mtime, f.mtime))


def set_modes(directory: str, files: Iterable[Any], *, executable: str = "") -> None:
    """Give files already in ``directory`` (``Compute.kept``: not written again) the
    modes the client's copies have, as :func:`write_files` would. A name that is not a
    regular file there (a link planted meanwhile, say) is left alone."""
    for f in files:
        mode = f.mode & 0o777 or 0o644
        if f.name == executable:
            mode |= 0o700
        try:
            fd = os.open(os.path.join(directory, f.name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("could not set the mode of %s in %s: %s", f.name, directory, exc)
            continue
        try:
            os.fchmod(fd, mode | 0o600)
        finally:
            os.close(fd)


def make_jobs_root(prefix: DaemonPrefix, name: str) -> str:
    """A fresh directory under ``<prefix>/.jobs`` for one computation's job directories
    (see the module docstring); the main process makes it and removes it at close."""
    # mode 0711 like the prefix: computations can't list each other's
    root = prefix.mkdir(JOBS_DIRECTORY, 0o711)
    if os.path.islink(root) or not os.path.isdir(root):  # replaced since the node started
        raise FileRefused(f"{root} is not a directory of the node's")
    return tempfile.mkdtemp(prefix=f"{_safe_label(name)}-", dir=root)


def make_job_dir(jobs_root: str, comp_dir: str, job_id: Any, files: Iterable[FileData]) -> str:
    """A fresh directory for one job: its own ``files`` (already checked) plus a link to
    each entry of ``comp_dir`` that the job's files don't hide; returns its path.

    The links are made now: an entry added to the computation's directory while the job
    runs is seen by the jobs that start after it (the node links files that
    ``cluster.send_file`` delivers into running jobs' directories too, see
    :func:`link_into_job_dirs`). Writing through a link writes the
    computation's file (as a job running in that directory would); creating a file
    creates it in the job's directory, removed with it.
    """
    path = tempfile.mkdtemp(prefix=f"job-{_safe_label(str(job_id))}-", dir=jobs_root)
    try:
        files = list(files)
        write_files(path, files)
        own = {f.name for f in files}
        with os.scandir(comp_dir) as entries:
            for entry in entries:
                if entry.name not in own:
                    try:
                        os.symlink(entry.path, os.path.join(path, entry.name))
                    except FileExistsError:
                        pass  # linked meanwhile by link_into_job_dirs
    except BaseException:
        remove_tree(path)
        raise
    return path


def link_into_job_dirs(jobs_root: str, comp_dir: str, name: str) -> None:
    """A file just saved in ``comp_dir`` (``cluster.send_file``) shows in the directories of
    the jobs running now too, except where the job has a file of that name."""
    try:
        job_dirs = [e.path for e in os.scandir(jobs_root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for job_dir in job_dirs:
        try:
            os.symlink(os.path.join(comp_dir, name), os.path.join(job_dir, name))
        except OSError:
            pass  # the job has that name already, or just ended


def remove_job_dirs(jobs_root: str, job_id: Any) -> None:
    """Remove what a job whose worker died left in ``jobs_root`` (see make_job_dir)."""
    start = f"job-{_safe_label(str(job_id))}-"
    try:
        entries = [e.path for e in os.scandir(jobs_root) if e.name.startswith(start)]
    except OSError:
        return
    for path in entries:
        remove_tree(path)
