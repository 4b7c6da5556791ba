"""ServerAdapter with servers of both shapes (cheroot's prepare/serve, CherryPy-era start/ready),
and a server thread that dies: the bus exits with a non-zero status."""

from __future__ import annotations

import logging
import threading
import wsgiref.simple_server

import pytest

from serving import assert_refused, get, wsgi_hello
from wspbus._core.bus import states
from wspbus.servers import ServerAdapter


def test_cheroot_server_object_cherrypy_style(bus):
    from cheroot import wsgi

    httpserver = wsgi.Server(("127.0.0.1", 0), wsgi_hello)
    adapter = ServerAdapter(bus, httpserver, bind_addr=("127.0.0.1", 0))
    adapter.subscribe()
    assert ServerAdapter.start.priority == 75
    bus.start()
    address = httpserver.bind_addr  # cheroot's prepare() ran in the start listener: the real port
    assert adapter.running and address[1] != 0
    assert get(address, "/cp")[1].startswith(b"hello /cp")
    bus.stop()
    assert not adapter.running
    assert_refused(address)


class LegacyServer:
    """A CherryPy-era server: start() binds and serves forever, ``ready`` says when it listens."""

    def __init__(self):
        self.ready = False
        self.httpd = None

    def start(self):
        self.httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, wsgi_hello)
        self.ready = True
        self.httpd.serve_forever(poll_interval=0.05)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.ready = False


def test_start_stop_server_is_ready_when_start_returns(bus):
    legacy = LegacyServer()
    ServerAdapter(bus, legacy).subscribe()
    bus.start()
    assert legacy.ready
    assert get(legacy.httpd.server_address, "/legacy")[0] == 200
    bus.stop()


def test_graceful_restarts_only_a_serving_server_on_a_started_bus(bus):
    legacy = LegacyServer()
    adapter = ServerAdapter(bus, legacy)
    adapter.subscribe()
    bus.start()
    first = legacy.httpd
    bus.graceful()
    assert legacy.ready and legacy.httpd is not first  # restarted
    bus.stop()
    bus.graceful()  # after the stop: nothing to restart
    assert not legacy.ready and not adapter.running


class DyingServer:
    """prepare()/serve()/stop(); serve() raises once ``die`` is set, as a crashed server would."""

    def __init__(self, error=None):
        self.error = error or OSError("listening socket vanished")
        self.die = threading.Event()
        self.stopped = threading.Event()
        self.stop_calls = 0

    def prepare(self):
        pass

    def serve(self):
        self.die.wait(10)
        if not self.stopped.is_set():
            raise self.error

    def stop(self):
        self.stop_calls += 1
        self.stopped.set()
        self.die.set()  # serve() returns: a requested stop


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))


def test_server_thread_that_dies_exits_the_bus_non_zero(bus):
    recorder = Recorder()
    logging.getLogger("wspbus").addHandler(recorder)
    try:
        server = DyingServer()
        ServerAdapter(bus, server, bind_addr=("127.0.0.1", 8080)).subscribe()
        exiting = threading.Event()
        health_at_exit = []
        bus.subscribe("exit", lambda: health_at_exit.extend(bus.publish("health")))
        bus.watch_state(lambda state: exiting.set() if state is states.EXITING else None)
        bus.start()
        assert bus.publish("health") == [True]
        server.die.set()
        assert exiting.wait(10), "the bus did not exit after its server died"
        bus._wait_exit_done()
    finally:
        logging.getLogger("wspbus").removeHandler(recorder)
    assert bus.exit_code == 1
    assert health_at_exit == [False]  # what liveness and the systemd watchdog see
    assert server.stop_calls == 1  # cleaned up once, by the bus's stop
    [(level, message)] = [entry for entry in recorder.messages if "died" in entry[1]]
    assert level == logging.ERROR
    assert message.startswith(
        "HTTP server http://127.0.0.1:8080 died: OSError: listening socket vanished; exiting")


