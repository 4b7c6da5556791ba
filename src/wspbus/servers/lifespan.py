"""The ASGI lifespan protocol, driven by the bus: startup when the site starts, shutdown when it stops.

Server-neutral: it runs on whatever loop serves the app (so that what the app opens at
startup, a connection pool say, belongs to that loop). What the app stores in ``scope['state']``
during startup reaches every request as a shallow copy, as the ASGI spec says.

An app that raises before it has asked for the first lifespan message does not speak the
protocol (the spec's rule); it is served without lifespan events. A failed startup
('lifespan.startup.failed', or an exception once startup was received) raises LifespanError
with the app's message, which fails the bus's start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._errors import StartupError

__all__ = ["Lifespan", "LifespanError"]

_ENDED = "wspbus.lifespan.ended"


class LifespanError(StartupError):
    """The ASGI app failed its lifespan startup; the message is the app's own."""


def _no_log(msg: str, level: int = 20, traceback: bool = False) -> None:
    pass


class Lifespan:
    """One app's lifespan: ``await startup()``, serve ``app_with_state``, ``await shutdown()``."""

    def __init__(self, app: Any, log: Callable[..., None] = _no_log) -> None:
        self.app = app
        self.log = log
        #: Filled by the app during startup; each request gets a shallow copy.
        self.state: dict[str, Any] = {}
        #: False once the app showed it does not speak the lifespan protocol.
        self.supported = True
        self._task: asyncio.Task | None = None
        self._to_app: asyncio.Queue | None = None
        self._from_app: asyncio.Queue | None = None
        self._asked = False

    async def app_with_state(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The app, with the lifespan state in each request's scope."""
        if scope["type"] in ("http", "websocket"):
            scope["state"] = self.state.copy()
        await self.app(scope, receive, send)

    async def startup(self) -> None:
        """Send 'lifespan.startup' and wait for the app's answer; LifespanError if it failed."""
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ASGI lifespan")
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            return
        if kind == _ENDED and not self._asked:
            self.supported = False
            self.log("ASGI lifespan: the app does not support it (%s); serving without it"
                     % _describe(message["error"]), 10)
            return
        raise LifespanError("ASGI lifespan startup failed: %s" % self._failure_text(message, "startup"))

    async def shutdown(self, timeout: float | None = None) -> None:
        """Send 'lifespan.shutdown' and wait (bounded) for the app; failures are logged."""
        if not self.supported or self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._from_app.get(), timeout)
        except asyncio.TimeoutError:
            self.log("ASGI lifespan shutdown did not finish within %g s" % timeout, 40)
            self._task.cancel()
            return
        if message["type"] != "lifespan.shutdown.complete":
            self.log("ASGI lifespan shutdown failed: %s" % self._failure_text(message, "shutdown"), 40)

    def _failure_text(self, message: dict, phase: str) -> str:
        """One line saying why; the app's full message (often a traceback) goes to the log."""
        if message["type"] == _ENDED:
            error = message["error"]
            return _describe(error) if error else "the app returned during lifespan %s" % phase
        text = str(message.get("message") or "").strip()
        if "\n" in text:
            self.log("ASGI lifespan %s failed:\n%s" % (phase, text), 40)
            text = text.splitlines()[-1].strip()
        if message["type"].endswith(".failed"):
            return text or "the app reported a failure"
        return "unexpected message %r" % message["type"]

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        error = None
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:  # reported to startup()/shutdown(), which decide what it means
            error = exc
        await self._from_app.put({"type": _ENDED, "error": error})

    async def _receive(self) -> dict:
        self._asked = True
        return await self._to_app.get()

    async def _send(self, message: dict) -> None:
        await self._from_app.put(message)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "it returned"
    text = str(error).strip().splitlines()
    return "%s: %s" % (type(error).__name__, text[-1]) if text else type(error).__name__
