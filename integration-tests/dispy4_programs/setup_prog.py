"""setup/cleanup with a file argument: a NodeAllocate subclass picks, for each node, the
data file it sends (depends) and the argument setup gets (setup_args); setup reads the
file into globals (data, and the module hashlib), and jobs work on them in memory."""

import json


def setup(data_file):
    global data, hashlib, loaded_from
    import hashlib

    with open(data_file, "rb") as f:  # in the computation's directory, by its base name
        data = f.read()
    loaded_from = data_file
    return 0


def cleanup(data_file):
    global data, hashlib, loaded_from
    del data, hashlib, loaded_from


def compute(algorithm):
    digest = hashlib.new(algorithm, data).hexdigest()  # noqa: F821 - made by setup
    return dispy_node_ip_addr, loaded_from, algorithm, digest  # noqa: F821


if __name__ == "__main__":
    import glob
    import os
    import sys
    import time

    import dispy

    data_files = sorted(glob.glob(os.path.join(sys.argv[1], "*.dat")))
    given = []

    class PerNodeFile(dispy.NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform="*"):
            data_file = data_files[len(given) % len(data_files)]
            given.append((ip_addr, data_file))
            print("node %s (%s) gets %s" % (ip_addr, name, data_file))
            self.depends = [data_file]
            self.setup_args = (os.path.basename(data_file),)
            return cpus

    cluster = dispy.JobCluster(compute, nodes=[PerNodeFile("*")], setup=setup, cleanup=cleanup)
    time.sleep(0.5)  # nodes found by now are set up first; jobs wait for a node anyway
    algorithms = ["md5", "sha1", "sha256", "sha512"]
    jobs = [cluster.submit(alg) for alg in algorithms]
    for job in jobs:
        job()
        if job.status == dispy.DispyJob.Finished:
            ip, name, alg, digest = job.result
            print("RESULT", json.dumps({"ip": ip, "file": name, "alg": alg, "digest": digest}))
        else:
            print("RESULT", json.dumps({"failed": job.exception}))
    print("RESULT", json.dumps({"allocated": given}))
    cluster.print_status()
    cluster.close()
