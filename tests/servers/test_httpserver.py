"""HTTPServer with each server: real HTTP over 127.0.0.1, ::1 and Unix sockets, real stops."""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
import time

import pytest

from serving import (SERVER_PROTOCOLS, SlowApp, asgi_hello, assert_refused, exit_quietly, get, hello_app, new_bus,
                     wsgi_hello)
from support import threads_left_running
from wspbus._core.bus import ChannelFailures, states
from wspbus.servers import SERVERS, BindError, HTTPServer, granian_server, protocols_of

ALL = sorted(SERVER_PROTOCOLS)


def serve(bus, server, bind, app=None, **kw):
    plugin = HTTPServer(bus, app or hello_app(server), bind, server=server,
                        protocol=SERVER_PROTOCOLS[server], **kw)
    plugin.subscribe()
    return plugin


@pytest.mark.parametrize("server", ALL)
def test_serves_on_an_ephemeral_ipv4_port(bus, server):
    plugin = serve(bus, server, "127.0.0.1:0")
    bus.start()
    host, port = plugin.address
    assert host == "127.0.0.1" and port != 0
    assert plugin.url == "http://127.0.0.1:%d" % port
    status, body = get(plugin.address, "/v4")
    assert status == 200 and body.startswith(b"hello /v4")
    bus.stop()
    assert_refused(plugin.address)


@pytest.mark.parametrize("server", ALL)
def test_serves_on_ipv6_loopback(bus, server):
    plugin = serve(bus, server, "[::1]:0")
    bus.start()
    assert plugin.address[0] == "::1"
    assert plugin.url == "http://[::1]:%d" % plugin.address[1]
    assert get(plugin.address, "/v6")[1].startswith(b"hello /v6")


@pytest.mark.parametrize("server", ALL)
def test_serves_on_a_unix_socket_and_removes_it_after(bus, server, tmp_path):
    path = str(tmp_path / "site.sock")
    plugin = serve(bus, server, "unix:" + path)
    bus.start()
    assert plugin.address == path and plugin.url == "unix:" + path
    assert get(path, "/unix") [1].startswith(b"hello /unix")
    bus.stop()
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(OSError):
        client.connect(path)
    assert not (tmp_path / "site.sock").exists()


def slow_request_in_flight(bus, server, delay):
    """Serve a slow app, start the bus and send one request; return once the app has it."""
    app = SlowApp(SERVER_PROTOCOLS[server], delay=delay)
    plugin = serve(bus, server, "127.0.0.1:0", app=app)
    bus.start()
    answers = []
    client = threading.Thread(target=lambda: answers.append(get(plugin.address, "/slow")))
    client.start()
    assert app.entered.wait(10), "the request never reached the app"
    return plugin, app, client, answers


@pytest.mark.parametrize("server", ALL)
def test_request_in_flight_finishes_across_stop(bus, server):
    plugin, app, client, answers = slow_request_in_flight(bus, server, delay=10)  # held until released
    stopper = threading.Thread(target=bus.stop)
    stopper.start()
    stopper.join(0.3)  # a stop that did not wait for the request would be over by now
    assert stopper.is_alive(), "stop returned while a request was still in flight"
    app.release.set()
    stopper.join(10)
    client.join(10)
    assert answers == [(200, b"slow")]
    assert_refused(plugin.address)


@pytest.mark.parametrize("server", ALL)
def test_new_connections_are_refused_while_a_slow_request_finishes(bus, server):
    plugin, app, client, answers = slow_request_in_flight(bus, server, delay=10)  # held until released
    stopper = threading.Thread(target=bus.stop)
    stopper.start()
    refused_after = _wait_refused(plugin.address, deadline=5.0)
    assert not app.finished.is_set(), "refused only after the slow request (%.2f s)" % refused_after
    app.release.set()
    stopper.join(10)
    client.join(10)
    assert answers == [(200, b"slow")]


