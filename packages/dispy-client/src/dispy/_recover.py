"""Getting the results of a client that died: the recover file and ``recover_jobs``.

Every JobCluster keeps a small record, the *recover file* (``recover_file``; by default
``_dispy_YYYYMMDDHHMMSS`` in the working directory): a sqlite3 database holding the
computation's id and name, the secret and TLS files to reach the nodes with, and every
node the computation was set up on. Nothing is written per job: the nodes know their
jobs. A cluster that closes normally deletes the file.

Each node keeps every final result until the client acknowledges it, on disk once the
client is gone (see dispy_node.undelivered). After a crash, :func:`recover_jobs` reads
the file, connects to each node, sends ``Resume`` and collects what the node kept and
then what its unfinished jobs return, acknowledging as it goes; when a node's jobs are
all done it closes the computation there (cleanup runs, the node is free). The file is
deleted once every node is done with.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import platform
import sqlite3
import threading
import time
from typing import Any

from dispy_core import aio, config, serialization, tls
from dispy_core.errors import ConfigError, DispyError
from dispy_core.messages import (
    AckResults,
    CloseComputation,
    ComputationClosed,
    ErrorReport,
    JobFile,
    JobResults,
    Message,
    Ping,
    Pong,
    Resume,
    Resumed,
)
from dispy_core.session import describe_connect_error
from dispy_core.status import JobStatus

from .__about__ import __version__
from ._job import DispyJob
from ._runtime import apply_result, save_job_file

__all__ = ["RecoverFile", "recover_jobs", "default_recover_path", "newest_recover_file"]

log = logging.getLogger(__name__)

PREFIX = "_dispy_"
#: Seconds between the log lines of recover_jobs while it waits for jobs still running.
PROGRESS_EVERY = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS nodes (ip_addr TEXT, port INTEGER, name TEXT, PRIMARY KEY (ip_addr, port));
"""


def default_recover_path(directory: str = ".") -> str:
    """``_dispy_YYYYMMDDHHMMSS`` in ``directory`` (with a suffix if that name is taken)."""
    base = os.path.join(directory, PREFIX + time.strftime("%Y%m%d%H%M%S"))
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}_{n}"
    return path


def newest_recover_file(directory: str = ".") -> str | None:
    """The most recently modified ``_dispy_*`` file in ``directory``."""
    paths = [p for p in glob.glob(os.path.join(directory, PREFIX + "*")) if os.path.isfile(p)]
    paths = [p for p in paths if not p.endswith(("-journal", "-wal", "-shm"))]
    return max(paths, key=os.path.getmtime) if paths else None


class RecoverFile:
    """A cluster's recover file, written by the cluster (node rows from its loop)."""

    def __init__(self, path: str, *, compute_id: str, name: str, secret: str | bytes,
                 certfile: str | None, keyfile: str | None) -> None:
        self.path = os.path.abspath(path)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the secret
        except FileExistsError:
            raise ConfigError(f"recover_file {path!r} exists: it may hold an earlier cluster's record; "
                              f"use dispy.recover_jobs({path!r}) or remove it") from None
        except OSError as exc:
            raise ConfigError(f"can't create recover_file {path!r}: {exc.strerror or exc}") from None
        os.close(fd)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(self.path, check_same_thread=False,
                                                              isolation_level=None)
        # Kept safe from a crash of this program, which is what it is for; not synced
        # to the disk on every write (a machine crash loses the jobs anyway).
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA journal_mode=MEMORY")
        self._db.executescript(_SCHEMA)
        self._db.executemany("INSERT INTO cluster VALUES (?, ?)", [
            ("compute_id", compute_id), ("name", name), ("secret", secret),
            ("certfile", _abs(certfile)), ("keyfile", _abs(keyfile)), ("created", time.time()),
            ("client", f"dispy-client {__version__} / Python {platform.python_version()}"),
        ])

    def add_node(self, ip_addr: str, port: int, name: str) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)", (ip_addr, port, name))
            except sqlite3.Error as exc:
                log.warning("recover_file %s: could not record node %s: %s", self.path, ip_addr, exc)

    def close(self, remove: bool) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        if remove:
            _remove(self.path)


