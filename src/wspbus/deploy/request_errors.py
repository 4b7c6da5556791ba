"""A request an app fails: one log record with the method, the path, the mount and the app, and the
traceback; the client gets a plain 500.

Each mount's app is wrapped in its own protocol, before any a2wsgi adapter: the record names the
app that failed (a WSGI app in a mixed site is not "an ASGI application"), and the server below
never sees the exception, so it adds no record of its own. The time is the record's (the log's
format prints it). The query string is left out: it may carry secrets.

A failure after the response has started cannot become a 500: it is logged the same way and
raised again, so the server cuts the connection instead of ending a truncated response cleanly.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..servers.inflight import WatchedSend
from ..servers.protocols import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp
from .mounts import Mount, name_of

__all__ = ["LOGGER", "answer", "reporting_asgi", "reporting_wsgi"]

#: A child of the bus's logger ('wspbus'), so its records go where the bus's log is routed.
LOGGER = "wspbus.request"
BODY = b"Internal Server Error\n"


def _report(method: str, path: str, mount: Mount) -> None:
    """One record for the exception being handled, naming the request, the mount and the app."""
    logging.getLogger(LOGGER).error("%s %s failed in the app at %s (%s, %s)", method, path, mount.path,
                                    mount.target or name_of(mount.app), mount.protocol, exc_info=True)


def reporting_wsgi(mount: Mount) -> WSGIApp:
    """``mount.app`` (WSGI), reporting what it raises as one record and a 500."""
    app = mount.app

    def reporting(environ: Environ, start_response: StartResponse) -> Any:
        called = False

        def watched_start_response(*args: Any) -> Any:
            nonlocal called
            called = True
            return start_response(*args)

        try:
            return app(environ, watched_start_response)
        except Exception:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            _report(environ.get("REQUEST_METHOD", "?"), path.encode("latin-1").decode("utf-8", "replace"), mount)
            # exc_info only to replace headers the app gave (PEP 3333): the server raises it again
            # if they were sent; some servers (a2wsgi) raise it again whenever it is given.
            start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                         ("Content-Length", str(len(BODY)))],
                           *([sys.exc_info()] if called else []))
            return [BODY]

    reporting.__wrapped__ = app  # type: ignore[attr-defined]
    return reporting


def reporting_asgi(mount: Mount) -> ASGIApp:
    """``mount.app`` (ASGI), reporting what it raises in a request as one record and a 500 (or a
    websocket closed with 1011); lifespan events pass untouched (servers/lifespan.py tells those)."""
    app = mount.app

    async def reporting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await app(scope, receive, send)
            return
        watched = WatchedSend.of(send)
        try:
            await app(scope, receive, watched)
        except Exception:
            _report(scope.get("method", "WEBSOCKET"), scope.get("path", "?"), mount)
            if watched.began:
                raise
            await answer(scope, send, 500, BODY, close_code=1011)

    reporting.__wrapped__ = app  # type: ignore[attr-defined]
    return reporting


async def answer(scope: Scope, send: Send, status: int, body: bytes, close_code: int) -> None:
    """A plain-text answer to an ASGI request; a websocket is closed with ``close_code`` instead."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": close_code})
        return
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
