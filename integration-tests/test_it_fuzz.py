"""Fuzzing every listening and connecting dispy program as a hostile peer would (issue #13).

A real client <-> node session is recorded once (a small TCP proxy between a JobCluster
and a real dispynode), and its frames are the raw material: bit flips, truncations,
splices, rewritten length fields, frames replayed out of order, plus random bytes, huge
announced lengths followed by a trickle, idle and slow connections, and every handshake
field (Hello, Challenge, Proof, Welcome, Denied) replaced by a value of the wrong type.
The targets, each a test of its own, with no secret (the default) and with a secret:

* dispynode's TCP port and its UDP discovery port;
* dispyscheduler's client port;
* dispyscheduler's node side: fake nodes (threads of this test, named with ``-n``) that
  answer its connections with garbage and mutations;
* a client program (a JobCluster in a subprocess) facing the same fake nodes next to a
  real one.

Against the listening ports, a peer that knows the secret then sends recorded messages
with mutated fields (what an authenticated but buggy or hostile program can do).

Each run checks that the program still serves (a real cluster's jobs complete after the
flood), logs no ERROR line and no traceback (and not a line for every refused
connection), returns to within a few MiB of its starting RSS once the connections close
(daemons), and writes nothing outside its ``--dest_path_prefix`` (a sentinel directory
next to the prefix must stay as it was). A failure names the input that broke what, with
the offending bytes in hex: a log line is blamed by sending the last inputs again one at
a time. Each phase's time and the RSS are printed (``-s``, or with a failure).

Everything runs on 127.0.0.1. The counts are small by default (a few seconds per
target); ``DISPY_FUZZ_SCALE`` (a float, default 1) multiplies them for a long run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dispy
from dispy_core import auth, config, discovery, messages
from dispy_core.connection import HANDSHAKE_FRAME_LIMIT
from dispy_core.framing import FLAG_MAC, HEADER, MAC_SIZE, MAGIC, PROTOCOL_VERSION, FrameDecoder, pack_header
from dispy_core.testing import DaemonProcess, NodeProcess, wait_until

SCALE = float(os.environ.get("DISPY_FUZZ_SCALE") or 1)
SECRET = "fuzz-secret-9f2c81d7"
SECRETS = [pytest.param("", id="no-secret"), pytest.param(SECRET, id="secret")]
#: How far above its starting RSS a daemon may stay once the connections are gone.
RSS_TOLERANCE = 8 << 20
MiB = 1 << 20
#: The first line of a log record: the daemons' "TIME PROGRAM LEVEL msg", the client's
#: "TIME dispy LEVEL: msg". Lines that don't match continue the record before them.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \S+ (?P<level>[A-Z]+)\b")
#: A record that relays what a node reported about a computation whose setup failed (the
#: text of that failure may be a traceback of the computation's code: an authenticated
#: peer may send a computation that does not load, like any buggy program).
_RELAYED = re.compile(r"setup of computation .* failed")
#: The last line of a traceback ("RecursionError: maximum recursion depth ..."): what broke.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def scaled(n: int) -> int:
    return max(1, round(n * SCALE))


def hexed(data: bytes, limit: int = 64) -> str:
    """The first ``limit`` bytes in hex, and the length when there are more."""
    text = bytes(data[:limit]).hex()
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else f" ({len(data)} bytes)")


def square(x):
    return x * x


# -- frames ----------------------------------------------------------------------------
def frame(type_: int, body: bytes, *, session: bytes | None = None, seq: int = 0) -> bytes:
    """A frame; MACed under ``session`` (with sequence number ``seq``) when one is given."""
    if session is None:
        return pack_header(type_, len(body)) + body
    header = pack_header(type_, len(body), FLAG_MAC)
    return header + body + auth.frame_mac(session, seq, [header, body])


def message_body(msg: messages.Message) -> bytes:
    parts, _ = messages.encode(msg)
    return b"".join(bytes(memoryview(p).cast("B")) for p in parts)


def json_body(text: bytes) -> bytes:
    """A message body holding ``text`` as its JSON and no blobs (see dispy_core.codec)."""
    return struct.pack("!II", len(text), 0) + text


def fields_body(fields: dict[str, bytes]) -> bytes:
    """A body whose JSON object maps each name to a raw JSON value (any text at all)."""
    return json_body(b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) + b"}")


def split_frames(stream: bytes) -> list[bytes]:
    """The complete frames at the start of a recorded byte stream."""
    out, at = [], 0
    while len(stream) - at >= HEADER.size:
        _, _, _, flags, length = HEADER.unpack_from(stream, at)
        end = at + HEADER.size + length + (MAC_SIZE if flags & FLAG_MAC else 0)
        if end > len(stream):
            break
        out.append(stream[at:end])
        at = end
    return out


def frame_parts(data: bytes) -> tuple[int, bytes]:
    """(type, body) of one recorded frame."""
    _, _, type_, _, length = HEADER.unpack_from(data, 0)
    return type_, data[HEADER.size:HEADER.size + length]


class FrameReader:
    """Reads whole frames from a blocking socket."""

    def __init__(self, sock: socket.socket, limit: int = config.MaxFrameSize) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(limit)

    def next(self) -> tuple[int, bytes]:
        while (f := self.decoder.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("peer closed the connection")
            self.decoder.feed(data)
        return f.type, bytes(f.body)


# -- values of the wrong type ------------------------------------------------------------
#: Raw JSON values that no handshake field may hold, by name (for failure messages).
BAD_VALUES: dict[str, bytes] = {
    "int": b"123",
    "negative": b"-1",
    "float": b"1e300",
    "list": b'["a",1]',
    "dict": b'{"a":1}',
    "null": b"null",
    "bool": b"true",
    # Deep enough for a RecursionError in json, small enough for a handshake frame.
    "nested-list": b"[" * 1900 + b"]" * 1900,
    "nested-dict": b'{"":' * 700 + b"1" + b"}" * 700,
    "huge-string": json.dumps("x" * 3500).encode(),
    "blob": b'{"$b":0}',
    "record": b'{"$t":"Hello","protocol":1}',
}

HANDSHAKE_FIELDS: dict[type[messages.Message], list[str]] = {
    messages.Hello: ["protocol", "nonce", "software", "key_id"],
    messages.Challenge: ["nonce", "proof"],
    messages.Proof: ["proof"],
    messages.Welcome: ["software"],
    messages.Denied: ["reason"],
}


def good_fields(cls: type[messages.Message], **values: Any) -> dict[str, bytes]:
    base = {"protocol": PROTOCOL_VERSION, "nonce": auth.new_nonce(), "software": "fuzz",
            "key_id": "", "proof": "00" * 32, "reason": "fuzz"}
    base.update(values)
    return {name: json.dumps(base[name]).encode() for name in HANDSHAKE_FIELDS[cls]}


def wrong_type_frames(cls: type[messages.Message], **values: Any) -> Iterator[tuple[str, bytes]]:
    """(name, frame) for every field of ``cls`` with every bad value, plus a missing
    field, an unknown field and a body that is not an object."""
    for name in HANDSHAKE_FIELDS[cls]:
        for bad, raw in BAD_VALUES.items():
            fields = good_fields(cls, **values)
            fields[name] = raw
            yield f"{cls.__name__}.{name}={bad}", frame(cls.TYPE, fields_body(fields))
        fields = good_fields(cls, **values)
        del fields[name]
        yield f"{cls.__name__} without {name}", frame(cls.TYPE, fields_body(fields))
    yield f"{cls.__name__} with an unknown field", frame(
        cls.TYPE, fields_body({**good_fields(cls, **values), "extra": b"1"}))
    for text in (b"[]", b"1", b'"x"', b"null", b"{", b"\xff\xfe"):
        yield f"{cls.__name__} body {text!r}", frame(cls.TYPE, json_body(text))


#: hypothesis strategy: any JSON value, including deep nesting and long strings.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# -- mutations of recorded frames --------------------------------------------------------
def flip_bits(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data))]


def splice(rng: random.Random, a: bytes, b: bytes) -> bytes:
    return a[:rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1):]


def relength(rng: random.Random, data: bytes) -> bytes:
    """The frame with another body length in its header."""
    _, _, _, _, length = HEADER.unpack_from(data, 0)
    new = rng.choice([0, 1, max(0, length - 1), length + 1, HANDSHAKE_FRAME_LIMIT,
                      HANDSHAKE_FRAME_LIMIT + 1, 1 << 30, (1 << 63) + 5, (1 << 64) - 1,
                      rng.randrange(1 << 64)])
    return data[:8] + struct.pack("!Q", new) + data[HEADER.size:]


def mutated_streams(rng: random.Random, frames: list[bytes], count: int) -> Iterator[tuple[str, bytes]]:
    """(name, bytes for one connection) made from recorded ``frames``."""
    for i in range(count):
        kind = rng.choice(["flip", "truncate", "splice", "length", "reorder", "random", "magic+random"])
        a, b = rng.choice(frames), rng.choice(frames)
        if kind == "flip":
            data = flip_bits(rng, a)
        elif kind == "truncate":
            data = truncate(rng, a)
        elif kind == "splice":
            data = splice(rng, a, b)
        elif kind == "length":
            data = relength(rng, a)
        elif kind == "reorder":  # recorded frames replayed in another order
            picked = rng.sample(frames, min(len(frames), rng.randint(2, 6)))
            data = b"".join(picked)
        elif kind == "random":
            data = rng.randbytes(rng.randint(0, 300))
        else:
            data = MAGIC + bytes([PROTOCOL_VERSION]) + rng.randbytes(rng.randint(0, 300))
        yield f"#{i} {kind}", data


# -- recording a real session ------------------------------------------------------------
class Recorder:
    """A TCP proxy on 127.0.0.1 in front of ``target`` that records, for every
    connection, the bytes each way (``c2s``: client to server)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sessions: list[dict[str, bytearray]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._socks += [client, upstream]
            rec = {"c2s": bytearray(), "s2c": bytearray()}
            self.sessions.append(rec)
            for src, dst, key in ((client, upstream, "c2s"), (upstream, client, "s2c")):
                threading.Thread(target=self._pipe, args=(src, dst, rec[key]), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, into: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                into += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in self._socks:
            s.close()


@dataclass
class Recording:
    """The frames of a recorded session: ``c2s`` client to node, ``s2c`` node to client."""

    c2s: list[bytes]
    s2c: list[bytes]

    def after_handshake(self, direction: str) -> list[tuple[int, bytes]]:
        """(type, body) of the frames after the handshake (types above Denied's)."""
        return [frame_parts(f) for f in getattr(self, direction) if frame_parts(f)[0] > messages.Denied.TYPE]


@pytest.fixture(scope="module")
def recordings() -> Iterator[Callable[[str], Recording]]:
    """recordings(secret): a real JobCluster <-> dispynode session, recorded once."""
    made: dict[str, Recording] = {}

    def get(secret: str) -> Recording:
        if secret not in made:
            args = ["-c", "1"] + (["-s", secret] if secret else [])
            with NodeProcess("127.0.0.1", *args) as node:
                proxy = Recorder(("127.0.0.1", node.port))
                try:
                    assert run_jobs(dispy.JobCluster, secret, nodes=[dispy.NodeAllocate("127.0.0.1", port=proxy.port)])
                finally:
                    proxy.close()
            c2s = [f for s in proxy.sessions for f in split_frames(bytes(s["c2s"]))]
            s2c = [f for s in proxy.sessions for f in split_frames(bytes(s["s2c"]))]
            assert {frame_parts(f)[0] for f in c2s} >= {messages.Hello.TYPE, messages.Proof.TYPE, messages.InfoRequest.TYPE,
                                                         messages.Compute.TYPE, messages.SubmitJobs.TYPE}
            made[secret] = Recording(c2s, s2c)
        return made[secret]

    yield get


def run_jobs(cluster_type: Any, secret: str, n: int = 3, **kwargs: Any) -> bool:
    """Whether a real cluster runs ``n`` jobs with the right results."""
    kwargs.setdefault("host", "127.0.0.1")
    with cluster_type(square, secret=secret, loglevel=logging.WARNING, **kwargs) as cluster:
        jobs = [cluster.submit(i) for i in range(n)]
        cluster.wait(timeout=60)
        return [job.result for job in jobs] == [i * i for i in range(n)]


# -- the daemon under test -------------------------------------------------------------------
class Target:
    """A daemon under fuzz. Keeps the list of problems found, each naming its input."""

    def __init__(self, name: str, proc: DaemonProcess, prefix_root: Path, secret: str,
                 serve: Callable[[], bool]) -> None:
        self.name = name
        self.proc = proc
        self.addr = ("127.0.0.1", proc.port)
        self.root = prefix_root
        self.secret = secret
        self.serve = serve
        self.problems: list[str] = []
        self._mark = 0  # where the log records not yet complete start
        self._reported: set[int] = set()  # bad records already reported (by first line)
        self._recent: list[tuple[str, bytes, Callable[[], Any]]] = []  # the last inputs
        self._blamed = 0  # culprits searched for in this flood
        self.inputs = 0  # inputs sent so far
        self.sentinel = snapshot(prefix_root / "sentinel")
        self.ps = psutil.Process(proc.proc.pid)
        self.base_rss = 0
        self._t0 = time.monotonic()
        self.context: Callable[[], str] = lambda: ""  # more for the report (the fake nodes' answers)

    def phase(self, what: str) -> None:
        """Print how long the last phase took and the RSS now (shown with the failure, or -s)."""
        now = time.monotonic()
        print(f"{self.name}: {what} in {now - self._t0:.1f} s, RSS {self.rss() / MiB:.1f} MiB, "
              f"{len(self.problems)} problems so far")
        self._t0 = now

    def bad_log_lines(self) -> list[str]:
        found = records(self.proc.output, self._mark)
        bad = [summary(lines) for start, lines in found if start not in self._reported and is_bad(lines)]
        self._reported.update(start for start, lines in found if is_bad(lines))
        if found:  # the last record is looked at again: its traceback may still be coming
            self._mark = found[-1][0]
        return bad

    def sent(self, what: str, data: bytes, resend: Callable[[], Any] | None = None) -> None:
        """Note an input just sent (``resend()`` sends it again; default: on a new TCP
        connection) and check the daemon. A log line comes some time after the input
        that caused it, so a bad line is blamed by sending the recent inputs again, one
        at a time, each until the log is quiet."""
        self.inputs += 1
        again = resend if resend is not None else (lambda: exchange(self.addr, data))
        self._recent = (self._recent + [(what, data, again)])[-8:]
        if not self.proc.alive():
            self.problems.append(f"{self.name} died after one of {[w for w, _, _ in self._recent[-2:]]}")
            raise AssertionError(self.report())
        bad = self.bad_log_lines()
        if bad:
            self._blame(bad)

    def flush(self, what: str) -> None:
        """The end of a flood: once the log is quiet, blame any bad line on the last inputs."""
        self.quiet_log()
        bad = self.bad_log_lines()
        if bad:
            self._blame(bad)
        self._recent = []
        self._blamed = 0

    def _blame(self, bad: list[str]) -> None:
        recent, self._recent = self._recent, []
        self._blamed += 1
        if self._blamed > 12:  # enough to go on in this flood; finding more culprits takes time
            self.problems.append(f"{self.name} logged {bad[:2]} after one of {[w for w, _, _ in recent[-2:]]}")
            return
        self.quiet_log()
        self.bad_log_lines()  # the rest of what was blamed, so that it is not blamed again
        culprit = "not reproduced by sending the recent inputs again: " + "; ".join(
            f"{w}: {hexed(d)}" for w, d, _ in recent)
        for w, d, again_ in reversed(recent):
            again_()
            self.quiet_log()
            if self.bad_log_lines():
                culprit = f"{w}: {hexed(d)}"
                break
        self.problems.append(f"{self.name} logged {bad[:4]} after {culprit}")

    def check(self, what: str) -> None:
        if not self.proc.alive():
            self.problems.append(f"{self.name} died after {what}")
            raise AssertionError(self.report())
        bad = self.bad_log_lines()
        if bad:
            self.problems.append(f"{self.name} logged {bad[:4]} after {what}")

    def quiet_log(self, timeout: float = 10.0) -> None:
        """Wait until the daemon's log has had no new line for a moment (at most ``timeout``)."""
        count, deadline = -1, time.monotonic() + timeout
        while count != len(self.proc.output) and time.monotonic() < deadline:
            count = len(self.proc.output)
            time.sleep(0.3)

    def settle_log(self, what: str) -> None:
        """Check the log once it is quiet."""
        self.quiet_log()
        self.check(what)

    def check_log_volume(self, what: str, inputs: int, since: int) -> None:
        """Refusals are logged the first few times for each reason, then summarised: a
        flood of ``inputs`` connections must not write a line for each."""
        self.quiet_log()
        lines = len(self.proc.output) - since
        if lines > max(100, inputs // 4):
            sample = "".join(self.proc.output[-3:])
            self.problems.append(f"{self.name} wrote {lines} log lines for {inputs} refused inputs ({what}): "
                                 f"refusals are not rate-limited; the last:\n{sample}")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def mark_rss(self) -> None:
        """The starting RSS: once the warmed-up daemon has stopped moving."""
        readings = [self.rss()]

        def steady() -> bool:
            time.sleep(0.3)
            readings.append(self.rss())
            return abs(readings[-1] - readings[-2]) < 256 * 1024

        wait_until(steady, timeout=5, interval=0)
        self.base_rss = readings[-1]

    def check_rss(self, what: str) -> None:
        """RSS within RSS_TOLERANCE of the start once ``what``'s connections are closed."""
        limit = self.base_rss + RSS_TOLERANCE
        if not wait_until(lambda: self.rss() <= limit, timeout=15, interval=0.2):
            self.problems.append(f"{self.name} RSS stayed at {self.rss() / MiB:.1f} MiB after {what} "
                                 f"(started at {self.base_rss / MiB:.1f} MiB, tolerance {RSS_TOLERANCE / MiB:.0f} MiB)")

    def finish(self) -> None:
        """The final checks: still serving, nothing outside the prefix, a clean log."""
        if not self.serve():
            self.problems.append(f"{self.name} no longer runs a real cluster's jobs after the fuzzing")
        self.settle_log("the final cluster")
        outside = sorted(p.name for p in self.root.iterdir()) != ["prefix", "sentinel"]
        if outside or snapshot(self.root / "sentinel") != self.sentinel:
            self.problems.append(f"{self.name} wrote outside its prefix: {sorted(self.root.iterdir())}, "
                                 f"sentinel now {snapshot(self.root / 'sentinel')}")
        assert not self.problems, self.report()

    def report(self) -> str:
        tail = "".join(self.proc.output[-15:])
        ordered = sorted(self.problems, key=lambda p: " logged " in p)  # RSS, files, service first
        shown = "\n".join(ordered[:20]) + ("\n..." if len(ordered) > 20 else "")
        return f"{len(self.problems)} problem(s):\n{shown}\n{self.context()}--- {self.name} log tail:\n{tail}"


def records(lines: list[str], start: int = 0) -> list[tuple[int, list[str]]]:
    """The log records in ``lines[start:]``, each with the index of its first line."""
    out: list[tuple[int, list[str]]] = []
    for i in range(start, len(lines)):
        if _RECORD.match(lines[i]) or not out:
            out.append((i, [lines[i]]))
        else:
            out[-1][1].append(lines[i])
    return out


def is_bad(lines: list[str]) -> bool:
    """An ERROR or CRITICAL record, or a traceback anywhere but where a node's report of
    a computation's failed setup is relayed."""
    head = _RECORD.match(lines[0])
    if head and head.group("level") in ("ERROR", "CRITICAL"):
        return True
    return any(line.startswith("Traceback") for line in lines) and not (head and _RELAYED.search(lines[0]))


def summary(lines: list[str]) -> str:
    """A bad record in a few words: its first line, the last code line of its traceback
    and the exception it ended in."""
    code = [line.strip() for line in lines if line.lstrip().startswith("File ")]
    raised = [line.strip() for line in lines if _EXCEPTION_LINE.match(line)]
    return " | ".join([lines[0].strip()[:200], *code[-1:], *raised[-1:]])


def bad_lines(lines: list[str]) -> list[str]:
    """The bad records in a whole log (see :func:`is_bad`), summarised."""
    return [summary(rec) for _, rec in records(lines) if is_bad(rec)]


def snapshot(directory: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime) for p in directory.rglob("*")}


def prefix_root(tmp_path: Path) -> Path:
    """``prefix`` (the daemon's) next to ``sentinel`` (files the daemon must not touch)."""
    (tmp_path / "prefix").mkdir()
    (tmp_path / "sentinel").mkdir()
    (tmp_path / "sentinel" / "keep.txt").write_text("a user's file next to the prefix\n")
    return tmp_path


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- talking to a target ----------------------------------------------------------------------
def exchange(addr: tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    """Connect, send ``data``, close our side, and read what comes back until the peer
    closes (or ``timeout``)."""
    reply = bytearray()
    with socket.create_connection(addr, timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                reply += chunk
    return bytes(reply)


class Session:
    """An initiator's handshake done by hand over a blocking socket (what a peer that
    knows the secret can do), after which any frame can be sent with a valid MAC."""

    def __init__(self, addr: tuple[str, int], secret: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(addr, timeout=timeout)
        reader = FrameReader(self.sock, HANDSHAKE_FRAME_LIMIT)
        key = auth.derive_key(secret)
        nonce = auth.new_nonce()
        self.sock.sendall(frame(messages.Hello.TYPE, message_body(messages.Hello(PROTOCOL_VERSION, nonce, "fuzz"))))
        type_, body = reader.next()
        challenge = messages.decode(type_, memoryview(body))
        assert isinstance(challenge, messages.Challenge), challenge
        proof = auth.initiator_proof(key, nonce, challenge.nonce)
        self.sock.sendall(frame(messages.Proof.TYPE, message_body(messages.Proof(proof))))
        self.session = auth.session_key(key, nonce, challenge.nonce) if secret else None
        self.seq = 0
        type_, _ = reader.next()
        assert type_ == messages.Welcome.TYPE, type_

    def frame(self, type_: int, body: bytes) -> bytes:
        data = frame(type_, body, session=self.session, seq=self.seq)
        self.seq += 1
        return data

    def finish(self, data: bytes, timeout: float = 5.0) -> None:
        """Send ``data``, close our side and read until the peer closes."""
        self.sock.settimeout(timeout)
        with contextlib.suppress(OSError):
            self.sock.sendall(data)
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(65536):
                pass
        self.sock.close()


def mutated_bodies(rng: random.Random, recorded: list[tuple[int, bytes]], count: int) -> Iterator[tuple[str, int, bytes]]:
    """(name, type, body) made from recorded post-handshake messages: a field given a
    value of the wrong type, removed, or added; bytes of the JSON flipped; another type."""
    for i in range(count):
        type_, body = rng.choice(recorded)
        cls = messages.message_types()[type_].__name__
        json_len, nblobs = struct.unpack_from("!II", body, 0)
        start = 8 + 8 * nblobs
        text, rest = body[start:start + json_len], body[start + json_len:]
        head = body[:start]
        fields = json.loads(text)
        kind = rng.choice(["wrong-type", "missing", "extra", "flip-json", "other-type", "truncate"])
        if kind == "wrong-type" and fields:
            name = rng.choice(sorted(fields))
            bad = rng.choice(sorted(BAD_VALUES))
            raw = {k: json.dumps(v).encode() for k, v in fields.items()}
            raw[name] = BAD_VALUES[bad]
            new_text = b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in raw.items()) + b"}"
            what = f"{cls}.{name}={bad}"
        elif kind == "missing" and fields:
            name = rng.choice(sorted(fields))
            new_text = json.dumps({k: v for k, v in fields.items() if k != name}).encode()
            what = f"{cls} without {name}"
        elif kind == "flip-json" and text:
            new_text = flip_bits(rng, text)
            what = f"{cls} with flipped JSON bits"
        elif kind == "other-type":
            yield f"#{i} {cls} body as type {type_ + 1}", type_ + 1, body
            continue
        elif kind == "truncate":
            yield f"#{i} {cls} truncated", type_, truncate(rng, body)
            continue
        else:
            new_text = json.dumps({**fields, "extra_field": [1]}).encode()
            what = f"{cls} with an extra field"
        new_head = struct.pack("!II", len(new_text), nblobs) + head[8:]
        yield f"#{i} {what}", type_, new_head + new_text + rest


# -- the floods -------------------------------------------------------------------------
def flood_frames(t: Target, rec: Recording, rng: random.Random) -> None:
    """Random and mutated frames, each on a connection of its own."""
    for what, data in mutated_streams(rng, rec.c2s, scaled(200)):
        exchange(t.addr, data)
        t.sent(f"mutated frames {what}", data)
    t.flush("the mutated frames")


def flood_handshake_types(t: Target) -> None:
    """Every handshake message, as the first frame and after a real Hello, with every
    field of the wrong type; then hypothesis' own Hellos and Proofs."""
    hello = frame(messages.Hello.TYPE, message_body(messages.Hello(PROTOCOL_VERSION, auth.new_nonce(), "fuzz")))
    for cls in HANDSHAKE_FIELDS:
        for what, data in wrong_type_frames(cls):
            exchange(t.addr, data)
            t.sent(f"first frame {what}", data)
            exchange(t.addr, hello + data)
            t.sent(f"after a Hello: {what}", data, lambda data=data: exchange(t.addr, hello + data))

    @settings(max_examples=scaled(30), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cls=st.sampled_from([messages.Hello, messages.Proof]), values=st.data())
    def typed(cls: type[messages.Message], values: Any) -> None:
        fields = {name: json.dumps(values.draw(json_values, label=name)).encode() for name in HANDSHAKE_FIELDS[cls]}
        data = frame(cls.TYPE, fields_body(fields))
        if cls is messages.Proof:
            data = hello + data
        exchange(t.addr, data)
        t.sent(f"hypothesis {cls.__name__} {fields}", data)

    typed()
    t.flush("the wrong handshake types")


def flood_huge_lengths(t: Target) -> None:
    """Headers announcing up to 1 GiB, then a trickle of the body: before the handshake
    and (knowing the secret) after it. Announced bytes must cost nothing."""
    for length in (HANDSHAKE_FRAME_LIMIT + 1, 1 << 30, (1 << 64) - 1):
        data = pack_header(messages.Hello.TYPE, length) + b"x" * 100
        exchange(t.addr, data)
        t.sent(f"header announcing {length} bytes before the handshake", data)
    # One peer announces the largest frame allowed, the others 256 MiB (enough to see
    # whether announced bytes are allocated, without taking gigabytes from the machine
    # where they are).
    sizes = [config.MaxFrameSize] + [256 * MiB] * (scaled(3) - 1)
    sessions = [Session(t.addr, t.secret) for _ in sizes]
    announced = sum(sizes)
    sent = 0
    worst = 0
    for s, size in zip(sessions, sizes):
        s.sock.sendall(pack_header(messages.SubmitJobs.TYPE, size, FLAG_MAC if t.secret else 0))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for s in sessions:
            with contextlib.suppress(OSError):
                s.sock.sendall(b"\0" * 4096)
                sent += 4096
        worst = max(worst, t.rss())
        time.sleep(0.05)
    growth = worst - t.base_rss
    if growth > RSS_TOLERANCE + 2 * sent:
        t.problems.append(f"{t.name} RSS grew by {growth / MiB:.1f} MiB while {len(sessions)} peers announced "
                          f"{announced} bytes in all and sent {sent}: announced bytes were allocated "
                          f"(header {hexed(pack_header(messages.SubmitJobs.TYPE, sizes[0]))})")
    for s in sessions:
        s.sock.close()
    t.check("huge announced lengths")


def flood_idle_and_slow(t: Target) -> None:
    """Many connections that say nothing at once, and a few that send one byte at a
    time, then all closed."""
    limit = raise_fd_limit()
    idle = []
    # At most the figure, 2,000 at once: a daemon keeps a little of its high-water
    # mark (about 3 KiB a connection: tables that grew), which is fine, and more would
    # measure that rather than what a closed connection leaves behind.
    for _ in range(min(scaled(1000), 2000, limit // 2 - 64)):
        with contextlib.suppress(OSError):
            idle.append(socket.create_connection(t.addr, timeout=10))
    hello = frame(messages.Hello.TYPE, message_body(messages.Hello(PROTOCOL_VERSION, auth.new_nonce(), "fuzz")))
    slow = [socket.create_connection(t.addr, timeout=10) for _ in range(scaled(4))]
    for i in range(min(len(hello), scaled(10))):
        for s in slow:
            with contextlib.suppress(OSError):
                s.send(hello[i:i + 1])
        time.sleep(0.1)
    for s in idle + slow:
        s.close()
    t.check(f"{len(idle)} idle and {len(slow)} slow connections")


def flood_authenticated(t: Target, rec: Recording, rng: random.Random) -> None:
    """A peer that knows the secret sends recorded messages with mutated fields."""
    recorded = rec.after_handshake("c2s")
    info = next(body for type_, body in recorded if type_ == messages.InfoRequest.TYPE)
    for what, type_, body in mutated_bodies(rng, recorded, scaled(40)):
        def send(type_: int = type_, body: bytes = body) -> None:
            s = Session(t.addr, t.secret)
            s.finish(s.frame(messages.InfoRequest.TYPE, info) + s.frame(type_, body))

        send()
        t.sent(f"authenticated {what} (after an InfoRequest)", body, send)
    t.flush("the authenticated messages")


def flood_udp(t: Target, rng: random.Random) -> None:
    """Random datagrams, mutated real discovery requests and sealed requests with fields
    of the wrong type, to the node's UDP port. Each is followed by a real request whose
    answer shows that the node has handled it (and still answers)."""
    _, good = discovery.build_request(t.secret)
    key = auth.derive_key(t.secret)
    inputs: list[tuple[str, bytes]] = []
    for i in range(scaled(150)):
        kind = rng.choice(["random", "flip", "truncate", "splice"])
        data = {"random": lambda: rng.randbytes(rng.randint(0, 1400)),
                "flip": lambda: flip_bits(rng, good),
                "truncate": lambda: truncate(rng, good),
                "splice": lambda: splice(rng, good, rng.randbytes(60))}[kind]()
        inputs.append((f"#{i} {kind}", data))
    for name in ("nonce", "time"):
        for bad, raw in BAD_VALUES.items():
            body = fields_body({"nonce": b'"ab"', "time": str(time.time()).encode(), name: raw})
            inputs.append((f"sealed DiscoverRequest.{name}={bad}",
                           auth.seal_datagram(key, messages.DiscoverRequest.TYPE, body)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)

        def send(data: bytes) -> None:
            with contextlib.suppress(OSError):
                s.sendto(data, t.addr)
            if not answers(s, t.addr, t.secret):
                t.problems.append(f"{t.name} no longer answers a real discovery request after {hexed(data)}")
                raise AssertionError(t.report())

        for what, data in inputs:
            send(data)
            t.sent(f"datagram {what}", data, lambda data=data: send(data))
        t.flush("the datagrams")


def answers(s: socket.socket, addr: tuple[str, int], secret: str) -> bool:
    """Whether the node answers a real discovery request (asked again a few times: UDP is
    lossy; answers to other requests are skipped)."""
    key = auth.derive_key(secret)
    nonce, request = discovery.build_request(secret)
    for _ in range(10):
        s.sendto(request, addr)
        with contextlib.suppress(OSError):  # TimeoutError: ask again
            while True:
                reply, _ = s.recvfrom(65536)
                with contextlib.suppress(Exception):  # not for us
                    type_, body = auth.open_datagram(key, reply)
                    answered = messages.decode(type_, memoryview(body))
                    if isinstance(answered, messages.DiscoverReply) and answered.nonce == nonce:
                        return True
    return False


# -- daemons -----------------------------------------------------------------------------
@contextlib.contextmanager
def node_target(tmp_path: Path, secret: str) -> Iterator[Target]:
    root = prefix_root(tmp_path)
    args = ["-c", "1"] + (["-s", secret] if secret else [])
    with NodeProcess("127.0.0.1", *args, dest_path_prefix=str(root / "prefix")) as node:
        def serve() -> bool:
            return run_jobs(dispy.JobCluster, secret, nodes=[dispy.NodeAllocate("127.0.0.1", port=node.port)])

        yield Target("dispynode", node, root, secret, serve)


@contextlib.contextmanager
def scheduler_target(tmp_path: Path, secret: str, fake_nodes: tuple[str, ...] = ()) -> Iterator[Target]:
    from dispy_core.testing import SchedulerProcess

    root = prefix_root(tmp_path)
    node_args = ["-c", "1"] + (["-s", "node-" + secret] if secret else [])
    with NodeProcess("127.0.0.1", *node_args) as node:
        args = ["--dest_path_prefix", str(root / "prefix")]
        if secret:
            args += ["--cluster_secret", secret, "--node_secret", "node-" + secret]
        with SchedulerProcess("127.0.0.1", [*fake_nodes, node.addr], *args) as sched:
            def serve() -> bool:
                return run_jobs(dispy.SharedJobCluster, secret, scheduler_node=f"127.0.0.1:{sched.port}")

            yield Target("dispyscheduler", sched, root, secret, serve)


TCP_TARGETS = {"dispynode": node_target, "dispyscheduler-clients": scheduler_target}


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("target", sorted(TCP_TARGETS))
def test_tcp_port_survives_fuzzing(target: str, secret: str, tmp_path: Path, recordings: Any) -> None:
    """Frames, wrong handshake types, huge lengths, idle and slow connections, then
    authenticated mutated messages, against a daemon's listening port."""
    if "scheduler" in target:
        pytest.importorskip("dispy_scheduler")  # the client-only suite has no scheduler
    rec = recordings(secret)
    rng = random.Random(f"{target}-{secret}")
    with TCP_TARGETS[target](tmp_path, secret) as t:
        assert t.serve(), "the daemon does not serve a cluster before any fuzzing"
        t.settle_log("the first cluster")
        t.mark_rss()
        t.phase("started")
        since, sent = len(t.proc.output), t.inputs
        flood_frames(t, rec, rng)
        t.phase("mutated frames")
        flood_handshake_types(t)
        t.phase("wrong handshake types")
        t.check_log_volume("mutated frames and wrong handshake types", t.inputs - sent, since)
        t.check_rss("the mutated frames and wrong handshake types")
        flood_huge_lengths(t)
        t.phase("huge lengths")
        t.check_rss("the huge announced lengths")
        flood_idle_and_slow(t)
        t.phase("idle and slow connections")
        t.check_rss("the idle and slow connections")
        t.phase("RSS checks")
        flood_authenticated(t, rec, rng)
        t.phase("authenticated messages")
        t.finish()


@pytest.mark.parametrize("secret", SECRETS)
def test_node_udp_port_survives_fuzzing(secret: str, tmp_path: Path) -> None:
    rng = random.Random(f"udp-{secret}")
    with node_target(tmp_path, secret) as t:
        assert t.serve()
        t.settle_log("the first cluster")
        t.mark_rss()
        flood_udp(t, rng)
        t.check_rss("the datagrams")
        t.finish()


# -- fake nodes: the connecting side (dispyscheduler, JobCluster) facing garbage -------------
Answer = Callable[[socket.socket, messages.Hello], None]


@dataclass
class FakeNodes:
    """Servers on ``count`` ports of 127.0.0.1 that play a node: each connection reads
    the peer's Hello and is answered with the next of ``answers``."""

    answers: list[tuple[str, Answer]]
    count: int
    served: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        for _ in range(self.count):
            listener = socket.create_server(("127.0.0.1", 0), backlog=64)
            self._socks.append(listener)
            self.ports.append(listener.getsockname()[1])
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            name, answer = self.answers[len(self.served) % len(self.answers)]
            # The port lets a reader match the answer to a log line naming the node.
            self.served.append(f"port {conn.getsockname()[1]}: {name}")
        with conn, contextlib.suppress(OSError, ConnectionError, ValueError, AssertionError):
            conn.settimeout(10)
            type_, body = FrameReader(conn, HANDSHAKE_FRAME_LIMIT).next()
            hello = messages.decode(type_, memoryview(body))
            assert isinstance(hello, messages.Hello)
            answer(conn, hello)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass

    def close(self) -> None:
        for s in self._socks:
            s.close()


def responder_handshake(conn: socket.socket, hello: messages.Hello, secret: str) -> tuple[bytes | None, int]:
    """Answer the Hello as a real node would (a valid Challenge, then the Welcome once a
    Proof came); returns the session key (None without a secret) and the next sequence number."""
    key = auth.derive_key(secret)
    nonce = auth.new_nonce()
    conn.sendall(frame(messages.Challenge.TYPE, message_body(
        messages.Challenge(nonce, auth.responder_proof(key, hello.nonce, nonce)))))
    FrameReader(conn, HANDSHAKE_FRAME_LIMIT).next()  # the Proof
    session = auth.session_key(key, hello.nonce, nonce) if secret else None
    conn.sendall(frame(messages.Welcome.TYPE, message_body(messages.Welcome("fuzz-node")), session=session, seq=0))
    return session, 1


def fake_answers(rec: Recording, secret: str, rng: random.Random) -> list[tuple[str, Answer]]:
    """Every hostile answer a fake node gives, by name."""
    answers: list[tuple[str, Answer]] = []

    def send(data: bytes) -> Answer:
        return lambda conn, hello: conn.sendall(data)

    for what, data in mutated_streams(rng, rec.s2c, scaled(30)):
        answers.append((f"mutated node frames {what}: {hexed(data)}", send(data)))
    key = auth.derive_key(secret)

    def challenge_with(cls_fields: dict[str, bytes]) -> Answer:
        return lambda conn, hello: conn.sendall(frame(messages.Challenge.TYPE, fields_body(cls_fields)))

    for cls in (messages.Challenge, messages.Welcome, messages.Denied, messages.Hello):
        for what, data in wrong_type_frames(cls):
            answers.append((f"answer {what}: {hexed(data)}", send(data)))

    def welcome_then(body: bytes, type_: int = messages.Welcome.TYPE, name: str = "") -> Answer:
        def answer(conn: socket.socket, hello: messages.Hello) -> None:
            nonce = auth.new_nonce()
            conn.sendall(frame(messages.Challenge.TYPE, message_body(
                messages.Challenge(nonce, auth.responder_proof(key, hello.nonce, nonce)))))
            FrameReader(conn, HANDSHAKE_FRAME_LIMIT).next()
            session = auth.session_key(key, hello.nonce, nonce) if secret else None
            conn.sendall(frame(type_, body, session=session, seq=0))
        return answer

    for name in ("software",):
        for bad, raw in BAD_VALUES.items():
            answers.append((f"authenticated Welcome.{name}={bad}", welcome_then(fields_body({name: raw}))))

    recorded = rec.after_handshake("s2c")

    def after_welcome(type_: int, body: bytes) -> Answer:
        def answer(conn: socket.socket, hello: messages.Hello) -> None:
            session, seq = responder_handshake(conn, hello, secret)
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                FrameReader(conn).next()  # the peer's first request (InfoRequest)
            conn.sendall(frame(type_, body, session=session, seq=seq))
        return answer

    for what, type_, body in mutated_bodies(rng, recorded, scaled(40)):
        answers.append((f"after the handshake {what}: {hexed(body)}", after_welcome(type_, body)))

    def huge(conn: socket.socket, hello: messages.Hello) -> None:
        session, _ = responder_handshake(conn, hello, secret)
        conn.sendall(pack_header(messages.NodeInfo.TYPE, 1 << 30, FLAG_MAC if session else 0))
        for _ in range(20):
            conn.sendall(b"\0" * 4096)
            time.sleep(0.05)

    def idle(conn: socket.socket, hello: messages.Hello) -> None:
        time.sleep(3)

    def slow(conn: socket.socket, hello: messages.Hello) -> None:
        nonce = auth.new_nonce()
        data = frame(messages.Challenge.TYPE, message_body(
            messages.Challenge(nonce, auth.responder_proof(key, hello.nonce, nonce))))
        for i in range(min(len(data), 30)):
            conn.sendall(data[i:i + 1])
            time.sleep(0.1)

    answers += [("header announcing 1 GiB after the handshake, then a trickle", huge),
                ("no answer at all (idle)", idle), ("a Challenge one byte at a time (slow)", slow)]
    rng.shuffle(answers)
    return answers


@contextlib.contextmanager
def fake_nodes(rec: Recording, secret: str, seed: str) -> Iterator[FakeNodes]:
    fakes = FakeNodes(fake_answers(rec, secret, random.Random(seed)), count=scaled(16))
    try:
        yield fakes
    finally:
        fakes.close()


def wait_served(fakes: FakeNodes) -> None:
    """Until the fake nodes have given every answer once, or a bounded while."""
    wait_until(lambda: len(fakes.served) >= len(fakes.answers), timeout=2 * SCALE + 1, interval=0.2)


@pytest.mark.parametrize("secret", SECRETS)
def test_scheduler_node_side_survives_fake_nodes(secret: str, tmp_path: Path, recordings: Any) -> None:
    """dispyscheduler connects to fake nodes (-n) answering with garbage and mutations,
    next to a real node: it logs no traceback, returns to its RSS, and serves clients."""
    pytest.importorskip("dispy_scheduler")
    rec = recordings(secret)
    with fake_nodes(rec, "node-" + secret if secret else "", f"sched-{secret}") as fakes:
        with scheduler_target(tmp_path, secret, tuple(fakes.addrs)) as t:
            assert t.serve(), f"dispyscheduler does not serve a cluster next to the fake nodes\n{t.report()}"
            t.context = lambda: ("the fake nodes answered (the port is the node's in the log):\n  "
                                 + "\n  ".join(fakes.served) + "\n")
            t.mark_rss()
            wait_served(fakes)
            t.quiet_log()
            t.check("the fake nodes' answers")
            t.check_rss("the fake nodes' answers")
            t.finish()


CLIENT_PROGRAM = textwrap.dedent("""
    import logging, sys
    import dispy

    def square(x):
        return x * x

    # Every record with a time and level (asyncio's too), so the test can tell them apart.
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret, nodes = sys.argv[1], sys.argv[2:]
    cluster = dispy.JobCluster(square, nodes=nodes, secret=secret, host="127.0.0.1", loglevel=logging.INFO)
    jobs = [cluster.submit(i) for i in range(4)]
    cluster.wait(timeout=60)
    print("RESULTS", [job.result for job in jobs], flush=True)
    sys.stdin.readline()  # the test says when the fake nodes have given their answers
    cluster.close()
    print("CLOSED", flush=True)
""")


@pytest.mark.parametrize("secret", SECRETS)
def test_client_survives_fake_nodes(secret: str, tmp_path: Path, recordings: Any) -> None:
    """A JobCluster program whose nodes include fake ones answering with garbage and
    mutations runs its jobs on the real node, logs no traceback, and exits."""
    rec = recordings(secret)
    program = tmp_path / "client.py"
    program.write_text(CLIENT_PROGRAM)
    with fake_nodes(rec, secret, f"client-{secret}") as fakes, \
            NodeProcess("127.0.0.1", "-c", "1", *(["-s", secret] if secret else [])) as node:
        proc = subprocess.Popen([sys.executable, str(program), secret, *fakes.addrs, node.addr],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=tmp_path)
        assert proc.stdout is not None and proc.stdin is not None
        results = proc.stdout.readline()
        wait_served(fakes)
        try:
            proc.stdin.write("\n")
            proc.stdin.flush()
        except OSError:
            pass
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the client program hung after the fake nodes' answers {fakes.served}\n{err[-3000:]}")
        bad = bad_lines(err.splitlines())
        problems = []
        if results.strip() != f"RESULTS {[i * i for i in range(4)]}":
            problems.append(f"the jobs did not complete on the real node: {results!r}")
        if proc.returncode != 0 or "CLOSED" not in out:
            problems.append(f"the client program exited with {proc.returncode}")
        if bad:
            problems.append(f"the client logged {bad[:6]}")
        assert not problems, ("; ".join(problems) + f"\nthe fake nodes answered ({len(fakes.served)}): "
                              + "\n".join(fakes.served) + f"\n--- client stderr:\n{err[-4000:]}")
