"""dispy's benchmark suite: prints this project's figures beside ProcessPoolExecutor's.

Run with ``./dev run bench`` (or ``python bench/bench.py`` where dispy is installed).
Everything runs on this machine: one ``dispynode`` on 127.0.0.1 with 2 CPUs, the client
in a child process of its own (so its peak RSS is its alone), and
``concurrent.futures.ProcessPoolExecutor(2)`` doing the same work in the same run.

The tiny and rtt workloads (and start) also run through ``dispyscheduler``: a second
``dispynode`` (2 CPUs) and a scheduler on 127.0.0.1 using exactly that node (``-n``), a
``SharedJobCluster`` in a client child of its own; reported as "via dispyscheduler"
beside the JobCluster figures (JSON: ``dispy.via_scheduler``).

The files workload runs on a node and scheduler of its own, in a client child of its
own: with JobCluster, and with SharedJobCluster twice, files sent straight from the node
to the client (``dispy_send_file(path)``, the default) and through the scheduler
(``relay=True``).

Workloads:
  tiny      2,000 jobs of f(x) = 2 * x, submitted at once (median of 3)  jobs/s
  rtt       200 times submit-then-wait, one job at a time (x 3)        ms p50 / p99
  cpu       8 jobs burning 0.5 s of CPU each on 2 CPUs                 wall s (ideal 2.0)
  args      20 jobs with a 10 MB bytes argument (median of 3)          MB/s
  files     20 jobs each sending a 10 MB file back (median of 3)      MB/s
  start     cluster creation to first result, node already running     s
  rss       peak RSS of the node's main process and of the client      MiB
  soak      100,000 jobs of f(x) = 2 * x through one cluster (--soak N)  jobs/s, RSS MiB
  flood     100,000 random or mutated frames from unauthenticated         RSS MiB
            connections (--flood N): the node's RSS before, during, after

The soak runs after the others, in a client child of its own against the same node (so
the figures above are not changed by it; the node's peak RSS is read before it starts).
It submits all N jobs at once, as a user would (measured: 100,000 pending jobs fit in
memory fine), holds no reference to them, and streams results through a ``job_status``
callback that checks each job's result and drops it. It reports the current RSS
(``psutil``, not peak) of the client and of the node's main process after the cluster is
created and a first batch of 100 jobs is done (start) and after all N are done, before
close (end), plus RSS at each quarter of the jobs done. Any wrong or missing result makes
the script exit nonzero (after printing the figures).

Reading the soak's RSS: the node's stays flat. The client's end RSS is well above its start
because 100,000 jobs were pending at once (about 60 MiB of live Python objects at the
peak) and the allocator keeps most of the freed memory; what stays live is ~10 MiB, the
emptied hash tables of two dicts sized for 100,000 entries (``Runtime._jobs`` and the
scheduler's ``_queued``). Measured with tracemalloc: the same ~10 MiB after 300,000 jobs,
and in chunks of 5,000 the client's RSS is flat (+3.5 MiB) over 200,000 jobs.

The flood runs last, on a node of its own, from a client child of its own: after one
job (the node warmed up) it reads the node's RSS (before), then opens connections, 200
at a time, each sending a few frames no peer with a secret would send: random bytes, a
real Hello with bytes changed or cut short, headers announcing up to 2**64 - 1 bytes, a
Hello followed by frames out of turn. It samples the node's RSS meanwhile (during: the
peak), reads it again once it has settled after the connections closed (after), and
runs one more job; a node that no longer serves makes the script exit nonzero.

Figures are printed, never asserted: timing belongs here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

TINY_JOBS = 2000
ROUNDS = 3  # tiny, rtt and args run this many times; median rates, all rtt samples
RTT_JOBS = 200
CPU_JOBS, CPU_SECONDS = 8, 0.5
ARG_JOBS, ARG_BYTES = 20, 10 * 1000 * 1000
FILE_JOBS, FILE_BYTES = 20, 10 * 1000 * 1000
SOAK_JOBS = 100_000
WARM_JOBS = 100  # the soak's first batch, before its start RSS is read
SOAK_TIMEOUT = 600  # seconds the soak may take before unfinished jobs count as missing
FLOOD_FRAMES = 100_000
FLOOD_CONCURRENCY = 200  # flood connections open at once
FLOOD_TIMEOUT = 900
MIB = 1024 * 1024
NODE_SERVING = re.compile(r"serving \d+ CPUs at 127\.0\.0\.1:(\d+)")
SCHEDULER_SERVING = re.compile(r"dispyscheduler serving clients at 127\.0\.0\.1:(\d+)")


def double(x):
    return 2 * x


def burn(seconds):
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def arg_size(data):
    return len(data)


def send_back(size, relay):
    import os
    name = "bench-%d.bin" % os.getpid()  # the node's workers share a directory
    with open(name, "wb") as f:
        f.write(b"\0" * size)
    status = dispy_send_file(name, relay=relay)  # noqa: F821
    os.remove(name)
    return status


def files_mb_per_s(make_cluster: Callable, relay: bool = False) -> float:
    """The files workload on the cluster of send_back that ``make_cluster()`` creates
    (closed afterwards); the client saves the files in a temporary directory."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dispy-bench-") as where:
        os.chdir(where)
        try:
            cluster = make_cluster()
            assert cluster.submit(1, relay)() == 0, "dispy_send_file failed"
            rates = []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                jobs = [cluster.submit(FILE_BYTES, relay) for _ in range(FILE_JOBS)]
                cluster.wait()
                elapsed = time.perf_counter() - t0
                assert all(j.result == 0 for j in jobs), [j.exception for j in jobs][:1]
                sizes = {name: os.path.getsize(name) for name in os.listdir(".") if name.startswith("bench-")}
                assert all(size in (1, FILE_BYTES) for size in sizes.values()), sizes
                rates.append(FILE_JOBS * FILE_BYTES / elapsed / 1e6)
            cluster.close()
        finally:
            os.chdir(cwd)
    return statistics.median(rates)


