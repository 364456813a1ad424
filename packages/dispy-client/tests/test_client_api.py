"""The public surface without any node: names, status numbers, DispyJob, DispyNode,
NodeAllocate, node specs, dispy.config aliasing, dispy.logger and option validation."""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import threading

import pytest

import dispy
import dispy_core.config
from dispy import DispyJob, DispyNode, DispyNodeAvailInfo, JobCluster, NodeAllocate
from dispy_core.nodes import parse_nodes
from dispy_core.errors import ConfigError


def compute(n):
    return n


def test_all_is_pinned() -> None:
    assert dispy.__all__ == [
        "__version__",
        "JobCluster",
        "SharedJobCluster",
        "DispyJob",
        "DispyNode",
        "DispyNodeAvailInfo",
        "NodeAllocate",
        "ClusterStatus",
        "recover_jobs",
        "DispyError",
        "ConfigError",
        "logger",
        "config",
    ]
    for name in dispy.__all__:
        assert hasattr(dispy, name), name


# -- dispy.config and dispy.logger ------------------------------------------------------
def test_config_is_the_core_module() -> None:
    import dispy.config as imported
    from dispy import config

    assert config is dispy_core.config
    assert imported is dispy_core.config
    assert dispy.config.DispyPort == 9700


def test_setting_config_changes_default_node_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispy.config, "DispyPort", 12000)
    assert dispy_core.config.DispyPort == 12000
    assert parse_nodes(["127.0.0.1"])[0].port == 12001
    assert parse_nodes(["127.0.0.1"], dispy_port=15000)[0].port == 15001


def test_logger_level_names() -> None:
    assert isinstance(dispy.logger, logging.Logger)
    assert dispy.logger.name == "dispy"
    assert (dispy.logger.DEBUG, dispy.logger.INFO, dispy.logger.WARNING, dispy.logger.ERROR,
            dispy.logger.CRITICAL) == (10, 20, 30, 40, 50)


# -- DispyJob ------------------------------------------------------------------------------
def test_job_status_numbers() -> None:
    assert (DispyJob.Created, DispyJob.Running, DispyJob.ProvisionalResult, DispyJob.Cancelled,
            DispyJob.Terminated, DispyJob.Abandoned, DispyJob.Finished) == (5, 6, 7, 8, 9, 10, 11)


def test_job_fields_and_finish() -> None:
    job = DispyJob(1, (2,), {"k": 3}, 100.0)
    assert job.id == 1 and job.status == DispyJob.Created
    assert job.args == (2,) and job.kwargs == {"k": 3} and job.submit_time == 100.0
    for name in ("host", "ip_addr", "result", "stdout", "stderr", "exception", "start_time", "end_time"):
        assert getattr(job, name) is None
    job.id = "renamed"  # the one field programs may write
    assert job.id == "renamed"
    assert isinstance(job.finish, threading.Event) and not job.finish.is_set()
    job.host = "10.0.0.1"
    assert job.ip_addr == "10.0.0.1"
    job.result, job.status = 42, DispyJob.Finished
    job._mark_done()
    assert job.finish.is_set()
    assert job() == 42 and job.job() == 42
    assert "renamed" in repr(job) and "Finished" in repr(job)


def test_finish_created_after_done_is_set() -> None:
    job = DispyJob(1, (), {}, 0.0)
    job.status = DispyJob.Terminated
    job._mark_done()  # nobody asked for the event yet
    assert job.finish.is_set()


def test_job_call_clear() -> None:
    job = DispyJob(1, (), {}, 0.0)
    job.status, job.result = DispyJob.Finished, "r"
    job._mark_done()
    assert job(clear=True) == "r"
    assert not job.finish.is_set()


def test_job_pickles_public_fields() -> None:
    job = DispyJob(7, (1,), {}, 5.0)
    job.status, job.result, job.host = DispyJob.Finished, [1, 2], "127.0.0.1"
    copy = pickle.loads(pickle.dumps(job))
    assert (copy.id, copy.status, copy.result, copy.host) == (7, 11, [1, 2], "127.0.0.1")
    assert copy.finish.is_set()


# -- DispyNode, DispyNodeAvailInfo, NodeAllocate ---------------------------------------------
def test_node_status_numbers_and_fields() -> None:
    assert (DispyNode.Initialized, DispyNode.Closed, DispyNode.AvailInfo) == (4, 16, 17)
    node = DispyNode("10.0.0.2", "n2", 4, "Linux")
    for name in ("ip_addr", "name", "cpus", "avail_cpus", "busy", "jobs_done", "cpu_time", "tx", "rx",
                 "update_time", "avail_info", "platform"):
        assert hasattr(node, name), name
    info = DispyNodeAvailInfo(50.0, 1 << 30, 1 << 34, 2.0)
    assert (info.cpu, info.memory, info.disk, info.swap) == (50.0, 1 << 30, 1 << 34, 2.0)


