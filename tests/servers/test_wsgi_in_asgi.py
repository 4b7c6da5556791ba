"""A WSGI app on an ASGI server (uvicorn): the environ, bodies both ways, errors, and a request
thread that does not wait for the event loop at every step."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import sys
import threading

import pytest

from serving import get, wsgi_hello
from support import DEADLINE
from wspbus.servers import HTTPServer
from wspbus.servers.wsgi_in_asgi import WsgiInAsgi


@pytest.fixture
def serve(bus):
    """serve(wsgi_app, asgi_wrapper=None) -> (host, port): the app bridged, on uvicorn in ``bus``."""
    bridges = []

    def serve(app, wrap=None):
        bridge = WsgiInAsgi(app, threads=4)
        bridges.append(bridge)
        plugin = HTTPServer(bus, wrap(bridge) if wrap else bridge, "127.0.0.1:0", server="uvicorn",
                            protocol="asgi", access_log=False)
        plugin.subscribe()
        bus.start()
        return plugin.address

    yield serve
    bus.stop()
    for bridge in bridges:
        bridge.close()


def request(address, method="GET", path="/", body=None, headers=None):
    conn = http.client.HTTPConnection(*address, timeout=DEADLINE)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_environ_follows_pep_3333(serve):
    def app(environ, start_response):
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "CONTENT_TYPE",
                "CONTENT_LENGTH", "HTTP_X_THING", "HTTP_COOKIE", "REMOTE_ADDR", "wsgi.url_scheme")
        seen = {key: environ.get(key) for key in keys}
        seen["body"] = environ["wsgi.input"].read().decode()
        payload = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]

    address = serve(app)
    status, headers, body = request(address, "POST", "/caf%C3%A9?a=1&b=%20", body=b"x=1",
                                    headers={"Content-Type": "text/plain", "X-Thing": "yes", "Cookie": "a=1"})
    assert status == 200 and headers["content-length"] == str(len(body))  # added: no chunked encoding
    assert json.loads(body) == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/caf\u00c3\u00a9", "QUERY_STRING": "a=1&b=%20",
        "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3", "HTTP_X_THING": "yes",
        "HTTP_COOKIE": "a=1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "body": "x=1"}


def test_a_long_body_is_read_as_it_arrives(serve):
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        first_line = stream.readline()
        rest = stream.read(1000) + b"".join(iter(lambda: stream.read(65536), b""))
        digest = hashlib.sha256(first_line + rest).hexdigest().encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest]

    payload = b"first line\n" + bytes(range(256)) * 8192  # 2 MB: several ASGI messages
    status, _, body = request(serve(app), "POST", body=payload)
    assert (status, body) == (200, hashlib.sha256(payload).hexdigest().encode())


def test_a_generator_streams_each_chunk_as_it_is_made(serve):
    made = threading.Event()
    received = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"first;"
            made.set()
            # The next chunk is made only once the client has the first one: a bridge that
            # gathered the whole body before sending would wait here until the deadline.
            yield b"second" if received.wait(DEADLINE) else b"timed out"

        return body()

    address = serve(app)
    conn = http.client.HTTPConnection(*address, timeout=DEADLINE)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.read1(100) == b"first;"
        received.set()
        assert response.read() == b"second"
    finally:
        conn.close()
    assert made.is_set()


def test_start_response_and_a_list_body_do_not_wait_for_the_event_loop(serve):
    """The event loop is held busy while the app reads its body, starts its response and returns:
    none of it may need the loop (a2wsgi's bridge waited for it at every step, so the app stalled
    until the loop was let go)."""
    loops = []
    loop_held, app_done = threading.Event(), threading.Event()
    outcome = {}

    def hold_the_loop():
        loop_held.set()
        outcome["app finished while the loop was held"] = app_done.wait(DEADLINE)

    def app(environ, start_response):
        loops[0].call_soon_threadsafe(hold_the_loop)
        assert loop_held.wait(DEADLINE)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        app_done.set()
        return [b"got ", body]

    def recording_loop(bridge):
        async def app(scope, receive, send):
            loops.append(asyncio.get_running_loop())
            await bridge(scope, receive, send)

        return app

    status, _, body = request(serve(app, recording_loop), "POST", body=b"form=1")
    assert (status, body) == (200, b"got form=1")
    assert outcome == {"app finished while the loop was held": True}


def test_start_response_again_with_exc_info_replaces_the_response(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("broken")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    status, _, body = request(serve(app))
    assert (status, body) == (500, b"sorry")


def test_an_app_that_raises_before_responding_gets_a_500(serve):
    def app(environ, start_response):
        raise RuntimeError("the app broke")

    status, _, _ = request(serve(app))
    assert status == 500


def test_an_empty_generator_still_sends_its_status(serve):
    def app(environ, start_response):
        start_response("204 No Content", [])
        return iter(())

    assert request(serve(app))[:1] == (204,)


def test_a_wsgi_app_on_uvicorn_needs_no_a2wsgi(bus, monkeypatch):
    monkeypatch.setitem(sys.modules, "a2wsgi", None)  # what an installation without a2wsgi gives
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="uvicorn", protocol="wsgi", access_log=False)
    plugin.subscribe()
    bus.start()
    assert get(plugin.address, "/w")[1].startswith(b"hello /w")