def _wait_refused(address, deadline):
    """Seconds until a connection to ``address`` is refused (test side: tries with a backoff)."""
    began = time.monotonic()
    pause = 0.001
    while time.monotonic() - began < deadline:
        try:
            socket.create_connection(address, timeout=1).close()
        except ConnectionRefusedError:
            return time.monotonic() - began
        except ConnectionResetError:
            pass  # queued as the listener closed: the next try tells
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    raise AssertionError("%s still accepts connections after %g s" % (address, deadline))


@pytest.mark.parametrize("server", ALL)
def test_stop_of_an_idle_server_is_prompt(bus, server):
    plugin = serve(bus, server, "127.0.0.1:0")
    times = []
    for _ in range(3):  # the fastest of three: a loaded machine may stall one stop, never all three
        bus.start()
        assert get(plugin.address)[0] == 200
        began = time.monotonic()
        bus.stop()
        times.append(time.monotonic() - began)
    # cheroot alone would wait for its select() timeout (0.5 s), uvicorn for its tick (0.1 s):
    # a stop woken by a tick can never be faster than the tick, however quiet the machine.
    # granian's stop waits ACCEPT_SETTLE on purpose (for the requests of its last connections).
    bound = 0.09 + (granian_server.ACCEPT_SETTLE if server == "granian" else 0)
    assert min(times) < bound, "stopping an idle %s took %s s" % (server, ", ".join("%.3f" % t for t in times))


def test_port_in_use_fails_start_with_one_line(bus):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        serve(bus, "cheroot", "127.0.0.1:%d" % port)
        with pytest.raises(ChannelFailures) as caught:
            bus.start()
    [error] = caught.value.get_instances()
    assert isinstance(error, BindError)
    assert str(error) == "cannot bind 127.0.0.1:%d: address already in use" % port
    assert bus.exit_code == 1 and bus.state is states.EXITING


def test_several_servers_on_several_binds_in_one_bus(bus, tmp_path):
    plugins = [serve(bus, "cheroot", "127.0.0.1:0"), serve(bus, "uvicorn", "[::1]:0"),
               serve(bus, "waitress", "unix:%s" % (tmp_path / "w.sock")), serve(bus, "stdlib", "127.0.0.1:0")]
    bus.start()
    for plugin in plugins:
        status, body = get(plugin.address, "/" + plugin.server)
        assert (status, body.split(b" from")[0]) == (200, b"hello /" + plugin.server.encode())
    assert len({str(plugin.address) for plugin in plugins}) == 4


@pytest.mark.parametrize("server", ["cheroot", "waitress", "uvicorn"])
def test_graceful_keeps_serving_and_answers_an_idle_keep_alive_connection(bus, server):
    """Issue #11 item 10: 'graceful' (SIGUSR1, log reopening) must not restart the server; on
    main it did, and the next request on an idle keep-alive connection got EOF."""
    import http.client

    plugin = serve(bus, server, "127.0.0.1:0")
    bus.start()
    address = plugin.address
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request("GET", "/before")
        response = connection.getresponse()
        assert response.status == 200 and response.read().startswith(b"hello /before")
        bus.graceful()
        assert plugin.address == address and plugin.running
        connection.request("GET", "/after")  # on the same, idle, keep-alive connection
        response = connection.getresponse()
        assert response.status == 200 and response.read().startswith(b"hello /after")
    finally:
        connection.close()


def test_graceful_after_stop_does_not_serve_again(bus):
    plugin = serve(bus, "stdlib", "127.0.0.1:0")
    bus.start()
    bus.stop()
    bus.graceful()  # a SIGUSR1 after the stop, or during a restart's exit
    assert not plugin.running and bus.state is states.STOPPED
    assert not [t.name for t in threading.enumerate() if t.name.startswith("HTTPServer")]


