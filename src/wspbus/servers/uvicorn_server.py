"""uvicorn: the asyncio ASGI server, with the app's lifespan tied to the bus.

The server's whole life runs on one event loop in its own thread: lifespan startup, then
uvicorn's startup on the given listener (prepare() returns when both are done, or raises the
app's startup failure), serving, and at stop() uvicorn's graceful shutdown followed by the
lifespan shutdown. The lifespan is ours (servers/lifespan.py) rather than uvicorn's so that a
failed startup carries the app's message to the bus. uvicorn's once-a-second tick still keeps
its Date header fresh; a stop ends it at once instead of at its next tick.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from .backend import ServeOptions
from .binds import BACKLOG
from .lifespan import Lifespan

__all__ = ["create"]


def create(app: Any, listener: socket.socket, options: ServeOptions) -> "UvicornServer":
    return UvicornServer(app, listener, options)


class UvicornServer:
    """uvicorn.Server on a socket that already listens, run on a loop of its own."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions) -> None:
        self._listener = listener
        self._options = options
        self._lifespan = Lifespan(app, options.log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Start the loop thread; return once the app started and the server accepts."""
        import uvicorn

        config = uvicorn.Config(self._lifespan.app_with_state, interface="asgi3", lifespan="off",
                                log_config=None, access_log=False, backlog=BACKLOG,
                                timeout_graceful_shutdown=self._options.graceful_timeout)
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)  # uvicorn's no-op: ours runs instead
        self._loop = (config.get_loop_factory() or asyncio.new_event_loop)()
        self._thread = threading.Thread(target=self._run_loop, name="%s loop" % self._options.name,
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def serve(self) -> None:
        """Wait for the loop thread; raise what ended it, if anything did."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:
                pass  # the loop closed meanwhile: the server has already ended
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- on the loop thread --------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = self._loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # prepare() or serve() raises it in the bus's threads
            self._error = exc
        finally:
            self._started.set()
            _close_loop(loop)

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        try:
            await self._lifespan.startup()
            await self._server.startup(sockets=[self._listener])
        except BaseException:
            self._listener.close()
            raise
        self._started.set()
        ticker = asyncio.ensure_future(self._server.main_loop())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        await asyncio.wait({ticker, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (ticker, stop):
            task.cancel()
        await self._shutdown()
        await self._lifespan.shutdown(self._options.graceful_timeout)

    async def _shutdown(self) -> None:
        """Stop accepting; if anything is in flight, uvicorn's graceful shutdown finishes it."""
        for server in self._server.servers:
            server.close()
        # Two turns of the loop read what already arrived on open connections, so that a request
        # sent before the stop counts as in flight (and is answered) rather than the connection
        # as idle (and closed by uvicorn's shutdown).
        for _ in range(2):
            await asyncio.sleep(0)
        state = self._server.server_state
        if state.connections or state.tasks:
            await self._server.shutdown(sockets=[self._listener])
        else:
            self._listener.close()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the app left running, then close the loop (as asyncio.run does)."""
    try:
        leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
