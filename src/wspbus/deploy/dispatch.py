"""The site as one WSGI or ASGI app: dispatch by longest mount prefix.

WSGI: the prefix moves from PATH_INFO to SCRIPT_NAME. ASGI: ``path`` stays the full path and
the prefix is appended to ``root_path`` (the convention of the ASGI spec, uvicorn and Starlette).
Apps of the other protocol are adapted (servers/bridge.py). Lifespan events reach every ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..servers.bridge import AsgiAsWsgi, WsgiAsAsgi, adapted
from ..servers.protocols import ASGIApp, Environ, Receive, Scope, Send, StartResponse, WSGIApp
from .mounts import Mount, SiteError
from .request_errors import answer, reporting_asgi, reporting_wsgi

if TYPE_CHECKING:
    from ..servers.lifespan import LifespanError

NOT_FOUND = b"Not Found: no app is mounted at this path\n"

#: The protocol adapters a site app made, whose threads Site.close() gives back.
Bridges = list[WsgiAsAsgi | AsgiAsWsgi]


def _matches(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _adapted(mount: Mount, protocol: str, bridges: Bridges, threads: int | None = None) -> Callable[..., Any]:
    """The mount's app, reporting its failures (request_errors), speaking ``protocol``: adapted
    when it speaks the other one (the wrapper is added to ``bridges``)."""
    app = reporting_asgi(mount) if mount.protocol == "asgi" else reporting_wsgi(mount)
    try:
        bridge = adapted(app, mount.protocol, protocol, threads)
    except ValueError as exc:
        raise SiteError("app %r: %s" % (mount.target, exc)) from None
    if bridge is None:
        return app
    bridges.append(bridge)
    return bridge


# -- WSGI ---------------------------------------------------------------------------------


def wsgi_site(mounts: Sequence[Mount], bridges: Bridges) -> WSGIApp:
    """One WSGI app for ``mounts`` (sorted longest prefix first)."""
    if len(mounts) == 1 and not mounts[0].prefix:
        return _adapted(mounts[0], "wsgi", bridges)
    # PATH_INFO holds UTF-8 bytes decoded as latin-1; compare prefixes the same way.
    table = [(m.prefix.encode("utf-8").decode("latin-1"), _adapted(m, "wsgi", bridges)) for m in mounts]

    def site(environ: Environ, start_response: StartResponse) -> Any:
        path = environ.get("PATH_INFO", "")
        for prefix, app in table:
            if _matches(path, prefix):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(NOT_FOUND)))])
        return [NOT_FOUND]

    return site


# -- ASGI ---------------------------------------------------------------------------------


def asgi_site(mounts: Sequence[Mount], bridges: Bridges, threads: int | None = None) -> ASGIApp:
    """One ASGI app for ``mounts`` (sorted longest prefix first)."""
    table = [(m.prefix, _adapted(m, "asgi", bridges, threads)) for m in mounts]
    native = [(m.path, app) for (prefix, app), m in zip(table, mounts) if m.protocol == "asgi"]
    if len(mounts) == 1 and not mounts[0].prefix:
        return table[0][1]

    async def site(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(native, scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        route = path[len(root):] if root and path.startswith(root) else path
        for prefix, app in table:
            if _matches(route, prefix):
                await app(dict(scope, root_path=root + prefix), receive, send)
                return
        await answer(scope, send, 404, NOT_FOUND, close_code=1000)

    return site


async def _lifespan(apps: list[tuple[str, ASGIApp]], scope: Scope, receive: Receive, send: Send) -> None:
    """Run the lifespan protocol of every ASGI app ((path, app) pairs) at once, each with the
    rules of servers/lifespan.py; a failure of one fails the step, naming the app's mount point."""
    import asyncio  # here, not at the top: a site of WSGI apps never loads asyncio

    from ..servers.lifespan import Lifespan, LifespanError

    lifespans = [(path, Lifespan(app, state=scope.get("state"))) for path, app in apps]
    try:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        outcomes = await asyncio.gather(*(lifespan.startup() for _, lifespan in lifespans), return_exceptions=True)
        failures: list[tuple[str, LifespanError]] = []
        for (path, _), outcome in zip(lifespans, outcomes):
            if isinstance(outcome, LifespanError):
                failures.append((path, outcome))
            elif outcome is not None:
                raise outcome
        if failures:
            await send({"type": "lifespan.startup.failed", "message": _failure_message(failures)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] != "lifespan.shutdown":
            return
        errors = await asyncio.gather(*(lifespan.shutdown() for _, lifespan in lifespans))
        failed = ["the app at %s: %s" % (path, error) for (path, _), error in zip(lifespans, errors) if error]
        if failed:
            await send({"type": "lifespan.shutdown.failed", "message": "; ".join(failed)})
            return
        await send({"type": "lifespan.shutdown.complete"})
    finally:
        for _, lifespan in lifespans:
            lifespan.cancel()


def _failure_message(failures: list[tuple[str, LifespanError]]) -> str:
    """The apps' full messages (tracebacks, for the log), then one line naming each failed app."""
    details = [error.details.rstrip().rpartition("\n")[0] for _, error in failures]
    summary = "; ".join("the app at %s: %s" % (path, error.reason) for path, error in failures)
    return "\n".join([*filter(None, details), summary])
