"""Checking received message fields against their annotations: the decoding boundary.

JSON gives a peer the choice of every field's type and value, and code that reads a
message should not have to check them again: a ``nonce`` that is an int, a ``port`` of
70000 or an ``mtime`` of inf must be refused where the frame is decoded, as a
:class:`~dispy_core.errors.ProtocolError` naming the message and field, not surface later
as an AttributeError or OverflowError somewhere in a daemon.

:func:`record_builder` makes, for one message/record dataclass, the function the decoder
calls with a received field dict. It checks each field against the class's annotation:

=====================  ===========================================================
annotation             accepted value
=====================  ===========================================================
``str``                a str with no lone surrogate (those of ``surrogateescape``,
                       U+DC80..U+DCFF, which file names may hold, excepted): such a
                       str can't be encoded, logged to a file or used as a path
``int``                an int (not a bool) in the signed 64-bit range
``float``              a finite float, or an int within the float range
``bool``               True or False
``X | None``           None or an X
``list[X]``            a list whose items are X
``dict[str, X]``       an object whose values are X (JSON keys are always str)
a record class         that record, already checked when it was decoded
``Any``                anything JSON and the codec make (str, numbers, None, lists,
                       dicts, records, memoryviews) nested at most ANY_DEPTH deep
=====================  ===========================================================

plus what ``Annotated`` adds: :data:`BLOB` (a received blob: a memoryview),
:data:`TEXT_OR_BLOB`, :data:`BUFFERS` (a payload: a list of blobs), and value
constraints (:class:`Range`, :class:`Matches`) for what a type can't say: ports,
permission bits, sizes, file times os.utime can take, hex nonces.

Decoding must stay about as fast as it was: the builder of a class is generated code
(as dataclasses generate ``__init__``), made on the class's first decoding, with the
common checks inline (``type(v) is str`` and so on): about a microsecond per record. The
words of a complaint are only worked out for a value that failed. Where a class also has
``__post_init__`` checks, their TypeError/ValueError becomes a ProtocolError too.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from .errors import ProtocolError

__all__ = [
    "record_builder",
    "Range",
    "Matches",
    "BLOB",
    "TEXT_OR_BLOB",
    "BUFFERS",
    "Blob",
    "TextOrBlob",
    "Hex",
    "Sha256",
    "Port",
    "NonNegative",
    "Mode",
    "Mtime",
    "MTIME_LIMIT",
    "ANY_DEPTH",
]

Check = Callable[[Any], bool]


class Range:
    """``Annotated`` constraint: a number from ``lo`` to ``hi`` (inclusive; None: unbounded)."""

    def __init__(self, lo: float | None, hi: float | None) -> None:
        self.lo, self.hi = lo, hi

    def ok(self, v: Any) -> bool:
        return (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)

    def words(self, base: str) -> str:
        if self.hi is None:
            return f"{base} >= {self.lo:g}"
        if self.lo is None:
            return f"{base} <= {self.hi:g}"
        return f"{base} from {self.lo:g} to {self.hi:g}"


class Matches:
    """``Annotated`` constraint: a str matching ``pattern`` whole, described as ``words``."""

    def __init__(self, pattern: str, words: str) -> None:
        self.pattern = re.compile(pattern)
        self._words = words

    def ok(self, v: Any) -> bool:
        return self.pattern.fullmatch(v) is not None

    def words(self, base: str) -> str:
        return self._words


class _Marker:
    def __init__(self, name: str, words: str) -> None:
        self.name, self.words = name, words

    def __repr__(self) -> str:
        return self.name


#: A blob of the codec: the bytes of a field (received as a memoryview of the frame).
BLOB = _Marker("BLOB", "bytes")
#: A str or a blob (a job's stdout: text for functions, bytes for programs).
TEXT_OR_BLOB = _Marker("TEXT_OR_BLOB", "a string or bytes")
#: A payload: a list of blobs (the buffers of serialization.dumps).
BUFFERS = _Marker("BUFFERS", "a list of buffers")

#: Seconds either side of the epoch a file time may be: far more than any file system
#: stores (ext4: 1901..2446), far less than what makes os.utime overflow (2**63 ns).
MTIME_LIMIT = 1e12

Blob = Annotated[Any, BLOB]
TextOrBlob = Annotated[Any, TEXT_OR_BLOB]
#: What auth.new_nonce makes and proofs are: hex digits (auth encodes them; a str that
#: is not hex, or is huge, is not a nonce).
Hex = Annotated[str, Matches(r"[0-9a-f]{1,128}", "hex digits (at most 128)")]
Sha256 = Annotated[str, Matches(r"[0-9a-f]{64}", "64 lowercase hex digits")]
Port = Annotated[int, Range(0, 65535)]
NonNegative = Annotated[int, Range(0, None)]
Mode = Annotated[int, Range(0, 0o7777)]
Mtime = Annotated[float, Range(-MTIME_LIMIT, MTIME_LIMIT)]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = 1.7976931348623157e308
# Lone surrogates other than surrogateescape's (U+DC80..U+DCFF, bytes of undecodable
# file names): they can't be encoded to UTF-8, so a str holding one breaks os calls,
# hashing of nonces and log files alike.
_BAD_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def _is_str(v: Any) -> bool:
    return type(v) is str and (v.isascii() or _BAD_SURROGATE.search(v) is None)


def _is_int(v: Any) -> bool:
    return type(v) is int and _INT_MIN <= v <= _INT_MAX


def _is_float(v: Any) -> bool:
    # v - v is 0.0 for finite floats and nan for inf and nan.
    t = type(v)
    return (t is float and v - v == 0.0) or (t is int and -_FLOAT_MAX <= v <= _FLOAT_MAX)


def _is_bool(v: Any) -> bool:
    return type(v) is bool


#: How deeply lists, objects and records may nest inside a field annotated ``Any``
#: (code that walks such a value recursively, json.dumps included, must not run out of
#: stack; the control data dispy sends nests a few levels).
ANY_DEPTH = 32


def _anything(v: Any, depth: int = 0) -> bool:
    t = type(v)
    if t is list:
        return depth < ANY_DEPTH and all(_anything(x, depth + 1) for x in v)
    if t is dict:
        return depth < ANY_DEPTH and all(_anything(x, depth + 1) for x in v.values())
    fields = getattr(t, "__dispy_fields__", None)
    if fields is not None:  # a record: its own fields were checked, but not how deep it sits
        return depth < ANY_DEPTH and all(_anything(getattr(v, f), depth + 1) for f in fields)
    return True


def _is_blob(v: Any) -> bool:
    return type(v) is memoryview


def _is_text_or_blob(v: Any) -> bool:
    return type(v) is memoryview or _is_str(v)


def _is_buffers(v: Any) -> bool:
    return type(v) is list and all(type(b) is memoryview for b in v)


_SIMPLE: dict[Any, tuple[Check, str]] = {
    str: (_is_str, "a string"),
    int: (_is_int, "an integer"),
    float: (_is_float, "a finite number"),
    bool: (_is_bool, "true or false"),
}
_MARKED: dict[_Marker, Check] = {BLOB: _is_blob, TEXT_OR_BLOB: _is_text_or_blob, BUFFERS: _is_buffers}


def _compile(tp: Any) -> Check:
    """A predicate for values of annotation ``tp`` (see the module's table)."""
    if tp is Any:
        return _anything
    simple = _SIMPLE.get(tp)
    if simple is not None:
        return simple[0]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        for meta in args[1:]:
            if isinstance(meta, _Marker):
                return _MARKED[meta]
        base = _compile(args[0])
        limits = [m for m in args[1:] if isinstance(m, (Range, Matches))]
        if len(limits) == 1:
            ok = limits[0].ok
            return lambda v: base(v) and ok(v)
        return lambda v: base(v) and all(m.ok(v) for m in limits)
    if origin is Union or origin is types.UnionType:
        alts = [_compile(a) for a in args if a is not type(None)]
        if type(None) in args and len(alts) == 1:
            alt = alts[0]
            return lambda v: v is None or alt(v)
        none_ok = type(None) in args
        return lambda v: (none_ok and v is None) or any(a(v) for a in alts)
    if origin is list:
        if args[0] is Any:
            return lambda v: type(v) is list
        item = _compile(args[0])
        return lambda v: type(v) is list and all(map(item, v))
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"no decoder check for {tp}: JSON object keys are strings")
        if args[1] is Any:
            return lambda v: type(v) is dict
        value = _compile(args[1])
        return lambda v: type(v) is dict and all(map(value, v.values()))
    if isinstance(tp, type) and hasattr(tp, "__dispy_fields__"):
        return lambda v: type(v) is tp
    raise TypeError(f"no decoder check for annotation {tp!r}")


