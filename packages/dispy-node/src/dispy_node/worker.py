"""A worker process: runs one computation's jobs, one at a time, in the order received.

A worker is forked from its computation's host (so it sees what setup made), connects to
the node's main process with WorkerHello, and then loops:

* receive SubmitJobs (the main process keeps a few jobs queued here, see
  :mod:`.scheduler`) and CancelJob (a job that has not started is dropped and comes
  back Cancelled; the running one is interrupted, see :mod:`.execute`);
* run the job at the head of the local queue (:func:`dispy_node.execute.run_job`);
* send provisional results (``dispy_provisional_result``) as the job makes them, as
  JobResults with status ProvisionalResult, which the main process relays to the client;
* send files (``dispy_send_file``) as JobFile, relayed to the client the same way;
* send each result before starting the next job. Holding results back while another
  job runs would save a few syscalls, but if that job killed the process they would be
  lost and the node would blame the wrong job; the main process batches instead.

It exits when the main process closes the connection, or after one job when the
computation asked for a process per job. It always leaves with ``os._exit`` so that
handlers inherited from the host (atexit, buffered files) don't run twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Any

from dispy_core.errors import DispyError
from dispy_core.messages import (
    CancelJob,
    FileData,
    JobFile,
    JobResult,
    JobResults,
    JobSpec,
    Message,
    SubmitJobs,
    WorkerHello,
)
from dispy_core.status import JobStatus

from .__about__ import __version__
from .execute import Runtime, run_job, set_file_sender, set_interrupt_check, set_result_sender
from .ipc import BlockingChannel

__all__ = ["worker_main"]

log = logging.getLogger(__name__)


class _Worker:
    def __init__(self, chan: BlockingChannel, compute_id: str) -> None:
        self.chan = chan
        self.compute_id = compute_id
        self.queue: deque[JobSpec] = deque()
        self.results: list[JobResult] = []
        self.current: object = None  # job_id of the job running now
        self.cancel_current = False

    def handle(self, msg: Message) -> None:
        if isinstance(msg, SubmitJobs):
            self.queue.extend(msg.jobs)
        elif isinstance(msg, CancelJob):
            if msg.job_id == self.current:
                self.cancel_current = True
                return
            for spec in self.queue:
                if spec.job_id == msg.job_id:
                    self.queue.remove(spec)
                    now = time.time()
                    self.results.append(JobResult(spec.job_id, JobStatus.Cancelled,
                                                  start_time=now, end_time=now))
                    break
        else:
            log.warning("worker %d: unexpected %s from the node", os.getpid(), type(msg).__name__)

    def flush(self) -> None:
        if self.results:
            self.chan.send(JobResults(self.compute_id, self.results))
            self.results = []

    def interrupt_check(self) -> bool:
        """Called from the SIGINT handler while a job runs: was that job cancelled?"""
        try:
            for msg in self.chan.recv_available():
                self.handle(msg)
        except (DispyError, OSError):
            return True  # the node is gone: nobody wants this job's result
        return self.cancel_current

    def send_provisional(self, job_id: Any, payload: list[Any], timeout: float | None, relay: bool) -> None:
        """A provisional result of the running job (dispy_provisional_result), now,
        waiting at most ``timeout`` seconds for the main process to take it. (A send cut
        off mid-frame leaves the connection unusable; the main process then drops this
        worker and reports the job, which is what a node too stuck to listen deserves.)"""
        sock = self.chan.sock
        sock.settimeout(timeout)
        try:
            self.chan.send(JobResults(self.compute_id, [
                JobResult(job_id, JobStatus.ProvisionalResult, payload)], relay))
        finally:
            sock.settimeout(None)

    def send_file(self, job_id: Any, path: str, file: FileData, timeout: float | None, relay: bool) -> None:
        """A file of the running job (dispy_send_file), now, as send_provisional does."""
        self.flush()  # results held here go first
        sock = self.chan.sock
        sock.settimeout(timeout)
        try:
            self.chan.send(JobFile(self.compute_id, job_id, path, file, relay))
        finally:
            sock.settimeout(None)

    def run(self, rt: Runtime, one_job: bool) -> None:
        set_interrupt_check(self.interrupt_check)
        set_result_sender(self.send_provisional)
        set_file_sender(self.send_file)
        while True:
            if not self.queue:
                self.flush()
                self.handle(self.chan.recv())
                continue
            spec = self.queue.popleft()
            self.current, self.cancel_current = spec.job_id, False
            self.results.append(run_job(rt, spec))
            self.current = None
            if one_job:
                self.flush()
                return
            for msg in self.chan.recv_available():
                self.handle(msg)
            # Results are never held back while another job runs: if that job killed
            # the process they would be lost, and the node would blame the wrong job.
            self.flush()


def worker_main(rt: Runtime, address: str, token: str, compute_id: str, worker_id: int,
                process_per_job: bool) -> None:
    """Body of a freshly forked worker; never returns."""
    code = 0
    try:
        chan = BlockingChannel.connect(address, token, f"dispy-node-worker {__version__}")
        chan.send(WorkerHello(compute_id, worker_id, os.getpid()))
        _Worker(chan, compute_id).run(rt, process_per_job)
    except (DispyError, OSError) as exc:  # the main process closed or went away
        log.debug("worker %d of %s: connection ended: %s", worker_id, compute_id, exc)
    except BaseException:
        log.exception("worker %d of %s failed", worker_id, compute_id)
        code = 1
    os._exit(code)
