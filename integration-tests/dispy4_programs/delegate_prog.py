"""Code sent with each job: the computation finds the function that came with the job
(dispy_job_depends=[func]) in its globals and calls it."""

import json


def dispatch(name, x):
    return globals()[name](x)


def double(x):
    return dispy_node_name, "double", 2 * x  # noqa: F821 - set by dispynode


def negate(x):
    return dispy_node_name, "negate", -x  # noqa: F821


if __name__ == "__main__":
    import dispy

    cluster = dispy.JobCluster(dispatch, loglevel=dispy.logger.DEBUG)
    jobs = []
    for x in range(6):
        func = double if x % 2 == 0 else negate
        job = cluster.submit(func.__name__, x, dispy_job_depends=[func])
        if job is None:
            raise SystemExit("submit %d failed" % x)
        jobs.append(job)
    for job in jobs:
        name, which, value = job()
        print("RESULT", json.dumps({"id": job.id, "name": name, "func": which, "value": value}))
    cluster.print_status()
    cluster.close()
