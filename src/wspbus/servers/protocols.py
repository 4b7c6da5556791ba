"""Which protocol an app speaks, which servers speak it, and which server to run for it.

One rule decides whether an app is ASGI, for HTTPServer and for the apps of a deployed site alike.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

# The two protocols' shapes (PEP 3333, the ASGI 3 spec), for annotations: defined once, with the
# health endpoints (the first layer that serves HTTP), and re-exported here for the servers.
from ..plugins.health import ASGIApp, Environ, Message, Receive, Scope, Send, StartResponse, WSGIApp

__all__ = ["PROTOCOLS", "SERVERS", "ASGIApp", "Environ", "Message", "Receive", "Scope", "Send", "StartResponse",
           "WSGIApp", "choose_server", "close_body", "detect_protocol", "module_of", "protocols_of", "spoken_by"]

PROTOCOLS = ("wsgi", "asgi")

#: The servers HTTPServer can run, by name.
SERVERS = {
    "cheroot": "cheroot: threaded WSGI server, HTTP/1.1 keep-alive (the default for WSGI apps)",
    "waitress": "waitress: threaded WSGI server, HTTP/1.1 keep-alive, pure Python",
    "uvicorn": "uvicorn: asyncio ASGI server with the ASGI lifespan (the default for ASGI apps)",
    "stdlib": "the standard library's wsgiref, one thread per connection, HTTP/1.0 (no dependency)",
    "granian": "granian: Rust HTTP server (hyper on tokio) for WSGI and ASGI apps alike, HTTP/1.1 and HTTP/2",
}


class _Server(NamedTuple):
    module: str  # the module of this package that runs it
    needs: str | None  # what must import
    protocols: tuple[str, ...]  # the protocols it speaks
    extra: str | None  # what to install


_SERVER_INFO = {
    "cheroot": _Server("cheroot_server", "cheroot", ("wsgi",), "wspbus"),
    "waitress": _Server("waitress_server", "waitress", ("wsgi",), "wspbus[waitress]"),
    "uvicorn": _Server("uvicorn_server", "uvicorn", ("asgi",), "wspbus[asgi]"),
    "stdlib": _Server("stdlib_server", None, ("wsgi",), None),
    "granian": _Server("granian_server", "granian", PROTOCOLS, "wspbus[granian]"),
}


def detect_protocol(app: Callable[..., Any]) -> str:
    """'asgi' for an async callable (a partial of one included) or one taking (scope, receive, send);
    else 'wsgi'."""
    while isinstance(app, functools.partial):
        app = app.func
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None)):
        return "asgi"
    try:
        parameters = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return "wsgi"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return "asgi" if len(positional) == 3 and positional[0].name == "scope" else "wsgi"


def protocols_of(name: str) -> tuple[str, ...]:
    """The protocols a server speaks natively ('auto': both, by picking the server)."""
    if name == "auto":
        return PROTOCOLS
    return _info(name).protocols


def spoken_by(name: str, protocol: str) -> str:
    """The protocol the server ``name`` (not 'auto') speaks to an app of ``protocol``: that one if
    it speaks it, else the one it speaks."""
    spoken = _info(name).protocols
    return protocol if protocol in spoken else spoken[0]


def module_of(name: str) -> str:
    """The module of this package that runs the server ``name`` (not 'auto')."""
    return _info(name).module


def choose_server(name: str, protocol: str) -> str:
    """The server to run for ``name`` ('auto' picks by protocol); ValueError if unknown or missing."""
    if name == "auto":
        if protocol == "asgi":
            name = "uvicorn"
        else:
            name = "cheroot" if _importable("cheroot") else "stdlib"
    info = _info(name)
    if info.needs and not _importable(info.needs):
        raise ValueError("server %r is not installed: pip install %s" % (name, info.extra))
    return name


def _info(name: str) -> _Server:
    info = _SERVER_INFO.get(name)
    if info is None:
        raise ValueError("unknown server %r: expected auto, %s" % (name, ", ".join(SERVERS)))
    return info


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def close_body(body: object) -> None:
    """Close a WSGI response body if it has close(), as PEP 3333 asks of the server."""
    close = getattr(body, "close", None)
    if close is not None:
        close()
