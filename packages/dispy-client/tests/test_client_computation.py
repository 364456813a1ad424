"""What travels to nodes: the Compute payload (computation, depends, setup, cleanup in one
dumps), files, program computations, per-job specs, and which modules are shipped by value
(checked the way a node sees it: the module is gone, the payload still loads)."""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import os
import pickle
import stat
import sys
import textwrap
import types
from pathlib import Path

import pytest

import dispy
from dispy._computation import (
    build_computation,
    classify_depends,
    file_data,
    job_spec,
    python_minor,
    ships_by_value,
)
from dispy_core import serialization
from dispy_core.errors import ConfigError


def compute(x):
    return x + 1


class Point:
    def __init__(self, x):
        self.x = x


def helper():
    return "help"


_names = itertools.count()


def load(payload: list) -> dict:
    return serialization.loads([bytes(memoryview(b)) for b in payload])


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module of the 'user's own' (outside site-packages), importable now."""
    name = f"usermod_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        SCALE = 3

        def work(x):
            return x * SCALE

        class Thing:
            def value(self):
                return SCALE

        def setup():
            global READY
            READY = True
            return 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def forget(module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``module`` unimportable, as on a node that never had it."""
    monkeypatch.delitem(sys.modules, module.__name__)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(Path(module.__file__).parent)])
    with pytest.raises(ImportError):
        importlib.import_module(module.__name__)


# -- function computations --------------------------------------------------------------------
def test_function_payload_is_one_dict() -> None:
    comp = build_computation(compute, None, None, True)
    assert comp.kind == "function" and comp.name == "compute" and comp.files == []
    assert comp.ships_code
    payload = load(comp.payload)
    assert set(payload) == {"computation", "depends", "setup", "cleanup"}
    assert payload["computation"](1) == 2
    assert payload["depends"] == [] and payload["setup"] is None and payload["cleanup"] is True


def test_depends_kinds(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"content")
    data.chmod(0o640)
    part = functools.partial(helper)
    comp = build_computation(compute, [helper, Point, Point(1), part, json, str(data)], None, False)
    payload = load(comp.payload)
    deps = payload["depends"]
    names = [getattr(d, "__name__", None) for d in deps]
    assert names[:4] == ["helper", "Point", "Point", "helper"]  # instance -> class, partial -> func
    assert "json" not in names  # standard library: on every node already
    assert payload["cleanup"] is False
    (f,) = comp.files
    assert (f.name, bytes(f.data), f.mode) == ("data.txt", b"content", 0o640)
    assert f.mtime == pytest.approx(data.stat().st_mtime)


def test_depends_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an existing file"):
        build_computation(compute, [str(tmp_path / "missing.txt")])
    with pytest.raises(ConfigError, match="not an existing file"):
        build_computation(compute, [str(tmp_path)])  # a directory
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.txt").write_text("1")
    (tmp_path / "b" / "same.txt").write_text("2")
    with pytest.raises(ConfigError, match="same.txt"):
        build_computation(compute, [str(tmp_path / "a" / "same.txt"), str(tmp_path / "b" / "same.txt")])
    with pytest.raises(ConfigError, match="must be a list"):
        classify_depends("file", "function")


def test_setup_and_cleanup_functions_travel_together() -> None:
    def setup(n):
        global SHARED
        SHARED = n
        return 0

    def cleanup():
        return 0

    payload = load(build_computation(compute, None, setup, cleanup).payload)
    assert payload["setup"](5) == 0 and callable(payload["cleanup"])


def test_lambda_and_closure() -> None:
    k = 10
    payload = load(build_computation(lambda x: x * k).payload)
    assert payload["computation"](2) == 20
    assert build_computation(lambda x: x).name == "<lambda>"


def test_unpicklable_computation_is_config_error() -> None:
    import threading

    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(ConfigError, match="can't be serialized"):
        build_computation(uses_lock)


def test_user_module_travels_by_value(user_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ships_by_value(user_module)
    comp = build_computation(user_module.work, [user_module.Thing], user_module.setup)
    forget(user_module, monkeypatch)
    payload = load(comp.payload)
    assert payload["computation"](2) == 6
    assert payload["depends"][0]().value() == 3
    # one dumps call: setup's globals are the computation's globals
    assert payload["setup"]() == 0
    assert payload["computation"].__globals__ is payload["setup"].__globals__
    assert payload["computation"].__globals__["READY"] is True


def test_module_in_depends_travels_by_value(user_module: types.ModuleType,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    comp = build_computation(compute, [user_module])
    forget(user_module, monkeypatch)
    (module,) = load(comp.payload)["depends"]
    assert module.work(1) == 3


def test_job_depends_from_user_module(user_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = job_spec(1, "function", (user_module.Thing(),), {}, [user_module.work])
    forget(user_module, monkeypatch)
    (thing,), _ = serialization.loads(spec.args)
    assert thing.value() == 3
    (work,) = serialization.loads(spec.depends)
    assert work(1) == 3


def test_ships_by_value_decisions() -> None:
    assert not ships_by_value(json)  # standard library
    assert not ships_by_value(os)
    assert not ships_by_value(sys)  # built in
    assert not ships_by_value(pytest)  # site-packages
    assert not ships_by_value(serialization)  # dispy itself
    assert not ships_by_value(dispy)
    assert not ships_by_value(sys.modules["__main__"])
    assert not ships_by_value(None)
    assert ships_by_value(sys.modules[__name__])  # a test module is the user's code


def test_site_packages_module_is_imported_not_shipped(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "site-packages"
    site.mkdir(parents=True)
    fake = types.ModuleType("fakeinstalled")
    fake.__file__ = str(site / "fakeinstalled.py")
    assert not ships_by_value(fake)
    fake.__file__ = str(tmp_path / "fakeinstalled.py")
    assert ships_by_value(fake)


# -- program computations -----------------------------------------------------------------------
def test_program_path_is_shipped(tmp_path: Path) -> None:
    prog = tmp_path / "job.sh"
    prog.write_text("#!/bin/sh\necho $1\n")
    prog.chmod(0o755)
    comp = build_computation(str(prog))
    assert comp.kind == "program" and comp.name == "job.sh"
    assert not comp.ships_code
    (f,) = comp.files
    assert f.name == "job.sh" and stat.S_IMODE(f.mode) == 0o755
    assert load(comp.payload)["computation"] == "job.sh"


def test_program_on_path_is_a_command() -> None:
    comp = build_computation("no-such-program-here", None)
    assert comp.kind == "program" and comp.files == []
    assert load(comp.payload)["computation"] == "no-such-program-here"


def test_program_depends_modules_as_files(user_module: types.ModuleType, tmp_path: Path) -> None:
    comp = build_computation("prog", [user_module])
    assert [f.name for f in comp.files] == [Path(user_module.__file__).name]
    assert not comp.ships_code
    with pytest.raises(ConfigError, match="program computation"):
        build_computation("prog", [helper])
    # a Python setup function makes the payload Python code again
    assert build_computation("prog", None, helper).ships_code


# -- jobs -----------------------------------------------------------------------------------------
def test_job_spec_args_and_kwargs() -> None:
    spec, size = job_spec(3, "function", (1, "a"), {"k": 2.5})
    assert spec.job_id == 3 and spec.files == [] and spec.depends is None
    assert serialization.loads(spec.args) == ((1, "a"), {"k": 2.5})
    assert size == sum(memoryview(b).nbytes for b in spec.args)


def test_job_spec_plain_and_cloudpickled_args_agree() -> None:
    simple, _ = job_spec(1, "function", (1, 2.0, "s", b"b", None, True), {})
    assert len(simple.args) == 1
    assert pickle.loads(simple.args[0]) == ((1, 2.0, "s", b"b", None, True), {})
    fancy, _ = job_spec(2, "function", (lambda: 5,), {})
    (func,), _ = serialization.loads(fancy.args)
    assert func() == 5


def test_large_bytes_argument_is_not_copied() -> None:
    data = os.urandom(1 << 20)
    spec, size = job_spec(1, "function", (data,), {})
    assert size >= len(data)
    assert any(b is data for b in spec.args)


def test_job_spec_depends_split(tmp_path: Path) -> None:
    f = tmp_path / "input.csv"
    f.write_text("1,2")
    spec, size = job_spec(1, "function", (), {}, [str(f), helper])
    assert [x.name for x in spec.files] == ["input.csv"]
    assert serialization.loads(spec.depends)[0]() == "help"
    assert size > 3


def test_program_job_args_become_strings() -> None:
    spec, _ = job_spec(1, "program", (1, 2.5, "x"), {})
    assert serialization.loads(spec.args) == (("1", "2.5", "x"), {})
    with pytest.raises(ConfigError, match="positional"):
        job_spec(1, "program", (), {"k": 1})


def test_file_data_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="can't read"):
        file_data(tmp_path / "nope")
    with pytest.raises(ConfigError, match="regular file"):
        file_data(tmp_path)


def test_python_minor() -> None:
    assert python_minor("3.11.7") == (3, 11)
    assert python_minor("3.12") == (3, 12)
    assert python_minor("garbage") == ()
