"""The site: app specs, loading, protocol detection, dispatch by prefix, mixed WSGI + ASGI.

Apps are real (plain WSGI, Flask, Bottle, Starlette) and are called through their real protocol:
a WSGI environ and start_response, or an ASGI scope with receive/send on an event loop.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import sys
import textwrap
import threading
import uuid
import wsgiref.util

import pytest

from wspbus.deploy.site import Site, SiteError, load_app, mount_app, parse_app_spec
from wspbus.servers import detect_protocol


# -- helpers: call an app through its protocol ------------------------------------------------


def call_wsgi(app, path, script_name=""):
    environ = {"PATH_INFO": path, "SCRIPT_NAME": script_name, "REQUEST_METHOD": "GET",
               "wsgi.input": io.BytesIO(b"")}
    wsgiref.util.setup_testing_defaults(environ)
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"] = int(status.split()[0])

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return started["status"], body


def call_asgi(app, path, root_path=""):
    async def run():
        sent = []
        received = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            return received.pop(0) if received else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": root_path + path, "raw_path": (root_path + path).encode(),
                 "root_path": root_path, "query_string": b"", "headers": [(b"host", b"testserver")],
                 "server": ("testserver", 80), "client": ("127.0.0.1", 5000)}
        await app(scope, receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    return asyncio.run(run())


def echo_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"]}).encode()]


async def echo_asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    body = json.dumps({"root_path": scope["root_path"], "path": scope["path"]}).encode()
    await send({"type": "http.response.body", "body": body})


def flask_app():
    import flask

    app = flask.Flask("site_test_flask")

    @app.route("/", defaults={"rest": ""})
    @app.route("/<path:rest>")
    def where(rest):
        return {"script_root": flask.request.script_root, "path": flask.request.path,
                "url": flask.url_for("where", rest="x")}

    return app


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def where(request):
        return JSONResponse({"root_path": request.scope["root_path"], "route": request.url.path,
                             "url_for": str(request.url_for("where", rest="x"))})

    return Starlette(routes=[Route("/{rest:path}", where, name="where")])


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    """Write a module with a unique name into a directory on sys.path; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def write(source: str) -> str:
        name = "siteapp_%s" % uuid.uuid4().hex[:10]
        (tmp_path / (name + ".py")).write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


# -- specs --------------------------------------------------------------------------------


def test_app_specs_parse_prefix_module_attribute_and_factory_call():
    spec = parse_app_spec("/api/v1/=pkg.mod:make.app('prod', debug=False)")
    assert (spec.prefix, spec.module, spec.attribute) == ("/api/v1", "pkg.mod", "make.app")
    assert spec.call == (("prod",), {"debug": False})
    assert parse_app_spec("/=m:app").prefix == ""
    assert parse_app_spec("m").attribute is None


@pytest.mark.parametrize("text, expected", [
    ("/api", "expected '/prefix=module:callable'"),
    ("api=m:app", "dotted module name"),
    ("m:app(os.getcwd())", "literal arguments only"),
    ("/a//b=m:app", "not a clean path"),
    ("m:1app", "not a dotted attribute name"),
])
def test_malformed_app_specs_are_one_line_errors(text, expected):
    with pytest.raises(SiteError, match=expected) as info:
        parse_app_spec(text)
    assert "\n" not in str(info.value)


def test_loading_an_attribute_a_default_name_and_a_factory(app_module):
    name = app_module("""
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"default"]

        def create(greeting, punctuation="!"):
            def app(environ, start_response):
                start_response("200 OK", [])
                return [(greeting + punctuation).encode()]
            return app
    """)
    assert call_wsgi(load_app(parse_app_spec(name)), "/") == (200, b"default")
    factory_app = load_app(parse_app_spec("%s:create('hi', punctuation='?')" % name))
    assert call_wsgi(factory_app, "/") == (200, b"hi?")


@pytest.mark.parametrize("source, target, expected", [
    (None, "no_such_module_xyz:app", r"no module named 'no_such_module_xyz'"),
    ("import no_such_dependency_xyz\n", ":app", r"importing .* failed: ModuleNotFoundError: .*no_such_dependency_xyz"),
    ("x = 1 / 0\n", ":app", r"ZeroDivisionError: division by zero \(at .*siteapp_\w+\.py:1\)"),
    ("def broken(:\n", ":app", r"SyntaxError: .* \(at .*siteapp_\w+\.py:1\)"),
    ("app = 'not a function'\n", ":app", r"is not callable \(it is str\)"),
    ("other = 1\n", ":app", r"has no attribute 'app'"),
    ("def make():\n    raise RuntimeError('no database')\n", ":make()", r"factory failed: RuntimeError: no database"),
])
def test_an_app_that_cannot_load_is_a_one_line_error(app_module, source, target, expected):
    spec = target if source is None else app_module(source) + target
    with pytest.raises(SiteError, match=expected) as info:
        load_app(parse_app_spec(spec))
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


