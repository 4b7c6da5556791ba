"""The requests a server is running, so that a stop that cuts some off can say which.

``--graceful-timeout`` bounds a stop; what is still running at its end is cut off. A site owner
must learn that it happened, how often, and to which requests: each server's app is wrapped
once, here, and the requests running are kept (method, path, when they began). At the bus's
'exit' the server names those still running, once, in one line. An ASGI request cancelled by
the server's own graceful shutdown is kept too (it was cut off), and its client, if no response
had begun, gets a 503 instead of a connection closed without a word.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .protocols import ASGIApp, Environ, Message, Receive, Scope, Send, StartResponse, WSGIApp, close_body

__all__ = ["InFlight"]

_STOPPING_BODY = b"The site is stopping; this request was cut off at its graceful timeout.\n"


class _Request:
    __slots__ = ("number", "method", "path", "began", "cancel", "ended")

    def __init__(self, number: int, method: str, path: str, cancel: Callable[[], object] | None = None) -> None:
        self.number, self.method, self.path = number, method, path
        self.began = time.monotonic()
        self.cancel = cancel  # an ASGI request's: cancels its task from any thread
        self.ended = False

    def describe(self, now: float) -> str:
        return "%s %s (running %.1f s)" % (self.method, self.path, now - self.began)


class InFlight:
    """The requests running in one server's app, and those a stop has cut off."""

    def __init__(self) -> None:
        self._running: dict[int, _Request] = {}  # and those cut off, until cut_off() takes them
        self._ids = itertools.count()
        self._changed = threading.Condition(threading.Lock())

    def wrap(self, app: Any, protocol: str) -> Any:
        return self._wrap_asgi(app) if protocol == "asgi" else self._wrap_wsgi(app)

    def _begin(self, method: str, path: str, cancel: Callable[[], object] | None = None) -> _Request:
        request = _Request(next(self._ids), method, path, cancel)
        with self._changed:
            self._running[request.number] = request
        return request

    def _end(self, request: _Request, *, cut_off: bool = False) -> None:
        with self._changed:
            request.ended = True
            if not cut_off:
                self._running.pop(request.number, None)
            self._changed.notify_all()

    def cut_off(self, grace: float) -> list[str]:
        """Cut off what still runs and take every request cut off, as 'METHOD PATH (running N.N s)'.

        An ASGI request is cancelled (its client gets a 503 if no response had begun) and given
        up to ``grace`` seconds to end; a WSGI request holds its thread: it is only named.
        """
        with self._changed:
            requests = list(self._running.values())
        for request in requests:
            if not request.ended and request.cancel is not None:
                request.cancel()
        with self._changed:
            self._changed.wait_for(lambda: all(r.ended or r.cancel is None for r in requests), grace)
            taken, self._running = self._running, {}
        now = time.monotonic()
        return [request.describe(now) for request in sorted(taken.values(), key=lambda r: r.began)]

    # -- WSGI ----------------------------------------------------------------------------

    def _wrap_wsgi(self, app: WSGIApp) -> WSGIApp:
        def tracked_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            request = self._begin(environ.get("REQUEST_METHOD", "-"),
                                  environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
            try:
                body = app(environ, start_response)
            except BaseException:
                self._end(request)
                raise
            return _TrackedBody(body, lambda: self._end(request))

        return tracked_app

    # -- ASGI ----------------------------------------------------------------------------

    def _wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        async def tracked_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request = self._begin(scope.get("method", "-"), scope.get("root_path", "") + scope.get("path", ""),
                                  _canceller())
            began = False

            async def tracking_send(message: Message) -> None:
                nonlocal began
                began = began or message.get("type") == "http.response.start"
                await send(message)

            try:
                await app(scope, receive, tracking_send)
            except asyncio.CancelledError:
                if not began:  # the client would get a connection closed without a word
                    await _answer_stopping(send)
                self._end(request, cut_off=True)
                raise
            finally:
                if not request.ended:
                    self._end(request)

        return tracked_app


def _canceller() -> Callable[[], object]:
    """Cancel the current task from any thread."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    return lambda: loop.call_soon_threadsafe(task.cancel)


async def _answer_stopping(send: Send) -> None:
    try:
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain"), (b"connection", b"close"),
                                (b"content-length", str(len(_STOPPING_BODY)).encode())]})
        await send({"type": "http.response.body", "body": _STOPPING_BODY})
    except Exception:  # the connection is gone already: nobody is left to answer
        pass


class _TrackedBody:
    """The response body, passed through; the request ends when the server closes it."""

    def __init__(self, body: Iterable[bytes], end: Callable[[], None]) -> None:
        self._body = body
        self._end = end

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close_body(self._body)
        finally:
            self._end()