@pytest.mark.parametrize(("mine", "found", "expected"), [
    (0, 8, 8), (4, 8, 4), (16, 8, 8), (-2, 8, 6), (-10, 8, 0),
])
def test_allocate_default(mine: int, found: int, expected: int) -> None:
    assert NodeAllocate("h", cpus=mine).allocate(None, "10.0.0.1", "h", found) == expected


def test_allocate_signature_and_defaults() -> None:
    params = inspect.signature(NodeAllocate.allocate).parameters
    assert list(params) == ["self", "cluster", "ip_addr", "name", "cpus", "avail_info", "platform"]
    assert params["avail_info"].default is None
    alloc = NodeAllocate("h")
    assert alloc.port is None and alloc.cpus == 0 and alloc.depends == [] and alloc.setup_args == ()
    # no shared mutable default
    alloc.depends.append("x")
    assert NodeAllocate("h").depends == []


@pytest.mark.parametrize("bad", [
    {"host": ""}, {"host": 5}, {"host": "h", "port": 0}, {"host": "h", "port": "9701"},
    {"host": "h", "cpus": 1.5}, {"host": "h", "depends": "file"},
])
def test_node_allocate_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        NodeAllocate(**bad)


def test_wildcard_matching() -> None:
    spec = NodeAllocate("192.168.3.*")
    assert spec.wildcard
    assert spec.matches("192.168.3.17") and not spec.matches("192.168.4.1")
    assert NodeAllocate("*").matches("10.1.2.3")
    exact = NodeAllocate("10.0.0.1")
    assert not exact.wildcard and exact.matches("10.0.0.1") and not exact.matches("10.0.0.11")


# -- the nodes argument ---------------------------------------------------------------------------
def test_parse_nodes_forms() -> None:
    class Mine(NodeAllocate):
        pass

    mine = Mine("10.0.0.9")
    specs = parse_nodes(["10.0.0.1", ("10.0.0.2", 5000), ("10.0.0.3", 5001, 2),
                         {"host": "10.0.0.4", "cpus": 3}, NodeAllocate("10.0.0.5", 7000), mine,
                         DispyNode("10.0.0.6"), "10.0.1.*"])
    assert [(s.host, s.port) for s in specs] == [
        ("10.0.0.1", 9701), ("10.0.0.2", 5000), ("10.0.0.3", 5001), ("10.0.0.4", 9701),
        ("10.0.0.5", 7000), ("10.0.0.9", 9701), ("10.0.0.6", 9701), ("10.0.1.*", 9701)]
    assert specs[2].cpus == 2 and specs[3].cpus == 3
    assert specs[5] is mine  # a subclass keeps its identity (and its allocate)
    assert [s.wildcard for s in specs] == [False] * 7 + [True]


def test_parse_nodes_defaults_to_everything() -> None:
    for nodes in (None, []):
        (spec,) = parse_nodes(nodes)
        assert spec.host == "*" and spec.wildcard and spec.port == 9701


def test_parse_nodes_does_not_modify_given_objects() -> None:
    given = NodeAllocate("10.0.0.1")
    (spec,) = parse_nodes([given], dispy_port=2000)
    assert spec.port == 2001 and given.port is None