def test_a_death_whose_message_has_several_lines_is_logged_on_one_line(bus):
    """The one-line rule of every wspbus message: the lines are folded, none is dropped."""
    recorder = Recorder()
    logging.getLogger("wspbus").addHandler(recorder)
    try:
        server = DyingServer(RuntimeError("worker pool gone\n  3 threads lost\n"))
        ServerAdapter(bus, server, bind_addr=("::1", 8080)).subscribe()
        exiting = threading.Event()
        bus.watch_state(lambda state: exiting.set() if state is states.EXITING else None)
        bus.start()
        server.die.set()
        assert exiting.wait(10), "the bus did not exit after its server died"
        bus._wait_exit_done()
    finally:
        logging.getLogger("wspbus").removeHandler(recorder)
    [message] = [message for _, message in recorder.messages if "died" in message]
    assert message.splitlines()[0] == (
        "HTTP server http://[::1]:8080 died: RuntimeError: worker pool gone 3 threads lost; exiting")


def test_stop_on_request_is_not_a_death(bus):
    server = DyingServer()
    ServerAdapter(bus, server).subscribe()
    bus.start()
    bus.stop()
    assert bus.exit_code == 0 and bus.state is states.STOPPED


def test_adapter_without_server_fails_start(bus):
    ServerAdapter(bus).subscribe()
    with pytest.raises(Exception, match="ServerAdapter has no httpserver to start"):
        bus.start()


# -- CherryPy's shape: bound_addr, wait(), restart(), and its bus (issue #10) --------------


def cheroot_adapter(bus):
    from cheroot import wsgi

    return ServerAdapter(bus, wsgi.Server(("127.0.0.1", 0), wsgi_hello), bind_addr=("127.0.0.1", 0))


def test_bound_addr_is_the_port_the_kernel_chose(bus):
    adapter = cheroot_adapter(bus)
    adapter.subscribe()
    assert adapter.bound_addr == ("127.0.0.1", 0)  # not bound yet
    bus.start()
    host, port = adapter.bound_addr
    assert host == "127.0.0.1" and port != 0
    assert get((host, port), "/bound")[0] == 200


def test_wait_returns_once_the_server_listens(bus):
    adapter = cheroot_adapter(bus)
    adapter.subscribe()
    waited = []
    waiter = threading.Thread(target=lambda: (adapter.wait(), waited.append(adapter.bound_addr)))
    waiter.start()
    bus.start()
    waiter.join(5)
    assert waited and get(waited[0], "/waited")[0] == 200
    bus.stop()


def test_wait_raises_what_ended_the_server(bus):
    server = DyingServer()
    adapter = ServerAdapter(bus, server)
    adapter.subscribe()
    bus.start()
    server.die.set()
    bus.wait(states.EXITING)
    with pytest.raises(OSError, match="listening socket vanished"):
        adapter.wait()


def test_restart_serves_again(bus):
    adapter = cheroot_adapter(bus)
    adapter.subscribe()
    bus.start()
    adapter.restart()
    assert adapter.running and get(adapter.bound_addr, "/again")[0] == 200


def test_the_adapter_runs_on_cherrypys_own_bus():
    """No graceful_timeout, no exit_code, its own state objects: start, graceful, a death."""
    from cherrypy.process import wspbus as cherrypy_wspbus

    engine = cherrypy_wspbus.Bus()
    adapter = cheroot_adapter(engine)
    adapter.subscribe()
    engine.start()
    try:
        assert get(adapter.bound_addr, "/cp")[0] == 200
        engine.graceful()  # restarts a serving server on a STARTED bus
        assert adapter.running and get(adapter.bound_addr, "/cp")[0] == 200
        engine.stop()
        assert not adapter.running

        server = DyingServer()
        adapter.unsubscribe()
        ServerAdapter(engine, server).subscribe()
        engine.start()
        server.die.set()
        engine.wait(engine.states.EXITING)
        assert server.stop_calls == 1 and not hasattr(engine, "exit_code")
    finally:
        engine.exit()
