"""The ASGI lifespan tied to the bus, with uvicorn and granian and real apps that record their events."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from serving import asgi_hello, assert_refused, get
from wspbus._core.bus import ChannelFailures, states
from wspbus.deploy.config import ServerConfig, SiteConfig
from wspbus.deploy.launch import deploy
from wspbus.servers import HTTPServer, LifespanError
from wspbus.deploy.site import Site, mount_app


class RecordingApp:
    """A plain ASGI app: records lifespan events, fills the state, answers with what it sees."""

    def __init__(self, fail_startup: str | None = None, raise_at_startup: Exception | None = None):
        self.events = []
        self.fail_startup = fail_startup
        self.raise_at_startup = raise_at_startup

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(scope, receive, send)
        body = ("db=%s" % scope["state"].get("db")).encode()
        scope["state"]["db"] = "changed by a request"  # a shallow copy: must not leak to the next
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, scope, receive, send):
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.raise_at_startup:
                    raise self.raise_at_startup
                if self.fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": self.fail_startup})
                    return
                scope["state"]["db"] = "pool"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture(params=["uvicorn", "granian"])
def serve(request):
    """serve(bus, app, bind): an HTTPServer for ``app`` on each server that runs the ASGI lifespan."""
    if request.param == "granian":
        pytest.importorskip("granian")

    def serve(bus, app, bind="127.0.0.1:0"):
        plugin = HTTPServer(bus, app, bind, server=request.param, protocol="asgi")
        plugin.subscribe()
        return plugin

    return serve


def test_startup_when_the_bus_starts_state_in_requests_shutdown_at_stop(bus, serve):
    app = RecordingApp()
    plugin = serve(bus, app)
    seen_at_started = []
    bus.watch_state(lambda state: state is states.STARTED and seen_at_started.append(list(app.events)))
    bus.start()
    assert seen_at_started == [["lifespan.startup"]]
    assert get(plugin.address) == (200, b"db=pool")
    assert get(plugin.address) == (200, b"db=pool")
    bus.stop()
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


def test_failed_startup_fails_start_with_the_apps_message(bus, serve):
    app = RecordingApp(fail_startup="database unreachable")
    plugin = serve(bus, app)
    with pytest.raises(ChannelFailures) as caught:
        bus.start()
    [error] = caught.value.get_instances()
    assert isinstance(error, LifespanError)
    assert str(error) == "ASGI lifespan startup failed: database unreachable"
    assert bus.exit_code == 1 and plugin.address is not None
    assert_refused(plugin.address)  # nothing left listening


def test_exception_during_startup_is_a_failure_with_its_message(bus, serve):
    serve(bus, RecordingApp(raise_at_startup=ConnectionError("no route to db")))
    with pytest.raises(ChannelFailures) as caught:
        bus.start()
    message = str(caught.value.get_instances()[0])
    assert message == "ASGI lifespan startup failed: ConnectionError: no route to db"


def test_app_without_lifespan_is_served_without_it(bus, serve):
    plugin = serve(bus, asgi_hello)  # raises on a lifespan scope before receiving anything
    bus.start()
    assert get(plugin.address, "/x")[1].startswith(b"hello /x")


def test_starlette_lifespan_and_request_state(bus, serve):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    async def home(request):
        return PlainTextResponse(request.state.greeting)

    plugin = serve(bus, Starlette(routes=[Route("/", home)], lifespan=lifespan), "[::1]:0")
    bus.start()
    assert events == ["startup"]
    assert get(plugin.address) == (200, b"hello from lifespan")
    bus.stop()
    assert events == ["startup", "shutdown"]


def test_starlette_failing_startup_gives_one_line(bus, serve):
    from starlette.applications import Starlette

    @contextlib.asynccontextmanager
    async def lifespan(app):
        raise RuntimeError("missing SECRET_KEY")
        yield

    serve(bus, Starlette(lifespan=lifespan))
    with pytest.raises(ChannelFailures) as caught:
        bus.start()
    message = str(caught.value.get_instances()[0])
    assert message == "ASGI lifespan startup failed: RuntimeError: missing SECRET_KEY"


def test_port_is_free_again_after_a_failed_startup(bus, serve):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(bus, RecordingApp(fail_startup="no"), "127.0.0.1:%d" % port)
    with pytest.raises(ChannelFailures):
        bus.start()
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # our listener was closed, not leaked


class LoopCheckingApp:
    """Like an app with a connection pool: what it makes at startup belongs to the startup's event
    loop; each request says whether it runs on that loop."""

    def __init__(self):
        self.events = []
        self.startup_loop = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    self.startup_loop = asyncio.get_running_loop()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        same = asyncio.get_running_loop() is self.startup_loop
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"startup's loop" if same else b"another loop"})


def test_the_binds_of_one_app_share_its_loop_and_its_lifespan_runs_once(bus, serve):
    app = LoopCheckingApp()
    binds = [serve(bus, app), serve(bus, app)]
    bus.start()
    assert app.events == ["lifespan.startup"]
    assert [get(plugin.address) for plugin in binds] == [(200, b"startup's loop")] * 2
    bus.stop()
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    bus.start()  # started again: a new loop, a new startup, shared again
    assert [get(plugin.address) for plugin in binds] == [(200, b"startup's loop")] * 2
    assert app.events == ["lifespan.startup", "lifespan.shutdown", "lifespan.startup"]


def test_the_server_tables_of_a_site_share_its_loop_and_its_lifespan_runs_once(bus):
    app = LoopCheckingApp()
    site = Site([mount_app("/", app), mount_app("/other", asgi_hello)])
    tables = [ServerConfig(binds=["127.0.0.1:0", "127.0.0.1:0"]), ServerConfig(binds=["127.0.0.1:0"])]
    deployment = deploy(bus, SiteConfig(source="test", servers=tables, graceful_timeout=5.0), site, own_process=False)
    bus.start()
    assert app.events == ["lifespan.startup"]
    assert [get(server.address) for server in deployment.servers] == [(200, b"startup's loop")] * 3


def test_a_site_app_that_raises_at_startup_fails_the_start_naming_its_mount_point(bus, serve):
    site = Site([mount_app("/", RecordingApp()),
                 mount_app("/x", RecordingApp(raise_at_startup=RuntimeError("db unreachable")))])
    plugin = serve(bus, site.app())
    with pytest.raises(ChannelFailures) as caught:
        bus.start()
    assert [str(error) for error in caught.value.get_instances()] == [
        "ASGI lifespan startup failed: the app at /x: RuntimeError: db unreachable"]
    assert_refused(plugin.address)
