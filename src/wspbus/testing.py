"""A site on an ephemeral port for the length of a test.

``running_site(app)`` is a context manager for any test runner; with pytest, the
``wspbus_site`` fixture (enable it with ``pytest_plugins = ["wspbus.testing"]`` in a conftest)
starts sites that are torn down after the test::

    def test_home(wspbus_site):
        site = wspbus_site(myapp)            # or {"/": web_app, "/api": asgi_app}
        status, body = site.get("/")

Each site has a bus of its own (not ``wspbus.bus``), no signal handlers and no log routing, so
tests can run several sites side by side without touching the test process's state.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._core.bus import Bus

__all__ = ["RunningSite", "get", "running_site", "wspbus_site"]


@dataclass
class RunningSite:
    """A started site: its bus, and the URLs its servers listen on."""

    bus: Bus
    urls: list[str]

    @property
    def url(self) -> str:
        return self.urls[0]

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
        """GET ``path`` from the site's first server over a fresh connection: (status, body)."""
        return get(self.url, path, timeout)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path.replace("@", "\0", 1) if self.unix_path.startswith("@") else self.unix_path)


def get(url: str, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``path`` from a site URL (http://HOST:PORT, http://[V6]:PORT or unix:PATH): (status, body)."""
    if url.startswith("unix:"):
        connection: http.client.HTTPConnection = _UnixHTTPConnection(url[len("unix:"):], timeout)
    else:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None:
            raise ValueError("%r is not a site URL (http://HOST:PORT, http://[V6]:PORT or unix:PATH)" % url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def running_site(app: Callable[..., Any] | Mapping[str, Callable[..., Any]], *, bind: str = "127.0.0.1:0",
                 server: str = "auto", protocol: str | None = None, plugins: Iterable[Callable[[Bus], Any]] = (),
                 graceful_timeout: float | None = 10.0) -> Iterator[RunningSite]:
    """Serve ``app`` (or ``{prefix: app}``) on ``bind``; exit its bus when the block ends.

    ``plugins``: factories called with the site's bus (a plugin class works) whose results are
    subscribed before the start.
    """
    # Imported here, not at the top: this module is a pytest plugin in every session of a project
    # that installs wspbus, and most of those sessions never start a site.
    from .deploy.config import ServerConfig, SiteConfig
    from .deploy.launch import deploy
    from .deploy.site import Site

    site = Site.from_apps(app, protocol)
    config = SiteConfig(source="running_site()", graceful_timeout=graceful_timeout,
                        servers=[ServerConfig(binds=[bind], server=server)])
    bus = Bus(graceful_timeout=graceful_timeout)
    for factory in plugins:
        factory(bus).subscribe()
    deployment = deploy(bus, config, site, own_process=False)
    bus.start()
    try:
        yield RunningSite(bus, deployment.urls())
    finally:
        bus.exit()


try:
    import pytest
except ImportError:  # not under pytest: running_site() still works
    pass
else:

    @pytest.fixture
    def wspbus_site() -> Iterator[Callable[..., RunningSite]]:
        """Start a site with ``wspbus_site(app, **running_site_options)``; stopped after the test."""
        with contextlib.ExitStack() as stack:
            yield lambda app, **options: stack.enter_context(running_site(app, **options))
