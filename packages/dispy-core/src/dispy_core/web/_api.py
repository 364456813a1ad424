"""The contract between the web server and what it shows: :class:`Backend`,
:class:`WebInputError`; and :func:`is_loopback` (which addresses need no token)."""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from dispy_core.errors import DispyError

__all__ = ["WebInputError", "Backend", "is_loopback"]


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
