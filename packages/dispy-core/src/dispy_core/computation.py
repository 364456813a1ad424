"""A computation as it travels to nodes (what JobCluster builds and dispyscheduler
forwards), and the small helpers every node session needs: files read into FileData,
setup arguments serialized, Python versions compared."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from dispy_core import serialization
from dispy_core.errors import ConfigError
from dispy_core.messages import FileData, FileDigest

__all__ = ["Computation", "payload_size", "python_minor", "file_data", "file_digest", "setup_args_payload"]


@dataclass
class Computation:
    """A computation ready to send: everything Compute needs except per-node parts."""

    name: str
    kind: str  # "function" or "program"
    payload: list[Any]
    files: list[FileData] = field(default_factory=list)
    #: Python code travels (a function, setup/cleanup functions or depends objects): the
    #: node must run the same Python minor version to load it.
    ships_code: bool = True
    #: {file name: text} of the files the payload's by-value code comes from
    #: (Compute.sources; see dispy_core.sources).
    sources: dict[str, str] = field(default_factory=dict)

    #: Digests of ``files`` by name, made once (see :meth:`digest`).
    _digests: dict[str, FileDigest] = field(default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return (payload_size(self.payload) + sum(len(f.data) for f in self.files)
                + sum(len(text) for text in self.sources.values()))

    def digest(self, f: FileData) -> FileDigest:
        """``f``'s digest; those of the computation's own files are computed once."""
        if not any(f is mine for mine in self.files):
            return file_digest(f)
        d = self._digests.get(f.name)
        if d is None:
            d = self._digests[f.name] = file_digest(f)
        return d


def payload_size(buffers: list[Any] | None) -> int:
    if not buffers:
        return 0
    return sum(memoryview(b).nbytes for b in buffers)


def python_minor(version: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as "3.11.7"; () if it can't be read."""
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return ()


def file_data(path: str | os.PathLike[str]) -> FileData:
    """A file's content and metadata under its base name; ConfigError if unreadable."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path!r} is not a regular file")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"can't read {path!r}: {exc.strerror or exc}") from None
    return FileData(name=os.path.basename(path), data=data, mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime)


def file_digest(f: FileData) -> FileDigest:
    """What a node needs to tell whether it holds ``f`` already (SHA-256 of the bytes)."""
    view = memoryview(f.data)
    return FileDigest(f.name, view.nbytes, float(f.mtime), hashlib.sha256(view).hexdigest(), f.mode & 0o7777)


def setup_args_payload(setup_args: tuple[Any, ...]) -> list[Any]:
    try:
        return serialization.dumps(tuple(setup_args))
    except Exception as exc:
        raise ConfigError(f"setup_args {setup_args!r} can't be serialized: {exc}") from exc