def _remove(path: str) -> None:
    """Delete a recover file (and a journal sqlite may have left)."""
    for suffix in ("", "-journal"):
        try:
            os.unlink(path + suffix)
        except OSError:
            pass


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def read_recover_file(path: str) -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
    """The cluster record and the nodes in a recover file."""
    if not os.path.isfile(path):
        raise ConfigError(f"recover file {path!r} not found")
    try:
        db = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
        try:
            cluster = dict(db.execute("SELECT key, value FROM cluster").fetchall())
            nodes = [(str(ip), int(port), str(name)) for ip, port, name in
                     db.execute("SELECT ip_addr, port, name FROM nodes").fetchall()]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"{path!r} is not a dispy recover file: {exc}") from None
    if not isinstance(cluster.get("compute_id"), str):
        raise ConfigError(f"{path!r} is not a dispy recover file: no computation recorded")
    return cluster, nodes


def recover_jobs(recover_file: str | None = None, timeout: float | None = None,
                 terminate_pending: bool = False) -> list[DispyJob]:
    """Results of the jobs of a cluster whose program ended without closing it.

    Reads ``recover_file`` (None: the newest ``_dispy_*`` file in the working
    directory), asks each node recorded there for the computation's results and waits
    for its unfinished jobs (at most ``timeout`` seconds; None: until they are done).
    Jobs still unfinished then go on running (and can be recovered later), or with
    ``terminate_pending=True`` are terminated. Nodes whose jobs are all done are
    released. Returns the jobs as DispyJob objects with ``result``, ``stdout``,
    ``stderr``, ``exception``, ``status``, ``host`` and times set; ``id`` is the job's
    number in the order the program submitted them (ids the program set are not
    recorded), ``args`` and ``kwargs`` are None. The file is deleted when every node
    has been dealt with.
    """
    if recover_file is None:
        recover_file = newest_recover_file()
        if recover_file is None:
            raise ConfigError(f"no recover file (_dispy_*) in {os.getcwd()}")
    cluster, nodes = read_recover_file(recover_file)
    certfile, keyfile = cluster.get("certfile"), cluster.get("keyfile")
    context = tls.client_context(certfile, keyfile) if certfile else None
    secret = cluster.get("secret") or ""
    log.info("recovering jobs of computation %s (%s) from %d nodes", cluster.get("name"),
             cluster["compute_id"], len(nodes))
    deadline = None if timeout is None else time.monotonic() + timeout

    async def main() -> list[tuple[bool, list[DispyJob]]]:
        return await asyncio.gather(*(
            _NodeRecovery(ip, port, cluster["compute_id"], secret, context).run(deadline, terminate_pending)
            for ip, port, _name in nodes))

    outcomes = asyncio.run(main())
    jobs = sorted((job for _ok, got in outcomes for job in got), key=lambda j: (str(j.host), j.id))
    if all(ok for ok, _ in outcomes):
        _remove(recover_file)
    else:
        log.warning("recover_jobs: some nodes were not done with; %s is kept for another try", recover_file)
    return jobs


