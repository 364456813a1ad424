"""The web layer shared by dispy's browser pages: the HTTP server and the monitor's backend.

One server (:class:`WebServer`, the standard library's ``ThreadingHTTPServer`` in a daemon
thread) shows one :class:`Backend`: the monitor of ``dispy.httpd`` and ``dispyscheduler
--httpd`` (:class:`MonitorBackend` over :class:`ClusterView` objects) or ``dispyadmin``'s
node console. Live updates reach every open browser by Server-Sent Events. The security
model (token, CSRF value, Host check, HTTPS) is described in ``_server``'s docstring and
in docs/design/web.md.
"""

from ._server import Backend, WebInputError, WebServer
from .monitor import ClusterView, MonitorBackend

__all__ = ["WebInputError", "Backend", "WebServer", "ClusterView", "MonitorBackend"]
