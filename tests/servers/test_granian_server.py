"""granian specifics: both protocols natively, restarts on one socket, a bounded stop.

The behaviour every server shares (IPv4, IPv6, Unix sockets, stops that finish requests in flight
and refuse new connections, prompt idle stops, keep-alive without delayed ACKs) is tested for
granian with the others, in test_httpserver.py and test_keep_alive.py; the ASGI lifespan (once
for the binds of an app, failures, Starlette) in test_lifespan.py.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from serving import SlowApp, asgi_hello, get, wsgi_hello
from support import DEADLINE
from wspbus.servers import HTTPServer, granian_server, protocols_of
from wspbus.servers.backend import ServeOptions
from wspbus.servers.request_head import HeadLimits
from wspbus.servers.sockets.binds import Bind, open_listener, second_descriptor

pytest.importorskip("granian")


def test_granian_speaks_both_protocols_without_a_bridge(bus):
    assert protocols_of("granian") == ("wsgi", "asgi")
    on_wsgi = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="granian", protocol="wsgi")
    on_asgi = HTTPServer(bus, asgi_hello, "127.0.0.1:0", server="granian", protocol="asgi")
    for plugin in (on_wsgi, on_asgi):
        plugin.subscribe()
    bus.start()
    assert get(on_wsgi.address, "/w")[1].startswith(b"hello /w")
    assert get(on_asgi.address, "/a")[1].startswith(b"hello /a")
    assert on_wsgi._bridge is None and on_asgi._bridge is None  # served as they are, not through a2wsgi


def test_graceful_restarts_granian_on_the_same_socket(bus):
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="granian")
    plugin.subscribe()
    bus.start()
    address = plugin.address
    for _ in range(2):
        bus.graceful()
        assert plugin.address == address and get(address, "/again")[1].startswith(b"hello /again")


def test_a_stop_waits_for_a_request_in_flight_at_most_the_graceful_timeout():
    """The server's own bound (the bus bounds its stop listener with the same timeout: the server
    is driven directly here, so that the two do not race)."""
    messages = []
    app = SlowApp("wsgi", delay=10)
    listener = open_listener(Bind.parse("127.0.0.1:0"))
    server = granian_server.create(app, listener.dup(), ServeOptions(
        graceful_timeout=0.3, log=lambda msg, level=20, traceback=False: messages.append(msg)))
    server.prepare()
    serving = threading.Thread(target=server.serve)
    serving.start()
    client = threading.Thread(target=get, args=(listener.getsockname(), "/stuck"), kwargs={"timeout": 10})
    try:
        client.start()
        assert app.entered.wait(DEADLINE)
        listener.close()
        began = time.monotonic()
        server.stop()
        took = time.monotonic() - began
        serving.join(DEADLINE)
    finally:
        app.release.set()  # the request ends now; granian answers it and ends its worker
        client.join(DEADLINE)
    assert 0.3 <= took < 1.5 and not serving.is_alive()
    assert messages == ["granian: requests still running after 0.3 s; not waiting"]


def test_the_environ_holds_the_request_not_the_process_environment(bus, monkeypatch):
    """granian's own WSGI wrapper copies every environment variable into each request's environ."""
    monkeypatch.setenv("WSPBUS_TEST_SECRET", "not for the app")

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written first; ")  # PEP 3333's write(): before the returned body
        leaked = "WSPBUS_TEST_SECRET" in environ or "PATH" in environ
        return [b"leaked" if leaked else b"clean", b" ", environ["PATH_INFO"].encode()]

    plugin = HTTPServer(bus, app, "127.0.0.1:0", server="granian")
    plugin.subscribe()
    bus.start()
    assert get(plugin.address, "/x") == (200, b"written first; clean /x")


def test_a_head_that_trickles_in_ends_its_connection_after_the_head_timeout(bus):
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="granian", limits=HeadLimits(head_timeout=0.5))
    plugin.subscribe()
    bus.start()
    with socket.create_connection(plugin.address, timeout=DEADLINE) as trickler:
        trickler.sendall(b"GET / HTTP/1.1\r\n")
        began = time.monotonic()
        closed = threading.Event()

        def trickle():
            while not closed.is_set() and time.monotonic() - began < DEADLINE:
                try:
                    trickler.sendall(b"X-A: 1\r\n")
                except OSError:
                    return  # closed by the server
                closed.wait(0.05)

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            assert trickler.recv(1000) == b""  # closed, without an answer
            took = time.monotonic() - began
        finally:
            closed.set()
            sender.join(DEADLINE)
    assert 0.4 < took < 3
    assert get(plugin.address)[0] == 200


def _accept_queue_length(listener: socket.socket) -> int:
    """Connections waiting to be accepted (TCP_INFO's ``tcpi_unacked`` on a listening socket)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[24:28], sys.byteorder)


def test_a_connection_granian_took_just_before_its_stop_gets_its_request_answered():
    """hyper's graceful stop closes, unanswered, a connection whose request it has not read yet. A
    client that connects and then sends its request as the stop begins must still be answered: the
    stop first makes granian accept nothing more, then lets hyper read what it took."""
    listener = open_listener(Bind.parse("127.0.0.1:0"))
    server = granian_server.create(wsgi_hello, listener.dup(), ServeOptions(graceful_timeout=5))
    server.prepare()
    serving = threading.Thread(target=server.serve)
    serving.start()
    stopping = threading.Thread(target=server.stop)
    try:
        with socket.create_connection(listener.getsockname(), timeout=DEADLINE) as client:
            deadline = time.monotonic() + DEADLINE
            while _accept_queue_length(listener):  # test side: until granian accepted it
                assert time.monotonic() < deadline, "granian never accepted the connection"
                time.sleep(0.001)
            stopping.start()
            client.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        if not stopping.is_alive() and stopping.ident is None:
            stopping.start()
        stopping.join(DEADLINE)
        serving.join(DEADLINE)
        listener.close()


def test_the_quiet_socket_is_not_inherited_by_children():
    """os.dup2 makes its copy inheritable unless told: a fork+exec elsewhere in the process during
    the settle would have passed the quiet listener on (found in review)."""
    listener = open_listener(Bind.parse("127.0.0.1:0"))
    copy = second_descriptor(listener)
    fd = copy.detach()
    try:
        assert not os.get_inheritable(fd)
        assert granian_server._silence(fd, os.fstat(fd).st_ino, socket.AF_INET)
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
        listener.close()