# -- the dispy side (runs in a child process) -----------------------------------------
def tiny_and_rtt(make_cluster: Callable) -> dict:
    """start, tiny and rtt on the cluster of double that ``make_cluster()`` creates
    (closed afterwards): the workloads a JobCluster and a SharedJobCluster both run."""
    out: dict = {}
    t0 = time.perf_counter()
    cluster = make_cluster()
    first = cluster.submit(1)
    first()
    out["start_s"] = time.perf_counter() - t0

    # warm-up so the node's workers are running
    for job in [cluster.submit(i) for i in range(100)]:
        job()

    rates = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        jobs = [cluster.submit(i) for i in range(TINY_JOBS)]
        cluster.wait()
        elapsed = time.perf_counter() - t0
        assert all(j.result == 2 * i for i, j in enumerate(jobs)), "wrong results"
        rates.append(TINY_JOBS / elapsed)
    out["tiny_jobs_per_s"] = statistics.median(rates)

    samples = []
    for i in range(RTT_JOBS * ROUNDS):
        t0 = time.perf_counter()
        cluster.submit(i)()
        samples.append((time.perf_counter() - t0) * 1000)
    out["rtt_ms"] = percentiles(samples)
    cluster.close()
    return out


def dispy_client(port: int) -> dict:
    import dispy

    node = [dispy.NodeAllocate("127.0.0.1", port=port)]
    out = tiny_and_rtt(lambda: dispy.JobCluster(double, nodes=node, loglevel=dispy.logger.WARNING))

    cluster = dispy.JobCluster(burn, nodes=node, loglevel=dispy.logger.WARNING)
    cluster.submit(0.001)()
    t0 = time.perf_counter()
    jobs = [cluster.submit(CPU_SECONDS) for _ in range(CPU_JOBS)]
    cluster.wait()
    out["cpu_wall_s"] = time.perf_counter() - t0
    cluster.close()

    cluster = dispy.JobCluster(arg_size, nodes=node, loglevel=dispy.logger.WARNING)
    cluster.submit(b"x")()
    data = os.urandom(ARG_BYTES)
    rates = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        jobs = [cluster.submit(data) for _ in range(ARG_JOBS)]
        cluster.wait()
        elapsed = time.perf_counter() - t0
        assert all(j.result == ARG_BYTES for j in jobs), [j.exception for j in jobs][:1]
        rates.append(ARG_JOBS * ARG_BYTES / elapsed / 1e6)
    out["args_mb_per_s"] = statistics.median(rates)
    cluster.close()

    out["client_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def shared_client(scheduler_port: int, node_port: int) -> dict:
    """tiny_and_rtt through dispyscheduler (a SharedJobCluster using the node at node_port)."""
    import dispy

    node = [dispy.NodeAllocate("127.0.0.1", port=node_port)]
    out = tiny_and_rtt(lambda: dispy.SharedJobCluster(
        double, nodes=node, scheduler_node=f"127.0.0.1:{scheduler_port}", host="127.0.0.1",
        loglevel=dispy.logger.WARNING))
    out["client_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def files_client(node_port: int, scheduler_port: int) -> dict:
    """The files workload with JobCluster, then SharedJobCluster (straight, relayed)."""
    import dispy

    node = [dispy.NodeAllocate("127.0.0.1", port=node_port)]

    def shared() -> Any:
        return dispy.SharedJobCluster(send_back, nodes=node, scheduler_node=f"127.0.0.1:{scheduler_port}",
                                      host="127.0.0.1", loglevel=dispy.logger.WARNING)

    direct = files_mb_per_s(lambda: dispy.JobCluster(send_back, nodes=node, loglevel=dispy.logger.WARNING))
    return {"files_mb_per_s": direct,
            SHARED: {"files_mb_per_s": files_mb_per_s(shared),
                     "files_relayed_mb_per_s": files_mb_per_s(shared, relay=True)}}


def dispy_soak(port: int, node_pid: int, n: int) -> dict:
    """N tiny jobs through one cluster, results checked and dropped as they arrive."""
    import threading

    import dispy
    import psutil

    me, node_proc = psutil.Process(), psutil.Process(node_pid)

    def rss() -> dict:
        return {"client_mib": me.memory_info().rss / MIB, "node_mib": node_proc.memory_info().rss / MIB}

    terminal = {dispy.DispyJob.Finished, dispy.DispyJob.Cancelled, dispy.DispyJob.Terminated,
                dispy.DispyJob.Abandoned}
    seen = bytearray(n)  # one flag a job: a second result for the same x is wrong
    counts = {"done": 0, "ok": 0}
    trace: list[dict] = []
    all_done = threading.Event()
    warm_done = threading.Event()
    warm = {"left": WARM_JOBS}
    active = False  # the warm-up batch goes through the same callback; not counted

    def job_status(job) -> None:  # noqa: ANN001
        if job.status not in terminal:
            return
        if not active:
            warm["left"] -= 1
            if warm["left"] <= 0:
                warm_done.set()
            return
        x = job.args[0]
        if job.status == dispy.DispyJob.Finished and job.result == 2 * x and not seen[x]:
            seen[x] = 1
            counts["ok"] += 1
        counts["done"] += 1
        done = counts["done"]
        if done % max(1, n // 4) == 0 and done < n:
            trace.append({"done": done, **rss()})
        if done >= n:
            all_done.set()

    node = [dispy.NodeAllocate("127.0.0.1", port=port)]
    cluster = dispy.JobCluster(double, nodes=node, job_status=job_status,
                               loglevel=dispy.logger.WARNING)
    for job in [cluster.submit(i) for i in range(WARM_JOBS)]:
        job()
    del job
    warm_done.wait(60)  # their callbacks may still be queued: let them all run first
    out: dict = {"jobs": n, "start": rss()}
    active = True

    t0 = time.perf_counter()
    for i in range(n):
        cluster.submit(i)  # the job is not kept: job_status checks its result
    out["submit_s"] = time.perf_counter() - t0
    all_done.wait(SOAK_TIMEOUT)
    elapsed = time.perf_counter() - t0
    out["end"] = rss()
    out["seconds"] = elapsed
    out["jobs_per_s"] = n / elapsed
    out["trace"] = trace
    out["client_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["bad"] = n - counts["ok"]  # wrong, duplicated or missing
    cluster.close(timeout=30, terminate=True)
    return out


def flood_probe(rng: Any, hello: bytes) -> list[bytes]:
    """The frames one flood connection sends (see the module docstring)."""
    from dispy_core.framing import HEADER, MAGIC, PROTOCOL_VERSION, pack_header

    kind = rng.randrange(5)
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 300))]
    if kind == 1:
        data = bytearray(hello)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return [bytes(data)]
    if kind == 2:
        return [hello[:rng.randrange(1, len(hello))]]
    if kind == 3:
        length = rng.choice([1 << 30, (1 << 64) - 1, rng.randrange(4097, 1 << 40)])
        return [HEADER.pack(MAGIC, PROTOCOL_VERSION, hello[5], 0, length) + rng.randbytes(rng.randrange(2000))]
    return [hello] + [pack_header(rng.randrange(256), 8) + rng.randbytes(8) for _ in range(rng.randrange(1, 8))]


def dispy_flood(port: int, node_pid: int, frames: int) -> dict:
    """``frames`` frames over unauthenticated connections to the node; its RSS around them."""
    import asyncio
    import random
    import socket

    import dispy
    import psutil
    from dispy_core.connection import Connection

    node_proc = psutil.Process(node_pid)

    def rss() -> float:
        return node_proc.memory_info().rss / MIB

    def one_job() -> bool:
        cluster = dispy.JobCluster(double, nodes=[dispy.NodeAllocate("127.0.0.1", port=port)],
                                   loglevel=dispy.logger.WARNING)
        try:
            return cluster.submit(21)() == 42
        finally:
            cluster.close()

    out: dict = {"frames": frames, "served_before": one_job()}
    time.sleep(1)
    out["before_mib"] = rss()
    rng = random.Random(13)
    hello = b"".join(bytes(memoryview(p).cast("B")) for p in Connection(initiator=True).data_to_send())
    peak = [out["before_mib"]]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak[0] = max(peak[0], rss())

    async def flood() -> int:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(FLOOD_CONCURRENCY)
        sent = connections = 0

        async def one(probe: list[bytes]) -> None:
            async with sem:
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                    await loop.sock_sendall(sock, b"".join(probe))
                except OSError:
                    pass
                finally:
                    sock.close()

        pending: set = set()
        while sent < frames:
            probe = flood_probe(rng, hello)
            sent += len(probe)
            connections += 1
            pending.add(asyncio.ensure_future(one(probe)))
            if len(pending) >= 4 * FLOOD_CONCURRENCY:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*pending)
        return connections

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out["connections"] = asyncio.run(flood())
    out["seconds"] = time.perf_counter() - t0
    sampling.set()
    sampler.join()
    out["during_mib"] = peak[0]
    last, still = rss(), 0
    for _ in range(100):  # settled: unchanged (within 64 KiB) for 1 s
        time.sleep(0.1)
        now = rss()
        still = still + 1 if abs(now - last) < 1 / 16 else 0
        last = now
        if still >= 10:
            break
    out["after_mib"] = last
    out["served_after"] = one_job()
    return out


