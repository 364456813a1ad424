"""``JobCluster``: the blocking API on the user's threads.

This module owns argument validation, job creation and the waiting methods; the work
happens in :class:`._runtime.Runtime` on its own thread. Every documented parameter does
what dispy says, or (``ext_host``, ``poll_interval``) is checked and logged as not needed
here, with the reason; none is silently ignored.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from dispy_core import config, tls
from dispy_core.errors import ConfigError
from dispy_core.netif import check_ping_interval, host_list
from dispy_core.nodes import DispyNode, parse_nodes
from dispy_core.status import JobStatus

from ._callbacks import CallbackThread
from ._computation import build_computation, check_timeout, file_data, job_spec
from ._job import DispyJob
from ._log import set_level, show_if_unconfigured
from ._recover import RecoverFile, default_recover_path
from ._runtime import Runtime
from ._status import ClusterStatus, format_status

__all__ = ["JobCluster"]

log = logging.getLogger(__name__)

#: dispy's range for poll_interval, seconds.
POLL_INTERVAL_RANGE = (5.0, 1000.0)

_live: weakref.WeakSet[JobCluster] = weakref.WeakSet()


def check_poll_interval(value: Any) -> float | None:
    """``poll_interval``: None or seconds in POLL_INTERVAL_RANGE (ConfigError otherwise).

    In dispy 4 a client behind NAT, which nodes could not connect to, polled them every
    that many seconds for results. Here nothing needs to reach the client: it opens every
    connection (to nodes, to dispyscheduler, to nodes it attaches to) and results come
    back on them. The value is checked and one line logged to say so."""
    if value is None:
        return None
    low, high = POLL_INTERVAL_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"poll_interval must be a number of seconds from {low:g} to {high:g} "
                          f"(or None), not {value!r}")
    log.info("poll_interval=%g: no polling is needed: this client opens every connection to its "
             "nodes (and dispyscheduler) and results come back on them, so nodes never have to "
             "reach the client", value)
    return float(value)


def _check_port(name: str, value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536):
        raise ConfigError(f"{name} must be a port number (0: any free port), not {value!r}")
    return value  # type: ignore[no-any-return]


def _check_callback(name: str, func: Any, nargs: int) -> None:
    if func is None:
        return
    if not callable(func):
        raise ConfigError(f"{name} must be a function, not {type(func).__name__}")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    try:
        sig.bind(*([None] * nargs))
    except TypeError:
        args = "job" if nargs == 1 else "status, node, job"
        raise ConfigError(f"{name} must take {nargs} argument{'s' * (nargs > 1)} ({args}); "
                          f"{getattr(func, '__qualname__', func)}{sig} does not") from None


class JobCluster:
    """Distribute ``computation`` (a Python function or a program path) to nodes running
    dispynode and run jobs on them: ``job = cluster.submit(args...)``, then ``job()``.

    Parameters are dispy's (see the README); ``process_per_job=True`` runs every job in
    a fresh process on the node instead of a reused worker, and ``job_timeout`` (seconds)
    terminates any job still running that long after it started (see :meth:`submit`).

    Names of dispy 4.x programs are accepted too: ``ip_addr`` (``host``),
    ``ext_ip_addr`` (``ext_host``), ``callback`` (``job_status``), ``port`` (the client's
    own port, where ``dispynode --scheduler_node`` announcements arrive; default
    ``dispy_port``'s) and ``node_port`` (the port nodes listen on, for nodes given
    without one and for discovery; default ``dispy_port`` + 1).
    """

    def __init__(
        self,
        computation: Any,
        nodes: Any = None,
        depends: list[Any] | None = None,
        job_status: Callable[[DispyJob], Any] | None = None,
        cluster_status: Callable[[int, DispyNode | None, DispyJob | None], Any] | None = None,
        host: str | list[str] | None = None,
        ext_host: Any = None,
        dispy_port: int | None = None,
        ipv4_udp_multicast: bool = False,
        dest_path: str | None = None,
        loglevel: int | str = logging.INFO,
        setup: Callable[..., Any] | None = None,
        cleanup: bool | Callable[..., Any] = True,
        ping_interval: float | None = None,
        pulse_interval: float | None = None,
        reentrant: bool = False,
        secret: str | bytes = "",
        keyfile: str | None = None,
        certfile: str | None = None,
        recover_file: str | None = None,
        process_per_job: bool = False,
        job_timeout: float | None = None,
        *,
        poll_interval: float | None = None,
        ip_addr: str | list[str] | None = None,
        ext_ip_addr: Any = None,
        callback: Callable[[DispyJob], Any] | None = None,
        port: int | None = None,
        node_port: int | None = None,
    ) -> None:
        self._runtime: Runtime | None = None
        self._closed = True
        check_poll_interval(poll_interval)
        port = _check_port("port", port)
        node_port = _check_port("node_port", node_port)
        if node_port == 0:
            raise ConfigError("node_port must be the port the nodes listen on (1-65535), not 0")
        if ip_addr is not None:  # dispy 4's name for host
            if host is not None:
                raise ConfigError("give host or its old name ip_addr, not both")
            host = ip_addr
        if callback is not None:  # dispy 4's name for job_status
            if job_status is not None:
                raise ConfigError("give job_status or its old name callback, not both")
            job_status = callback
        _check_callback("job_status", job_status, 1)
        _check_callback("cluster_status", cluster_status, 3)
        local_hosts = host_list("host", host, resolve=True)
        # ext_host: what a NAT gateway in front of this client is known by. Nodes never
        # connect back to the client (every connection is the client's, and discovery
        # replies go to the requester), so no message carries it: it is only validated.
        self._ext_hosts = host_list("ext_host", ext_host if ext_ip_addr is None else ext_ip_addr,
                                    resolve=False)
        if not isinstance(ipv4_udp_multicast, bool):
            raise ConfigError(f"ipv4_udp_multicast must be True or False, not {ipv4_udp_multicast!r}")
        ping_interval = check_ping_interval(ping_interval)
        if dispy_port is not None and (not isinstance(dispy_port, int) or isinstance(dispy_port, bool)
                                       or not 0 <= dispy_port < 65535):
            raise ConfigError(f"dispy_port must be an int in 0-65534 (0: any free port), not {dispy_port!r}")
        if dest_path is not None and not isinstance(dest_path, str):
            raise ConfigError(f"dest_path must be a string, not {type(dest_path).__name__}")
        if not isinstance(secret, (str, bytes)):
            raise ConfigError(f"secret must be a string, not {type(secret).__name__}")
        if not isinstance(process_per_job, bool):
            raise ConfigError(f"process_per_job must be True or False, not {process_per_job!r}")
        if depends is not None and not isinstance(depends, (list, tuple)):
            raise ConfigError(f"depends must be a list, not {type(depends).__name__}")
        set_level(loglevel)
        show_if_unconfigured()
        if keyfile is not None and certfile is None:
            raise ConfigError("keyfile needs certfile (the certificate that goes with the key)")
        ssl_context = tls.client_context(certfile, keyfile) if certfile is not None else None

        if pulse_interval is not None and (isinstance(pulse_interval, bool) or not isinstance(
                pulse_interval, (int, float)) or not 1 <= pulse_interval <= 600):
            raise ConfigError(f"pulse_interval must be a number of seconds in 1-600, not {pulse_interval!r}")
        if not isinstance(reentrant, bool):
            raise ConfigError(f"reentrant must be True or False, not {reentrant!r}")
        self._job_timeout = check_timeout("job_timeout", job_timeout)
        if recover_file is not None and not isinstance(recover_file, str):
            raise ConfigError(f"recover_file must be a path (a string), not {type(recover_file).__name__}")

        specs = parse_nodes(nodes, dispy_port, node_port=node_port)
        self._computation = build_computation(computation, list(depends or ()), setup, cleanup)
        compute_id = uuid.uuid4().hex
        self._recover: RecoverFile | None = None
        try:
            self._recover = RecoverFile(recover_file or default_recover_path(), compute_id=compute_id,
                                        name=self._computation.name, secret=secret, certfile=certfile,
                                        keyfile=keyfile)
        except ConfigError as exc:
            if recover_file is not None:
                raise  # the path the program asked for
            log.warning("%s (in the current directory); dispy.recover_jobs() will not be able to "
                        "recover this cluster's jobs: give recover_file a writable path", exc)
        self._kind = self._computation.kind
        self._job_status = job_status
        self._cluster_status = cluster_status
        self._callbacks = CallbackThread() if (job_status or cluster_status) else None
        self._uids = itertools.count(1)
        self._start_time = time.time()
        self._close_lock = threading.Lock()
        self._runtime = self._new_runtime(
            specs,
            secret=secret,
            dest_path=dest_path,
            cleanup_files=cleanup is not False,
            process_per_job=process_per_job,
            local_host=local_hosts,
            client_port=port if port is not None else config.client_port(dispy_port) if dispy_port != 0 else 0,
            job_status=job_status,
            cluster_status=cluster_status,
            callbacks=self._callbacks,
            dispy_port=dispy_port,
            node_port=node_port,
            ssl=ssl_context,
            ipv4_udp_multicast=ipv4_udp_multicast,
            ping_interval=ping_interval,
            compute_id=compute_id,
            pulse_interval=float(pulse_interval or 0),
            recover=self._recover,
            reentrant=reentrant,
            # dispy.config.MaxFileSize: the largest file this client takes from its jobs
            # (dispy_send_file); the nodes refuse larger ones before sending them.
            compute_options={"max_file_size": config.MaxFileSize} if config.MaxFileSize > 0 else {},
        )
        self._closed = False
        _live.add(self)

    def _new_runtime(self, specs: list[Any], **kwargs: Any) -> Runtime:
        """The engine that runs the cluster (SharedJobCluster's talks to dispyscheduler)."""
        return Runtime(self, self._computation, specs, **kwargs)

    def _place(self, spec: Any, pin: Any) -> tuple[Any, Any]:
        """A job's spec and the node key it is pinned to in the runtime (submit_node)."""
        return spec, pin

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, *args: Any, **kwargs: Any) -> DispyJob | None:
        """Create a job running ``computation(*args, **kwargs)`` on some node.

        ``dispy_job_depends=[...]`` (files, functions, classes, modules) is taken out of
        ``kwargs`` and sent with this job only. ``dispy_job_timeout=seconds`` (taken out
        too) bounds this job's run time instead of the cluster's ``job_timeout``: a job
        still running that long after it started on its node is terminated (status
        Terminated, ``exception`` ending with a TimeoutError line); None: no bound. Returns the :class:`DispyJob`, or None
        (with the reason logged) if the job could not be created: arguments that can't
        be serialized, or a closed cluster.
        """
        runtime = self._runtime
        if self._closed or runtime is None:
            log.error("submit(): the cluster for %s is closed", self.name)
            return None
        return self._submit(runtime, None, args, kwargs)

    def submit_node(self, node: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        """Like :meth:`submit`, but the job runs on ``node`` only: a :class:`DispyNode`
        (e.g. from ``cluster_status``), an IP address or a host name of a node that
        serves (or served) the cluster. Returns None, with an error logged, if no such
        node is in the cluster. If the node's connection is lost, the job waits for it
        to come back."""
        runtime = self._runtime
        if self._closed or runtime is None:
            log.error("submit_node(): the cluster for %s is closed", self.name)
            return None
        key = runtime.node_key(node)
        if key is None:
            log.error("submit_node(): node %s is not in the cluster for %s",
                      getattr(node, "ip_addr", node), self.name)
            return None
        return self._submit(runtime, key, args, kwargs)

    def submit_job_id(self, job_id: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        """dispy 4.x: :meth:`submit` with the job's ``id`` set to ``job_id``."""
        job = self.submit(*args, **kwargs)
        if job is not None:
            job.id = job_id
        return job

    def submit_job_id_node(self, job_id: Any, node: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        """dispy 4.x: :meth:`submit_node` with the job's ``id`` set to ``job_id``."""
        job = self.submit_node(node, *args, **kwargs)
        if job is not None:
            job.id = job_id
        return job

    def _submit(self, runtime: Runtime, pin: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> DispyJob | None:
        job_depends = kwargs.pop("dispy_job_depends", None)
        timeout = kwargs.pop("dispy_job_timeout", self._job_timeout)
        uid = next(self._uids)
        job = DispyJob(uid, args, kwargs, time.time())
        try:
            timeout = check_timeout("dispy_job_timeout", timeout)
            job._spec, job._tx = job_spec(uid, self._kind, args, kwargs, job_depends, timeout,
                                             self._computation.sources)
        except Exception as exc:
            log.error("creating job %d for %s failed: %s: %s", uid, self.name, type(exc).__name__, exc)
            return None
        job._uid = uid
        job._spec, job._pin = self._place(job._spec, pin)
        if self._cluster_status is not None:
            self._callbacks.put(self._cluster_status, JobStatus.Created, None, job)  # type: ignore[union-attr]
        if not runtime.submit(job):
            log.error("submit(): the cluster for %s is closed", self.name)
            return None
        return job

    def cancel(self, job: DispyJob) -> int:
        """Cancel a job: one still queued here ends Cancelled at once; a running one is
        interrupted on its node (KeyboardInterrupt in the job, killed 5 s later if it is
        still running) and ends Cancelled, with whatever result, output and exception
        the node sent. Returns 0, or -1 if the job is already done or not this
        cluster's."""
        runtime = self._runtime
        if runtime is None or not isinstance(job, DispyJob) or not runtime.thread.alive:
            return -1
        try:
            return int(runtime.call(runtime.cancel, job, timeout=config.MsgTimeout))
        except Exception as exc:
            log.warning("cancel(): %s: %s", type(exc).__name__, exc)
            return -1

    def node_jobs(self, node: Any, from_node: bool = False) -> list[DispyJob]:
        """The jobs running on ``node`` (a :class:`DispyNode`, IP address or host name).

        By default from this client's records: the jobs sent there and not finished, in
        the order they were sent (jobs waiting in the node's queue included). With
        ``from_node=True`` the node is asked (a round trip, at most ``MsgTimeout``): the
        jobs it is running right now, in the order they started, as this cluster's
        DispyJob objects. If the node can't answer, the reason is logged and the
        client's records are returned."""
        runtime = self._runtime
        if runtime is None or not runtime.thread.alive:
            return []
        key = runtime.node_key(node)
        if key is None:
            return []
        try:
            if from_node:
                jobs = runtime.thread.run(runtime.node_jobs_from_node(key), timeout=config.MsgTimeout * 3)
                if jobs is not None:
                    return list(jobs)
                log.warning("node_jobs(%s, from_node=True): the node did not tell; the client's records "
                            "follow", key[0])
            return list(runtime.call(runtime.node_jobs, key, timeout=config.MsgTimeout))
        except Exception as exc:
            log.warning("node_jobs(): %s: %s", type(exc).__name__, exc)
            return []

    # -- nodes ------------------------------------------------------------------------------
    def _serving_node(self, what: str, node: Any) -> tuple[Runtime, tuple[str, int]] | None:
        """The runtime and ``node``'s key for a method acting on one node of the cluster;
        None (with the reason logged) if the cluster is closed or the node not in it."""
        runtime = self._open_runtime(what)
        if runtime is None:
            return None
        key = runtime.node_key(node)
        if key is None:
            log.error("%s(): node %s is not in the cluster for %s",
                      what, getattr(node, "ip_addr", node), self.name)
            return None
        return runtime, key

    def _open_runtime(self, what: str) -> Runtime | None:
        runtime = self._runtime
        if self._closed or runtime is None or not runtime.thread.alive:
            log.error("%s(): the cluster for %s is closed", what, self.name)
            return None
        return runtime

    def deallocate_node(self, node: Any) -> int:
        """Stop sending new jobs to ``node`` (a :class:`DispyNode`, IP address or host
        name): jobs running there finish, queued jobs go to other nodes, jobs submitted
        to it with :meth:`submit_node` wait. The computation stays set up there;
        :meth:`allocate_node` resumes. Returns 0, or -1 if the node is not in the cluster."""
        found = self._serving_node("deallocate_node", node)
        if found is None:
            return -1
        runtime, key = found
        return self._call(runtime, "deallocate_node", runtime.deallocate, key)

    def allocate_node(self, node: Any) -> int:
        """Use ``node`` for the cluster: a node that was deallocated gets jobs again, a
        closed one (:meth:`close_node`) is set up again, and any other node (host name, IP
        address, ``(host, port)``, :class:`NodeAllocate`) is contacted over TCP and set up
        like the nodes given to the cluster (in the background: ``cluster_status`` reports
        ``DispyNode.Initialized`` when it is ready). A wildcard is only matched against
        nodes discovered later. Returns 0, or -1 (logged) for an invalid node or a closed
        cluster."""
        runtime = self._open_runtime("allocate_node")
        if runtime is None:
            return -1
        key = runtime.node_key(node) if isinstance(node, (str, DispyNode)) else None
        return self._call(runtime, "allocate_node", runtime.allocate, node, key)

    def discover_nodes(self, nodes: Any) -> None:
        """Add nodes to the cluster: explicit entries (host names, IP addresses,
        ``(host, port)``, :class:`NodeAllocate`) are contacted over TCP as with
        :meth:`allocate_node`; wildcard entries start (or repeat) UDP discovery and
        match the nodes that answer."""
        runtime = self._open_runtime("discover_nodes")
        if runtime is None:
            return
        if isinstance(nodes, (str, DispyNode)) or not isinstance(nodes, (list, tuple, set, frozenset)):
            nodes = [nodes]
        self._call(runtime, "discover_nodes", runtime.discover, list(nodes))

    def close_node(self, node: Any, terminate_pending: bool = False) -> int:
        """Stop using ``node``: this cluster's jobs there finish (with
        ``terminate_pending``, they are terminated), cleanup runs there and the
        computation's files are removed; ``cluster_status`` then gets
        ``DispyNode.Closed``. Blocks until the node confirms. Jobs pinned to it with
        :meth:`submit_node` wait; :meth:`allocate_node` sets the node up again. Returns 0,
        or -1 if the node is not serving the cluster."""
        found = self._serving_node("close_node", node)
        if found is None:
            return -1
        runtime, key = found
        timeout = config.MsgTimeout + 10 if terminate_pending else None
        try:
            return int(runtime.thread.run(runtime.close_node(key, bool(terminate_pending)), timeout=timeout))
        except Exception as exc:
            log.warning("close_node(): %s: %s", type(exc).__name__, exc)
            return -1

    def resetup_node(self, node: Any, terminate_pending: bool = False) -> int:
        """Set ``node`` up afresh: no new jobs go there, its jobs finish (with
        ``terminate_pending``, as dispy 4.x allowed, they are terminated), cleanup runs
        (with the arguments setup had; in-memory globals go), then ``allocate()`` of its
        NodeAllocate is called again and setup runs with the values it gives now (new
        ``setup_args`` and ``depends``). Blocks until the node has closed the computation;
        the new setup goes on in the background (``cluster_status`` gets
        ``DispyNode.Initialized`` when it is done). Returns 0, or -1 if the node is not
        serving the cluster."""
        found = self._serving_node("resetup_node", node)
        if found is None:
            return -1
        runtime, key = found
        try:
            return int(runtime.thread.run(runtime.resetup_node(key, bool(terminate_pending))))
        except Exception as exc:
            log.warning("resetup_node(): %s: %s", type(exc).__name__, exc)
            return -1

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        """Set how many of ``node``'s CPUs (a :class:`DispyNode`, IP address or host name
        serving the cluster) this cluster uses: ``cpus > 0`` uses that many (at most the
        CPUs the node gave the computation), a negative number leaves that many unused.
        At most that many of this cluster's jobs then run there at once (jobs already
        running finish). Returns the number of CPUs now used there, or -1 (logged) for a
        node not serving the cluster or an invalid number."""
        if not isinstance(cpus, int) or isinstance(cpus, bool):
            log.error("set_node_cpus(): cpus must be an int, not %r", cpus)
            return -1
        found = self._serving_node("set_node_cpus", node)
        if found is None:
            return -1
        runtime, key = found
        return self._call(runtime, "set_node_cpus", runtime.set_node_cpus, key, cpus)

    def send_file(self, path: Any, node: Any, relay: bool = False) -> int:
        """Send the local file ``path`` to ``node`` (a :class:`DispyNode`, IP address or
        host name serving the cluster): it is saved in the computation's directory there
        (the jobs' working directory) under its base name, replacing a file of that name.
        Returns 0 once the node saved it, or -1 with the reason logged (unreadable file,
        node not serving the cluster, file over the node's ``--max_file_size``...).
        ``relay`` only matters with SharedJobCluster: True sends the file through
        dispyscheduler rather than straight to the node (as for ``dispy_send_file``)."""
        if not isinstance(relay, bool):
            raise ConfigError(f"relay must be True or False, not {relay!r}")
        found = self._serving_node("send_file", node)
        if found is None:
            return -1
        runtime, key = found
        try:
            data = file_data(path)
        except (ConfigError, TypeError) as exc:
            log.error("send_file(): %s", exc)
            return -1
        try:
            return int(runtime.thread.run(self._file_sender(runtime, relay)(key, data), timeout=None))
        except Exception as exc:
            log.warning("send_file(): %s: %s", type(exc).__name__, exc)
            return -1

    @staticmethod
    def _file_sender(runtime: Runtime, relay: bool) -> Callable[..., Any]:
        """How send_file reaches the node (the node's own connection; see SharedJobCluster)."""
        return runtime.send_file

    @staticmethod
    def _call(runtime: Runtime, what: str, func: Callable[..., Any], *args: Any) -> int:
        try:
            return int(runtime.call(func, *args, timeout=config.MsgTimeout))
        except Exception as exc:
            log.warning("%s(): %s: %s", what, type(exc).__name__, exc)
            return -1

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is done and the ``job_status``/``cluster_status``
        calls about it have run; False if ``timeout`` seconds passed first."""
        runtime = self._runtime
        if runtime is None:
            return True
        done = runtime.wait_done(timeout)
        if not done and not runtime.ever_initialized and not self._closed:
            self._warn_no_node(timeout)
        return done

    __call__ = wait

    def _warn_no_node(self, timeout: float | None) -> None:
        runtime = self._runtime
        assert runtime is not None
        log.warning("wait(timeout=%s) timed out with %d jobs pending and no node serving "
                    "computation %s; %s", timeout, runtime.pending, self.name, runtime.why_no_node())

    # -- closing ------------------------------------------------------------------------------
    def close(self, timeout: float | None = None, terminate: bool = False) -> bool:
        """Wait for pending jobs (at most ``timeout`` seconds), then close the computation
        on every node and stop. Returns False, leaving the cluster open, if jobs are still
        pending after ``timeout`` and ``terminate`` is False; with ``terminate`` pending
        jobs are cancelled (queued) or terminated (running) instead."""
        if self._closed:
            return True
        if not self.wait(timeout) and not terminate:
            return False
        self._shutdown(terminate)
        return True

    def shutdown(self) -> None:
        """dispy 4.x: close the cluster now, without waiting: jobs still queued are
        cancelled and running ones terminated (what happens to clusters left open at
        exit); :meth:`close` waits for them instead."""
        self.close(timeout=0, terminate=True)

    def _end(self) -> Runtime | None:
        """Mark the cluster closed (once) and refuse later submits; its runtime, or None
        if it was closed already."""
        runtime = self._runtime
        with self._close_lock:
            if self._closed or runtime is None:
                return None
            self._closed = True
        runtime.refuse_submits()
        return runtime

    def _shutdown(self, terminate: bool) -> None:
        runtime = self._end()
        if runtime is None:
            return
        if runtime.thread.alive:
            try:
                runtime.thread.run(runtime.shutdown(terminate), timeout=config.MsgTimeout + 10)
            except Exception as exc:
                log.warning("closing computation %s: %s: %s", self.name, type(exc).__name__, exc)
            runtime.thread.join(config.MsgTimeout)
        if self._callbacks is not None:
            self._callbacks.stop()
        if self._recover is not None:
            self._recover.close(remove=True)
        _live.discard(self)

    def _leave(self) -> None:
        """At exit with jobs pending: drop the connections without closing the
        computation, so the nodes finish the jobs and keep their results for
        ``dispy.recover_jobs``; the recover file stays."""
        recover = self._recover
        runtime = self._end()
        if runtime is None or recover is None:
            return
        log.warning("the program ends with %d jobs of %s pending and the cluster not closed: those "
                    "sent to nodes go on running there (jobs not sent yet are dropped); get their "
                    "results with dispy.recover_jobs(%r)", runtime.pending, self.name, recover.path)
        if runtime.thread.alive:
            try:
                runtime.thread.run(runtime.leave(), timeout=config.MsgTimeout)
            except Exception as exc:
                log.debug("leaving computation %s: %s", self.name, exc)
        recover.close(remove=False)
        _live.discard(self)

    def __enter__(self) -> JobCluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # leaving the block because of an exception: don't wait for the jobs
            self.close(timeout=0, terminate=True)

    # -- status -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The computation's name (its function's or program's name)."""
        return self._computation.name

    def status(self) -> ClusterStatus:
        """The nodes that served the cluster (DispyNode objects) and the jobs pending."""
        runtime = self._runtime
        if runtime is None:
            return ClusterStatus([], 0)
        return ClusterStatus(list(runtime.nodes.values()), max(0, runtime.pending))

    def print_status(self, wall_time: float | None = None) -> None:
        """Print a table of the nodes' work: CPUs, jobs, time per job, data sent and
        received, then the total job time, wall time (since the cluster was created,
        unless given) and speedup."""
        if wall_time is None:
            wall_time = time.time() - self._start_time
        runtime = self._runtime
        nodes = list(runtime.nodes.values()) if runtime is not None else []
        print(format_status(nodes, wall_time), end="", flush=True)

    stats = print_status

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<JobCluster {self.name} {state}>"


@atexit.register
def _close_all() -> None:
    """At interpreter exit, close clusters the program left open (terminating jobs)."""
    for cluster in list(_live):
        try:
            runtime = cluster._runtime
            if runtime is not None and runtime.pending > 0 and runtime.nodes and cluster._recover is not None:
                cluster._leave()
            else:
                cluster._shutdown(terminate=True)
        except Exception:  # pragma: no cover - best effort at exit
            pass
