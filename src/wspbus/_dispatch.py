"""The site as one WSGI or ASGI app: dispatch by longest mount prefix.

WSGI: the prefix moves from PATH_INFO to SCRIPT_NAME. ASGI: ``path`` stays the full path and
the prefix is appended to ``root_path`` (the convention of the ASGI spec, uvicorn and Starlette).
Apps of the other protocol are wrapped with a2wsgi. Lifespan events reach every ASGI app.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

NOT_FOUND = b"Not Found: no app is mounted at this path\n"


def _matches(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _adapted(mount, protocol: str, threads: int | None = None) -> Callable[..., Any]:
    """The mount's app speaking ``protocol``, wrapped by a2wsgi when it speaks the other one."""
    if mount.protocol == protocol:
        return mount.app
    try:
        import a2wsgi
    except ImportError:
        from .site import SiteError

        raise SiteError("app %r is %s but the site is served as %s: install a2wsgi (pip install 'wspbus[asgi]')"
                        % (mount.target, mount.protocol.upper(), protocol.upper())) from None
    if protocol == "asgi":
        return a2wsgi.WSGIMiddleware(mount.app, workers=threads or 10)
    return a2wsgi.ASGIMiddleware(mount.app)


# -- WSGI ---------------------------------------------------------------------------------


def wsgi_site(mounts: Sequence) -> Callable[..., Any]:
    """One WSGI app for ``mounts`` (sorted longest prefix first)."""
    if len(mounts) == 1 and not mounts[0].prefix:
        return _adapted(mounts[0], "wsgi")
    # PATH_INFO holds UTF-8 bytes decoded as latin-1; compare prefixes the same way.
    table = [(m.prefix.encode("utf-8").decode("latin-1"), _adapted(m, "wsgi")) for m in mounts]

    def site(environ: dict, start_response: Callable) -> Any:
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


def asgi_site(mounts: Sequence, threads: int | None = None) -> Callable[..., Any]:
    """One ASGI app for ``mounts`` (sorted longest prefix first)."""
    table = [(m.prefix, _adapted(m, "asgi", threads)) for m in mounts]
    native = [(m.path, app) for (prefix, app), m in zip(table, mounts) if m.protocol == "asgi"]
    if len(mounts) == 1 and not mounts[0].prefix:
        return table[0][1]

    async def site(scope: dict, receive: Callable, send: Callable) -> None:
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
        await _not_found(scope, send)

    return site


async def _not_found(scope: dict, send: Callable) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(NOT_FOUND)).encode())]})
    await send({"type": "http.response.body", "body": NOT_FOUND})


async def _lifespan(apps: list, scope: dict, receive: Callable, send: Callable) -> None:
    """Run the lifespan protocol of every ASGI app ((path, app) pairs) at once; a failure of one
    fails the step, with a message naming the app's mount point."""
    import asyncio

    runners = [_LifespanRunner(path, app, scope) for path, app in apps]
    try:
        for step in ("startup", "shutdown"):
            message = await receive()
            if message["type"] != "lifespan." + step:
                return
            errors = [e for e in await asyncio.gather(*(r.step(step) for r in runners)) if e is not None]
            if errors:
                await send({"type": "lifespan.%s.failed" % step, "message": "; ".join(errors)})
                return
            await send({"type": "lifespan.%s.complete" % step})
    finally:
        for runner in runners:
            runner.cancel()


class _LifespanRunner:
    """One app's lifespan task, fed one message at a time; an app that raises opts out."""

    def __init__(self, path: str, app: Callable, scope: dict) -> None:
        import asyncio

        self.path = path
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.ensure_future(app(dict(scope), self._inbox.get, self._outbox.put))
        self._opted_out = False

    async def step(self, step: str) -> str | None:
        """Send 'lifespan.<step>'; None when complete (or unsupported), else the failure message."""
        import asyncio

        if self._opted_out:
            return None
        await self._inbox.put({"type": "lifespan." + step})
        reply = asyncio.ensure_future(self._outbox.get())
        done, _ = await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if reply not in done:
            reply.cancel()
            self._opted_out = True  # the app returned or raised: it does not do lifespan
            if not self._task.cancelled():
                self._task.exception()  # retrieved: an app without lifespan support may raise
            return None
        message = reply.result()
        if message["type"] == "lifespan.%s.failed" % step:
            # Often a traceback: name the app on its last line, the one summaries keep.
            lines = (message.get("message") or "lifespan %s failed" % step).rstrip().split("\n")
            lines[-1] = "the app at %s: %s" % (self.path, lines[-1].strip())
            return "\n".join(lines)
        return None

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()