# -- protocol detection -------------------------------------------------------------------


class AsyncCallable:
    async def __call__(self, scope, receive, send):
        pass


def three_argument_asgi(scope, receive, send):
    return echo_asgi(scope, receive, send)


def test_protocol_is_detected_from_the_callable():
    import bottle

    assert detect_protocol(echo_wsgi) == "wsgi"
    assert detect_protocol(flask_app()) == "wsgi"
    assert detect_protocol(bottle.Bottle()) == "wsgi"
    assert detect_protocol(echo_asgi) == "asgi"
    assert detect_protocol(starlette_app()) == "asgi"
    assert detect_protocol(AsyncCallable()) == "asgi"
    assert detect_protocol(three_argument_asgi) == "asgi"
    assert detect_protocol(functools.partial(echo_asgi)) == "asgi"


def test_protocol_can_be_forced():
    assert mount_app("/", three_argument_asgi, "wsgi").protocol == "wsgi"
    site = Site([mount_app("/", echo_wsgi, "asgi")])
    assert site.protocol == "asgi"


# -- dispatch -----------------------------------------------------------------------------


def wsgi_site():
    return Site([mount_app("/", echo_wsgi), mount_app("/api", echo_wsgi), mount_app("/api/v2", echo_wsgi)])


@pytest.mark.parametrize("path, script_name, path_info", [
    ("/", "", "/"),
    ("/apix", "", "/apix"),  # a prefix matches whole segments only
    ("/api", "/api", ""),
    ("/api/users/7", "/api", "/users/7"),
    ("/api/v2/users", "/api/v2", "/users"),
])
def test_wsgi_dispatch_by_longest_prefix_sets_script_name_and_path_info(path, script_name, path_info):
    app = wsgi_site().app()
    status, body = call_wsgi(app, path, script_name="/mnt")
    assert status == 200
    assert json.loads(body) == {"script_name": "/mnt" + script_name, "path_info": path_info}


def test_wsgi_dispatch_without_a_root_app_answers_404():
    app = Site([mount_app("/api", echo_wsgi)]).app()
    status, body = call_wsgi(app, "/elsewhere")
    assert status == 404 and b"no app is mounted" in body


def test_wsgi_prefixes_compare_as_wsgi_strings():
    app = Site([mount_app("/caf\u00e9", echo_wsgi), mount_app("/other", echo_wsgi)]).app()
    wsgi_path = "/caf\u00e9/menu".encode("utf-8").decode("latin-1")
    status, body = call_wsgi(app, wsgi_path)
    assert status == 200 and json.loads(body)["path_info"] == "/menu"


def test_asgi_dispatch_appends_the_prefix_to_root_path_and_keeps_the_full_path():
    app = Site([mount_app("/", echo_asgi), mount_app("/api", echo_asgi)]).app()
    assert json.loads(call_asgi(app, "/api/users", root_path="/mnt")[1]) == {
        "root_path": "/mnt/api", "path": "/mnt/api/users"}
    assert json.loads(call_asgi(app, "/apix")[1]) == {"root_path": "", "path": "/apix"}
    assert call_asgi(Site([mount_app("/api", echo_asgi)]).app(), "/x")[0] == 404


def test_a_single_root_app_is_served_without_dispatch_only_its_errors_reported():
    assert Site([mount_app("/", echo_wsgi)]).app().__wrapped__ is echo_wsgi
    assert Site([mount_app("", echo_asgi)]).app().__wrapped__ is echo_asgi


# -- mixed sites --------------------------------------------------------------------------


def test_a_site_with_one_asgi_app_is_served_as_asgi_and_wsgi_apps_are_adapted():
    site = Site([mount_app("/flask", flask_app()), mount_app("/star", starlette_app())])
    assert site.protocol == "asgi"
    app = site.app()
    status, body = call_asgi(app, "/flask/page")
    assert status == 200
    assert json.loads(body) == {"script_root": "/flask", "path": "/page", "url": "/flask/x"}
    status, body = call_asgi(app, "/star/page")
    assert json.loads(body) == {"root_path": "/star", "route": "/star/page", "url_for": "http://testserver/star/x"}


