"""Status numbers of jobs and nodes, as dispy has always numbered them.

Users compare these numerically (``job.status == 11``), so the values are part of the
public API: DispyJob.Created ... DispyJob.Finished and DispyNode.Initialized/Closed/AvailInfo.
"""

from __future__ import annotations

__all__ = ["JobStatus", "NodeStatus", "job_status_name"]


class JobStatus:
    Created = 5
    Running = 6
    ProvisionalResult = 7
    Cancelled = 8
    Terminated = 9
    Abandoned = 10
    Finished = 11

    #: statuses after which a job will not change again
    DONE = frozenset({Cancelled, Terminated, Abandoned, Finished})


class NodeStatus:
    Initialized = 4
    Closed = 16
    AvailInfo = 17


_NAMES = {v: k for k, v in vars(JobStatus).items() if isinstance(v, int)}


def job_status_name(status: int) -> str:
    return _NAMES.get(status, str(status))