class _NodeRecovery:
    """One node's part of recover_jobs."""

    def __init__(self, ip: str, port: int, compute_id: str, secret: str | bytes, context: Any) -> None:
        self.ip, self.port, self.compute_id = ip, port, compute_id
        self.secret, self.context = secret, context
        self.label = f"{ip}:{port}"
        self.jobs: dict[int, DispyJob] = {}
        self.inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.channel: aio.Channel | None = None

    def _on_message(self, channel: aio.Channel, msg: Message) -> None:
        if isinstance(msg, Ping):
            channel.send(Pong(msg.nonce))
        elif isinstance(msg, JobFile):
            try:
                save_job_file(msg.path, msg.file)
            except (OSError, ValueError) as exc:
                log.error("job %s: saving file %r from node %s failed: %s", msg.job_id, msg.path, self.label, exc)
        else:
            self.inbox.put_nowait(msg)

    def _on_close(self, channel: aio.Channel, exc: BaseException | None) -> None:
        self.inbox.put_nowait(None)

    def _take(self, msg: JobResults) -> int:
        """Record the final results in ``msg`` and acknowledge them; how many were new."""
        new = 0
        ids = []
        for r in msg.results:
            if r.status == JobStatus.ProvisionalResult or not isinstance(r.job_id, int):
                continue
            ids.append(r.job_id)
            if r.job_id in self.jobs:
                continue
            job = DispyJob(r.job_id, None, None, 0.0)  # type: ignore[arg-type]
            apply_result(job, r, serialization.loads)
            job.status = r.status
            job.host = r.host if isinstance(r.host, str) and r.host else self.ip  # (via dispyscheduler: the node)
            job._mark_done()
            self.jobs[r.job_id] = job
            new += 1
        if ids and self.channel is not None and not self.channel.closed:
            self.channel.send(AckResults(self.compute_id, ids))
        return new

    async def _next(self, deadline: float | None) -> Message | None:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await asyncio.wait_for(self.inbox.get(), wait)

    async def run(self, deadline: float | None, terminate: bool) -> tuple[bool, list[DispyJob]]:
        """(done with this node, its jobs)."""
        try:
            self.channel = await aio.open_channel(
                self.ip, self.port, secret=self.secret, software=f"dispy-client {__version__} (recover_jobs)",
                on_message=self._on_message, on_close=self._on_close, timeout=config.MsgTimeout,
                ssl=self.context)
        except (OSError, TimeoutError, asyncio.TimeoutError, DispyError) as exc:
            log.warning("recover_jobs: can't reach node %s: %s", self.label,
                        describe_connect_error(exc, tls=self.context is not None))
            return False, []
        try:
            return await self._recover(deadline, terminate), list(self.jobs.values())
        except ConnectionError as exc:
            log.warning("recover_jobs: node %s: %s", self.label, exc)
            return False, list(self.jobs.values())
        finally:
            self.channel.close()

    async def _recover(self, deadline: float | None, terminate: bool) -> bool:
        assert self.channel is not None
        self.channel.send(Resume(self.compute_id))
        unfinished = -1
        while True:  # what the node kept, then whether the computation still runs there
            try:
                msg = await self._next(time.monotonic() + 3 * config.MsgTimeout)
            except (TimeoutError, asyncio.TimeoutError):
                raise ConnectionError(f"no answer to Resume within {3 * config.MsgTimeout:g} s") from None
            if msg is None:
                raise ConnectionError("the node closed the connection")
            if isinstance(msg, JobResults):
                self._take(msg)
            elif isinstance(msg, Resumed):
                if not msg.running:
                    log.info("recover_jobs: node %s: %d results", self.label, len(self.jobs))
                    return True
                unfinished = msg.unfinished if isinstance(msg.unfinished, int) else 0
                break
            elif isinstance(msg, ErrorReport):
                raise ConnectionError(f"the node reported: {msg.reason}")
        while unfinished > 0:
            step = time.monotonic() + PROGRESS_EVERY
            try:
                msg = await self._next(step if deadline is None else min(step, deadline))
            except (TimeoutError, asyncio.TimeoutError):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                log.info("recover_jobs: node %s: waiting for %d jobs still running there%s",
                         self.label, unfinished, "" if deadline is not None else
                         " (give timeout= to bound the wait)")
                continue
            if msg is None:
                raise ConnectionError("the node closed the connection")
            if isinstance(msg, JobResults):
                unfinished -= self._take(msg)
        if unfinished > 0 and not terminate:
            log.info("recover_jobs: node %s: %d jobs still unfinished go on running there",
                     self.label, unfinished)
            return False
        self.channel.send(CloseComputation(self.compute_id, terminate=unfinished > 0))
        while True:  # results of terminated jobs come before the close notice
            msg = await self._next(time.monotonic() + config.MsgTimeout * 3)
            if msg is None or isinstance(msg, ComputationClosed):
                break
            if isinstance(msg, JobResults):
                self._take(msg)
        log.info("recover_jobs: node %s: %d results; computation closed there", self.label, len(self.jobs))
        return True
