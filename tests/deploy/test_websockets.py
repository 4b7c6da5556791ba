"""Websockets through `wspbus serve`: what `pip install "wspbus[all]"` brings is enough for a handshake
through a mixed site, and a site that cannot do websockets says so when it starts."""

from __future__ import annotations

import re
import textwrap
import tomllib

import pytest
from serve_support import ROOT, SUPERVISED, serve

MIXED_SITE = """
    def page(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a WSGI page"]


    async def echo(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket" and scope["path"] == "/ws/echo", scope
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        assert (await receive())["type"] == "websocket.disconnect"
"""


@pytest.fixture
def mixed_site(tmp_path):
    (tmp_path / "mixed.py").write_text(textwrap.dedent(MIXED_SITE))
    return tmp_path


def test_the_asgi_extra_brings_a_websocket_library():
    with open(ROOT / "pyproject.toml", "rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    assert any(re.match(r"websockets\b", requirement) for requirement in extras["asgi"]), extras["asgi"]
    assert "asgi" in extras["all"][0]


def test_a_websocket_round_trip_through_a_mixed_site(spawn, mixed_site, mode):
    from websockets.sync.client import connect

    child, urls = serve(spawn, *mode.options, "--chdir", mixed_site, "-b", "127.0.0.1:0", "/=mixed:page",
                        "/ws=mixed:echo")
    with connect(urls[0].replace("http://", "ws://") + "/ws/echo", open_timeout=10, close_timeout=5) as client:
        client.send("hello")
        assert client.recv(timeout=10) == "echo: hello"
    assert not any("websocket" in line.lower() for line in child.lines), child.lines


NO_WEBSOCKETS = """
    import sys
    sys.modules["websockets"] = sys.modules["wsproto"] = None  # as if neither were installed
"""


def websocket_warnings(child, mode) -> list[str]:
    """The lines about websockets so far; exactly the one expected, in ``mode``'s form."""
    warnings = [line for line in child.lines if "websocket" in line.lower()]
    assert len(warnings) == 1, child.lines
    assert re.search(r"WARNING %sThis ASGI site cannot accept websockets: no websocket library is installed "
                     r"\(pip install websockets\)$" % mode.log_tag, warnings[0]), warnings
    return warnings


def test_an_asgi_site_without_a_websocket_library_says_so_once_at_start(spawn, mixed_site, mode):
    """In the supervisor's mode the worker says it (the site is imported there, not in the
    supervisor), and its line carries its ``[worker PID]``."""
    (mixed_site / "no_websockets.py").write_text(textwrap.dedent(NO_WEBSOCKETS))
    child, urls = serve(spawn, *mode.options, "--chdir", mixed_site, "--import", "no_websockets",
                        "-b", "127.0.0.1:0", "/=mixed:page", "/ws=mixed:echo")
    websocket_warnings(child, mode)


def test_with_several_workers_the_warning_is_still_said_once(spawn, mixed_site):
    """Supervisor mode only (a single process has one say): the worker of slot 0 says it, not each."""
    (mixed_site / "no_websockets.py").write_text(textwrap.dedent(NO_WEBSOCKETS))
    child, urls = serve(spawn, "--workers", "3", "--chdir", mixed_site, "--import", "no_websockets",
                        "-b", "127.0.0.1:0", "/=mixed:page", "/ws=mixed:echo")
    child.expect(r"^wspbus: supervisor \d+, 3 workers: ")  # all started: each had its say by now
    websocket_warnings(child, SUPERVISED)
