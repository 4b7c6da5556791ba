"""Health endpoints over real HTTP: a WSGI server (stdlib, port 0) and uvicorn for ASGI."""

from __future__ import annotations

import socket
import socketserver
import threading
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from support import http_get
from wspbus import Bus
from wspbus.plugins.health import Health

DEADLINE = 10.0


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextmanager
def serving_wsgi(app):
    """Serve ``app`` on 127.0.0.1:<ephemeral> in a thread; yield the port."""
    server = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE)


@contextmanager
def serving_asgi(app):
    """Serve ``app`` with uvicorn on a socket already listening (so no wait for it to be up)."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        sock.close()


class RecordingApp:
    """A WSGI site app that records every path it was asked for."""

    def __init__(self):
        self.paths = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from the app"]


@pytest.fixture
def bus():
    bus = Bus(graceful_timeout=5)
    yield bus
    bus.exit()


@pytest.fixture
def health(bus):
    health = Health(bus)
    health.subscribe()
    return health


def probe(port):
    return http_get("127.0.0.1", port, "/livez")[0], http_get("127.0.0.1", port, "/readyz")[0]


def test_readiness_follows_the_bus_and_the_drain_liveness_stays_until_exit(bus, health):
    with serving_wsgi(health.wsgi) as port:
        assert probe(port) == (200, 503)  # STOPPED: alive, not ready
        assert http_get("127.0.0.1", port, "/readyz")[1] == b"unavailable: stopped\n"
        bus.start()
        assert probe(port) == (200, 200)
        assert http_get("127.0.0.1", port, "/readyz")[1] == b"ok: ready\n"
        bus.publish("drain")
        assert probe(port) == (200, 503)
        assert http_get("127.0.0.1", port, "/readyz")[1] == b"unavailable: draining\n"
        bus.exit()
        assert probe(port) == (503, 503)
        assert http_get("127.0.0.1", port, "/livez")[1] == b"unavailable: exiting\n"


def test_liveness_fails_when_a_server_thread_dies(bus, health):
    release = threading.Event()
    server_thread = threading.Thread(target=release.wait, name="a server")
    server_thread.start()
    bus.subscribe("health", server_thread.is_alive)
    bus.start()
    with serving_wsgi(health.wsgi) as port:
        assert probe(port) == (200, 200)
        release.set()
        server_thread.join(DEADLINE)
        assert probe(port) == (503, 503)
        assert http_get("127.0.0.1", port, "/livez")[1] == b"unavailable: a health check failed\n"


def test_a_check_that_raises_counts_as_failing_and_is_logged(bus, health):
    logged = []
    bus.subscribe("log", lambda msg, level=20: logged.append((level, msg)))

    def broken_check():
        raise RuntimeError("database unreachable")

    bus.subscribe("health", broken_check)
    bus.start()
    with serving_wsgi(health.wsgi) as port:
        assert probe(port) == (503, 503)
    assert any(level == 40 and "database unreachable" in msg for level, msg in logged)


def test_wrapped_wsgi_app_never_sees_the_probes(bus, health):
    app = RecordingApp()
    bus.start()
    with serving_wsgi(health.wrap_wsgi(app)) as port:
        assert probe(port) == (200, 200)
        assert http_get("127.0.0.1", port, "/other") == (200, b"from the app")
        assert http_get("127.0.0.1", port, "/livez/more") == (200, b"from the app")
        head = _request(port, "HEAD", "/readyz")
        post = _request(port, "POST", "/readyz")
    assert app.paths == ["/other", "/livez/more"]
    assert head[0] == 200 and head[1] == b"" and head[2]["Content-Length"] == str(len(b"ok: ready\n"))
    assert post[0] == 405 and post[2]["Allow"] == "GET, HEAD"
    assert head[2]["Cache-Control"] == "no-store"


def test_paths_are_configurable(bus):
    health = Health(bus, live_path="/healthz", ready_path="/ready")
    bus.start()
    with serving_wsgi(health.wsgi) as port:
        assert http_get("127.0.0.1", port, "/healthz")[0] == 200
        assert http_get("127.0.0.1", port, "/ready")[0] == 200
        assert http_get("127.0.0.1", port, "/livez")[0] == 404


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"live_path": "livez"}, "live_path='livez': expected an absolute URL path"),
        ({"ready_path": None}, "ready_path=None: expected an absolute URL path"),
        ({"live_path": "/x", "ready_path": "/x"}, "both '/x': expected two different paths"),
    ],
)
def test_bad_paths_are_refused_with_one_clear_line(bus, kwargs, message):
    with pytest.raises(ValueError) as caught:
        Health(bus, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_asgi_endpoints_and_wrapper_over_uvicorn(bus, health):
    seen = []

    async def site(scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                seen.append(message["type"])
                await send({"type": "lifespan.startup.complete"})
            seen.append(message["type"])
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"from the app"})

    with serving_asgi(health.wrap_asgi(site)) as port:
        assert probe(port) == (200, 503)
        bus.start()
        assert probe(port) == (200, 200)
        assert http_get("127.0.0.1", port, "/page") == (200, b"from the app")
        bus.publish("drain")
        status, body = http_get("127.0.0.1", port, "/readyz")
        assert (status, body) == (503, b"unavailable: draining\n")
    # The site's lifespan still reaches the app through the wrapper; the probes never do.
    assert seen == ["lifespan.startup", "/page", "lifespan.shutdown"]


def test_standalone_asgi_app_answers_probes_and_nothing_else(bus, health):
    bus.start()
    with serving_asgi(health.asgi) as port:
        assert probe(port) == (200, 200)
        assert http_get("127.0.0.1", port, "/page")[0] == 404


def _request(port, method, path):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()
