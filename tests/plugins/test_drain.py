"""Drainer: a real site process, real SIGTERMs, a slow request in flight and real connections.

The site in the child is a threaded stdlib WSGI server wired to the bus as a server adapter is:
it serves from 'start' and, at 'stop', stops accepting, closes its listening socket and then
waits for the requests in flight.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import statistics
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from support import http_get
from wspbus import Bus, states
from wspbus.plugins.health import Health
from wspbus.plugins.drain import Drainer

DEADLINE = 15.0

SITE = """
import logging, signal, socketserver, sys, threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wspbus import Bus
from wspbus.plugins.health import Health
from wspbus.plugins.drain import Drainer

logging.basicConfig(level=logging.INFO, format="%(message)s")
delay, mode = float(sys.argv[1]), sys.argv[2]
release = threading.Event()

class Server(socketserver.ThreadingMixIn, WSGIServer):
    block_on_close = True  # server_close() waits for the requests in flight

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        print("slow request began", flush=True)
        release.wait(30)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done " + environ["PATH_INFO"].encode()]

bus = Bus(graceful_timeout=10)
health = Health(bus)
health.subscribe()
httpd = make_server("127.0.0.1", 0, health.wrap_wsgi(app), server_class=Server, handler_class=Quiet)
serving = []

def start():
    serving.append(threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}))
    serving[0].start()

def stop():
    if serving:
        httpd.shutdown()
        httpd.socket.close()
        print("listener closed", flush=True)
        httpd.server_close()
        print("requests in flight done", flush=True)

bus.subscribe("start", start, priority=75)
bus.subscribe("stop", stop)
if mode == "signal_handler":
    from wspbus.plugins.signals import SignalHandler
    handler = SignalHandler(bus)
    handler.handlers["SIGUSR1"] = release.set
    Drainer(bus, delay, signal_handler=handler).subscribe()
    handler.subscribe()
else:
    signal.signal(signal.SIGUSR1, lambda *args: release.set())
    Drainer(bus, delay).subscribe()
