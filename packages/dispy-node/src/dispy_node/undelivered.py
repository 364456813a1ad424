"""Final job results that no client has acknowledged, kept on disk.

A node keeps each final result of a computation until its client acknowledges it
(``AckResults``, or ``SubmitJobs.acks``). While the client is connected that is a dict in
memory (``Comp.unacked``); when its connection is gone (client killed, network down,
node shutting down) the results that were not acknowledged, and every later one, are
written here, one file per result, and survive a restart of the node. A client that
reconnects, or ``dispy.recover_jobs()`` in another process, sends ``Resume`` and gets
them again; its acknowledgement deletes them. ``dispynode --clean`` removes what is left.

Layout: ``<dest_path_prefix>/.undelivered/<key>/<job id>.result`` where ``<key>`` is a
hash of the compute id (so a peer's id never becomes a path). Each file holds the body
of a one-result :class:`~dispy_core.messages.JobResults` message (the wire encoding: JSON
control data and raw payload buffers, never pickle), written to a temporary name and
renamed, so a crash leaves whole files or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable

from dispy_core import messages
from dispy_core.errors import DispyError
from dispy_core.messages import JobResult, JobResults

__all__ = ["ResultStore", "DIRECTORY"]

log = logging.getLogger(__name__)

DIRECTORY = ".undelivered"
_SUFFIX = ".result"


def _key(compute_id: str) -> str:
    return hashlib.sha256(compute_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class ResultStore:
    """The undelivered results under one node's ``dest_path_prefix``."""

    def __init__(self, prefix: str) -> None:
        self.root = os.path.join(prefix, DIRECTORY)
        self._index: dict[str, set[int]] = {}  # key -> job ids stored

    def scan(self) -> int:
        """Index what an earlier run of the node left; returns how many results."""
        self._index.clear()
        try:
            keys = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        total = 0
        for key in keys:
            ids = set()
            try:
                names = os.listdir(os.path.join(self.root, key))
            except OSError:
                continue
            for name in names:
                stem, _, suffix = name.rpartition(".")
                if "." + suffix == _SUFFIX and stem.lstrip("-").isdigit():
                    ids.add(int(stem))
            if ids:
                self._index[key] = ids
                total += len(ids)
        return total

    def count(self, compute_id: str) -> int:
        return len(self._index.get(_key(compute_id), ()))

    def save(self, compute_id: str, results: Iterable[JobResult]) -> None:
        """Write results (errors are logged: the node goes on without them)."""
        key = _key(compute_id)
        directory = os.path.join(self.root, key)
        ids = self._index.setdefault(key, set())
        for result in results:
            if not isinstance(result.job_id, int):
                continue
            path = os.path.join(directory, f"{result.job_id}{_SUFFIX}")
            tmp = path + ".tmp"
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                buffers, _ = messages.encode(JobResults(compute_id, [result]))
                with open(tmp, "wb") as fh:
                    for buf in buffers:
                        fh.write(buf)
                os.replace(tmp, path)
                ids.add(result.job_id)
            except (OSError, DispyError) as exc:
                log.error("computation %s: could not keep the result of job %s on disk: %s",
                          compute_id, result.job_id, exc)
        if not ids:
            del self._index[key]

    def load(self, compute_id: str) -> list[JobResult]:
        """The stored results of a computation, in job id order."""
        key = _key(compute_id)
        out: list[JobResult] = []
        for job_id in sorted(self._index.get(key, ())):
            path = os.path.join(self.root, key, f"{job_id}{_SUFFIX}")
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                msg = messages.decode(JobResults.TYPE, memoryview(data))
                assert isinstance(msg, JobResults)
                out.extend(r for r in msg.results if isinstance(r, JobResult))
            except (OSError, DispyError, AssertionError) as exc:
                log.error("computation %s: stored result of job %s is unreadable (%s); dropped",
                          compute_id, job_id, exc)
                self.forget(compute_id, [job_id])
        return out

    def forget(self, compute_id: str, job_ids: Iterable[int]) -> None:
        """Delete acknowledged results (ids not stored are ignored)."""
        key = _key(compute_id)
        ids = self._index.get(key)
        if not ids:
            return
        directory = os.path.join(self.root, key)
        for job_id in job_ids:
            if isinstance(job_id, int) and job_id in ids:
                ids.discard(job_id)
                try:
                    os.unlink(os.path.join(directory, f"{job_id}{_SUFFIX}"))
                except OSError:
                    pass
        if not ids:
            del self._index[key]
            try:
                os.rmdir(directory)
            except OSError:
                pass
