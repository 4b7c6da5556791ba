"""cheroot specifics: HTTP/1.1 keep-alive, and a stop that answers what already arrived."""

from __future__ import annotations

import http.client
import socket
import threading
import time

from cheroot_loop import SharedListener, read_response
from serving import SlowApp, get, wsgi_hello
from support import DEADLINE
from wspbus.servers import HTTPServer


def _slow_on_slow_path(slow: SlowApp):
    """``slow`` on /slow, the hello app elsewhere."""

    def app(environ, start_response):
        return (slow if environ["PATH_INFO"] == "/slow" else wsgi_hello)(environ, start_response)
    return app


def test_two_requests_on_one_keep_alive_connection(bus):
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="cheroot")
    plugin.subscribe()
    bus.start()
    conn = http.client.HTTPConnection(*plugin.address, timeout=5)
    try:
        answers = []
        for path in ("/one", "/two"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.version == 11 and not response.will_close
            answers.append(response.read())
        sock_port = conn.sock.getsockname()[1]
    finally:
        conn.close()
    # The app echoes the client's port: both requests came over the same TCP connection.
    assert answers == [b"hello /one from %d" % sock_port, b"hello /two from %d" % sock_port]


def test_connection_open_before_stop_gets_its_request_answered(bus):
    """A client that connected before the stop and sends during it is answered, not dropped.

    A slow request keeps the stop busy for 0.6 s; the silent client sends its request 0.2 s into
    the stop, long after the connection loop ended (cheroot alone closes such a connection then).
    """
    slow = SlowApp("wsgi", delay=0.6)
    plugin = HTTPServer(bus, _slow_on_slow_path(slow), "127.0.0.1:0", server="cheroot")
    plugin.subscribe()
    bus.start()
    answers = []
    in_flight = threading.Thread(target=lambda: answers.append(get(plugin.address, "/slow")))
    in_flight.start()
    assert slow.entered.wait(10)
    with socket.create_connection(plugin.address, timeout=5) as silent:
        assert get(plugin.address)[0] == 200  # the silent connection is accepted and parked by now
        stopper = threading.Thread(target=bus.stop)
        stopper.start()
        time.sleep(0.2)  # well inside the stop, which waits for the slow request
        assert stopper.is_alive()
        silent.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := silent.recv(4096):
            reply += chunk
    stopper.join(10)
    in_flight.join(10)
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"hello /late" in reply
    assert answers == [(200, b"slow")]


def test_pipelined_requests_and_a_head_split_across_sends_are_answered(bus):
    """The head gate hands cheroot what it read: a second request already sent behind the first
    (cheroot's reader holds it) and a head that arrives in pieces are both answered."""
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="cheroot")
    plugin.subscribe()
    bus.start()
    with socket.create_connection(plugin.address, timeout=5) as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /thr")
        time.sleep(0.1)  # the third head, in pieces
        sock.sendall(b"ee HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)
        sock.sendall(b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert [b"/one", b"/two", b"/three"] == [line.split()[1] for line in reply.split(b"\r\n") if line.startswith(b"hello")]


def test_an_idle_kept_alive_connection_is_closed_at_a_stop_without_waiting(bus):
    """The head gate gives workers, at a stop, only the connections that have not had a request
    yet; one idle between requests is closed at once, as cheroot alone closes it."""
    plugin = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="cheroot")
    plugin.subscribe()
    bus.start()
    conn = http.client.HTTPConnection(*plugin.address, timeout=5)
    try:
        conn.request("GET", "/one")
        response = conn.getresponse()
        assert response.read().startswith(b"hello /one") and not response.will_close
        began = time.monotonic()
        bus.stop()
        assert time.monotonic() - began < 1.0  # not the graceful timeout (5 s) a worker would wait
        assert conn.sock.recv(100) == b""
    finally:
        conn.close()


SLOW_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
NEW_HEAD = b"GET /new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_a_listener_event_in_the_same_batch_as_the_request_that_fills_the_threads_is_left_alone():
    """The loop goes through a whole batch of events: the request that takes the last thread and a
    new connection on the listener can come in one. The new one stays in the shared queue."""
    slow = SlowApp("wsgi", delay=30)
    shared = SharedListener(_slow_on_slow_path(slow), threads=1)
    try:
        with socket.create_connection(shared.address, timeout=5) as kept:
            kept.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(kept)  # now idle, kept alive in the loop's selector
            shared.gate.hold()
            kept.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            with socket.create_connection(shared.address, timeout=5) as new:
                new.sendall(NEW_HEAD)
                shared.gate.one_batch()  # one select(): the kept connection and the listener, both ready
                assert slow.entered.wait(DEADLINE)
                shared.listener.settimeout(DEADLINE)
                taken, _ = shared.listener.accept()
                with taken:
                    assert taken.recv(4096).startswith(b"GET /new ")
    finally:
        slow.release.set()
        shared.close()


def test_a_paused_server_at_its_stop_leaves_the_shared_queue_alone():
    """The stop wakes the loop through the listener's path; a paused server still accepts nothing:
    the connection waiting in the queue goes to a worker that can answer it now."""
    slow = SlowApp("wsgi", delay=30)
    shared = SharedListener(_slow_on_slow_path(slow), threads=1, graceful_timeout=10)
    stopper = threading.Thread(target=shared.server.stop)
    try:
        with socket.create_connection(shared.address, timeout=5) as busy:
            busy.sendall(SLOW_HEAD)
            assert slow.entered.wait(DEADLINE)  # its only thread taken: paused
            new = socket.create_connection(shared.address, timeout=5)
            new.sendall(NEW_HEAD)
            stopper.start()
            shared.listener.settimeout(DEADLINE)
            taken, _ = shared.listener.accept()
            with taken, new:
                assert taken.recv(4096).startswith(b"GET /new ")  # not cheroot's own touch at its stop
    finally:
        slow.release.set()
        stopper.join(DEADLINE)
        shared.close()


def test_the_keep_alive_limit_holds_while_the_server_is_paused():
    """cheroot counts the listener among its selector's entries; paused, it is not there."""
    shared = SharedListener(wsgi_hello, threads=1)
    limit = shared.server.keep_alive_conn_limit - 1  # prepare() added the Waker's entry
    clients = [socket.create_connection(shared.address, timeout=5) for _ in range(limit + 2)]
    try:
        kept = 0
        for client in clients:  # each request takes the only thread: the server pauses for it
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            kept += b"Connection: close" not in read_response(client)
        assert kept == limit
    finally:
        for client in clients:
            client.close()
        shared.close()