bus.start()
print("serving", httpd.server_address[1], flush=True)
bus.block()
"""

MODES = ["standalone", "signal_handler"]


def start_site(spawn, delay, mode):
    child = spawn(SITE, str(delay), mode)
    port = int(child.expect(r"serving (\d+)").group(1))
    return child, port


def exit_time(child, since):
    """Seconds from ``since`` until the child ended, seen on a pidfd (Popen.wait(timeout) polls
    with a growing sleep, so it would add up to tens of milliseconds), and its exit status."""
    pidfd = os.pidfd_open(child.pid)
    try:
        assert select.select([pidfd], [], [], DEADLINE)[0], "the site did not exit"
        ended = time.monotonic()
    finally:
        os.close(pidfd)
    return child.wait(), ended - since


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_drains_then_finishes_the_request_in_flight_and_refuses_new_ones(spawn, mode):
    delay = 1.0
    child, port = start_site(spawn, delay, mode)
    assert http_get("127.0.0.1", port, "/readyz")[0] == 200
    slow = []
    client = threading.Thread(target=lambda: slow.append(http_get("127.0.0.1", port, "/slow", timeout=DEADLINE)))
    client.start()
    child.expect("slow request began")

    signalled = time.monotonic()
    child.send(signal.SIGTERM)
    child.expect("SIGTERM: draining")
    # Draining: not ready, yet alive and still serving new connections.
    assert http_get("127.0.0.1", port, "/readyz") == (503, b"unavailable: draining\n")
    assert http_get("127.0.0.1", port, "/livez")[0] == 200
    assert http_get("127.0.0.1", port, "/page") == (200, b"done /page")

    child.expect("listener closed")
    closed = time.monotonic()
    assert refused(port)
    assert not slow  # still in flight
    child.send(signal.SIGUSR1)  # let the slow request finish
    client.join(DEADLINE)
    assert slow == [(200, b"done /slow")]
    status, took = exit_time(child, signalled)
    assert status == 0
    print("drain %.1f s: SIGTERM -> listener closed %.3f s, -> exit %.3f s" % (delay, closed - signalled, took))
    assert delay <= closed - signalled < delay + 2.0


@pytest.mark.parametrize("mode", MODES)
def test_idle_site_without_drain_delay_exits_at_once(spawn, mode):
    times = []
    for _ in range(3):
        child, port = start_site(spawn, 0, mode)
        signalled = time.monotonic()
        child.send(signal.SIGTERM)
        status, took = exit_time(child, signalled)
        assert status == 0
        times.append(took)
    print("drain 0: SIGTERM -> exit %s s (median %.3f)" % (", ".join("%.3f" % t for t in times), statistics.median(times)))
    assert statistics.median(times) < 0.5  # well under 0.1 s on an idle machine; CI is shared


@pytest.mark.parametrize("mode", MODES)
def test_second_sigterm_during_the_drain_exits_at_once(spawn, mode):
    child, port = start_site(spawn, 30, mode)
    child.send(signal.SIGTERM)
    child.expect("SIGTERM: draining")
    signalled = time.monotonic()
    child.send(signal.SIGTERM)
    status, took = exit_time(child, signalled)
    assert status == 128 + signal.SIGTERM and took < 2.0


@pytest.mark.parametrize("mode", MODES)
def test_sigint_exits_without_the_delay(spawn, mode):
    child, port = start_site(spawn, 30, mode)
    signalled = time.monotonic()
    child.send(signal.SIGINT)
    status, took = exit_time(child, signalled)
    assert status == 0 and took < 2.0


def test_an_exit_begun_elsewhere_cuts_the_drain_short():
    bus = Bus(graceful_timeout=5)
    health = Health(bus)
    health.subscribe()
    drainer = Drainer(bus, 30)
    drainer.subscribe()
    try:
        bus.start()
        drainer.signal_received(signal.SIGTERM)
        assert drainer.draining
        [drain] = [t for t in threading.enumerate() if t.name == "wspbus drain"]
        assert _wait_for(lambda: health.draining) and health.ready() == (False, "draining")
        begun = time.monotonic()
        bus.exit()  # a server died, say
        drain.join(DEADLINE)
        assert not drain.is_alive() and time.monotonic() - begun < 1.0
    finally:
        drainer.unsubscribe()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back


def test_sigterm_during_a_restart_cancels_the_re_exec():
    bus = Bus(graceful_timeout=5)
    drainer = Drainer(bus, 30)
    drainer.subscribe()
    try:
        bus.execv = True  # as restart() does before exiting
        bus.state = states.STOPPING
        drainer.signal_received(signal.SIGTERM)
        assert bus.execv is False
        assert _wait_for(lambda: bus.state is states.EXITING)  # exited at once: no drain when not STARTED
    finally:
        drainer.unsubscribe()


@pytest.mark.parametrize("delay", [-1, float("nan"), "5", True])
def test_bad_drain_delay_is_one_clear_line(delay):
    with pytest.raises(ValueError) as caught:
        Drainer(Bus(), delay)
    assert str(caught.value) == "drain_delay=%r: expected a number of seconds >= 0" % (delay,)


def _wait_for(condition, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # test side only
    return True


# -- examples/kubernetes: the Deployment, the image and the site agree, and the site drains

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"


def yaml_value(text: str, key: str, after: str | None = None) -> str:
    """The value of the first ``key:`` line (after the line holding ``after``, if given)."""
    if after is not None:
        text = text[text.index(after):]
    return re.search(r"^\s*%s:\s*(\S+)\s*$" % re.escape(key), text, re.M).group(1)


def test_example_deployment_image_and_site_agree():
    deployment = (EXAMPLE / "deployment.yaml").read_text()
    site = tomllib.loads((EXAMPLE / "site.toml").read_text())
    drain_delay = site["plugins"]["drain"]["drain_delay"]
    graceful_timeout = site["site"]["graceful_timeout"]
    assert int(yaml_value(deployment, "terminationGracePeriodSeconds")) > drain_delay + graceful_timeout
    assert drain_delay > 0 and not re.search(r"^\s*preStop:", deployment, re.M)  # the drain is in the site
    assert yaml_value(deployment, "path", after="readinessProbe") == site["plugins"]["health"]["ready_path"]
    assert yaml_value(deployment, "path", after="livenessProbe") == site["plugins"]["health"]["live_path"]
    assert site["server"][0]["bind"] == [":%s" % yaml_value(deployment, "containerPort")]
    assert _reapers_built_for(EXAMPLE / "site.toml") == 1  # PID 1 duties, once
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", (EXAMPLE / "Dockerfile").read_text(), re.M).group(1)
    # Exec form: wspbus itself is PID 1, no shell between it and the SIGTERM.
    assert json.loads(entrypoint) == ["wspbus", "serve", "--config", "/srv/kubernetes/site.toml"]


def test_example_site_drains_on_sigterm(spawn, tmp_path):
    """The example's site.toml, with a 1 s drain instead of 10 and a port chosen by the kernel."""
    text = (EXAMPLE / "site.toml").read_text()
    text = re.sub(r"^drain_delay = .*$", "drain_delay = 1.0", text, flags=re.M)
    text = text.replace('"../minimal"', json.dumps(str(EXAMPLE.parent / "minimal")))
    config = tmp_path / "site.toml"
    config.write_text(text)
    child = spawn([sys.executable, "-m", "wspbus", "serve", "--config", str(config), "-b", "127.0.0.1:0"])
    port = int(child.expect(r"serving http://127.0.0.1:(\d+)").group(1))
    assert http_get("127.0.0.1", port, "/readyz")[0] == 200

    signalled = time.monotonic()
    child.send(signal.SIGTERM)
    child.expect("SIGTERM: draining")
    assert http_get("127.0.0.1", port, "/readyz")[0] == 503
    assert http_get("127.0.0.1", port, "/") == (200, b"Hello from wspbus!\n")
    status, took = exit_time(child, signalled)
    assert status == 0 and refused(port)
    print("example site, drain 1.0 s: SIGTERM -> exit %.3f s" % took)
    assert 1.0 <= took < 3.0


def _reapers_built_for(site_toml) -> int:
    from wspbus import Bus
    from wspbus.deploy import config
    from wspbus.deploy.plugin_table import build_plugins
    from wspbus.plugins import ChildReaper

    built = build_plugins(Bus(), config.load(str(site_toml)))
    return sum(isinstance(plugin, ChildReaper) for plugin in built.values())
