"""Keep-alive requests are answered at once, not after the client's delayed acknowledgement.

A server that sends a response's headers and body in two writes (cheroot) on a connection with
Nagle's algorithm on holds the body until the client acknowledges the headers; a keep-alive
client delays that acknowledgement (40 ms on Linux), so every request took 40 ms (228 req/s).
Each request is timed on its own and the median is compared with that floor: scheduling noise on
a loaded machine delays a few requests, never most of them, while the stall delays every one.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import time

import pytest

from serving import SERVER_PROTOCOLS, hello_app
from wspbus.deploy.supervisor.worker import CLOSE_HONOURED
from wspbus.servers import HTTPServer

#: Linux's delayed-ACK floor is 40 ms; a request answered without waiting for it takes well under 1.
DELAYED_ACK_FLOOR = 0.040
REQUESTS = 20


def keep_alive_latencies(address: tuple, count: int = REQUESTS) -> list[float]:
    """Seconds each of ``count`` GETs took, one after another on one keep-alive connection."""
    conn = http.client.HTTPConnection(*address, timeout=5)
    latencies = []
    try:
        for index in range(count):
            began = time.perf_counter()
            conn.request("GET", "/%d" % index)
            response = conn.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - began)
            assert response.status == 200 and body.startswith(b"hello /%d" % index)
    finally:
        conn.close()
    return latencies


def assert_no_delayed_ack_stall(latencies: list[float]) -> None:
    middle = statistics.median(latencies)
    assert middle < DELAYED_ACK_FLOOR / 2, "median keep-alive request took %.1f ms (%s)" % (
        middle * 1000, " ".join("%.1f" % (latency * 1000) for latency in latencies))


@pytest.mark.parametrize("server", sorted(SERVER_PROTOCOLS))
def test_keep_alive_requests_do_not_wait_for_the_delayed_ack(bus, server):
    plugin = HTTPServer(bus, hello_app(server), "127.0.0.1:0", server=server,
                        protocol=SERVER_PROTOCOLS[server], access_log=False)
    plugin.subscribe()
    bus.start()
    assert_no_delayed_ack_stall(keep_alive_latencies(plugin.address))


def test_a_passed_socket_gets_no_delay_too(bus):
    """A socket from a service manager (or a supervisor) comes with Nagle's algorithm on."""
    passed = socket.socket()
    passed.bind(("127.0.0.1", 0))
    passed.listen()
    assert not passed.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    fd = passed.detach()  # the server owns it from now on
    plugin = HTTPServer(bus, hello_app("cheroot"), "fd://%d" % fd, server="cheroot", access_log=False)
    plugin.subscribe()
    bus.start()
    assert_no_delayed_ack_stall(keep_alive_latencies(plugin.address))


def _closing_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"), ("Connection", "close")])
    return [b"ok"]


async def _closing_asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("server", CLOSE_HONOURED)
def test_an_app_saying_connection_close_reaches_the_client(bus, server):
    """What a retiring supervised worker relies on (deploy/supervisor/worker.py CLOSE_HONOURED):
    the server passes an app's Connection: close on to the client, which then sends no other
    request on that connection (RFC 9112 9.6). waitress and wsgiref refuse the header from an app."""
    protocol = SERVER_PROTOCOLS[server]
    plugin = HTTPServer(bus, _closing_asgi if protocol == "asgi" else _closing_wsgi, "127.0.0.1:0",
                        server=server, protocol=protocol, access_log=False)
    plugin.subscribe()
    bus.start()
    conn = http.client.HTTPConnection(*plugin.address, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.read() == b"ok"
        assert response.getheader("Connection", "").lower() == "close" and response.will_close
    finally:
        conn.close()
