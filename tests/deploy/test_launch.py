"""Putting a configured site on a bus (deploy()) and quickstart()."""

from __future__ import annotations

import signal

import pytest
from serve_support import get

import wspbus
from wspbus.deploy.config import ConfigError, PluginConfig, ServerConfig, SiteConfig
from wspbus.deploy.launch import build_servers, deploy
from wspbus.deploy.site import Site, mount_app


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"hello"]


def test_a_mistake_in_deploy_leaves_the_bus_untouched(tmp_path):
    bus = wspbus.Bus()
    config = SiteConfig(source="site.toml", log_file=str(tmp_path / "no" / "such" / "dir.log"))
    config.plugins = {"threads": PluginConfig("threads", "site.toml: [plugins.threads]")}
    before = {channel: set(bus.listeners[channel]) for channel in bus.listeners}
    with pytest.raises(ConfigError, match="cannot open the error log"):
        deploy(bus, config, Site([mount_app("/", hello)]))
    assert {channel: set(bus.listeners[channel]) for channel in bus.listeners if channel in before} == before


def test_quickstart_serves_several_apps_until_sigterm(spawn):
    child = spawn("""
        from wspbus.deploy.launch import quickstart

        def web(environ, start_response):
            start_response("200 OK", [])
            return [b"web at " + environ["SCRIPT_NAME"].encode()]

        async def api(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"api at " + scope["root_path"].encode()})

        raise SystemExit(quickstart({"/": web, "/api": api}, bind="127.0.0.1:0"))
    """)
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    child.expect(r"^wspbus: mounted /api -> __main__:api \(asgi\)$")
    assert get(url, "/api/v1") == (200, b"api at /api")
    assert get(url, "/home") == (200, b"web at ")
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_quickstart_refuses_a_bad_bind_with_a_clear_error():
    with pytest.raises(ConfigError, match=r"^quickstart\(\) bind: bad bind 'localhost'"):
        wspbus.deploy.launch.quickstart(hello, bind="localhost", bus=wspbus.Bus())


def test_an_unknown_server_is_a_configuration_error_naming_where():
    config = SiteConfig(source="site.toml", servers=[ServerConfig(binds=["127.0.0.1:0"], server="bogus")])
    with pytest.raises(ConfigError, match=r"^site\.toml: \[\[server\]\] #1 server: unknown server 'bogus': expected auto, "):
        deploy(wspbus.Bus(), config, Site([mount_app("/", hello)]), own_process=False)
    with pytest.raises(ConfigError, match=r"^quickstart\(\) server: unknown server 'bogus'"):
        wspbus.deploy.launch.quickstart(hello, bind="127.0.0.1:0", server="bogus", bus=wspbus.Bus())


@pytest.mark.parametrize("workers, shared", [(None, False), (1, False), (2, True)])
def test_the_servers_of_a_worker_among_several_know_their_listener_is_shared(workers, shared):
    """With more than one worker, an ASGI server takes one connection per turn of its loop
    (servers/uvicorn_server.OneAcceptPerTurn); alone on its listener it keeps asyncio's batches."""
    config = SiteConfig(source="site.toml", workers=workers, servers=[ServerConfig(binds=["127.0.0.1:0"])])
    servers = build_servers(wspbus.Bus(), Site([mount_app("/", hello)]), config)
    assert [server.shared_listener for server in servers] == [shared]