def test_auto_picks_cheroot_for_wsgi_and_uvicorn_for_asgi(bus):
    assert HTTPServer(bus, wsgi_hello, "127.0.0.1:0").server == "cheroot"
    assert HTTPServer(bus, asgi_hello, "127.0.0.1:0", protocol="asgi").server == "uvicorn"
    assert HTTPServer(bus, asgi_hello, "127.0.0.1:0", protocol="auto").protocol == "asgi"
    assert HTTPServer(bus, wsgi_hello, "127.0.0.1:0", protocol="auto").protocol == "wsgi"
    assert set(SERVERS) == {"cheroot", "waitress", "uvicorn", "stdlib", "granian"}
    assert protocols_of("uvicorn") == ("asgi",) and protocols_of("auto") == ("wsgi", "asgi")


def test_auto_falls_back_to_stdlib_without_cheroot(bus, monkeypatch):
    monkeypatch.setitem(sys.modules, "cheroot", None)  # what Python does for a package that is absent
    assert HTTPServer(bus, wsgi_hello, "127.0.0.1:0").server == "stdlib"


def test_a_server_that_is_not_installed_is_named_with_its_extra(bus, monkeypatch):
    monkeypatch.setitem(sys.modules, "waitress", None)
    with pytest.raises(ValueError) as caught:
        HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="waitress")
    assert str(caught.value) == "server 'waitress' is not installed: pip install wspbus[waitress]"


@pytest.mark.parametrize("kwargs, message", [
    ({"server": "gunicorn"}, "unknown server 'gunicorn': expected auto, cheroot, waitress, uvicorn, stdlib, granian"),
    ({"protocol": "cgi"}, "unknown protocol 'cgi': expected 'wsgi', 'asgi' or 'auto'"),
    ({"threads": 0}, "threads must be a positive number, not 0"),
])
def test_bad_settings_are_one_line(bus, kwargs, message):
    with pytest.raises(ValueError) as caught:
        HTTPServer(bus, wsgi_hello, "127.0.0.1:0", **kwargs)
    assert str(caught.value) == message


def test_bad_bind_text_is_a_value_error(bus):
    with pytest.raises(ValueError, match="^bad bind 'nowhere'"):
        HTTPServer(bus, wsgi_hello, "nowhere")


def test_wsgi_app_on_uvicorn_and_asgi_app_on_cheroot_are_adapted(bus):
    on_uvicorn = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="uvicorn", protocol="wsgi")
    on_cheroot = HTTPServer(bus, asgi_hello, "127.0.0.1:0", server="cheroot", protocol="asgi")
    on_uvicorn.subscribe()
    on_cheroot.subscribe()
    bus.start()
    assert get(on_uvicorn.address, "/w")[1].startswith(b"hello /w")
    assert get(on_cheroot.address, "/a")[1].startswith(b"hello /a")


def test_an_app_across_the_protocol_boundary_without_a2wsgi_is_refused_in_one_line(bus, monkeypatch):
    monkeypatch.setitem(sys.modules, "a2wsgi", None)  # what an installation without a2wsgi gives
    with pytest.raises(ValueError) as caught:
        HTTPServer(bus, asgi_hello, "127.0.0.1:0", server="cheroot", protocol="asgi")
    assert str(caught.value) == "serving an ASGI app as WSGI needs a2wsgi: pip install 'wspbus[asgi]'"


def three_argument_asgi(scope, receive, send):  # not async itself: it returns the coroutine
    return asgi_hello(scope, receive, send)


def test_auto_detects_the_protocol_by_the_rule_a_site_uses(bus):
    """One detector: an ASGI app may be a plain function taking (scope, receive, send), or a partial."""
    plain = HTTPServer(bus, three_argument_asgi, "127.0.0.1:0", protocol="auto")
    partial = HTTPServer(bus, functools.partial(asgi_hello), "127.0.0.1:0", protocol="auto")
    assert (plain.protocol, plain.server, partial.protocol) == ("asgi", "uvicorn", "asgi")
    plain.subscribe()
    bus.start()
    assert get(plain.address, "/plain")[1].startswith(b"hello /plain")