def test_asgi_apps_are_adapted_when_the_site_is_served_as_wsgi():
    site = Site([mount_app("/flask", flask_app()), mount_app("/star", starlette_app())])
    app = site.app("wsgi")
    assert json.loads(call_wsgi(app, "/star/page")[1])["url_for"].endswith("/star/x")
    assert json.loads(call_wsgi(app, "/flask/page")[1])["script_root"] == "/flask"


# -- lifespan -----------------------------------------------------------------------------


def lifespan_app(events, name, fail=False):
    import contextlib

    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append(name + " up")
        if fail:
            raise RuntimeError(name + " cannot reach its database")
        yield
        events.append(name + " down")

    return Starlette(lifespan=lifespan)


def run_lifespan(app):
    async def run():
        inbox = asyncio.Queue()
        replies = []
        for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
            await inbox.put(message)

        async def send(message):
            replies.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)
        return replies

    return asyncio.run(run())


def test_lifespan_reaches_every_asgi_app_of_the_site():
    events = []
    site = Site([mount_app("/a", lifespan_app(events, "a")), mount_app("/b", lifespan_app(events, "b")),
                 mount_app("/w", echo_wsgi), mount_app("/raw", echo_asgi)])  # echo_asgi has no lifespan
    assert run_lifespan(site.app()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sorted(events) == ["a down", "a up", "b down", "b up"]


def test_a_failing_lifespan_startup_fails_the_site_startup_with_its_message():
    events = []
    site = Site([mount_app("/a", lifespan_app(events, "a")), mount_app("/b", lifespan_app(events, "b", fail=True))])
    replies = []

    async def run():
        inbox = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def send(message):
            replies.append(message)

        await site.app()({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)

    asyncio.run(run())
    assert replies[0]["type"] == "lifespan.startup.failed"
    assert "b cannot reach its database" in replies[0]["message"]


def run_lifespan_replies(app):
    """The replies of ``app`` to 'lifespan.startup' then 'lifespan.shutdown' (if it asks for it)."""
    replies = []

    async def run():
        inbox = asyncio.Queue()
        for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
            await inbox.put(message)

        async def send(message):
            replies.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)

    asyncio.run(run())
    return replies


async def raises_once_started(scope, receive, send):
    """Speaks lifespan (it asks for the first message), then fails by raising."""
    await receive()
    raise RuntimeError("db unreachable")


def test_an_app_that_raises_after_receiving_startup_fails_the_site_startup():
    site = Site([mount_app("/", lifespan_app([], "root")), mount_app("/x", raises_once_started)])
    assert run_lifespan_replies(site.app()) == [
        {"type": "lifespan.startup.failed", "message": "the app at /x: RuntimeError: db unreachable"}]


def test_an_app_across_the_protocol_boundary_without_a2wsgi_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "a2wsgi", None)  # what an installation without a2wsgi gives
    site = Site([mount_app("/", echo_wsgi), mount_app("/api", echo_asgi, target="pkg.api:app")])
    with pytest.raises(SiteError) as caught:
        site.app("wsgi")
    assert str(caught.value) == "app 'pkg.api:app': serving an ASGI app as WSGI needs a2wsgi: pip install 'wspbus[asgi]'"


def test_closing_the_site_ends_a2wsgis_threads_and_the_next_request_brings_them_back():
    site = Site([mount_app("/", echo_wsgi), mount_app("/api", echo_asgi)])
    app = site.app("wsgi")
    before = set(threading.enumerate())
    assert call_wsgi(app, "/api/x")[0] == 200
    [loop_thread] = set(threading.enumerate()) - before  # the ASGI app's event loop
    site.close()
    loop_thread.join(10)
    assert not loop_thread.is_alive()
    assert json.loads(call_wsgi(app, "/api/y")[1]) == {"root_path": "/api", "path": "/api/y"}
    site.close()


# -- site errors --------------------------------------------------------------------------


@pytest.mark.parametrize("mounts, expected", [
    ([], "no app to serve"),
    ([("/a", echo_wsgi), ("/a/", echo_wsgi)], "two apps are mounted at '/a'"),
    ([("a", echo_wsgi)], "must start with '/'"),
])
def test_bad_sites_are_refused_in_one_line(mounts, expected):
    with pytest.raises(SiteError, match=expected):
        Site([mount_app(prefix, app) for prefix, app in mounts])


def test_describe_lists_mounts_shortest_prefix_first(app_module):
    name = app_module("async def app(scope, receive, send):\n    pass\n")
    site = Site.from_specs(["/api=%s:app" % name, "test_site:echo_wsgi"])
    assert site.describe() == ["/ -> test_site:echo_wsgi (wsgi)", "/api -> %s:app (asgi)" % name]