@pytest.mark.parametrize("bad", [5, [5], [("h", 1, 2, [], (), "extra")], [{"hostname": "h"}], "a"[0:0]])
def test_parse_nodes_rejects(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_nodes(bad)


# -- JobCluster's parameters ---------------------------------------------------------------------
def test_no_mutable_defaults() -> None:
    for func in (JobCluster.__init__, NodeAllocate.__init__):
        for p in inspect.signature(func).parameters.values():
            assert not isinstance(p.default, (list, dict, set)), (func, p.name)


def test_documented_parameter_order() -> None:
    params = list(inspect.signature(JobCluster.__init__).parameters)[1:21]
    assert params == ["computation", "nodes", "depends", "job_status", "cluster_status", "host",
                      "ext_host", "dispy_port", "ipv4_udp_multicast", "dest_path", "loglevel", "setup",
                      "cleanup", "ping_interval", "pulse_interval", "reentrant", "secret", "keyfile",
                      "certfile", "recover_file"]


def test_shared_documented_parameter_order() -> None:
    params = list(inspect.signature(dispy.SharedJobCluster.__init__).parameters)[1:22]
    assert params == ["computation", "nodes", "depends", "job_status", "cluster_status", "host",
                      "client_port", "dispy_port", "scheduler_node", "ext_host", "loglevel", "setup",
                      "cleanup", "dest_path", "reentrant", "poll_interval", "exclusive", "secret",
                      "keyfile", "certfile", "recover_file"]


@pytest.mark.parametrize("value", [1, 4.9, 1001, "10", True])
def test_poll_interval_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="poll_interval must be a number of seconds from 5 to 1000"):
        JobCluster(compute, nodes=["127.0.0.1"], poll_interval=value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pulse_interval": 0.5}, "pulse_interval must be a number of seconds in 1-600"),
    ({"pulse_interval": 601}, "pulse_interval must be"),
    ({"pulse_interval": "5"}, "pulse_interval must be"),
    ({"recover_file": 5}, "recover_file must be a path"),
    ({"reentrant": 1}, "reentrant must be True or False"),
])
def test_pulse_interval_and_recover_file_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        JobCluster(compute, nodes=["127.0.0.1"], **kwargs)


def test_a_read_only_working_directory_only_disables_recovery(tmp_path, monkeypatch, caplog) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.chdir(ro)
    if os.access(ro, os.W_OK):  # root ignores the mode: make the file's name taken instead
        (ro / "x").touch()
        monkeypatch.setattr("dispy._cluster.default_recover_path", lambda: str(ro / "x" / "_dispy_1"))
    with caplog.at_level("WARNING", "dispy"):
        cluster = JobCluster(compute, nodes=["127.0.0.1:1"])
    assert "recover_jobs() will not be able to recover" in caplog.text
    cluster.close(timeout=0, terminate=True)
    with pytest.raises(ConfigError, match="can't create recover_file"):
        JobCluster(compute, nodes=["127.0.0.1:1"], recover_file=str(ro / "x" / "given"))


def test_recover_file_is_created_private_and_removed_on_close(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cluster = JobCluster(compute, nodes=["127.0.0.1:1"], secret="s3cret")
    created = list(tmp_path.glob("_dispy_*"))
    assert len(created) == 1 and (created[0].stat().st_mode & 0o777) == 0o600
    other = JobCluster(compute, nodes=["127.0.0.1:1"])  # same second: another name
    assert len(list(tmp_path.glob("_dispy_*"))) == 2
    with pytest.raises(ConfigError, match="exists"):
        JobCluster(compute, nodes=["127.0.0.1:1"], recover_file=str(created[0]))
    cluster.close(timeout=0, terminate=True)
    other.close(timeout=0, terminate=True)
    assert list(tmp_path.glob("_dispy_*")) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"keyfile": "k.pem"}, "keyfile needs certfile"),
    ({"certfile": "/nonexistent/c.pem"}, "certfile '/nonexistent/c.pem' does not exist"),
    ({"certfile": "/nonexistent/c.pem", "keyfile": "k.pem"}, "c.pem"),
])
def test_tls_files_are_checked_at_creation(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        JobCluster(compute, nodes=["127.0.0.1"], **kwargs)


def test_connect_errors_name_tls() -> None:
    import ssl

    from dispy_core.session import describe_connect_error
    from dispy_core.errors import ConnectionClosed

    msg = describe_connect_error(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
                                 tls=True)
    assert msg.startswith("TLS handshake failed: ") and "same certfile" in msg and "_ssl.c" not in msg
    msg = describe_connect_error(ConnectionClosed("peer closed the connection during the handshake"), tls=False)
    assert "TLS" in msg and "--certfile" in msg
    assert "TLS" in describe_connect_error(ConnectionResetError(), tls=True)
    assert "TLS" not in describe_connect_error(ConnectionRefusedError(), tls=False)


def test_options_at_default_are_accepted_signature() -> None:
    params = inspect.signature(JobCluster.__init__).parameters
    assert params["ext_host"].default is None and params["reentrant"].default is False
    assert params["loglevel"].default == dispy.logger.INFO and params["secret"].default == ""
    assert params["cleanup"].default is True and params["depends"].default is None


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"job_status": lambda a, b: None}, "job_status must take 1 argument"),
    ({"cluster_status": lambda job: None}, "cluster_status must take 3 arguments"),
    ({"job_status": 5}, "job_status must be a function"),
    ({"dispy_port": -1}, "dispy_port"),
    ({"dispy_port": "9700"}, "dispy_port"),
    ({"dest_path": 5}, "dest_path"),
    ({"secret": 5}, "secret"),
    ({"process_per_job": "yes"}, "process_per_job"),
    ({"depends": "file.txt"}, "depends must be a list"),
    ({"setup": 5}, "setup must be a function"),
    ({"cleanup": "yes"}, "cleanup must be"),
    ({"host": 5}, "host must be"),
    ({"loglevel": "LOUD"}, "unknown log level"),
    ({"host": "127.0.0.1", "ip_addr": "127.0.0.1"}, "not both"),
    ({"callback": lambda j: None, "job_status": lambda j: None}, "not both"),
])
def test_parameter_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        JobCluster(compute, nodes=["127.0.0.1"], **kwargs)


