"""The shipped examples, run as a deployer would, checked over real HTTP."""

from __future__ import annotations

import json
import signal
import sys

import pytest
from serve_support import EXAMPLES, get, serve

MIXED = EXAMPLES / "mixed_site"


@pytest.mark.parametrize("server, lifespan", [("auto", True), ("cheroot", False)])
def test_the_mixed_site_gives_each_framework_its_mount_point(spawn, server, lifespan):
    child, urls = serve(spawn, "--config", MIXED / "site.toml", "--bind", "127.0.0.1:0", "--server", server)
    url = urls[0]

    def answer(path):
        status, body = get(url, path)
        assert status == 200, body
        return json.loads(body)

    assert answer("/some/where") == {"app": "plain", "script_name": "", "path_info": "/some/where"}
    assert answer("/flask/a/b") == {"app": "flask", "script_name": "/flask", "path_info": "/a/b",
                                    "link": "/flask/page"}
    assert answer("/bottle/c") == {"app": "bottle", "script_name": "/bottle/", "path_info": "/c",
                                   "link": "/bottle/page"}
    assert answer("/starlette/d/e") == {"app": "starlette", "root_path": "/starlette", "path": "/starlette/d/e",
                                        "link": "/starlette/page", "lifespan": lifespan}
    assert answer("/flaskish") == {"app": "plain", "script_name": "", "path_info": "/flaskish"}
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_the_mixed_site_banner_lists_every_mount(spawn):
    child = spawn([sys.executable, "-m", "wspbus", "serve", "--config", str(MIXED / "site.toml"), "-b", "127.0.0.1:0"])
    child.expect(r"^wspbus: serving http://127\.0\.0\.1:\d+$")
    for line in ("/ -> plain_app:app (wsgi)", "/flask -> flask_app:app (wsgi)", "/bottle -> bottle_app:app (wsgi)",
                 "/starlette -> starlette_app:app (asgi)"):
        child.expect("^wspbus: mounted %s$" % line.replace("(", r"\(").replace(")", r"\)"))


def test_the_minimal_example_serves_through_quickstart(spawn):
    child = spawn([sys.executable, str(EXAMPLES / "minimal" / "hello.py"), "127.0.0.1:0"])
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    child.expect(r"^wspbus: mounted / -> __main__:app \(wsgi\)$")
    assert get(url) == (200, b"Hello from wspbus!\n")
    child.send(signal.SIGINT)
    assert child.wait() == 0
