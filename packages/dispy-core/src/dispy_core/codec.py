"""Message bodies: control fields as JSON, binary values as out-of-line blobs.

A body is laid out as::

    +-----------+---------+------------------------+------+---------------------+
    | json len  | nblobs  | blob lengths           | JSON | blob 0 | blob 1 ... |
    | u32       | u32     | nblobs x u64           |      |                     |
    +-----------+---------+------------------------+------+---------------------+

Control fields are plain JSON (str, int, float, bool, None, lists, dicts with str keys)
and never pickle: decoding a body can't run code. A ``bytes``/``bytearray``/
``memoryview``/``PickleBuffer`` anywhere in a message becomes a blob: the JSON holds
``{"$b": index}`` and the bytes follow the JSON untouched, so large user payloads (the
cloudpickled arguments and their out-of-band buffers) are never copied into a JSON string
and are handed back as zero-copy ``memoryview`` slices of the received frame. Nested
message dataclasses are written as ``{"$t": "ClassName", ...fields}``; a received one is
made by the builder its class was registered with (which checks its fields, see
:mod:`dispy_core._fieldcheck`).

Nesting: ``json`` guards its recursion with the interpreter's recursion limit, so a body
of 100,000 nested lists stops there with a RecursionError, which becomes a ProtocolError
like any other malformed body; the field checks then bound what ``Any`` fields may hold.

The encoder returns a list of buffers so that transports can ``sendmsg``/``writelines``
them without joining.
"""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import fields, is_dataclass
from collections.abc import Callable
from typing import Any

from .errors import ProtocolError

__all__ = ["encode_body", "decode_body", "register", "REGISTRY"]

_COUNTS = struct.Struct("!II")
_BLOB_TYPES = (bytes, bytearray, memoryview, pickle.PickleBuffer)

#: Message and record classes by name (for nested records).
REGISTRY: dict[str, type] = {}
#: How a received record of each class is made from its field dict (by name).
_BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def register(cls: type, build: Callable[[dict[str, Any]], Any] | None = None) -> type:
    """Make a dataclass decodable when it appears nested in a message; ``build`` makes
    one from a received field dict (default: ``cls(**fields)``)."""
    REGISTRY[cls.__name__] = cls
    _BUILDERS[cls.__name__] = build if build is not None else (lambda d: cls(**d))
    cls.__dispy_fields__ = tuple(f.name for f in fields(cls))  # type: ignore[attr-defined]
    return cls


def encode_body(fields_dict: dict[str, Any]) -> tuple[list[Any], int]:
    """Encode a message's fields; returns (buffers, total length in bytes)."""
    blobs: list[Any] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, _BLOB_TYPES):
            if isinstance(obj, pickle.PickleBuffer):
                obj = obj.raw()
            blobs.append(obj)
            return {"$b": len(blobs) - 1}
        if is_dataclass(obj) and not isinstance(obj, type):
            d = {name: getattr(obj, name) for name in obj.__dispy_fields__}  # type: ignore[attr-defined]
            d["$t"] = type(obj).__name__
            return d
        if isinstance(obj, (tuple, set, frozenset)):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} can't travel as a dispy control field")

    text = json.dumps(fields_dict, default=default, separators=(",", ":")).encode()
    lengths = [memoryview(b).nbytes for b in blobs]
    head = _COUNTS.pack(len(text), len(blobs)) + struct.pack(f"!{len(blobs)}Q", *lengths)
    return [head, text, *blobs], len(head) + len(text) + sum(lengths)


def decode_body(body: memoryview) -> dict[str, Any]:
    """Decode a body into a field dict; blobs come back as memoryviews of ``body``.

    Raises ProtocolError for anything malformed (wrong lengths, bad JSON, unknown record).
    """
    try:
        json_len, nblobs = _COUNTS.unpack_from(body, 0)
        offset = _COUNTS.size
        if offset + 8 * nblobs + json_len > len(body):
            raise ProtocolError("message body shorter than its declared lengths")
        lengths = struct.unpack_from(f"!{nblobs}Q", body, offset)
        offset += 8 * nblobs
        text = bytes(body[offset : offset + json_len])
        offset += json_len
        blobs = []
        for n in lengths:
            if offset + n > len(body):
                raise ProtocolError("message blob runs past the end of the frame")
            blobs.append(body[offset : offset + n])
            offset += n
        if offset != len(body):
            raise ProtocolError("message body has trailing bytes")

        def hook(d: dict[str, Any]) -> Any:
            if "$b" in d:
                index = d["$b"]
                if type(index) is not int or not 0 <= index < len(blobs) or len(d) != 1:
                    raise ProtocolError(f"bad blob reference {_brief(d)}")
                return blobs[index]
            name = d.pop("$t", None)
            if name is not None:
                build = _BUILDERS.get(name) if type(name) is str else None
                if build is None:
                    raise ProtocolError(f"unknown record type {_brief(name)}")
                return build(d)
            return d

        result = json.loads(text, object_hook=hook)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("message body nested too deeply") from None
    except (ValueError, TypeError, IndexError, KeyError, struct.error) as exc:
        raise ProtocolError(f"not a message body: {exc}") from None
    if not isinstance(result, dict):
        raise ProtocolError("message body is not an object")
    return result


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