def test_computation_must_be_function_or_program() -> None:
    with pytest.raises(ConfigError, match="computation must be"):
        JobCluster(42, nodes=["127.0.0.1"])
    with pytest.raises(ConfigError, match="empty string"):
        JobCluster("  ", nodes=["127.0.0.1"])


def test_callbacks_may_be_bound_methods_and_accept_defaults() -> None:
    from dispy._cluster import _check_callback

    class Handler:
        def job(self, job):  # noqa: ANN001
            pass

        def status(self, status, node, job, extra=None):  # noqa: ANN001
            pass

    _check_callback("job_status", Handler().job, 1)
    _check_callback("cluster_status", Handler().status, 3)
    _check_callback("job_status", print, 1)


# -- SharedJobCluster's own options (no scheduler needed: refused before connecting) ------
@pytest.mark.parametrize("kwargs,match", [
    ({"pulse_interval": 5}, "dispyscheduler --pulse_interval"),
    ({"client_port": -1}, "client_port"),
    ({"client_port": True}, "client_port"),
    ({"exclusive": "yes"}, "exclusive"),
    ({"scheduler_node": ""}, "scheduler_node"),
    ({"scheduler_node": "a", "scheduler_host": "b"}, "not both"),
])
def test_shared_cluster_options_are_checked(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        dispy.SharedJobCluster(compute, **kwargs)


def test_shared_cluster_refuses_node_allocate_subclasses() -> None:
    class Mine(NodeAllocate):
        def allocate(self, *args):
            return 1

    with pytest.raises(ConfigError, match="subclass"):
        dispy.SharedJobCluster(compute, nodes=["127.0.0.5", Mine("127.0.0.6")], scheduler_node="127.0.0.1:1")


def test_shared_cluster_node_specs_travel_as_data(tmp_path) -> None:
    from dispy._shared import node_specs_data

    dep = tmp_path / "dep.txt"
    dep.write_text("x")
    data = node_specs_data([NodeAllocate("127.0.0.5", 9000, 2, depends=[str(dep)], setup_args=(1,)), "127.0.0.*"],
                           None)
    assert [(d["host"], d["port"], d["cpus"]) for d in data] == [("127.0.0.5", 9000, 2), ("127.0.0.*", 9701, 0)]
    assert data[0]["files"][0].name == "dep.txt" and bytes(data[0]["files"][0].data) == b"x"
    assert data[0]["setup_args"] and not data[1]["files"]


_LOG_PROGRAM = """
import logging, sys, dispy
from dispy_core.testing import unused_port
if sys.argv[1] == "configured":
    logging.basicConfig(format="app: %(message)s")
level = dispy.logger.WARNING if sys.argv[1] == "warning" else dispy.logger.DEBUG
cluster = dispy.JobCluster(abs, nodes=[f"127.0.0.1:{unused_port()}"], loglevel=level)
dispy.logger.info("message-from-the-cluster")
cluster.close(timeout=5, terminate=True)
"""


@pytest.mark.parametrize("mode", ["unconfigured", "configured", "warning"])
def test_loglevel_is_seen_on_stderr_like_dispy4_without_doubling(mode: str) -> None:
    # dispy 4.x printed its log to stderr: a program that sets loglevel and configures no
    # logging sees dispy's messages there; one that configures logging sees them once,
    # through its own handler; and the level still filters.
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LOG_PROGRAM, mode], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    count = proc.stderr.count("message-from-the-cluster")
    if mode == "warning":
        assert count == 0, proc.stderr
    else:
        assert count == 1, proc.stderr
        prefix = "app: " if mode == "configured" else " dispy INFO: "
        assert prefix + "message-from-the-cluster" in proc.stderr, proc.stderr