def percentiles(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def daemon(module: str, serving: re.Pattern[str], *args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python -m module -i 127.0.0.1 --daemon`` with ``args`` and a directory of its own:
    yields the process and the port its ``serving`` line names; then stops it (SIGTERM,
    then SIGKILL) and removes the directory, also on error."""
    prefix = tempfile.mkdtemp(prefix="dispy-bench-")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-i", "127.0.0.1", *args, "--daemon",
         "--dest_path_prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        port, lines = 0, []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = serving.search(line)
            if m:
                port = int(m.group(1))
                break
        if not port:
            raise SystemExit(f"{module} did not start:\n{''.join(lines)}")
        # keep reading its output, so that it never blocks on a full pipe
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(prefix, ignore_errors=True)


def run_client(what: str, *args: str, timeout: float = 600) -> dict:
    """This script in a child process with ``args``: the JSON its last line prints."""
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                           timeout=timeout)
    if child.returncode:
        raise SystemExit(f"{what} failed:\n{child.stdout}\n{child.stderr}")
    result: dict = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def run_dispy(soak: int) -> dict:
    with daemon("dispy_node.cli", NODE_SERVING, "-p", "0", "-c", "2") as (node, port):
        result = run_client("dispy client", "--client", str(port))
        result["node_peak_rss_mib"] = peak_rss_mib(node.pid)
        if soak:
            result["soak"] = run_client(
                "dispy soak client", "--soak-client", str(port), "--node-pid", str(node.pid),
                "--soak", str(soak), timeout=SOAK_TIMEOUT + 120)
        return result


def run_shared() -> dict:
    """tiny_and_rtt through a dispyscheduler using (-n) a node of its own."""
    with daemon("dispy_node.cli", NODE_SERVING, "-p", "0", "-c", "2") as (node, node_port), \
            daemon("dispy_scheduler.cli", SCHEDULER_SERVING, "--scheduler_port", "0", "-p", "0",
                   "-n", f"127.0.0.1:{node_port}") as (scheduler, port):
        result = run_client("SharedJobCluster client", "--shared-client", str(port),
                            "--node-port", str(node_port))
        result["node_peak_rss_mib"] = peak_rss_mib(node.pid)
        result["scheduler_peak_rss_mib"] = peak_rss_mib(scheduler.pid)
        return result


def run_flood(frames: int) -> dict:
    """The flood, on a node of its own."""
    with daemon("dispy_node.cli", NODE_SERVING, "-p", "0", "-c", "2") as (node, port):
        return run_client("flood client", "--flood-client", str(port), "--node-pid", str(node.pid),
                          "--flood", str(frames), timeout=FLOOD_TIMEOUT)


def run_files() -> dict:
    """The files workload, on a node and scheduler of its own (so that the 10 MB files
    don't count in the other workloads' peak RSS)."""
    with daemon("dispy_node.cli", NODE_SERVING, "-p", "0", "-c", "2") as (node, node_port), \
            daemon("dispy_scheduler.cli", SCHEDULER_SERVING, "--scheduler_port", "0", "-p", "0",
                   "-n", f"127.0.0.1:{node_port}") as (scheduler, port):
        return run_client("files client", "--files-client", str(node_port), "--scheduler-port", str(port))


# -- the ProcessPoolExecutor side ------------------------------------------------------
def run_pool() -> dict:
    out: dict = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        pool.submit(double, 1).result()
        out["start_s"] = time.perf_counter() - t0
        for f in [pool.submit(double, i) for i in range(100)]:
            f.result()

        rates = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            futures = [pool.submit(double, i) for i in range(TINY_JOBS)]
            results = [f.result() for f in futures]
            rates.append(TINY_JOBS / (time.perf_counter() - t0))
            assert results == [2 * i for i in range(TINY_JOBS)]
        out["tiny_jobs_per_s"] = statistics.median(rates)

        samples = []
        for i in range(RTT_JOBS * ROUNDS):
            t0 = time.perf_counter()
            pool.submit(double, i).result()
            samples.append((time.perf_counter() - t0) * 1000)
        out["rtt_ms"] = percentiles(samples)

        t0 = time.perf_counter()
        for f in [pool.submit(burn, CPU_SECONDS) for _ in range(CPU_JOBS)]:
            f.result()
        out["cpu_wall_s"] = time.perf_counter() - t0

        data = os.urandom(ARG_BYTES)
        rates = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for f in [pool.submit(arg_size, data) for _ in range(ARG_JOBS)]:
                assert f.result() == ARG_BYTES
            rates.append(ARG_JOBS * ARG_BYTES / (time.perf_counter() - t0) / 1e6)
        out["args_mb_per_s"] = statistics.median(rates)
    return out


SHARED = "via_scheduler"  # where run_shared()'s figures go in the dispy side's dict (and JSON)


def report(ours: dict, pool: dict) -> None:
    rows = [
        ("tiny jobs/s (2,000 x f(x)=2*x)", "tiny_jobs_per_s", "{:,.0f}", ">= 10,000"),
        ("  via dispyscheduler", (SHARED, "tiny_jobs_per_s"), "{:,.0f}", ""),
        ("round trip p50, ms", ("rtt_ms", "p50"), "{:.3f}", "<= 0.5"),
        ("  via dispyscheduler", (SHARED, "rtt_ms", "p50"), "{:.3f}", ""),
        ("round trip p99, ms", ("rtt_ms", "p99"), "{:.3f}", ""),
        ("  via dispyscheduler", (SHARED, "rtt_ms", "p99"), "{:.3f}", ""),
        ("8 x 0.5 s CPU jobs on 2 CPUs, wall s", "cpu_wall_s", "{:.3f}", "<= 2.05"),
        ("10 MB arguments, MB/s", "args_mb_per_s", "{:,.0f}", ">= 1,000"),
        ("10 MB files from jobs, MB/s", "files_mb_per_s", "{:,.0f}", ""),
        ("  via dispyscheduler, straight", (SHARED, "files_mb_per_s"), "{:,.0f}", ""),
        ("  via dispyscheduler, relay=True", (SHARED, "files_relayed_mb_per_s"), "{:,.0f}", ""),
        ("start to first result, s", "start_s", "{:.4f}", "<= 0.02"),
        ("  via dispyscheduler", (SHARED, "start_s"), "{:.4f}", ""),
        ("node peak RSS, MiB", "node_peak_rss_mib", "{:.1f}", "<= 30"),
        ("client peak RSS, MiB", "client_peak_rss_mib", "{:.1f}", "<= 30"),
        ("dispyscheduler peak RSS, MiB", (SHARED, "scheduler_peak_rss_mib"), "{:.1f}", ""),
    ]

    def get(d: dict, key):  # noqa: ANN001
        value: object = d
        for k in key if isinstance(key, tuple) else (key,):
            value = value.get(k) if isinstance(value, dict) else None
        return value

    print(f"{'workload':<40} {'dispy':>12} {'ProcessPool':>12}   target")
    print("-" * 80)
    for label, key, fmt, target in rows:
        a, b = get(ours, key), get(pool, key)
        sa = fmt.format(a) if a is not None else "-"
        sb = fmt.format(b) if b is not None else "-"
        print(f"{label:<40} {sa:>12} {sb:>12}   {target}")
    soak = ours.get("soak")
    if soak:
        print(f"\nsoak: {soak['jobs']:,} x f(x)=2*x, submitted at once, results streamed "
              "(ProcessPool: n/a)")
        print("-" * 80)
        print(f"{'jobs':<40} {soak['jobs']:>12,}")
        print(f"{'seconds':<40} {soak['seconds']:>12.2f}")
        print(f"{'jobs/s':<40} {soak['jobs_per_s']:>12,.0f}")
        print(f"{'wrong or missing results':<40} {soak['bad']:>12,}")
        for side in ("client", "node"):
            a, b = soak["start"][f"{side}_mib"], soak["end"][f"{side}_mib"]
            print(f"{side + ' RSS start -> end, MiB':<40} {f'{a:.1f} -> {b:.1f}':>12}   ({b - a:+.1f})")
        steps = " | ".join(f"{t['done']:,}: {t['client_mib']:.1f} / {t['node_mib']:.1f}"
                           for t in soak["trace"])
        if steps:
            print(f"{'RSS while draining, client / node':<40} {steps}")
        print(f"{'client peak RSS (soak child), MiB':<40} {soak['client_peak_rss_mib']:>12.1f}")
    flood = ours.get("flood")
    if flood:
        print(f"\nflood: {flood['frames']:,} random or mutated frames over {flood['connections']:,} "
              "unauthenticated connections (ProcessPool: n/a)")
        print("-" * 80)
        print(f"{'seconds':<40} {flood['seconds']:>12.2f}")
        print(f"{'connections/s':<40} {flood['connections'] / flood['seconds']:>12,.0f}")
        a, b, c = flood["before_mib"], flood["during_mib"], flood["after_mib"]
        print(f"{'node RSS before / peak / after, MiB':<40} {f'{a:.1f} / {b:.1f} / {c:.1f}':>20}"
              f"   ({c - a:+.1f})")
        print(f"{'node still runs a job after it':<40} {'yes' if flood['served_after'] else 'NO':>12}")
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--soak-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--node-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shared-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--node-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--files-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flood-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--soak", type=int, default=SOAK_JOBS, metavar="N",
                        help=f"jobs in the soak workload (default {SOAK_JOBS:,}; 0 skips it)")
    parser.add_argument("--flood", type=int, default=FLOOD_FRAMES, metavar="N",
                        help=f"frames in the flood workload (default {FLOOD_FRAMES:,}; 0 skips it)")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(dispy_client(args.client)))
        return
    if args.soak_client:
        print(json.dumps(dispy_soak(args.soak_client, args.node_pid, args.soak)))
        return
    if args.shared_client:
        print(json.dumps(shared_client(args.shared_client, args.node_port)))
        return
    if args.files_client:
        print(json.dumps(files_client(args.files_client, args.scheduler_port)))
        return
    if args.flood_client:
        print(json.dumps(dispy_flood(args.flood_client, args.node_pid, args.flood)))
        return
    if args.soak < 0:
        parser.error("--soak must be 0 or more")
    if args.flood < 0:
        parser.error("--flood must be 0 or more")
    ours = run_dispy(args.soak)
    ours[SHARED] = run_shared()
    files = run_files()
    ours[SHARED].update(files.pop(SHARED))
    ours.update(files)
    if args.flood:
        ours["flood"] = run_flood(args.flood)
    pool = run_pool()
    report(ours, pool)
    if args.json:
        print(json.dumps({"dispy": ours, "process_pool": pool}, indent=2))
    bad = ours.get("soak", {}).get("bad", 0)
    if bad:
        raise SystemExit(f"soak: {bad:,} of {args.soak:,} results wrong or missing")
    flood = ours.get("flood")
    if flood and not (flood["served_before"] and flood["served_after"]):
        raise SystemExit("flood: the node did not run a job " + ("after it" if flood["served_before"] else "before it"))


if __name__ == "__main__":
    main()
