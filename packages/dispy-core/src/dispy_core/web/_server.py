"""The web server of dispy's browser pages: its HTTP API, live updates, security model.

:class:`WebServer` serves one :class:`Backend` on the standard library's
``ThreadingHTTPServer`` (a thread per connection, in a daemon thread of its own: the
client's asyncio loop is never touched by it). The HTTP API:

* ``GET /`` the backend's start page (``static/<backend.page>.html``), ``GET
  /static/<file>`` the shipped files (or the ``document_root``'s); ``.html`` files are
  templated: ``{{csrf}}``, ``{{title}}`` and ``{{poll_ms}}`` are filled in.
* ``GET /api/snapshot``: ``backend.snapshot()`` plus ``"version"``.
* ``GET /api/events``: Server-Sent Events; every open stream gets every new snapshot
  (``event: snapshot``, ``id: <version>``), and the current one when it connects.
* ``GET /api/detail?key=...``: ``backend.detail(key)`` (KeyError -> 404).
* ``POST /api/act/<action>``: fields form-encoded or as a JSON object ->
  ``{"result": ...}``; a bad field (:class:`WebInputError`) -> 400 ``{"error": ...}``.

Live updates: a sampler thread calls ``backend.snapshot()`` every ``poll_sec`` and soon
after :meth:`WebServer.notify` (at most every ``min(1, poll_sec)`` seconds), and bumps the
version when the JSON differs. Each stream waits on one condition for a version newer
than the one it sent last: no stream can take an update from another (the original
monitor's polling endpoint cleared the changes for everybody), and a slow browser skips
to the newest snapshot instead of queueing old ones.

Security model (see docs/design/web.md):

* Token. When the server listens beyond loopback a token is required (a random one is
  made when none is given; :attr:`WebServer.url` carries it). A token in force is needed
  for every request, pages and files included: ``?token=`` (which sets an HttpOnly,
  SameSite=Strict cookie and redirects to the same URL without it, so it doesn't stay in
  the address bar or history), the cookie, or ``Authorization: Bearer``. Missing -> 401,
  wrong -> 403, with a plain message and nothing else.
* CSRF. Every POST carries the server's random CSRF value (put in the pages by the
  template) in the ``X-Dispy-CSRF`` header; a cross-site form can't set a header, and a
  cross-site script can't read the page to learn the value. A POST whose ``Origin`` is
  another site is refused too.
* Host check (DNS rebinding). Without a token, the server listens on loopback only and
  answers only requests whose Host header names a loopback address or ``localhost``: a
  page on a rebinding domain sends its own name.
* HTTPS: ``certfile``/``keyfile`` (an ``ssl.SSLContext``; the handshake runs in the
  connection's thread, so a slow client stalls nobody).

This module has WebServer (binding, sampling, the event streams, shutdown); each
request's checks and routes are in :mod:`._http`, the Backend protocol in :mod:`._api`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from importlib import resources

from dispy_core.errors import ConfigError

from ._api import Backend, WebInputError, is_loopback
from ._http import _Handler, _HTTPServer

__all__ = ["WebInputError", "Backend", "WebServer"]

log = logging.getLogger("dispy_core.web")

#: Seconds between keep-alive comments on an idle event stream (a closed browser is
#: noticed when a write fails, and proxies don't drop the connection).
KEEPALIVE_SEC = 15.0
#: Seconds shutdown(wait=True) gives the open streams to send the final snapshot and end.
FINAL_PUSH_SEC = 5.0


def _static_dir() -> str:
    return str(resources.files("dispy_core.web") / "static")


class WebServer:
    """Serve a :class:`Backend`'s pages and API (see the module docstring).

    ``host``: the address to listen on (default ``127.0.0.1``; ``""`` or ``0.0.0.0``
    means all IPv4 addresses, ``::`` all addresses). ``port``: 0 picks a free one
    (:attr:`port` tells which). ``token``: required of every browser; made up when
    ``host`` is not loopback and none is given. ``certfile``/``keyfile``: serve HTTPS.
    ``poll_sec``: how often the state is sampled (and the browsers' fallback refresh).
    ``document_root``: a directory whose files are served instead of the shipped ones.
    """

    def __init__(self, backend: Backend, *, host: str = "127.0.0.1", port: int = 8181,
                 token: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None, poll_sec: float = 1.0,
                 document_root: str | None = None) -> None:
        if not isinstance(host, str):
            raise ConfigError(f"web server host must be a string, not {host!r}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise ConfigError(f"web server port must be an int in 0-65535, not {port!r}")
        if isinstance(poll_sec, bool) or not isinstance(poll_sec, (int, float)) or not poll_sec > 0:
            raise ConfigError(f"poll_sec must be a positive number of seconds, not {poll_sec!r}")
        if token is not None and (not isinstance(token, str) or not token or len(token) > 256
                                  or not token.isprintable() or " " in token):
            raise ConfigError("token must be a non-empty string of printable characters without spaces")
        if keyfile is not None and certfile is None:
            raise ConfigError("keyfile given without certfile: HTTPS needs a certificate")
        if document_root is not None and not os.path.isdir(document_root):
            raise ConfigError(f"DocumentRoot {document_root!r} is not a directory")
        self.backend = backend
        self.host = host
        self.port = port
        self.poll_sec = float(poll_sec)
        self.certfile = certfile
        self.keyfile = keyfile
        self.document_root = document_root or _static_dir()
        if token is None and not is_loopback(host or "0.0.0.0"):
            token = secrets.token_urlsafe(24)
        self.token: str | None = token
        #: The value every POST must carry in the X-Dispy-CSRF header (in the pages).
        self.csrf = secrets.token_urlsafe(24)
        self.url = ""
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sampler: threading.Thread | None = None
        self._cond = threading.Condition()
        self._version = 0  # under _cond
        self._snapshot_json = "{}"  # under _cond: the latest snapshot with its version
        self._compare = ""  # under _cond: the latest snapshot without the version
        self._closing = False  # under _cond
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._sample_lock = threading.Lock()
        self._streams: dict[int, int] = {}  # under _cond: stream id -> version sent last
        self._next_stream = 0

    # -- life -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve (in daemon threads). OSError (port in use ...) or ConfigError
        (unreadable certificate) with a clear message."""
        if self._httpd is not None:
            raise ConfigError("the web server is already started")
        tls = None
        if self.certfile is not None:
            try:
                tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                tls.minimum_version = ssl.TLSVersion.TLSv1_2
                tls.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"web server: can't load certfile {self.certfile!r} / keyfile "
                                  f"{self.keyfile!r}: {exc}") from exc
        bind = self.host or "0.0.0.0"

        class Server(_HTTPServer):
            address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        try:
            httpd = Server((bind.strip("[]"), self.port), _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"web server can't listen on {bind}:{self.port}: {exc.strerror or exc}") \
                from exc
        httpd.web = self
        httpd.tls = tls
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        shown = bind if bind not in ("0.0.0.0", "::") else socket.gethostname()
        if ":" in shown:
            shown = f"[{shown}]"
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{shown}:{self.port}/"
        if self.token is not None:
            self.url += "?token=" + urllib.parse.quote(self.token, safe="")
        self._sample()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dispy-web", daemon=True)
        self._thread.start()
        self._sampler = threading.Thread(target=self._sample_loop, name="dispy-web-sampler", daemon=True)
        self._sampler.start()
        log.info("web pages at %s", self.url)

    def notify(self) -> None:
        """Something changed: sample the backend's snapshot soon and push it if it differs."""
        self._wake.set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop serving. With ``wait``, the final state is sampled and sent to every open
        browser first (each stream gets up to FINAL_PUSH_SEC to take it)."""
        httpd = self._httpd
        if httpd is None:
            return
        deadline = time.monotonic() + FINAL_PUSH_SEC
        if wait:
            self._sample()
            with self._cond:
                self._cond.wait_for(lambda: all(v >= self._version for v in self._streams.values()),
                                    max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if wait:  # each stream says "closed" (the pages show that the server stopped) and ends
                self._cond.wait_for(lambda: not self._streams, max(0.0, deadline - time.monotonic()))
        self._stopped.set()
        self._wake.set()
        self._httpd = None
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._sampler is not None:
            self._sampler.join(5)

    @property
    def version(self) -> int:
        """The number of the latest snapshot (it grows each time the state changes)."""
        with self._cond:
            return self._version

    # -- sampling -----------------------------------------------------------------------
    def _sample(self) -> None:
        """Take the backend's snapshot; a new version (and a push) when it changed."""
        with self._sample_lock:  # one sample at a time: versions follow the state's order
            try:
                snap = self.backend.snapshot()
                compare = json.dumps(snap, sort_keys=True, default=str)
            except Exception:
                log.exception("web: the page state could not be sampled")
                return
            with self._cond:
                if compare == self._compare and self._version:
                    return
                self._compare = compare
                self._version += 1
                snap = dict(snap, version=self._version, poll_sec=self.poll_sec)
                self._snapshot_json = json.dumps(snap, default=str)
                self._cond.notify_all()

    def _sample_loop(self) -> None:
        gap = min(1.0, self.poll_sec)  # notify() storms are sampled at most this often
        while not self._stopped.is_set():
            self._wake.wait(self.poll_sec)
            if self._stopped.is_set():
                return
            self._wake.clear()
            self._sample()
            self._stopped.wait(gap)

    def _current(self) -> tuple[int, str]:
        with self._cond:
            return self._version, self._snapshot_json

    # -- streams (called by the handler) ------------------------------------------------
    def _stream(self, handler: _Handler) -> None:
        with self._cond:
            sid = self._next_stream
            self._next_stream += 1
            self._streams[sid] = 0
        try:
            handler.wfile.write(f"retry: {int(self.poll_sec * 1000)}\n\n".encode())
            while True:
                with self._cond:
                    sent = self._streams[sid]
                    if self._version == sent and not self._closing:
                        self._cond.wait_for(lambda: self._version != sent or self._closing,
                                            KEEPALIVE_SEC)
                    version, data, closing = self._version, self._snapshot_json, self._closing
                if version != sent:
                    handler.wfile.write(f"event: snapshot\nid: {version}\ndata: {data}\n\n".encode())
                    handler.wfile.flush()
                    with self._cond:
                        self._streams[sid] = version
                        self._cond.notify_all()  # shutdown() waits for every stream to be current
                elif closing:
                    handler.wfile.write(b"event: closed\ndata: {}\n\n")
                    handler.wfile.flush()
                    return
                else:
                    handler.wfile.write(b": keepalive\n\n")
                    handler.wfile.flush()
        except OSError:
            pass  # the browser went away
        finally:
            with self._cond:
                del self._streams[sid]
                self._cond.notify_all()
