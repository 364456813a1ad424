"""A multiprocessing.sharedctypes.Value made by setup and updated by every job on the
node (jobs are forked from the process that ran setup, so they share it)."""

import json


def setup():
    global counter
    import multiprocessing
    import multiprocessing.sharedctypes

    # an RLock: the with-block below holds it while .value takes it again
    counter = multiprocessing.sharedctypes.Value("i", 1, lock=multiprocessing.RLock())
    return 0


def cleanup():
    global counter
    del counter


def compute(step):
    import time

    with counter.get_lock():  # noqa: F821 - made by setup
        counter.value += step  # noqa: F821
        total = counter.value  # noqa: F821
    time.sleep(0.05)
    return total


if __name__ == "__main__":
    import dispy

    steps = [3, 5, 7, 11, 13, 17, 19, 23]
    cluster = dispy.JobCluster(compute, setup=setup, cleanup=cleanup)
    jobs = [cluster.submit(step) for step in steps]
    for job, step in zip(jobs, steps):
        job()
        if job.status != dispy.DispyJob.Finished:
            print("RESULT", json.dumps({"id": job.id, "failed": job.exception}))
        else:
            print("RESULT", json.dumps({"id": job.id, "step": step, "total": job.result,
                                        "ip": job.ip_addr}))
    cluster.print_status()
    cluster.close()
