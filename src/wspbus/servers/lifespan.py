"""The ASGI lifespan protocol, driven by the bus: startup when the site starts, shutdown when it stops.

Server-neutral: it runs on whatever loop serves the app (so that what the app opens at
startup, a connection pool say, belongs to that loop). What the app stores in ``scope['state']``
during startup reaches every request as a shallow copy, as the ASGI spec says.

An app that raises (or sends anything but a startup answer) before it has asked for the first
lifespan message does not speak the protocol (the spec's rule); it is served without lifespan events. A failed startup
('lifespan.startup.failed', or an exception once startup was received) raises LifespanError
with the app's message, which fails the bus's start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .._core.errors import StartupError
from .protocols import ASGIApp, Message, Receive, Scope, Send
from .reporting import no_log, one_line

__all__ = ["Lifespan", "LifespanError"]

_ENDED = "wspbus.lifespan.ended"


class LifespanError(StartupError):
    """The ASGI app failed its lifespan startup; the message is the app's own."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__("ASGI lifespan startup failed: %s" % reason)
        #: One line saying why.
        self.reason = reason
        #: The app's whole message (often a traceback, ending with ``reason``).
        self.details = details or reason


class Lifespan:
    """One app's lifespan: ``await startup()``, serve ``with_state(app)``, ``await shutdown()``."""

    def __init__(self, app: ASGIApp, log: Callable[..., None] = no_log, state: dict[str, Any] | None = None) -> None:
        self.app = app
        self.log = log
        #: Filled by the app during startup (``state``: a dict to share); each request gets a shallow copy.
        self.state: dict[str, Any] = {} if state is None else state
        #: False once the app showed it does not speak the lifespan protocol.
        self.supported = True
        self._task: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._asked = False

    def with_state(self, app: ASGIApp) -> ASGIApp:
        """``app`` (this app, or a wrapper of it serving another bind) with the lifespan state in
        each request's scope."""

        def app_with_state(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            if scope["type"] in ("http", "websocket"):
                scope["state"] = self.state.copy()
            return app(scope, receive, send)  # no coroutine of its own: see asgi_head_guard

        return app_with_state

    async def startup(self) -> None:
        """Send 'lifespan.startup' and wait for the app's answer; LifespanError if it failed."""
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ASGI lifespan")
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            return
        if not self._asked and kind != "lifespan.startup.failed":
            self.supported = False  # it never asked for a lifespan message: it does not speak the protocol
            self.log("ASGI lifespan: the app does not support it (%s); serving without it"
                     % (_describe(message["error"]) if kind == _ENDED else "it sent %r" % kind), 10)
            return
        reason = self._failure_text(message, "startup")
        raise LifespanError(reason, str(message.get("message") or ""))

    async def shutdown(self, timeout: float | None = None) -> str | None:
        """Send 'lifespan.shutdown' and wait (bounded) for the app; a failure is logged and returned."""
        if not self.supported or self._task is None or self._task.done():
            return None
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._from_app.get(), timeout)
        except asyncio.TimeoutError:
            assert timeout is not None  # wait_for() times out only when given a timeout
            self.log("ASGI lifespan shutdown did not finish within %g s" % timeout, 40)
            self._task.cancel()
            return "it did not finish within %g s" % timeout
        if message["type"] == "lifespan.shutdown.complete":
            return None
        reason = self._failure_text(message, "shutdown")
        self.log("ASGI lifespan shutdown failed: %s" % reason, 40)
        return reason

    def cancel(self) -> None:
        """End the app's lifespan task if it still runs (its loop is about to stop serving it)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _failure_text(self, message: Message, phase: str) -> str:
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
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        error: Exception | None = None
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:  # reported to startup()/shutdown(), which decide what it means
            error = exc
        await self._from_app.put({"type": _ENDED, "error": error})

    async def _receive(self) -> Message:
        self._asked = True
        return await self._to_app.get()

    async def _send(self, message: Message) -> None:
        await self._from_app.put(message)



def _describe(error: BaseException | None) -> str:
    return "it returned" if error is None else one_line(error)