def test_socket_names_count_only_the_servers_of_their_own_bus_in_start_order(bus):
    """The name a listener goes by across a restart is the bind text, numbered among the servers
    of its bus on the same text in the order the bus starts them; servers elsewhere change nothing."""
    other = new_bus()
    try:
        stray = HTTPServer(other, wsgi_hello, "127.0.0.1:0", server="stdlib")  # built first, on another bus
        stray.subscribe()
        other.start()
        second = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="stdlib")  # built before the first
        first = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="stdlib")
        first.subscribe()
        second.subscribe()
        for _ in range(2):  # a stop releases the names; the next start claims the same ones
            bus.start()
            names = (first.socket_name, second.socket_name, stray.socket_name)
            assert names == ("127.0.0.1:0", "127.0.0.1:0#2", "127.0.0.1:0")
            bus.stop()
            assert (first.socket_name, second.socket_name) == (None, None)
    finally:
        exit_quietly(other)


def test_the_a2wsgi_threads_of_an_adapted_app_end_at_stop_and_come_back_at_start(bus):
    before = set(threading.enumerate())
    on_uvicorn = HTTPServer(bus, wsgi_hello, "127.0.0.1:0", server="uvicorn", protocol="wsgi")
    on_cheroot = HTTPServer(bus, asgi_hello, "127.0.0.1:0", server="cheroot", protocol="asgi")
    on_uvicorn.subscribe()
    on_cheroot.subscribe()
    for _ in range(2):
        bus.start()
        assert get(on_uvicorn.address, "/w")[1].startswith(b"hello /w")
        assert get(on_cheroot.address, "/a")[1].startswith(b"hello /a")
        bus.stop()
        assert threads_left_running(before) == []


def test_stop_without_start_is_harmless(bus):
    plugin = serve(bus, "cheroot", "127.0.0.1:0")
    bus.stop()
    assert plugin.address is None and not plugin.running


@pytest.mark.parametrize("server", ["cheroot", "stdlib", "waitress"])
def test_an_exit_asked_for_by_a_request_is_not_held_up_by_that_request(bus, server):
    """The stop runs on the request's thread (CherryPy's rule); the server's stop does not wait
    for the request that called it, so the exit neither waits out the graceful timeout (10 s
    here) nor leaves that request unanswered."""

    def exit_app(environ, start_response):
        bus.exit()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"bye"]

    plugin = serve(bus, server, "127.0.0.1:0", app=exit_app)
    bus.start()
    began = time.monotonic()
    status, body = get(plugin.address, "/exit", timeout=20)
    assert (status, body) == (200, b"bye")
    assert time.monotonic() - began < 5 and bus.state is states.EXITING


#: The servers with a pool of threads that stop accepting while every thread is busy.
THREAD_POOLS = ["cheroot", "waitress"]


@pytest.mark.parametrize("server", THREAD_POOLS)
def test_with_every_thread_busy_the_next_connection_is_left_to_another_process(bus, server):
    """A server sharing its listener with other workers does not take (and queue) a connection it
    has no free thread for: another process accepting on the same socket gets it. Once its thread
    is free, it accepts again. (Without the pause, this fails 4 runs in 5 on cheroot: the
    server's idle connection loop usually accepts first.)"""
    with socket.create_server(("127.0.0.1", 0)) as listener:  # the test keeps a descriptor: the "other worker"
        address = listener.getsockname()
        slow = SlowApp("wsgi", delay=30)
        plugin = HTTPServer(bus, slow, "fd://%d" % os.dup(listener.fileno()), server=server, threads=1,
                            access_log=False)
        plugin.subscribe()
        bus.start()
        answers = []
        first = threading.Thread(target=lambda: answers.append(get(address, "/first")))
        first.start()
        assert slow.entered.wait(10)  # the server's only thread is taken
        with socket.create_connection(address, timeout=5) as second:
            second.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            listener.settimeout(5)
            taken, _ = listener.accept()  # the server left it in the queue: here it is
            with taken:
                assert taken.recv(4096).startswith(b"GET /second ")
        slow.release.set()
        first.join(10)
        assert answers and answers[0][0] == 200
        assert get(address, "/third")[0] == 200  # its thread free again, the server accepts again
