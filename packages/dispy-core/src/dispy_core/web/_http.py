"""The HTTP side of :class:`~dispy_core.web.WebServer`: each request's checks and route.

``_HTTPServer`` is the standard library's ``ThreadingHTTPServer`` (a daemon thread per
connection, the TLS handshake in that thread, the open connections tracked so that
shutdown can end them). ``_Handler`` answers one connection's requests, in this order:
the Host header (DNS rebinding: without a token only loopback names are answered), the
token (``?token=`` -> cookie + redirect, the cookie, ``Authorization: Bearer``; missing
401, wrong 403, no data either way), then for a POST the CSRF value (``X-Dispy-CSRF``)
and the ``Origin``; then the route (see :mod:`._server` for the API). Responses carry a
Content-Security-Policy that allows nothing but this server's own files.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import mimetypes
import os
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ._api import WebInputError, is_loopback

if TYPE_CHECKING:
    from ._server import WebServer

log = logging.getLogger("dispy_core.web")

#: Largest POST body read (actions carry a few fields).
MAX_BODY = 1 << 20

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
