"""The HTTP(S) server of dispy's browser pages: routes, authentication, live updates.

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
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import mimetypes
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol

from dispy_core.errors import ConfigError, DispyError

__all__ = ["WebInputError", "Backend", "WebServer"]

log = logging.getLogger(__name__)

#: Largest POST body read (actions carry a few fields).
MAX_BODY = 1 << 20
#: Seconds between keep-alive comments on an idle event stream (a closed browser is
#: noticed when a write fails, and proxies don't drop the connection).
KEEPALIVE_SEC = 15.0
#: Seconds shutdown(wait=True) gives the open streams to send the final snapshot.
FINAL_PUSH_SEC = 5.0

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

# Every script, style and image comes from this server (nothing from the internet);
# inline scripts are not allowed, so injected markup can't run code.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'")


class WebInputError(DispyError, ValueError):
    """A form field of a POSTed action is missing or invalid: the server answers 400 with
    this message (raised by a Backend's ``act``/``detail``)."""


class Backend(Protocol):
    """What a :class:`WebServer` shows and acts on.

    ``page``: the page set served at ``/`` (``"monitor"`` or ``"admin"``); ``title``:
    shown in the page header and ``<title>``.
    """

    page: str
    title: str

    def snapshot(self) -> dict[str, Any]:
        """The whole state the pages show, JSON-able. Called from server threads (it must
        be thread-safe) every poll interval and after ``notify()``."""

    def detail(self, key: str) -> dict[str, Any]:
        """One item in detail (e.g. a node); KeyError if there is no such item (404)."""

    def act(self, action: str, fields: dict[str, list[str]]) -> Any:
        """Carry out a POSTed action; returns a JSON-able result shown to the user.
        WebInputError -> 400 with its message; KeyError (unknown action) -> 404."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static_dir() -> str:
    return str(resources.files("dispy_core.web") / "static")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    web: WebServer
    tls: ssl.SSLContext | None = None

    def server_activate(self) -> None:
        self.open_conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().server_activate()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake here, in the connection's own thread (not in accept()).
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("web: TLS handshake with %s failed: %s", client_address, exc)
                return
        with self.conns_lock:
            self.open_conns.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.conns_lock:
                self.open_conns.discard(request)

    def close_connections(self) -> None:
        """End the connections still open (browsers' idle keep-alive ones): their
        threads, waiting for a next request, end now instead of at their timeout."""
        with self.conns_lock:
            conns = list(self.open_conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web: request from %s failed", client_address, exc_info=True)


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
        if wait:
            self._sample()
            deadline = time.monotonic() + FINAL_PUSH_SEC
            with self._cond:
                while any(v < self._version for v in self._streams.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
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


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "dispy-web"
    sys_version = ""
    timeout = 60  # a connection idle this long (between requests) is closed

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: %s %s", self.address_string(), format % args)

    # -- responses ------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, message: str) -> None:
        self._send(code, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, default=str).encode(), "application/json")

    # -- checks ---------------------------------------------------------------------------
    def _host_ok(self) -> bool:
        web = self.server.web
        if web.token is not None:
            return True  # the token is the authority; a rebinding page can't know it
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if host.startswith("[") and "]" in host:
            name = host[1:host.index("]")]
        return bool(name) and is_loopback(name)

    def _token_given(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        cookie = self.headers.get("Cookie", "")
        name = self._cookie_name()
        for part in cookie.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return urllib.parse.unquote(value)
        return None

    def _cookie_name(self) -> str:
        # cookies are per host, not per port: each server its own name
        return f"dispy_token_{self.server.web.port}"

    def _authorized(self, query: dict[str, list[str]], path: str) -> bool:
        """False after answering (401/403, or the redirect that sets the cookie)."""
        web = self.server.web
        if not self._host_ok():
            self._text(403, "refused: the Host header does not name this server (open it as "
                            "http://127.0.0.1:PORT/ or http://localhost:PORT/)")
            return False
        if web.token is None:
            return True
        given = query.get("token")
        if given is not None:
            if not hmac.compare_digest(given[-1].encode(), web.token.encode()):
                self._text(403, "refused: wrong token")
                return False
            rest = {k: v for k, v in query.items() if k != "token"}
            location = path + ("?" + urllib.parse.urlencode(rest, doseq=True) if rest else "")
            secure = "; Secure" if self.server.tls is not None else ""
            cookie = (f"{self._cookie_name()}={urllib.parse.quote(web.token, safe='')}; HttpOnly; "
                      f"SameSite=Strict; Path=/{secure}")
            self._send(303, b"", "text/plain", {"Location": location, "Set-Cookie": cookie})
            return False
        token = self._token_given()
        if token is None:
            self._text(401, "refused: a token is needed: open the URL (with ?token=...) that the "
                            "program printed, or send 'Authorization: Bearer TOKEN'")
            return False
        if not hmac.compare_digest(token.encode(), web.token.encode()):
            self._text(403, "refused: wrong token")
            return False
        return True

    # -- GET --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("web: GET %s failed", self.path)
            self.close_connection = True

    def _get(self) -> None:
        web = self.server.web
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        if not self._authorized(query, path):
            return
        if path in ("/", "/index.html"):
            self._file(web.backend.page + ".html")
        elif path.startswith("/static/"):
            self._file(path[len("/static/"):])
        elif path == "/favicon.ico":
            self._file("favicon.svg")
        elif path == "/api/snapshot":
            web._sample()
            _, data = web._current()
            self._send(200, data.encode(), "application/json")
        elif path == "/api/events":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                web._stream(self)
        elif path == "/api/detail":
            key = query.get("key")
            if not key or not key[-1]:
                self._json(400, {"error": "the field 'key' is missing"})
                return
            try:
                self._json(200, web.backend.detail(key[-1]))
            except KeyError:
                self._json(404, {"error": f"no such item: {key[-1]}"})
            except WebInputError as exc:
                self._json(400, {"error": str(exc)})
            except Exception as exc:
                log.exception("web: detail of %r failed", key[-1])
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
        else:
            self._text(404, f"not found: {path}")

    def _file(self, name: str) -> None:
        name = urllib.parse.unquote(name)
        # files directly in the document root only: no '..', no sub-directories, no dotfiles
        if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
            self._text(404, "not found")
            return
        web = self.server.web
        path = os.path.join(web.document_root, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self._text(404, f"not found: {name}")
            return
        ext = os.path.splitext(name)[1].lower()
        ctype = _CONTENT_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ext == ".html":
            text = data.decode("utf-8", "replace")
            text = (text.replace("{{csrf}}", web.csrf)
                    .replace("{{title}}", html.escape(web.backend.title))
                    .replace("{{poll_ms}}", str(int(web.poll_sec * 1000))))
            data = text.encode()
        self._send(200, data, ctype)

    # -- POST -------------------------------------------------------------------------------
    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("web: POST %s failed", self.path)
            self.close_connection = True

    def _post(self) -> None:
        web = self.server.web
        parts = urllib.parse.urlsplit(self.path)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._json(413 if length > 0 else 400, {"error": "a POST needs a Content-Length of at most "
                                                              f"{MAX_BODY} bytes"})
            return
        body = self.rfile.read(length) if length else b""
        if not self._authorized({}, parts.path):
            return
        csrf = self.headers.get("X-Dispy-CSRF", "")
        if not hmac.compare_digest(csrf.encode(), web.csrf.encode()):
            self._text(403, "refused: the request did not come from this server's pages (X-Dispy-CSRF)")
            return
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            origin_host = urllib.parse.urlsplit(origin).netloc
            if origin_host != self.headers.get("Host", ""):
                self._text(403, f"refused: a request from another site ({origin})")
                return
        if not parts.path.startswith("/api/act/"):
            self._text(404, f"not found: {parts.path}")
            return
        action = parts.path[len("/api/act/"):]
        try:
            fields = _parse_fields(self.headers.get("Content-Type", ""), body)
            result = web.backend.act(action, fields)
        except WebInputError as exc:
            self._json(400, {"error": str(exc)})
            return
        except KeyError:
            self._json(404, {"error": f"unknown action: {action}"})
            return
        except Exception as exc:
            log.exception("web: action %s failed", action)
            self._json(500, {"error": f"the action failed: {type(exc).__name__}: {exc}"})
            return
        web.notify()
        self._json(200, {"result": result})


def _parse_fields(ctype: str, body: bytes) -> dict[str, list[str]]:
    """A POST body as fields: form-encoded, or a JSON object of strings / lists of strings
    (numbers are taken as their text)."""
    kind = ctype.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebInputError("the request body is not UTF-8 text") from None
    if kind == "application/json":
        try:
            obj = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise WebInputError(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise WebInputError("the request body must be a JSON object of fields")
        fields: dict[str, list[str]] = {}
        for key, value in obj.items():
            values = value if isinstance(value, list) else [value]
            out = []
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    raise WebInputError(f"field {key!r}: expected a string or a list of strings, not {v!r}")
                out.append(str(v))
            fields[key] = out
        return fields
    if kind in ("application/x-www-form-urlencoded", ""):
        try:
            return urllib.parse.parse_qs(text, keep_blank_values=True, strict_parsing=False,
                                         max_num_fields=10000)
        except ValueError as exc:
            raise WebInputError(f"the form could not be read: {exc}") from None
    raise WebInputError(f"unsupported Content-Type {kind!r}: send a form or a JSON object")
