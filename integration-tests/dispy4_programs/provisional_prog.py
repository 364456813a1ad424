"""Provisional results: each job reports its best value so far with
dispy_provisional_result; job_status watches them and, once one is good enough, cancels
every job still pending or running."""

import json
import threading


def compute(values, pause):
    import time

    best = None
    for v in values:
        if best is None or v < best:
            best = v
            dispy_provisional_result((dispy_node_name, best))  # noqa: F821
        time.sleep(pause)
    return dispy_node_name, best  # noqa: F821


def job_status(job):  # runs in the client
    if job.status in (dispy.DispyJob.ProvisionalResult, dispy.DispyJob.Finished):
        name, value = job.result
        print("RESULT", json.dumps({"seen": job.id, "status": job.status, "value": value}),
              flush=True)
        if value < 0.01:
            print("RESULT", json.dumps({"good_enough": job.id, "value": value}), flush=True)
            with lock:
                for j in jobs:
                    if j.status in (dispy.DispyJob.Created, dispy.DispyJob.Running,
                                    dispy.DispyJob.ProvisionalResult):
                        cluster.cancel(j)


if __name__ == "__main__":
    import dispy

    lock = threading.Lock()
    jobs = []
    cluster = dispy.JobCluster(compute, job_status=job_status)
    # the first job gets below 0.01 within a few steps; the others would run for minutes
    plans = [([0.9, 0.5, 0.2, 0.005] + [0.5] * 600, 0.05)] + [([0.8, 0.3] + [0.5] * 600, 0.2)] * 3
    with lock:
        for values, pause in plans:
            job = cluster.submit(values, pause)
            if job is None:
                raise SystemExit("submit failed")
            jobs.append(job)
    cluster.wait()
    for job in jobs:
        print("RESULT", json.dumps({"final": job.id, "status": job.status}))
    cluster.print_status()
    cluster.close()
