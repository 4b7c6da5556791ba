"""The requests a server is running, so that a stop that cuts some off can say which.

``--graceful-timeout`` bounds a stop; what is still running at its end is cut off. A site owner
must learn that it happened, how often, and to which requests: each server's app is wrapped
once, here, and the requests running are kept (method, path, when they began). At the bus's
'exit' the server names those still running, once, in one line. An ASGI request cancelled by
the server's own graceful shutdown is kept too (it was cut off), and its client, if no response
had begun, gets a 503 instead of a connection closed without a word.

``activity()`` says how many run and when one last began, ended or sent a piece of a streamed
body: a supervised worker whose request threads are all taken by requests none of which moves is
hung (deploy/supervisor/stuck.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from .protocols import ASGIApp, Environ, Message, Receive, Scope, Send, StartResponse, WSGIApp, close_body

__all__ = ["InFlight", "RESPONSE_BEGINS", "WatchedSend"]

_STOPPING_BODY = b"The site is stopping; this request was cut off at its graceful timeout.\n"


class _Request:
    """One request running: what to call it, since when, and (ASGI) its task, to cancel it."""

    __slots__ = ("scope", "began", "task", "ended")

    def __init__(self, scope: Scope, task: asyncio.Task[Any] | None = None) -> None:
        self.scope = scope  # an ASGI scope, or a WSGI request's method and path: read only by describe()
        self.began = time.monotonic()
        self.task = task  # an ASGI request's, cancelled from the stopping thread
        self.ended = False

    def describe(self, now: float) -> str:
        scope = self.scope
        path = scope.get("root_path", "") + scope.get("path", "")
        return "%s %s (running %.1f s)" % (scope.get("method", "-"), path, now - self.began)


#: ASGI messages after which the response (or the websocket handshake) has begun.
RESPONSE_BEGINS = frozenset(("http.response.start", "websocket.accept", "websocket.close",
                             "websocket.http.response.start"))


class WatchedSend:
    """An ASGI request's send, noting whether the response began (a failure after that cannot be
    answered any more). A plain callable returning the server's awaitable: no coroutine frame of
    its own on each message."""

    __slots__ = ("send", "began")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.began = False

    @classmethod
    def of(cls, send: Send) -> "WatchedSend":
        """``send`` watched: itself if it is watched already (one watch serves every layer)."""
        return send if type(send) is cls else cls(send)

    def __call__(self, message: Message) -> Awaitable[None]:
        if message["type"] in RESPONSE_BEGINS:
            self.began = True
        return self.send(message)


class InFlight:
    """The requests running in one server's app, and those a stop has cut off.

    The requests are kept in a set that server threads and the event loop add to and take from
    without a lock (a set's add and discard are atomic): this runs on every request. Only a stop
    waiting for cut-off requests to end takes the condition, and only then are enders asked to
    notify it.
    """

    def __init__(self) -> None:
        self._running: set[_Request] = set()
        self._cut: list[_Request] = []  # cut off, until cut_off() takes them
        self._changed = threading.Condition(threading.Lock())
        self._stopping = False  # a cut_off() is waiting: enders notify
        #: When a request last began or ended (time.monotonic()); a float stored whole, no lock either.
        self._last_change = time.monotonic()

    def wrap(self, app: Any, protocol: str) -> Any:
        return self._wrap_asgi(app) if protocol == "asgi" else self._wrap_wsgi(app)

    def _end(self, request: _Request, *, cut_off: bool = False) -> None:
        if cut_off:
            self._cut.append(request)
        request.ended = True
        self._running.discard(request)
        self._last_change = time.monotonic()
        if self._stopping:
            with self._changed:
                self._changed.notify_all()

    def activity(self) -> tuple[int, float]:
        """(requests running, the ``time.monotonic()`` at which one last began or ended, or a
        streamed WSGI body last yielded a piece)."""
        return len(self._running), self._last_change

    def cut_off(self, grace: float) -> list[str]:
        """Cut off what still runs and take every request cut off, as 'METHOD PATH (running N.N s)'.

        An ASGI request is cancelled (its client gets a 503 if no response had begun) and given
        up to ``grace`` seconds to end; a WSGI request holds its thread: it is only named.
        """
        self._stopping = True
        requests = list(self._running)
        for request in requests:
            if request.task is not None and not request.ended:
                request.task.get_loop().call_soon_threadsafe(request.task.cancel)
        with self._changed:
            self._changed.wait_for(lambda: all(r.ended or r.task is None for r in requests), grace)
        taken = {*self._cut, *self._running}  # one ending just now may be in both
        self._cut, self._running = [], set()
        self._stopping = False
        now = time.monotonic()
        return [request.describe(now) for request in sorted(taken, key=lambda r: r.began)]

    # -- WSGI ----------------------------------------------------------------------------

    def _wrap_wsgi(self, app: WSGIApp) -> WSGIApp:
        def tracked_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            request = _Request({"method": environ.get("REQUEST_METHOD", "-"),  # the environ changes as it goes
                                "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")})
            self._running.add(request)
            self._last_change = request.began
            try:
                body = app(environ, start_response)
            except BaseException:
                self._end(request)
                raise
            return _TrackedBody(body, self, request)

        return tracked_app

    # -- ASGI ----------------------------------------------------------------------------

    def _wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        async def tracked_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request = _Request(scope, asyncio.current_task())
            self._running.add(request)
            self._last_change = request.began
            watched = WatchedSend.of(send)
            try:
                await app(scope, receive, watched)
            except asyncio.CancelledError:
                if not watched.began:  # the client would get a connection closed without a word
                    await _answer_stopping(send)
                self._end(request, cut_off=True)
                raise
            finally:
                if not request.ended:
                    self._end(request)

        return tracked_app


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

    __slots__ = ("_body", "_in_flight", "_request")

    def __init__(self, body: Iterable[bytes], in_flight: InFlight, request: _Request) -> None:
        self._body = body
        self._in_flight = in_flight
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        if isinstance(self._body, (list, tuple)):
            return iter(self._body)  # made whole already: nothing to wait for
        return self._streamed()

    def _streamed(self) -> Iterator[bytes]:
        """A body made as it is sent (a download, server-sent events, a long poll): each piece
        is progress, so a thread streaming one is busy, not stuck (activity())."""
        in_flight = self._in_flight
        for chunk in self._body:
            in_flight._last_change = time.monotonic()
            yield chunk

    def close(self) -> None:
        try:
            close_body(self._body)
        finally:
            self._in_flight._end(self._request)
