"""Liveness and readiness endpoints, answered from the bus without touching the site's apps.

An orchestrator asks a site two questions. *Is the process working?* (liveness: restart it if
not) and *should it get traffic?* (readiness: take it out of the load balancer if not).
Both answers come from the bus:

* live: the bus is not EXITING and every listener of the ``'health'`` channel returns a true
  value. Whatever can fail without the process noticing subscribes there, e.g. a server adapter
  subscribes ``thread.is_alive`` of its serving thread.
* ready: live, the bus is STARTED and the site is not draining (the ``'drain'`` channel was
  published, by :class:`wspbus.plugins.drain.Drainer` on SIGTERM).

``Health.wsgi`` and ``Health.asgi`` are tiny apps serving only those paths; ``wrap_wsgi`` and
``wrap_asgi`` put them in front of a site's app, so probes are answered before the app is called.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from .._core.bus import Bus
from .base import declare_channel

__all__ = ["DRAIN_CHANNEL", "HEALTH_CHANNEL", "Health", "checks_pass"]

#: Channel whose listeners return a true value while their part of the site works.
HEALTH_CHANNEL = "health"
#: Channel published once when the site begins draining (readiness turns false).
DRAIN_CHANNEL = "drain"

DEFAULT_LIVE_PATH = "/livez"
DEFAULT_READY_PATH = "/readyz"

# (status code, body) -> one response; headers are derived.
Answer = tuple[int, bytes]
Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Scope = dict[str, Any]
#: An ASGI message, sent or received.
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def checks_pass(bus: Bus) -> bool:
    """True when every 'health' listener returns a true value (True when there is none)."""
    try:
        return all(bus.publish(HEALTH_CHANNEL))
    except Exception:  # ChannelFailures, ours or (on CherryPy's bus) its own class: the bus
        return False  # logged each failing check with its traceback; a failed check is the answer


def _check_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("%s=%r: expected an absolute URL path such as '/livez'" % (what, path))
    return path


class Health:
    """Liveness and readiness of the site on ``bus``, as WSGI and ASGI endpoints.

    Call ``subscribe()`` so that the start of a drain turns readiness off at once.
    """

    def __init__(self, bus: Bus, *, live_path: str = DEFAULT_LIVE_PATH, ready_path: str = DEFAULT_READY_PATH) -> None:
        if _check_path(live_path, "live_path") == _check_path(ready_path, "ready_path"):
            raise ValueError("live_path and ready_path are both %r: expected two different paths" % live_path)
        self.bus = bus
        self.live_path = live_path
        self.ready_path = ready_path
        self._draining = threading.Event()
        #: An ASGI app serving the two health paths (404 for anything else). A plain function,
        #: not a bound method, so that servers detecting ASGI 3 by inspection recognise it.
        self.asgi: ASGIApp = self._health_asgi_app()

    # -- bus wiring ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Listen for the start of a drain; declare the channels the endpoints rely on."""
        declare_channel(self.bus, HEALTH_CHANNEL)
        declare_channel(self.bus, DRAIN_CHANNEL)
        self.bus.subscribe(DRAIN_CHANNEL, self.drain)

    def unsubscribe(self) -> None:
        self.bus.unsubscribe(DRAIN_CHANNEL, self.drain)

    def drain(self) -> None:
        """The 'drain' listener: from now on the site is not ready."""
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    # -- the two questions ---------------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        """(is the process working, why): the bus is not EXITING and the health checks pass."""
        state = self.bus.state
        if state is self.bus.states.EXITING:
            return False, "exiting"
        if not checks_pass(self.bus):
            return False, "a health check failed"
        return True, state.name.lower()

    def ready(self) -> tuple[bool, str]:
        """(should it get traffic, why): live, STARTED and not draining."""
        live, reason = self.live()
        if not live:
            return False, reason
        if self.draining:
            return False, "draining"
        state = self.bus.state
        if state is not self.bus.states.STARTED:
            return False, state.name.lower()
        return True, "ready"

    def answer(self, path: str, method: str = "GET") -> Answer | None:
        """The response to a request for ``path``, or None when it is not a health path."""
        if path == self.live_path:
            question = self.live
        elif path == self.ready_path:
            question = self.ready
        else:
            return None
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed: use GET or HEAD\n"
        ok, reason = question()
        if ok:
            return HTTPStatus.OK, b"ok: %s\n" % reason.encode()
        return HTTPStatus.SERVICE_UNAVAILABLE, b"unavailable: %s\n" % reason.encode()

    # -- WSGI ----------------------------------------------------------------------------

    def wsgi(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        """A WSGI app serving the two health paths (404 for anything else)."""
        method = environ.get("REQUEST_METHOD", "GET")
        answer = self.answer(environ.get("PATH_INFO", ""), method) or _NOT_FOUND
        return _respond_wsgi(answer, method, start_response)

    def wrap_wsgi(self, app: WSGIApp) -> WSGIApp:
        """``app`` behind the health paths: probes are answered here, everything else by ``app``."""

        def site_with_health(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            method = environ.get("REQUEST_METHOD", "GET")
            answer = self.answer(environ.get("PATH_INFO", ""), method)
            if answer is None:
                return app(environ, start_response)
            return _respond_wsgi(answer, method, start_response)

        site_with_health.__wrapped__ = app  # type: ignore[attr-defined]
        return site_with_health

    # -- ASGI ----------------------------------------------------------------------------

    def _health_asgi_app(self) -> ASGIApp:
        async def health_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _complete_lifespan(receive, send)
            elif scope["type"] == "http":
                answer = self.answer(_asgi_path(scope), scope.get("method", "GET")) or _NOT_FOUND
                await _respond_asgi(answer, scope.get("method", "GET"), send)
            else:
                await send({"type": "websocket.close", "code": 1000})

        return health_app

    def wrap_asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the health paths: probes are answered here, everything else by ``app``."""

        async def site_with_health(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                answer = self.answer(_asgi_path(scope), scope.get("method", "GET"))
                if answer is not None:
                    await _respond_asgi(answer, scope.get("method", "GET"), send)
                    return
            await app(scope, receive, send)

        site_with_health.__wrapped__ = app  # type: ignore[attr-defined]
        return site_with_health


_NOT_FOUND: Answer = (HTTPStatus.NOT_FOUND, b"not found\n")


def _headers(answer: Answer) -> list[tuple[str, str]]:
    status, body = answer
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(("Allow", "GET, HEAD"))
    return headers


def _respond_wsgi(answer: Answer, method: str, start_response: StartResponse) -> list[bytes]:
    status = HTTPStatus(answer[0])
    start_response("%d %s" % (status, status.phrase), _headers(answer))
    return [b""] if method == "HEAD" else [answer[1]]


def _asgi_path(scope: Scope) -> str:
    """The request path below the app's mount point (ASGI paths include root_path)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


async def _respond_asgi(answer: Answer, method: str, send: Send) -> None:
    headers = [(name.lower().encode(), value.encode()) for name, value in _headers(answer)]
    await send({"type": "http.response.start", "status": int(answer[0]), "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer[1]})


async def _complete_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: the health app holds no resources of its own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
