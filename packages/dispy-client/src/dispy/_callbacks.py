"""The thread that runs the user's ``job_status`` and ``cluster_status`` callbacks.

Callbacks are user code: they may block, call back into the cluster (``submit`` from a
``job_status`` is a common pattern) or raise. They must never run in the event-loop
thread, which would stall every connection, so the loop only queues them here and one
dedicated thread runs them, in the order they were queued. The thread exists only if the
cluster was given a callback.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CallbackThread"]

log = logging.getLogger(__name__)

_STOP = object()


class CallbackThread:
    """Runs queued calls one at a time, in order, on its own daemon thread."""

    def __init__(self, name: str = "dispy-callbacks") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def put(self, func: Callable[..., Any], *args: Any) -> None:
        """Queue ``func(*args)``; safe from any thread."""
        self._queue.put((func, args))

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, then end the thread (waits up to ``timeout`` unless called
        from a callback, which can't wait for itself)."""
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            func, args = item
            try:
                func(*args)
            except Exception:
                log.exception("callback %s raised", getattr(func, "__qualname__", func))
