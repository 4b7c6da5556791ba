"""wspbus.testing: a site on an ephemeral port for the length of a test, and its pytest fixture."""

from __future__ import annotations

import threading

import pytest
from serve_support import get
from support import threads_left_running

import wspbus
from wspbus.plugins import SimplePlugin
from wspbus.testing import running_site  # the wspbus_site fixture comes from the pytest11 entry point


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["SCRIPT_NAME"].encode()]


async def hello_async(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"async " + scope["root_path"].encode()})


class Recorder(SimplePlugin):
    events: list[str] = []

    def start(self):
        self.events.append("start")

    def stop(self):
        self.events.append("stop")


def test_the_fixture_serves_sites_side_by_side_on_ephemeral_ports(wspbus_site):
    one = wspbus_site(hello)
    two = wspbus_site({"/": hello, "/async": hello_async})
    assert one.url != two.url and not one.url.endswith(":0")
    assert one.get("/") == (200, b"hello ")
    assert two.get("/async/x") == (200, b"async /async")
    assert get(two.url, "/") == (200, b"hello ")
    assert one.bus is not wspbus.bus and one.bus.state is wspbus.states.STARTED


def test_running_site_tears_everything_down(tmp_path):
    Recorder.events = []
    before = set(threading.enumerate())
    with running_site(hello, plugins=[Recorder]) as site:
        assert site.get("/") == (200, b"hello ")
        assert Recorder.events == ["start"]
    assert Recorder.events == ["start", "stop"]
    assert site.bus.state is wspbus.states.EXITING
    with pytest.raises(OSError):
        site.get("/", timeout=2)  # the port is closed
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive() and not t.daemon]
    assert leftover == []


def test_a_site_that_cannot_start_raises_and_leaves_nothing_running():
    with running_site(hello) as first:
        taken = first.url.removeprefix("http://")
        with pytest.raises(Exception, match="address already in use"):
            with running_site(hello, bind=taken):
                pass


@pytest.mark.parametrize("server", ["cheroot", "uvicorn"])
def test_a_mixed_site_gives_back_a2wsgis_threads_when_it_exits(server):
    before = set(threading.enumerate())
    with running_site({"/": hello, "/async": hello_async}, server=server) as site:
        assert site.get("/async/x") == (200, b"async /async")
        assert site.get("/") == (200, b"hello ")
        adapted = [t.name for t in set(threading.enumerate()) - before if "a2wsgi" in t.name or "WSGI" in t.name]
        assert adapted  # an event loop for the ASGI app on cheroot; a worker for the WSGI app on uvicorn
    assert threads_left_running(before) == []
