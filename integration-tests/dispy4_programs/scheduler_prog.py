"""Scheduling from cluster_status: when a node is initialized, or a job on it is done,
the next data file goes to that node with submit_node(node, name,
dispy_job_depends=[name]), so each node runs one job at a time."""

import json
import threading


def compute(path):
    import hashlib
    import os

    digest = hashlib.sha1()
    with open(os.path.basename(path), "rb") as f:  # in the job's working directory
        for block in iter(lambda: f.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def cluster_status(status, node, job):  # runs in the client
    global next_file, busy_max
    with lock:
        if status == dispy.DispyJob.Finished:
            print("RESULT", json.dumps({"file": job.id, "sha1": job.result}), flush=True)
            running[node.ip_addr] -= 1
            finished.append(job.id)
        elif status == dispy.DispyJob.Terminated:
            print("RESULT", json.dumps({"file": job.id, "failed": job.exception}), flush=True)
            running[node.ip_addr] -= 1
            finished.append(job.id)
        elif status == dispy.DispyNode.Initialized:
            print("node %s with %s CPUs" % (node.ip_addr, node.avail_cpus), flush=True)
            running.setdefault(node.ip_addr, 0)
        else:
            return
        if len(finished) == len(files):
            all_done.set()
        if next_file < len(files):
            name = files[next_file]
            next_file += 1
            job = cluster.submit_node(node, name, dispy_job_depends=[name])
            job.id = name
            running[node.ip_addr] += 1
            busy_max = max(busy_max, running[node.ip_addr])


if __name__ == "__main__":
    import os
    import sys

    import dispy

    os.chdir(sys.argv[1])
    files = sorted(name for name in os.listdir(".") if name.startswith("data"))
    next_file, busy_max = 0, 0
    running, finished = {}, []
    lock = threading.Lock()
    all_done = threading.Event()
    with lock:  # cluster_status may run before `cluster` is assigned otherwise
        cluster = dispy.JobCluster(compute, cluster_status=cluster_status)
    if not all_done.wait(60):
        raise SystemExit("not all files were done")
    cluster.wait()
    print("RESULT", json.dumps({"most_at_once_on_a_node": busy_max}))
    cluster.print_status()
    cluster.close()
