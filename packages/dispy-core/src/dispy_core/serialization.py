"""User payloads: cloudpickle with pickle protocol 5 and out-of-band buffers.

:func:`dumps` returns a list of buffers: the pickle stream first, then every large buffer
(``bytes``, ``bytearray``, ``memoryview``, NumPy arrays...) as a separate, uncopied
buffer. The list travels as blobs of a message (see :mod:`dispy_core.codec`), so a 10 MB
argument is never copied into the pickle stream nor joined into one frame; it is written
to the socket straight from the caller's object. :func:`loads` takes the received buffers
back (memoryviews into the frame).

cloudpickle pickles functions and classes defined in ``__main__``, lambdas and closures
by value, so they run on nodes that never saw the client's source. Modules can be shipped
by value with :func:`register_by_value` (used for modules listed in ``depends``).

Code objects travel with their own file name (``co_filename``), whatever cloudpickle
version is installed: see :meth:`_Pickler.reducer_override`. :func:`dumps` can report
which files the code it pickled by value came from (``code_files``), so that the client
can send their text along (:mod:`dispy_core.sources`) and job tracebacks on nodes show
the user's file names and source lines.

Only processes that run user code call :func:`loads`, and only after the peer has been
authenticated: a node's main process never unpickles anything.
"""

from __future__ import annotations

import io
import marshal
import pickle
import types
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads", "register_by_value", "OUT_OF_BAND_THRESHOLD"]

#: Buffers of at least this many bytes travel out of band.
OUT_OF_BAND_THRESHOLD = 64 * 1024


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, plus: large ``bytes``/``bytearray`` and any ``memoryview``
    go out of band.

    ``PickleBuffer`` and NumPy arrays go out of band by themselves with protocol 5
    (through ``buffer_callback``). Exact ``bytes`` and ``bytearray`` don't: pickle writes
    them in-band without consulting ``reducer_override``, and ``memoryview`` isn't
    picklable at all. All three are caught in ``persistent_id``, which pickle calls for
    every object first.
    """

    def __init__(self, stream: Any, buffers: list[Any], kinds: bytearray,
                 code_files: set[str] | None = None) -> None:
        super().__init__(stream, protocol=5, buffer_callback=self._out_of_band)
        self._buffers = buffers
        self._kinds = kinds
        self._code_files = code_files

    def reducer_override(self, obj: Any) -> Any:
        """Code objects travel whole, as ``marshal`` writes them (the form of ``.pyc``
        files), with their real ``co_filename``; everything else as cloudpickle does.

        cloudpickle 3.1.3 writes every code object's file name as ``<dynamic-code>``
        (3.0 to 3.1.2 kept it), so tracebacks on the node could not say which file a frame
        is in, nor find its source line. Keeping the name as the code is pickled is the
        robust fix: fixing names up after unpickling would need a map from each code
        object to its file (functions reach code through closures, class dicts,
        methods, defaults and nested constants), and one shared name can't stand for
        several files. marshal keeps every field of the code object (nested code
        objects too) exactly; its format is fixed within a Python minor version, and
        code only ever runs on a node of the client's minor version (bytecode differs
        between versions anyway). The names reported in ``code_files`` are those of the
        code pickled here by value: code imported by reference on the node is never a
        code object in the pickle.
        """
        if type(obj) is types.CodeType:
            try:
                data = marshal.dumps(obj)
            except ValueError:
                # A code object made by hand with constants marshal can't write:
                # cloudpickle's reducer (in its dispatch_table) takes it.
                return NotImplemented
            if self._code_files is not None:
                # Nested code objects (inner functions, lambdas, comprehensions) come
                # from the same compilation, so they have the same file name.
                self._code_files.add(obj.co_filename)
            return marshal.loads, (data,)
        return super().reducer_override(obj)

    def _out_of_band(self, buf: pickle.PickleBuffer) -> None:
        self._buffers.append(buf.raw())
        self._kinds.append(_OOB)

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if t is bytes or t is bytearray:
            if len(obj) < OUT_OF_BAND_THRESHOLD:
                return None
            kind = _BYTES if t is bytes else _ARRAY
        elif t is memoryview:
            if not obj.contiguous:
                obj = obj.tobytes()
            kind = _VIEW
        else:
            return None
        self._buffers.append(obj)
        self._kinds.append(kind)
        return len(self._buffers) - 1


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: Any, buffers: list[Any], kinds: bytes) -> None:
        self._all = buffers
        self._kinds = kinds
        super().__init__(stream, buffers=[b for b, k in zip(buffers, kinds) if k == _OOB])

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, int) or not 0 <= pid < len(self._all) or self._kinds[pid] == _OOB:
            raise pickle.UnpicklingError(f"bad buffer reference {pid!r}")
        buf = self._all[pid]
        # bytes/bytearray must own their memory (one copy); a memoryview stays a view.
        kind = self._kinds[pid]
        if kind == _VIEW:
            return memoryview(buf)
        return bytes(buf) if kind == _BYTES else bytearray(buf)


_OOB, _BYTES, _ARRAY, _VIEW = ord("o"), ord("b"), ord("a"), ord("m")


def dumps(obj: Any, code_files: set[str] | None = None) -> list[Any]:
    """Serialize ``obj``; returns ``[stream]`` or ``[stream, kinds, buffer, ...]``.

    If ``code_files`` is given, the file names (``co_filename``) of the code pickled by
    value are added to it (see :func:`dispy_core.sources.read_sources`).
    """
    buffers: list[Any] = []
    kinds = bytearray()
    stream = io.BytesIO()
    pickler = _Pickler(stream, buffers, kinds, code_files)
    pickler.dump(obj)
    # getvalue() copies the stream (small: large buffers are out of band). A getbuffer()
    # view would be cheaper but crashes CPython 3.12.1: the pickler/stream reference
    # cycle can be collected while the view is alive ("deallocated BytesIO object has
    # exported buffers").
    data = stream.getvalue()
    del pickler
    if not buffers:
        return [data]
    return [data, bytes(kinds), *buffers]


def loads(parts: list[Any]) -> Any:
    """Inverse of :func:`dumps` (parts may be memoryviews of a received frame)."""
    if not parts:
        raise ValueError("empty payload")
    if len(parts) == 1:
        return pickle.loads(parts[0])
    kinds = bytes(parts[1])
    buffers = list(parts[2:])
    if len(kinds) != len(buffers):
        raise ValueError("payload buffers don't match their description")
    return _Unpickler(io.BytesIO(parts[0]), buffers, kinds).load()


def register_by_value(module: Any) -> None:
    """Ship ``module``'s code by value instead of importing it by name on the node."""
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:
        pass  # already registered