def _words(tp: Any) -> str:
    """What a value of annotation ``tp`` must be, for a complaint."""
    if tp is Any:
        return f"a JSON value nested at most {ANY_DEPTH} deep"
    if tp in _SIMPLE:
        return _SIMPLE[tp][1]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        for meta in args[1:]:
            if isinstance(meta, _Marker):
                return meta.words
            if isinstance(meta, (Range, Matches)):
                return meta.words(_words(args[0]))
        return _words(args[0])
    if origin is Union or origin is types.UnionType:
        alts = [_words(a) for a in args if a is not type(None)]
        return " or ".join(alts + (["null"] if type(None) in args else []))
    if origin is list:
        return "a list"
    if origin is dict:
        return "an object"
    if isinstance(tp, type):
        return f"a {tp.__name__} record"
    return repr(tp)


def _kind_of(v: Any) -> str:
    """A received value of the wrong type as a complaint names it: its type's name."""
    if v is None:
        return "null"
    if type(v) is memoryview:
        return "bytes"
    if type(v) is str and not _is_str(v):
        return "a string with a lone surrogate"
    if type(v) is float and not _is_float(v):
        return repr(v)  # inf or nan
    if type(v) is int and not isinstance(v, bool) and not _is_int(v):
        return "an integer out of the 64-bit range"
    return type(v).__name__


