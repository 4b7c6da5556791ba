"""waitress specifics: the drain ends at the graceful timeout, closing what is still running."""

from __future__ import annotations

import http.client
import logging
import threading
import time

import pytest

from serving import SlowApp, get
from support import DEADLINE
from wspbus.servers import HTTPServer


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_graceful_timeout_closes_a_request_that_overruns(bus):
    recorder = Recorder()
    logging.getLogger("wspbus").addHandler(recorder)
    bus.graceful_timeout = 0.3
    app = SlowApp("wsgi", delay=1.2)
    plugin = HTTPServer(bus, app, "127.0.0.1:0", server="waitress")
    plugin.subscribe()
    outcome = []

    def client():
        conn = http.client.HTTPConnection(*plugin.address, timeout=5)
        try:
            conn.request("GET", "/stuck")
            outcome.append(conn.getresponse().status)
        except (http.client.HTTPException, OSError) as exc:
            outcome.append((type(exc).__name__, time.monotonic()))
        finally:
            conn.close()

    try:
        bus.start()
        thread = threading.Thread(target=client)
        thread.start()
        assert app.entered.wait(10)
        began = time.monotonic()
        bus.stop()
        thread.join(5)
    finally:
        logging.getLogger("wspbus").removeHandler(recorder)
    [(error, when)] = outcome
    assert error in ("RemoteDisconnected", "ConnectionResetError")
    assert when - began < 1.0 and not app.finished.is_set()  # cut at the timeout, not at the app's end
    assert "waitress: requests still running after 0.3 s; closing their connections" in recorder.messages
    assert app.finished.wait(5)
    assert plugin.httpserver.closed.wait(5)  # and once its worker is gone, the rest is closed


@pytest.fixture(autouse=True)
def _quiet_waitress():
    """waitress logs the cancelled task at ERROR; expected here."""
    logger = logging.getLogger("waitress")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_a_request_that_waits_for_a_thread_logs_nothing(bus):
    """waitress warns for every request queued behind busy threads: under load, a line per request.
    (A new connection waits in the listener's queue while every thread is busy; a request on a
    connection waitress already holds, kept alive here, still queues behind them.)"""
    queue_log, waitress_log = logging.getLogger("waitress.queue"), logging.getLogger("waitress")
    levels = queue_log.level, waitress_log.level
    queue_log.setLevel(logging.NOTSET)  # as in a fresh process (and not as _quiet_waitress made it)
    waitress_log.setLevel(logging.NOTSET)
    recorder = Recorder()
    queue_log.addHandler(recorder)
    slow = SlowApp("wsgi", delay=10)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            return slow(environ, start_response)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"fast"]

    plugin = HTTPServer(bus, app, "127.0.0.1:0", server="waitress", threads=1)
    plugin.subscribe()
    answers = []
    client = threading.Thread(target=lambda: answers.append(get(plugin.address, "/slow")))
    bus.start()
    kept = http.client.HTTPConnection(*plugin.address, timeout=DEADLINE)
    try:
        kept.request("GET", "/first")
        assert kept.getresponse().read() == b"fast"  # kept alive: waitress holds this connection
        client.start()
        assert slow.entered.wait(DEADLINE)  # the only thread is busy
        kept.request("GET", "/second")
        queued = plugin.httpserver._server.task_dispatcher.queue
        deadline = time.monotonic() + DEADLINE
        while not queued and time.monotonic() < deadline:  # test side: until waitress queued it
            time.sleep(0.005)
        assert queued
        slow.release.set()
        assert kept.getresponse().read() == b"fast"
        client.join(DEADLINE)
    finally:
        slow.release.set()
        kept.close()
        queue_log.removeHandler(recorder)
        queue_log.setLevel(levels[0])
        waitress_log.setLevel(levels[1])
    assert answers == [(200, b"slow")]
    assert recorder.messages == []
