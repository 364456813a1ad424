"""A program (not a function) run once on every node: cluster_status submits it with
submit_node when a node is initialized, and the main loop calls discover_nodes(['*'])
until the number of nodes wanted have been found. Its output (job.stdout) is bytes."""

import json
import threading


def cluster_status(status, node, job):  # runs in the client
    with lock:  # held by the main program until `cluster` is assigned
        pass
    if status == dispy.DispyNode.Initialized:
        print("node %s with %s CPUs" % (node.ip_addr, node.avail_cpus), flush=True)
        nodes.add(node.ip_addr)
        if not cluster.submit_node(node):
            print("RESULT", json.dumps({"submit_failed": node.ip_addr}), flush=True)
    elif status == dispy.DispyJob.Finished:
        print("RESULT", json.dumps({"ip": job.ip_addr, "stdout_type": type(job.stdout).__name__,
                                    "stdout": job.stdout.decode(), "stderr": job.stderr.decode(),
                                    "exit": job.result}), flush=True)
    elif status == dispy.DispyJob.Terminated:
        print("RESULT", json.dumps({"ip": job.ip_addr, "failed": str(job.exception)}), flush=True)


if __name__ == "__main__":
    import os
    import sys
    import time

    import dispy

    script = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "update_script.py")
    wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    nodes = set()
    lock = threading.Lock()
    with lock:
        cluster = dispy.JobCluster(script, cluster_status=cluster_status)
    rounds = 0
    while len(nodes) < wanted:
        time.sleep(0.5)
        rounds += 1
        if rounds > 60:
            raise SystemExit("found only %s" % sorted(nodes))
        if len(nodes) < wanted:
            cluster.discover_nodes(["*"])
    cluster.wait()
    cluster.print_status()
    cluster.close()
