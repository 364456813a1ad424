"""One admin request to a node over a blocking socket (dispyadmin's transport).

dispyadmin asks a node one thing per connection: connect (TLS when a certfile is
given), run the handshake of :mod:`dispy_core.auth` with ``Hello.key_id =``
:data:`~dispy_core.messages.ADMIN_KEY_ID` and the admin secret, send the request, read
the one reply, close. The protocol is :class:`dispy_core.connection.Connection`'s (no
I/O of its own); this module only moves its bytes. Blocking sockets with a timeout suit
dispyadmin: its requests come from its poll thread and the web server's request
threads, a few per node per poll interval, and each is over in one round trip.

Every failure is an :class:`AdminError` whose message says what the user can do about
it: the node refused (no admin secret there), the secrets differ, nothing listens there,
TLS is needed, or the node refused the request itself (AdminRefused).
"""

from __future__ import annotations

import socket
import ssl

from dispy_core.connection import Connection
from dispy_core.errors import AuthenticationError, ConnectionClosed, DispyError
from dispy_core.messages import ADMIN_KEY_ID, AdminNodeInfo, AdminRefused, Message, Welcome

from .__about__ import __version__

__all__ = ["AdminError", "request"]

SOFTWARE = f"dispyadmin {__version__}"


class AdminError(DispyError):
    """An admin request to a node failed; the message says why (for the user).
    ``refused``: the node answered and refused (another secret, none there, or the
    request itself), as opposed to a node that could not be reached."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def request(host: str, port: int, secret: str, msg: Message, *, timeout: float = 10.0,
            ssl_context: ssl.SSLContext | None = None) -> AdminNodeInfo:
    """Send ``msg`` to the node at ``host:port`` on a connection authenticated with admin
    secret ``secret``; returns the node's state (AdminNodeInfo) after it, or raises
    AdminError saying why not."""
    where = f"{host}:{port}"
    if not secret:
        raise AdminError(f"{where}: no admin secret given (dispyadmin --secret, or its 'secret' "
                         "command): nodes take admin requests only with theirs", refused=True)
    conn = Connection(initiator=True, secret=secret, software=SOFTWARE, key_id=ADMIN_KEY_ID,
                      frame_macs=True)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise AdminError(f"{where}: can't connect: {exc.strerror or exc}") from None
    try:
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock)
            except (ssl.SSLError, OSError) as exc:
                raise AdminError(f"{where}: TLS handshake failed ({exc}): the node needs the "
                                 "certificate given to its --certfile (dispyadmin --certfile)") from None
        sent = False
        while True:
            for part in conn.data_to_send():
                sock.sendall(part)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AdminError(f"{where}: no answer within {timeout:g} s") from None
            if not data:
                conn.eof()
            else:
                conn.feed(data)
            while (reply := conn.next_message()) is not None:
                if isinstance(reply, Welcome):
                    if not sent:
                        for part in conn.send(msg):
                            sock.sendall(part)
                        sent = True
                elif isinstance(reply, AdminNodeInfo):
                    return reply
                elif isinstance(reply, AdminRefused):
                    raise AdminError(f"{where}: refused: {reply.reason}", refused=True)
                # anything else (a Ping) is no answer to this request
    except AdminError:
        raise
    except AuthenticationError as exc:
        text = str(exc)
        if "secrets differ" in text or "does not know this secret" in text:
            text = "the node's --admin_secret differs from dispyadmin's --secret"
        raise AdminError(f"{where}: {text}", refused=True) from None
    except ConnectionClosed as exc:
        hint = ("; the node may serve TLS only (give dispyadmin its --certfile)"
                if ssl_context is None and "handshake" in str(exc) else "")
        raise AdminError(f"{where}: {exc}{hint}") from None
    except OSError as exc:
        raise AdminError(f"{where}: {exc.strerror or exc}") from None
    except DispyError as exc:
        raise AdminError(f"{where}: {exc}") from None
    finally:
        sock.close()
