"""The canonical program: a function, a cluster found by discovery, jobs, results."""

import json


def compute(seconds):
    import time

    time.sleep(seconds)
    return dispy_node_name, seconds  # noqa: F821 - set by dispynode


if __name__ == "__main__":
    import dispy

    cluster = dispy.JobCluster(compute)
    waits = [0.05 * (i % 3 + 1) for i in range(6)]
    jobs = [cluster.submit(w) for w in waits]
    for job, w in zip(jobs, waits):
        name, slept = job()  # waits for this job
        print("RESULT", json.dumps({"id": job.id, "name": name, "slept": slept, "asked": w,
                                    "ip_addr": job.ip_addr, "started": job.start_time}))
    cluster.print_status()
    cluster.close()
