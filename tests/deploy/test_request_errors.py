"""An app that raises in a request: one log record with the time, method, path, mount and app, and
the traceback, whatever server the site runs on; the client gets a 500."""

from __future__ import annotations

import re
import signal
import textwrap

import pytest
from serve_support import get, serve

APPS = """
    def wsgi(environ, start_response):
        raise RuntimeError("the WSGI app broke")


    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raise RuntimeError("the ASGI app broke")


    def fine(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]
"""
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@pytest.fixture
def apps(tmp_path):
    (tmp_path / "failing.py").write_text(textwrap.dedent(APPS))
    return tmp_path


@pytest.mark.parametrize("mounts, path, record, error", [
    (["/=failing:wsgi"], "/a/b", r"GET /a/b failed in the app at / \(failing:wsgi, wsgi\)", "the WSGI app broke"),
    (["/=failing:fine", "/api=failing:wsgi"], "/api/x", r"GET /api/x failed in the app at /api \(failing:wsgi, wsgi\)",
     "the WSGI app broke"),
    (["/=failing:fine", "/api=failing:asgi"], "/api/x", r"GET /api/x failed in the app at /api \(failing:asgi, asgi\)",
     "the ASGI app broke"),
    (["/=failing:asgi"], "/x", r"GET /x failed in the app at / \(failing:asgi, asgi\)", "the ASGI app broke"),
    (["/=failing:wsgi", "/api=failing:asgi"], "/w", r"GET /w failed in the app at / \(failing:wsgi, wsgi\)",
     "the WSGI app broke"),
], ids=["wsgi-only", "wsgi-site-with-mounts", "mixed-site-asgi-app", "asgi-only", "mixed-site-wsgi-app"])
def test_a_failing_request_is_one_record_with_its_context(spawn, apps, mounts, path, record, error, mode):
    """In the supervisor's mode the record's line names the worker that served the request."""
    child, urls = serve(spawn, *mode.options, "--chdir", apps, "-b", "127.0.0.1:0", *mounts)
    assert get(urls[0], path) == (500, b"Internal Server Error\n")
    child.expect(r"^%s ERROR %s%s$" % (TIME, mode.log_tag, record))
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    output = child.output()
    assert output.count("Traceback (most recent call last)") == 1, output
    assert re.search(r"^RuntimeError: %s$" % error, output, re.M), output
    assert output.count(error) == 2, output  # where it was raised, and the exception line
    assert "Exception in ASGI application" not in output, output