def _brief(v: Any) -> str:
    """A value of the right type out of bounds, as a complaint shows it."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_problem(tp: Any, v: Any, path: str) -> tuple[str, str, str]:
    """(path, what it must be, what it is) of the first part of ``v`` that ``tp`` does
    not accept (``v`` as a whole failed its compiled check)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        alts = [a for a in args if a is not type(None)]
        if len(alts) == 1 and v is not None:
            return _first_problem(alts[0], v, path)
    elif origin is list and type(v) is list:
        item = _compile(args[0])
        for i, x in enumerate(v):
            if not item(x):
                return _first_problem(args[0], x, f"{path}[{i}]")
    elif origin is dict and type(v) is dict:
        value = _compile(args[1])
        for k, x in v.items():
            if not value(x):
                return _first_problem(args[1], x, f"{path}[{_brief(k)}]")
    elif origin is Annotated and not any(isinstance(m, _Marker) for m in args[1:]):
        if not _compile(args[0])(v):
            return _first_problem(args[0], v, path)
        return path, _words(tp), _brief(v)  # the right type, out of bounds
    elif tp is Any:
        return path, _words(tp), f"{type(v).__name__} nested deeper"
    return path, _words(tp), _kind_of(v)


def _expr(tp: Any, var: str, ns: dict[str, Any]) -> str:
    """A Python expression that is true when ``var`` holds a value of annotation ``tp``:
    the common cases inline (no call per field), the rest through a compiled predicate
    put in ``ns``."""
    if tp is str:
        return f"(type({var}) is str and ({var}.isascii() or _str_ok({var})))"
    if tp is int:
        return f"(type({var}) is int and {_INT_MIN} <= {var} <= {_INT_MAX})"
    if tp is float:
        return (f"((type({var}) is float and {var} - {var} == 0.0) or "
                f"(type({var}) is int and -_FLOAT_MAX <= {var} <= _FLOAT_MAX))")
    if tp is bool:
        return f"(type({var}) is bool)"
    origin, args = get_origin(tp), get_args(tp)
    if (origin is Union or origin is types.UnionType) and len(args) == 2 and type(None) in args:
        alt = args[0] if args[1] is type(None) else args[1]
        return f"({var} is None or {_expr(alt, var, ns)})"
    if origin is list and args[0] is Any:
        return f"(type({var}) is list)"
    if isinstance(tp, type) and hasattr(tp, "__dispy_fields__"):
        name = f"_t{len(ns)}"
        ns[name] = tp
        return f"(type({var}) is {name})"
    name = f"_c{len(ns)}"
    ns[name] = _compile(tp)
    return f"{name}({var})"


