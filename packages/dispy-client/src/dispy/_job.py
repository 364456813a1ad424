"""``DispyJob``: what ``cluster.submit()`` returns, and how results land in it.

A job is written by two threads: the user's (``submit`` creates it; ``id`` may be
reassigned at any time) and the cluster's event-loop thread (dispatch and results). The
loop thread writes every result field *before* it marks the job done, and readers wait on
``finish`` (or ``job()``), so a reader that saw the job done sees its fields.

Jobs are numerous (tens of thousands in flight is normal), so the class has slots and
creates its ``finish`` event only when somebody asks for it.
"""

from __future__ import annotations

import threading
from typing import Any

from dispy_core.engine import EngineJob
from dispy_core.status import JobStatus, job_status_name

__all__ = ["DispyJob"]

# Guards the lazy creation of DispyJob.finish against a result arriving at the same time.
_finish_lock = threading.Lock()


class DispyJob(EngineJob):
    """One execution of the cluster's computation with given arguments.

    Attributes read by programs: ``id`` (1, 2, 3 ... per cluster; the only field a
    program may write), ``status`` (one of the class attributes below), ``host`` (IP
    address of the node that runs or ran it; ``ip_addr`` is the same), ``result``,
    ``stdout``, ``stderr`` (str for Python functions, bytes for programs), ``exception``
    (traceback text, or None), ``submit_time``, ``start_time``, ``end_time``, ``args``,
    ``kwargs`` and ``finish`` (a :class:`threading.Event` set once the job is done).
    """

    Created = JobStatus.Created
    Running = JobStatus.Running
    ProvisionalResult = JobStatus.ProvisionalResult
    Cancelled = JobStatus.Cancelled
    Terminated = JobStatus.Terminated
    Abandoned = JobStatus.Abandoned
    Finished = JobStatus.Finished

    #: Every field, in this order (pickled state, snapshots); those not in EngineJob's
    #: slots (the engine's fields) are this class's slots.
    _FIELDS = (
        "id",
        "status",
        "host",
        "result",
        "stdout",
        "stderr",
        "exception",
        "submit_time",
        "start_time",
        "end_time",
        "args",
        "kwargs",
        "_finish",
        "_uid",
        "_spec",
        "_node",
        "_tx",
        "_pin",
        "_origin",
    )
    __slots__ = tuple(name for name in _FIELDS if name not in EngineJob.__slots__)

    def __init__(self, job_id: Any, args: tuple[Any, ...], kwargs: dict[str, Any], submit_time: float) -> None:
        # every field set here (EngineJob's too, without calling its __init__)
        self.id: Any = job_id
        self.status: int = JobStatus.Created
        self.host: str | None = None
        self.result: Any = None
        self.stdout: str | bytes | None = None
        self.stderr: str | bytes | None = None
        self.exception: str | None = None
        self.submit_time = submit_time
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.args = args
        self.kwargs = kwargs
        self._finish: threading.Event | None = None
        self._uid = 0  # the job's id on the wire (users may change ``id``)
        self._spec: Any = None  # the JobSpec until it is sent
        self._node: Any = None  # the engine's session of the node running it
        self._tx = 0  # serialized bytes sent for it
        self._pin: Any = None  # the node key it must run on (submit_node), or None
        self._origin: DispyJob | None = None  # for a snapshot: the job it copies

    # -- waiting ---------------------------------------------------------------------
    @property
    def finish(self) -> threading.Event:
        """Set when the job is done (finished, terminated, cancelled or abandoned)."""
        event = self._finish
        if event is None:
            with _finish_lock:
                event = self._finish
                if event is None:
                    event = threading.Event()
                    if self.status in JobStatus.DONE:
                        event.set()
                    self._finish = event
        return event

    def _mark_done(self) -> None:
        """Called by the cluster after the final fields are set (status already done)."""
        event = self._finish
        if event is None:
            with _finish_lock:
                event = self._finish
        if event is not None:
            event.set()

    def __call__(self, clear: bool = False, timeout: float | None = None) -> Any:
        """Wait until the job is done and return its ``result``.

        With ``clear=True`` the ``finish`` event is cleared afterwards (as dispy always
        allowed), so a later ``finish.wait()`` blocks until it is set again. With
        ``timeout`` (seconds), TimeoutError is raised if the job is not done by then
        (the job goes on; to bound the job itself, see JobCluster's ``job_timeout``).
        """
        event = self.finish
        if not event.wait(timeout):
            where = f" on {self.host}" if self.host else ""
            raise TimeoutError(f"job {self.id} is not done after {timeout:g} s "
                               f"(status {job_status_name(self.status)}{where})")
        if clear:
            event.clear()
        return self.result

    job = __call__

    def _snapshot(self) -> DispyJob:
        """A copy of the job as it is now, for callbacks of provisional results: the job
        itself may change (next result) before the callback runs. The copy shares the
        job's ``finish`` event, and ``cluster.cancel(copy)`` cancels the job."""
        snap = DispyJob.__new__(DispyJob)
        for name in self._FIELDS:
            setattr(snap, name, getattr(self, name))
        snap._finish = self.finish
        snap._spec = snap._node = None
        snap._origin = self
        return snap

    # -- aliases and display -----------------------------------------------------------
    @property
    def ip_addr(self) -> str | None:
        """Alias of ``host`` for programs written against dispy 4."""
        return self.host

    def __repr__(self) -> str:
        where = f" on {self.host}" if self.host else ""
        return f"<DispyJob {self.id!s} {job_status_name(self.status)}{where}>"

    def __getstate__(self) -> dict[str, Any]:
        # Jobs may be pickled by programs (e.g. to store results): keep the public
        # fields, drop the event and the client's internal links.
        return {name: getattr(self, name) for name in self._FIELDS if not name.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self._FIELDS:
            setattr(self, name, None)
        self._finish = None
        self._uid = self._tx = 0
        for name, value in state.items():
            setattr(self, name, value)
