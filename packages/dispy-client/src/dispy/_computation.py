"""What travels to nodes: the computation payload, files and per-job specs.

The computation, its ``depends``, ``setup`` and ``cleanup`` are serialized in **one**
:func:`dispy_core.serialization.dumps` call, so cloudpickle gives functions of the same
module one shared globals dict on the node: that is how globals set by ``setup`` are
visible to jobs. Code of the user's own modules must travel by value (nodes don't have
it); code of installed libraries and the standard library is imported on the node. The
rule lives in :func:`ships_by_value`.

``depends`` items are classified by :func:`classify_depends`: file paths become
:class:`~dispy_core.messages.FileData`, Python objects (functions, classes, modules;
instances give their class, ``functools.partial`` its function) go in the payload.

The text of the files that code shipped by value comes from (the ``__main__`` script,
the user's modules, notebook cells) travels too, as ``sources`` (see
:mod:`dispy_core.sources`): the computation's with it, and a job's with the job when its
``dispy_job_depends`` or arguments bring code from other files. Nodes show it in job
tracebacks.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import pickle
import platform
import site
import sys
import sysconfig
import types
from collections.abc import Container
from typing import Any

from dispy_core import config, serialization
from dispy_core.computation import Computation, file_data, payload_size, python_minor
from dispy_core.errors import ConfigError
from dispy_core.messages import FileData, JobSpec
from dispy_core.sources import read_sources

__all__ = [
    "Computation",
    "build_computation",
    "classify_depends",
    "file_data",
    "job_spec",
    "ships_by_value",
    "python_minor",
    "payload_size",
]

log = logging.getLogger(__name__)

# Packages that are dispy itself (or what it is built on): always imported on nodes.
_OWN = frozenset({"dispy", "dispy_core", "dispy_node", "dispy_scheduler", "cloudpickle"})


# -- which modules travel by value ---------------------------------------------------
@functools.cache
def _installed_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        paths.add(site.getusersitepackages())
    paths.add(os.path.join(sys.base_prefix, "lib"))
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


def _is_installed_file(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return real.startswith(_installed_roots())


def ships_by_value(module: types.ModuleType | None) -> bool:
    """True for the user's own modules: not ``__main__`` (cloudpickle already ships it
    by value), not the standard library, not site-packages, not dispy itself."""
    if module is None:
        return False
    name = module.__name__
    if name == "__main__":
        return False
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top in _OWN:
        return False
    path = getattr(module, "__file__", None)
    if not path:
        return False  # built in, frozen or a namespace package: nothing to ship
    return not _is_installed_file(path)


def _register_for(obj: Any) -> None:
    """Register the module defining ``obj`` (its top-level package, when that is the
    user's too) to be pickled by value, if it is the user's own code."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if not ships_by_value(module):
        return
    assert module is not None
    top = sys.modules.get(module.__name__.partition(".")[0])
    target = top if top is not None and ships_by_value(top) else module
    log.debug("shipping module %s by value", target.__name__)
    serialization.register_by_value(target)


def _code_object(obj: Any) -> Any:
    """The function or class that stands for a depends item (or a computation)."""
    if isinstance(obj, functools.partial):
        return _code_object(obj.func)
    if isinstance(obj, types.MethodType):
        return obj.__func__
    if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj) or inspect.isbuiltin(obj):
        return obj
    return type(obj)  # an instance: its class


# -- files -----------------------------------------------------------------------------
def _module_file(module: types.ModuleType) -> str:
    path = getattr(module, "__file__", None)
    if not path or not os.path.isfile(path):
        raise ConfigError(f"module {module.__name__} has no source file to send")
    return str(path)


def classify_depends(depends: Any, kind: str, what: str = "depends") -> tuple[list[Any], list[FileData]]:
    """Split a depends list into (Python objects, files) and register by value the
    modules that must travel. ``kind`` is the computation's kind: for programs, modules
    are sent as their source files and other Python objects are refused."""
    if depends is None:
        return [], []
    if isinstance(depends, (str, bytes)) or not isinstance(depends, (list, tuple)):
        raise ConfigError(f"{what} must be a list, not {type(depends).__name__}")
    objects: list[Any] = []
    files: list[FileData] = []
    for item in depends:
        if isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                raise ConfigError(f"{what}: {os.fspath(item)!r} is not an existing file")
            files.append(file_data(item))
            continue
        code = _code_object(item)
        if inspect.ismodule(code):
            if kind == "program":
                files.append(file_data(_module_file(code)))
                continue
            top = code.__name__.partition(".")[0]
            if top in sys.stdlib_module_names or top in _OWN:
                log.debug("%s: %s is on every node; not sending it", what, code.__name__)
                continue
            serialization.register_by_value(code)
            objects.append(code)
            continue
        if kind == "program":
            raise ConfigError(
                f"{what} of a program computation may hold only files and Python modules, "
                f"not {type(item).__name__} {item!r}"
            )
        _register_for(code)
        objects.append(code)
    return objects, files


