"""Apps and clients the server tests share (tests/servers is on sys.path while they run)."""

from __future__ import annotations

import socket
import threading

import pytest

from support import http_get
from wspbus._core.bus import Bus, ChannelFailures
from wspbus.testing import get as wspbus_get

#: Every server, with the protocol its app speaks natively.
SERVER_PROTOCOLS = {"cheroot": "wsgi", "waitress": "wsgi", "stdlib": "wsgi", "uvicorn": "asgi", "granian": "wsgi"}


def wsgi_hello(environ, start_response):
    body = ("hello %s from %s" % (environ["PATH_INFO"], environ.get("REMOTE_PORT", "?"))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_hello(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("this app speaks no lifespan")  # served without lifespan events
    body = ("hello %s from %s" % (scope["path"], scope["client"][1] if scope["client"] else "?")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def hello_app(server: str):
    return asgi_hello if SERVER_PROTOCOLS[server] == "asgi" else wsgi_hello


class SlowApp:
    """An app (WSGI or ASGI) whose requests take ``delay`` seconds, or until ``release`` is set;
    ``entered`` is set on arrival, ``finished`` just before the response."""

    def __init__(self, protocol: str, delay: float = 0.4) -> None:
        self.protocol = protocol
        self.delay = delay
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()

    def __call__(self, *args):
        return self._asgi(*args) if self.protocol == "asgi" else self._wsgi(*args)

    def _wsgi(self, environ, start_response):
        self.entered.set()
        self.release.wait(self.delay)
        self.finished.set()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"slow"]

    async def _asgi(self, scope, receive, send):
        import asyncio

        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        self.entered.set()
        await asyncio.to_thread(self.release.wait, self.delay)
        self.finished.set()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"slow"})


def get(address, path: str = "/", timeout: float = 5.0):
    """GET over a fresh connection to (host, port) or a Unix socket path: (status, body)."""
    if isinstance(address, tuple):
        return http_get(address[0], address[1], path, timeout)
    return wspbus_get("unix:" + address, path, timeout)


def assert_refused(address) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(address)


def new_bus() -> Bus:
    return Bus(graceful_timeout=5.0)


def exit_quietly(bus: Bus) -> None:
    try:
        bus.exit()
    except ChannelFailures:
        pass  # teardown: the bus logged each failing listener, and the test has had its say

