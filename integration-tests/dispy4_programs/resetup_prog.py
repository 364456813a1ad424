"""resetup_node swaps the in-memory data of a node between two batches of jobs. setup
loads a file and deletes it; allocate() looks at the node's platform, uses at most two
nodes and two CPUs each, and gives each (re)setup the next file and a counter."""

import json


def setup(data_file, generation):
    global data, hashlib, loaded_from, loaded_generation
    import hashlib
    import os

    with open(data_file, "rb") as f:
        data = f.read()
    os.remove(data_file)  # in memory from now on
    loaded_from, loaded_generation = data_file, generation
    return 0


def cleanup(data_file, generation):
    global data, loaded_from, loaded_generation
    del data, loaded_from, loaded_generation


def compute(i, pause):
    # time is not imported here: dispy 4.x's node had it in the computation's namespace
    time.sleep(pause)  # noqa: F821
    digest = hashlib.sha256(data).hexdigest()  # noqa: F821 - made by setup
    return i, dispy_node_ip_addr, loaded_from, loaded_generation, digest  # noqa: F821


def job_status(job):  # runs in the client, in dispy's callback thread
    if job.status == dispy.DispyJob.Finished:
        i, ip, name, generation, digest = job.result
        print("RESULT", json.dumps({"i": i, "ip": ip, "file": name, "generation": generation,
                                    "digest": digest}), flush=True)
    else:
        print("RESULT", json.dumps({"failed": job.exception}), flush=True)


if __name__ == "__main__":
    import glob
    import os
    import sys

    import dispy

    data_files = sorted(glob.glob(os.path.join(sys.argv[1], "*.dat")))
    serving = {}
    handed_out = [0]

    class SwapData(dispy.NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform="*"):
            if len(serving) == 2 and ip_addr not in serving:
                return 0  # two nodes are enough here
            if platform.startswith("Windows"):
                print("skipping %s: in-memory data needs fork" % ip_addr)
                return 0
            data_file = data_files[handed_out[0] % len(data_files)]
            handed_out[0] += 1
            serving[ip_addr] = data_file
            print("node %s (%s, %s) loads %s" % (ip_addr, name, platform, data_file))
            self.depends = [data_file]
            self.setup_args = (os.path.basename(data_file), handed_out[0])
            return min(2, cpus)

    cluster = dispy.JobCluster(compute, nodes=[SwapData(host="*")], setup=setup,
                               cleanup=cleanup, job_status=job_status)
    for i in range(3):
        job = cluster.submit(i, 0.05)
        job.id = i
    cluster.wait()
    for ip_addr in list(serving):
        cluster.resetup_node(ip_addr)
    for i in range(3, 6):
        job = cluster.submit(i, 0.05)
        job.id = i
    cluster.wait()
    cluster.print_status()
    cluster.close()
