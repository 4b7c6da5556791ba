"""Adapters across the protocol boundary that give their threads back: ``close()`` ends them, the
next request brings them back.

A WSGI app served by an ASGI server runs on a thread pool (wsgi_in_asgi.py: one hand-over each
way per request); an ASGI app served by a WSGI server runs on a2wsgi's ASGIMiddleware, on an event
loop in a thread of its own. Both would outlive the server: whoever made the adapter closes it
once no server uses it any more (HTTPServer at its stop, a deployed site after all its servers
stopped), and a start after that gets fresh ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .protocols import Environ, Receive, Scope, Send, StartResponse

__all__ = ["AsgiAsWsgi", "WsgiAsAsgi", "adapted"]


class _Bridge:
    """The adapter of ``app``, made on first use and released by ``close()``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._made: tuple[Callable[..., Any], Callable[[], None]] | None = None
        self._lock = threading.Lock()

    def _make(self) -> tuple[Callable[..., Any], Callable[[], None]]:
        """(the adapter, what releases its threads)."""
        raise NotImplementedError

    def _adapter(self) -> Callable[..., Any]:
        made = self._made
        if made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
                made = self._made
        return made[0]

    def close(self) -> None:
        """Release the adapter's threads; the next request makes a new adapter."""
        with self._lock:
            made, self._made = self._made, None
        if made is not None:
            made[1]()


class WsgiAsAsgi(_Bridge):
    """A WSGI app as an ASGI app, on ``threads`` worker threads (None: wsgi_in_asgi's default, 10)."""

    def __init__(self, app: Any, threads: int | None = None) -> None:
        super().__init__(app)
        self.threads = threads

    def _make(self) -> tuple[Callable[..., Any], Callable[[], None]]:
        from .wsgi_in_asgi import WsgiInAsgi  # asyncio, imported only for a site that needs it

        adapter = WsgiInAsgi(self.app, self.threads)
        return adapter, adapter.close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._adapter()(scope, receive, send)


class AsgiAsWsgi(_Bridge):
    """An ASGI app as a WSGI app: a2wsgi's ASGIMiddleware, on an event loop of its own."""

    def __init__(self, app: Any) -> None:
        import a2wsgi  # noqa: F401  (fails here, at build time, when a2wsgi is missing)

        super().__init__(app)

    def _make(self) -> tuple[Callable[..., Any], Callable[[], None]]:
        import a2wsgi

        from .loop import LoopThread  # asyncio, imported only for a site that needs it

        loop = LoopThread("wspbus a2wsgi loop")
        return a2wsgi.ASGIMiddleware(self.app, loop=loop.loop), loop.close

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        return self._adapter()(environ, start_response)


def adapted(app: Any, protocol: str, spoken: str, threads: int | None = None) -> WsgiAsAsgi | AsgiAsWsgi | None:
    """``app``, which speaks ``protocol``, adapted to speak ``spoken``; None if it does already.

    Whoever serves the adapter closes it once no server uses it. ``threads``: a WSGI app's worker
    threads under an ASGI server. ValueError (one line) when an ASGI app needs a2wsgi and it is
    not installed.
    """
    if protocol == spoken:
        return None
    try:
        return WsgiAsAsgi(app, threads) if spoken == "asgi" else AsgiAsWsgi(app)
    except ImportError:
        raise ValueError("serving %s app as %s needs a2wsgi: pip install 'wspbus[asgi]'"
                         % ("an ASGI" if protocol == "asgi" else "a WSGI", spoken.upper())) from None
