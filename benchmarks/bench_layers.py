"""What wspbus adds to each request, layer by layer, on top of the app itself.

    python benchmarks/bench_layers.py [--requests N]

A fast server (granian answers a hello request in about 30 µs of CPU) is slowed by whatever
Python runs around the app on every request: the head check, the lifespan state, the record of
requests in flight (for a stop that cuts some off), the failure report, the supervisor's request
count. Each layer is timed alone around a hello app (ASGI: awaited on one event loop; WSGI:
called and closed), then all of them in the order a worker stacks them. No server, no socket:
the figure is the Python cost per request, the share a faster server cannot hide.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "src"), os.path.join(HERE, "apps")]

from hello_asgi import app as asgi_app  # noqa: E402
from hello_wsgi import app as wsgi_app  # noqa: E402

from wspbus.deploy.mounts import Mount  # noqa: E402
from wspbus.deploy.request_errors import reporting_asgi, reporting_wsgi  # noqa: E402
from wspbus.deploy.supervisor.counting import RequestCounter  # noqa: E402
from wspbus.servers.inflight import InFlight  # noqa: E402
from wspbus.servers.lifespan import Lifespan  # noqa: E402
from wspbus.servers.request_head import HeadLimits, asgi_head_guard, inspect_environ  # noqa: E402

HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]


def asgi_scope() -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http", "method": "GET",
            "root_path": "", "path": "/", "raw_path": b"/", "query_string": b"", "headers": list(HEADERS),
            "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000)}


def wsgi_environ() -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8080",
            "HTTP_USER_AGENT": "wrk", "HTTP_ACCEPT": "*/*"}


async def _send(message: dict[str, Any]) -> None:
    pass


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    pass


def per_asgi_request(app: Callable[..., Any], requests: int) -> float:
    async def run() -> float:
        began = time.perf_counter()
        for _ in range(requests):
            await app(asgi_scope(), _receive, _send)
        return time.perf_counter() - began
    return asyncio.run(run()) / requests * 1e6


def per_wsgi_request(app: Callable[..., Any], requests: int) -> float:
    began = time.perf_counter()
    for _ in range(requests):
        body = app(wsgi_environ(), _start_response)
        getattr(body, "close", lambda: None)()
    return (time.perf_counter() - began) / requests * 1e6


def _checked_environ(app: Callable[..., Any]) -> Callable[..., Any]:
    """inspect_environ as granian's WSGI runner calls it, before the app."""
    limits = HeadLimits()

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        inspect_environ(environ, limits)
        return app(environ, start_response)
    return checked


ASGI_LAYERS: dict[str, Callable[[Any], Any]] = {  # outermost first, as a worker stacks them
    "head check": lambda app: asgi_head_guard(app, HeadLimits()),
    "lifespan state": lambda app: Lifespan(app).with_state(app),
    "in flight": lambda app: InFlight().wrap(app, "asgi"),
    "failure report": lambda app: reporting_asgi(Mount("", app, "asgi")),
    "request count": lambda app: RequestCounter().wrap(app, "asgi"),
}
WSGI_LAYERS: dict[str, Callable[[Any], Any]] = {
    "head check": _checked_environ,
    "in flight": lambda app: InFlight().wrap(app, "wsgi"),
    "failure report": lambda app: reporting_wsgi(Mount("", app, "wsgi")),
    "request count": lambda app: RequestCounter().wrap(app, "wsgi"),
}


def table(protocol: str, app: Any, layers: dict[str, Callable[[Any], Any]],
          timed: Callable[[Any, int], float], requests: int) -> None:
    bare = min(timed(app, requests) for _ in range(3))
    print("\n%s: the hello app alone, %.2f µs per request\n" % (protocol, bare))
    print("| layer | µs added per request |\n| --- | --- |")
    for name, wrap in layers.items():
        print("| %s | %.2f |" % (name, min(timed(wrap(app), requests) for _ in range(3)) - bare))
    stacked = app
    for wrap in reversed(list(layers.values())):
        stacked = wrap(stacked)
    print("| **all, stacked** | **%.2f** |" % (min(timed(stacked, requests) for _ in range(3)) - bare))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests per measurement (best of 3)")
    requests = parser.parse_args().requests
    print("`python benchmarks/bench_layers.py --requests %d`, Python %s" % (requests, sys.version.split()[0]))
    table("ASGI", asgi_app, ASGI_LAYERS, per_asgi_request, requests)
    table("WSGI", wsgi_app, WSGI_LAYERS, per_wsgi_request, requests)


if __name__ == "__main__":
    main()
