"""What a worker reports about itself: requests served and resident memory.

The worker counts in its own apps (a wrapper around each mounted app) and reads its own
``/proc/self/statm`` when asked, so the supervisor learns both from a message on the channel
instead of reading every worker's /proc on a timer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..site import Mount, Site

__all__ = ["RequestCounter", "counted_site", "resident_bytes"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RequestCounter:
    """A count of requests that any server thread (or event loop) may add to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        #: Called after each request with the new count (the recycler's --max-requests check).
        self.on_count: Callable[[int], None] | None = None

    @property
    def count(self) -> int:
        return self._count

    def add(self) -> None:
        with self._lock:
            self._count += 1
            count = self._count
        if self.on_count is not None:
            self.on_count(count)

    def wrap(self, app: Callable[..., Any], protocol: str) -> Callable[..., Any]:
        """``app`` counting each request it gets (ASGI: HTTP and websocket scopes, not lifespan)."""
        return self._wrap_asgi(app) if protocol == "asgi" else self._wrap_wsgi(app)

    def _wrap_wsgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.add()
            result: Iterable[bytes] = app(environ, start_response)
            return result

        return counted

    def _wrap_asgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") in ("http", "websocket"):
                self.add()
            await app(scope, receive, send)

        return counted


def counted_site(site: Site, counter: RequestCounter) -> Site:
    """The same site whose every mount counts its requests in ``counter``."""
    mounts: list[Mount] = [replace(mount, app=counter.wrap(mount.app, mount.protocol)) for mount in site.mounts]
    return Site(mounts)


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as file:
            return int(file.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0
