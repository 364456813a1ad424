"""A real dispy cluster on this machine: one dispynode on 127.0.0.1 and a JobCluster.

Run with ``./dev demo``. It starts ``dispynode`` as a separate process on the loopback
address (nothing leaves this machine, nothing is broadcast: the node is named
explicitly), submits jobs, prints each result as it comes, then the cluster's status
table, and stops the node.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import tempfile

import dispy


def compute(n):
    # Runs on the node. dispy_node_name is set there by dispynode for every job.
    import time

    time.sleep(n)
    return dispy_node_name, n  # noqa: F821


def start_node(workdir: str) -> tuple[subprocess.Popen[str], int]:
    node = subprocess.Popen(
        [sys.executable, "-m", "dispy_node.cli", "-i", "127.0.0.1", "-p", "0", "--daemon",
         "--dest_path_prefix", workdir],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert node.stdout is not None
    for line in node.stdout:
        print(f"[node] {line.rstrip()}")
        match = re.search(r"serving \d+ CPUs at 127\.0\.0\.1:(\d+)", line)
        if match:
            return node, int(match.group(1))
    raise SystemExit("dispynode did not start")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dispy-demo-") as workdir:
        node, port = start_node(workdir)
        try:
            nodes = [dispy.NodeAllocate("127.0.0.1", port=port)]
            with dispy.JobCluster(compute, nodes=nodes) as cluster:
                jobs = []
                for i in range(10):
                    job = cluster.submit(random.uniform(0.05, 0.3))
                    job.id = i
                    jobs.append(job)
                for job in jobs:
                    name, n = job()  # waits for the job to finish
                    print(f"job {job.id}: slept {n:.3f} s on {name} ({job.host}), "
                          f"{job.end_time - job.start_time:.3f} s")
                cluster.print_status()
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(15)


if __name__ == "__main__":
    main()
