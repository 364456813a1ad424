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

Only processes that run user code call :func:`loads`, and only after the peer has been
authenticated: a node's main process never unpickles anything.
"""

from __future__ import annotations

import io
import pickle
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

    def __init__(self, stream: Any, buffers: list[Any], kinds: bytearray) -> None:
        super().__init__(stream, protocol=5, buffer_callback=self._out_of_band)
        self._buffers = buffers
        self._kinds = kinds

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


def dumps(obj: Any) -> list[Any]:
    """Serialize ``obj``; returns ``[stream]`` or ``[stream, kinds, buffer, ...]``."""
    buffers: list[Any] = []
    kinds = bytearray()
    stream = io.BytesIO()
    pickler = _Pickler(stream, buffers, kinds)
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