# -- the computation -----------------------------------------------------------------------
def _callable_name(func: Any) -> str:
    if isinstance(func, functools.partial):
        return _callable_name(func.func)
    return getattr(func, "__name__", None) or type(func).__name__


def build_computation(computation: Any, depends: Any = None, setup: Any = None, cleanup: Any = True) -> Computation:
    """Validate and serialize a computation; raises ConfigError with the reason."""
    files: list[FileData] = []
    if isinstance(computation, str):
        kind = "program"
        if not computation.strip():
            raise ConfigError("computation must be a function or a program path, not an empty string")
        if os.path.isfile(computation):
            program = file_data(computation)
            files.append(program)
            target: Any = program.name
        else:
            target = computation  # found via PATH on the node
        name = os.path.basename(computation.split()[0])
    elif callable(computation):
        kind = "function"
        name = _callable_name(computation)
        target = computation
    else:
        raise ConfigError(
            f"computation must be a Python function or a program path, not {type(computation).__name__}"
        )
    if setup is not None and not callable(setup):
        raise ConfigError(f"setup must be a function or None, not {type(setup).__name__}")
    if not isinstance(cleanup, bool) and not callable(cleanup):
        raise ConfigError(f"cleanup must be True, False or a function, not {type(cleanup).__name__}")

    objects, dep_files = classify_depends(depends, kind)
    files.extend(dep_files)
    seen: set[str] = set()
    for f in files:
        if f.name in seen:
            raise ConfigError(f"two depends files have the base name {f.name!r}; they would overwrite each other on nodes")
        seen.add(f.name)
    for obj in (computation if kind == "function" else None, setup, cleanup):
        if obj is not None and not isinstance(obj, bool):
            _register_for(_code_object(obj))
    code_files: set[str] = set()
    try:
        payload = serialization.dumps(
            {"computation": target, "depends": objects, "setup": setup, "cleanup": cleanup},
            code_files,
        )
    except Exception as exc:
        raise ConfigError(f"computation {name!r} can't be serialized: {type(exc).__name__}: {exc}") from exc
    ships_code = kind == "function" or bool(objects) or callable(setup) or (
        not isinstance(cleanup, bool) and callable(cleanup))
    return Computation(name=name, kind=kind, payload=payload, files=files, ships_code=ships_code,
                       sources=read_sources(code_files))


def client_python() -> str:
    return platform.python_version()


# -- jobs ------------------------------------------------------------------------------------
# Argument types that plain pickle writes exactly as cloudpickle would (no code, no class
# by reference): for them the standard pickler is 8x faster. bytes qualify only while
# small enough to travel in the stream anyway.
_PLAIN = frozenset({int, float, str, bool, type(None), complex})
_pickle_dumps = pickle.dumps
_OOB = serialization.OUT_OF_BAND_THRESHOLD


def _plain(value: Any) -> bool:
    t = type(value)
    return t in _PLAIN or (t is bytes and len(value) < _OOB)


def _dumps_args(args: tuple[Any, ...], kwargs: dict[str, Any], code_files: set[str]) -> list[Any]:
    if all(map(_plain, args)) and (not kwargs or all(map(_plain, kwargs.values()))):
        return [_pickle_dumps((args, kwargs), protocol=5)]
    return serialization.dumps((args, kwargs), code_files)


def check_timeout(name: str, value: Any) -> float | None:
    """A job timeout as given to JobCluster (job_timeout) or submit (dispy_job_timeout):
    None, or a positive number of seconds."""
    if value is None:
        return None
    if not config.valid_timeout(value):
        raise ConfigError(f"{name} must be a positive number of seconds (or None), not {value!r}")
    return float(value)


def job_spec(uid: int, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any],
             job_depends: Any = None, timeout: float | None = None,
             sent_sources: Container[str] = ()) -> tuple[JobSpec, int]:
    """The wire form of one job and its size in bytes (arguments, files, depends,
    sources).

    The job carries the text of the files its by-value code (in ``dispy_job_depends``
    or the arguments: a lambda, say) comes from, except those in ``sent_sources``: the
    files whose text went with the computation (:attr:`Computation.sources`).

    Raises ConfigError for a bad ``dispy_job_depends`` or program arguments, and the
    pickling error for arguments that can't be serialized.
    """
    if kind == "program":
        if kwargs:
            raise ConfigError("a program computation takes positional arguments only")
        args = tuple(str(a) for a in args)
    files: list[FileData] = []
    dep_buffers = None
    size = 0
    code_files: set[str] = set()
    if job_depends is not None:
        # First: it registers the modules to ship by value, which the arguments may use.
        objects, files = classify_depends(job_depends, kind, "dispy_job_depends")
        if objects:
            dep_buffers = serialization.dumps(objects, code_files)
        size = payload_size(dep_buffers) + sum(len(f.data) for f in files)
    buffers = _dumps_args(args, kwargs, code_files)
    sources = read_sources(code_files, sent_sources) if code_files else {}
    size += sum(len(text) for text in sources.values())
    return (JobSpec(uid, buffers, files, dep_buffers, timeout, sources=sources),
            size + payload_size(buffers))
