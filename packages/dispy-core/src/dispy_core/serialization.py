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


def _rebuild_bytes(buf: Any) -> bytes:
    return bytes(buf)


def _rebuild_memoryview(buf: Any) -> memoryview:
    return memoryview(buf)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, plus: large ``bytes`` and ``memoryview`` go out of band.

    (``bytearray`` and NumPy arrays already do with protocol 5; plain ``bytes`` would be
    copied into the stream, and ``memoryview`` can't be pickled at all.)
    """

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is bytes and len(obj) >= OUT_OF_BAND_THRESHOLD:
            return _rebuild_bytes, (pickle.PickleBuffer(obj),)
        if t is memoryview:
            if obj.contiguous:
                return _rebuild_memoryview, (pickle.PickleBuffer(obj),)
            return _rebuild_memoryview, (obj.tobytes(),)
        return super().reducer_override(obj)


def dumps(obj: Any) -> list[Any]:
    """Serialize ``obj``; returns [pickle stream, out-of-band buffer, ...]."""
    buffers: list[Any] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(obj)
    return [stream.getbuffer(), *(b.raw() for b in buffers)]


def loads(parts: list[Any]) -> Any:
    """Inverse of :func:`dumps` (parts may be memoryviews of a received frame)."""
    if not parts:
        raise ValueError("empty payload")
    return pickle.loads(parts[0], buffers=parts[1:])


def register_by_value(module: Any) -> None:
    """Ship ``module``'s code by value instead of importing it by name on the node."""
    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:
        pass  # already registered
