"""A wrapper around each of a worker's apps: it counts requests, and closes connections on retirement.

The worker counts in its own apps and reads its own ``/proc/self/statm`` when asked, so the
supervisor learns both from a message on the channel instead of reading every worker's /proc on
a timer.

Retiring (a reload replaced it): a worker that just closed its idle keep-alive connections would
race every client that is sending its next request on one of them at that moment: the request
meets a closed socket and fails. So a retiring worker first answers every request with
``Connection: close`` for a short while (``closing``); a client that keeps its connection busy
gets its answer and reconnects to the listening socket, where the new workers accept. Only the
servers known to pass the header on from an app (cheroot, uvicorn, granian) are asked to; waitress and
wsgiref refuse hop-by-hop headers from WSGI apps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from ..site import Mount, Site

__all__ = ["RequestCounter", "counted_site", "resident_bytes"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RequestCounter:
    """A count of requests that any server thread (or event loop) may add to."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)  # next() is atomic: no lock on every request
        self._count = 0
        #: Called after each request with the new count (the recycler's --max-requests check).
        self.on_count: Callable[[int], None] | None = None
        #: Answer with ``Connection: close`` from now on (the worker is retiring).
        self.closing = False
        #: The event loop the ASGI apps run on, once one of them was called (heartbeats go through it).
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def count(self) -> int:
        return self._count

    def add(self) -> None:
        count = self._count = next(self._numbers)
        if self.on_count is not None:
            self.on_count(count)

    def wrap(self, app: Callable[..., Any], protocol: str) -> Callable[..., Any]:
        """``app`` counting each request it gets (ASGI: HTTP and websocket scopes, not lifespan)."""
        return self._wrap_asgi(app) if protocol == "asgi" else self._wrap_wsgi(app)

    def _wrap_wsgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.add()
            if self.closing:
                start_response = _closing_start_response(start_response)
            result: Iterable[bytes] = app(environ, start_response)
            return result

        return counted

    def _wrap_asgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        def counted(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
            """The app's awaitable, the request counted: a plain function, no coroutine frame of
            its own per request (servers/request_head.py asgi_head_guard says why)."""
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            if scope["type"] in ("http", "websocket"):
                self.add()
                if self.closing and scope["type"] == "http":
                    send = _closing_send(send)
            result: Awaitable[None] = app(scope, receive, send)
            return result

        return counted


def _closing_start_response(start_response: Callable[..., Any]) -> Callable[..., Any]:
    def closing(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers = [(name, value) for name, value in headers if name.lower() != "connection"]
        headers.append(("Connection", "close"))
        return start_response(status, headers, exc_info) if exc_info is not None else start_response(status, headers)

    return closing


def _closing_send(send: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    async def closing(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing


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
