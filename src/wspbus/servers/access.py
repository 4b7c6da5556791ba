"""The access log: one Combined Log Format line per request, to the logger 'wspbus.access' at INFO.

The same lines whatever the server: the app is wrapped once, here, rather than each server's
own log being reformatted. Cheap when off: a request costs one isEnabledFor() check while the
logger is not enabled for INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

from .protocols import ASGIApp, Environ, Message, Receive, Scope, Send, StartResponse, WSGIApp, close_body

__all__ = ["LOGGER_NAME", "asgi_access_log", "combined_line", "wsgi_access_log"]

LOGGER_NAME = "wspbus.access"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def combined_line(host: str, user: str, request: str, status: Any, size: int, referer: str,
                  agent: str, when: float | None = None) -> str:
    """``host - user [time] "request" status size "referer" "agent"`` (Apache's "combined")."""
    moment = time.localtime(when)
    offset = moment.tm_gmtoff // 60
    stamp = "%02d/%s/%04d:%02d:%02d:%02d %s%02d%02d" % (
        moment.tm_mday, _MONTHS[moment.tm_mon - 1], moment.tm_year, moment.tm_hour, moment.tm_min,
        moment.tm_sec, "-" if offset < 0 else "+", abs(offset) // 60, abs(offset) % 60)
    return '%s - %s [%s] "%s" %s %s "%s" "%s"' % (
        host or "-", _quoted(user) or "-", stamp, _quoted(request), status, size or "-",
        _quoted(referer) or "-", _quoted(agent) or "-")


def _quoted(text: str) -> str:
    """Escape what would break a log line: quotes, backslashes, control characters."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


# -- WSGI --------------------------------------------------------------------------------


def wsgi_access_log(app: WSGIApp, logger: logging.Logger | None = None) -> WSGIApp:
    """``app`` with one access log line per request."""
    log = logger or logging.getLogger(LOGGER_NAME)

    def logged_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not log.isEnabledFor(logging.INFO):
            return app(environ, start_response)
        exchange = _WSGIExchange(environ, log)
        try:
            body = app(environ, exchange.wrap(start_response))
        except BaseException:
            exchange.finish(default_status=500)
            raise
        return _LoggedBody(body, exchange)

    return logged_app


class _WSGIExchange:
    def __init__(self, environ: Environ, log: logging.Logger) -> None:
        self.environ = environ
        self.log = log
        self.status = "-"
        self.sent = 0
        self.done = False

    def wrap(self, start_response: StartResponse) -> StartResponse:
        def logging_start_response(status: str, headers: list[tuple[str, str]],
                                   exc_info: Any = None) -> Callable[[bytes], None]:
            self.status = status.split(" ", 1)[0]
            write = start_response(status, headers, exc_info)

            def counting_write(data: bytes) -> None:
                self.sent += len(data)
                write(data)

            return counting_write

        return logging_start_response

    def finish(self, default_status: Any = "-") -> None:
        if self.done:
            return
        self.done = True
        env = self.environ
        self.log.info(combined_line(
            env.get("REMOTE_ADDR", ""), env.get("REMOTE_USER", ""), _wsgi_request_line(env),
            self.status if self.status != "-" else default_status, self.sent,
            env.get("HTTP_REFERER", ""), env.get("HTTP_USER_AGENT", "")))


def _wsgi_request_line(env: Environ) -> str:
    target = env.get("REQUEST_URI") or env.get("RAW_URI")
    if not target:
        target = quote(env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""), safe="/;=,@:+$!*'()~")
        if env.get("QUERY_STRING"):
            target += "?" + env["QUERY_STRING"]
    return "%s %s %s" % (env.get("REQUEST_METHOD", "-"), target, env.get("SERVER_PROTOCOL", "-"))


class _LoggedBody:
    """The response body, passed through; counts bytes, logs the line when the server closes it."""

    def __init__(self, body: Iterable[bytes], exchange: _WSGIExchange) -> None:
        self._body = body
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._exchange.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close_body(self._body)
        finally:
            self._exchange.finish()


# -- ASGI --------------------------------------------------------------------------------


def asgi_access_log(app: ASGIApp, logger: logging.Logger | None = None) -> ASGIApp:
    """``app`` with one access log line per HTTP request (other scopes pass through)."""
    log = logger or logging.getLogger(LOGGER_NAME)

    async def logged_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await app(scope, receive, send)
            return
        status: int | None = None
        sent = 0

        async def logging_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, logging_send)
        finally:
            _log_asgi(log, scope, status or 500, sent)

    return logged_app


def _log_asgi(log: logging.Logger, scope: Scope, status: int, sent: int) -> None:
    headers = {name.lower(): value for name, value in scope.get("headers", ())}
    target = scope.get("raw_path") or quote(scope.get("root_path", "") + scope.get("path", "")).encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    request = "%s %s HTTP/%s" % (scope.get("method", "-"), target.decode("latin-1"),
                                  scope.get("http_version", "1.1"))
    client = scope.get("client") or ("", 0)
    log.info(combined_line(client[0], "", request, status, sent,
                           headers.get(b"referer", b"").decode("latin-1"),
                           headers.get(b"user-agent", b"").decode("latin-1")))