def record_builder(cls: type) -> Callable[[dict[str, Any]], Any]:
    """The decoder's constructor for dataclass ``cls``: checks a received field dict,
    then makes the object; raises ProtocolError naming ``cls`` and the field.

    Call it once every class its annotations name exists. The builder is generated code
    (as dataclasses generate ``__init__``): for a dict holding exactly the class's fields
    it checks each one inline and calls ``cls`` positionally; anything else (a field
    missing, unknown or wrong) goes the slow way, which finds and words the problem."""
    import dataclasses

    kind = "message" if any(c.__name__ == "Message" for c in cls.__mro__[1:]) else "record"
    hints = get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)
    types_ = {f.name: hints[f.name] for f in fields}
    required = frozenset(f.name for f in fields if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
    checks = {name: _compile(tp) for name, tp in types_.items()}

    def fail(reason: str) -> typing.NoReturn:
        # A record is decoded inside its message, whose decoder adds "malformed X message: ".
        if kind == "message":
            raise ProtocolError(f"malformed {cls.__name__} message: {reason}")
        raise ProtocolError(f"in a {cls.__name__} record, {reason}")

    def slow(d: dict[str, Any]) -> Any:
        for name, value in d.items():
            check = checks.get(name)
            if check is None:
                fail(f"unknown field {_brief(name)}")
            if not check(value):
                path, must, got = _first_problem(types_[name], value, name)
                fail(f"{path} must be {must}, got {got}")
        missing = sorted(required - d.keys())
        if missing:
            fail(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:  # __post_init__ checks
            fail(str(exc))

    ns: dict[str, Any] = {"_cls": cls, "_slow": slow, "_fail": fail, "_FLOAT_MAX": _FLOAT_MAX,
                          "_str_ok": lambda v: _BAD_SURROGATE.search(v) is None}
    names = [f"f{i}" for i in range(len(fields))]
    if not fields:
        src = "def build(d):\n    return _cls() if not d else _slow(d)\n"
    else:
        loads = "; ".join(f"{v} = d[{f.name!r}]" for v, f in zip(names, fields))
        conds = " and ".join(_expr(types_[f.name], v, ns) for v, f in zip(names, fields))
        src = (f"def build(d):\n"
               f"    if len(d) == {len(fields)}:\n"
               f"        try:\n"
               f"            {loads}\n"
               f"        except KeyError:\n"
               f"            return _slow(d)\n"
               f"        if {conds}:\n"
               f"            try:\n"
               f"                return _cls({', '.join(names)})\n"
               f"            except (TypeError, ValueError) as exc:\n"
               f"                _fail(str(exc))\n"
               f"    return _slow(d)\n")
    exec(compile(src, f"<dispy decoder of {cls.__name__}>", "exec"), ns)
    build: Callable[[dict[str, Any]], Any] = ns["build"]
    return build
