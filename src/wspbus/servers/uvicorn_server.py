"""uvicorn: the asyncio ASGI server, with the app's lifespan tied to the bus.

Every server of one app (the binds of a site: same ``options.shared_loop``) runs on one event loop
in a thread of its own, and the app's lifespan runs once on it (app_loop.py): startup when the first
of them starts, shutdown after the last has stopped, so what the app opens at startup (a connection
pool, say) serves every bind. prepare() returns once the lifespan startup is done and uvicorn accepts on
the given listener (or raises the app's startup failure); stop() runs uvicorn's graceful shutdown.
The lifespan is ours (servers/lifespan.py) rather than uvicorn's so that a failed startup carries
the app's message to the bus. uvicorn's once-a-second tick still keeps its Date header fresh; a
stop ends it at once instead of at its next tick.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
from asyncio import selector_events
from typing import Any

from .app_loop import AppLoop, join_app_loop, leave_app_loop
from .backend import ServeOptions, SharedLoop
from .sockets.binds import BACKLOG
from .request_head import asgi_head_guard

__all__ = ["create"]

#: How long a stop waits for the first request of a connection accepted just before it. uvicorn
#: closes a connection without a request as idle, so its client, which has sent (or is sending)
#: a request, would see a reset instead of an answer.
FIRST_REQUEST_WAIT = 0.25


def create(app: Any, listener: socket.socket, options: ServeOptions) -> "UvicornServer":
    return UvicornServer(app, listener, options)


class UvicornServer:
    """uvicorn.Server on a socket that already listens, run on the loop its app's servers share."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions) -> None:
        self._app = app
        self._listener = listener
        self._options = options
        #: The loop this server runs on: the one its app's servers share, else one of its own.
        self._loop_share = options.shared_loop or SharedLoop()
        self._shared: AppLoop | None = None
        self._stop_requested = asyncio.Event()  # made anew by each prepare()
        self._serving: concurrent.futures.Future[None] | None = None  # _serve() on the shared loop

    def prepare(self) -> None:
        """Join the app's loop (starting its lifespan); return once the server accepts."""
        import uvicorn

        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off",
                                log_config=None, access_log=False, backlog=BACKLOG,
                                # seconds, a float as well (uvicorn annotates it int)
                                timeout_graceful_shutdown=self._options.graceful_timeout)  # type: ignore[arg-type]
        shared = join_app_loop(self._loop_share, self._app, self._options, config.get_loop_factory())
        try:
            config.app = asgi_head_guard(shared.lifespan.with_state(self._app), self._options.limits)
            config.load()
            self._server = uvicorn.Server(config)
            self._server.lifespan = config.lifespan_class(config)  # uvicorn's no-op: ours runs instead
            self._stop_requested = asyncio.Event()
            self._listener = OneAcceptPerTurn.taking(self._listener, every_accept=self._options.shared_listener)
            shared.thread.run(self._server.startup(sockets=[self._listener]))
        except BaseException:
            self._listener.close()
            leave_app_loop(self._loop_share, shared, self._options.graceful_timeout)
            raise
        self._shared = shared
        self._serving = shared.thread.submit(self._serve())

    def serve(self) -> None:
        """Wait until the server stopped; raise what ended it, if anything did."""
        if self._serving is None:
            raise RuntimeError("serve() before prepare()")
        self._serving.result()

    def stop(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None or self._serving is None:  # not prepared, or stopped already
            return
        try:
            shared.thread.call_soon(self._stop_requested.set)
            concurrent.futures.wait([self._serving])  # serve() reports what ended it
        finally:
            leave_app_loop(self._loop_share, shared, self._options.graceful_timeout)

    # -- on the shared loop --------------------------------------------------------------

    async def _serve(self) -> None:
        ticker = asyncio.ensure_future(self._server.main_loop())
        stop = asyncio.ensure_future(self._stop_requested.wait())
        await asyncio.wait({ticker, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (ticker, stop):
            task.cancel()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop accepting; if anything is in flight, uvicorn's graceful shutdown finishes it.

        The servers close only once the connections asyncio already accepted have become
        connections uvicorn knows: see _stop_accepting().
        """
        _stop_accepting(self._server.servers)
        await _accepts_in_progress(FIRST_REQUEST_WAIT)
        for server in self._server.servers:
            server.close()
        # Two turns of the loop read what already arrived on open connections, so that a request
        # sent before the stop counts as in flight (and is answered) rather than the connection
        # as idle (and closed by uvicorn's shutdown).
        for _ in range(2):
            await asyncio.sleep(0)
        state = self._server.server_state
        await _first_requests(state.connections, FIRST_REQUEST_WAIT)
        if state.connections or state.tasks:
            await self._server.shutdown(sockets=[self._listener])
        else:
            self._listener.close()


class OneAcceptPerTurn(socket.socket):
    """A listening socket that, shared with other workers, accepts at most one connection per turn
    of the event loop (the listener stays readable: the next turn takes the next one); and, once
    accept() failed for want of descriptors or memory, none for the rest of that turn.

    CPython's selector loop accepts up to the listen backlog per wake-up. With workers sharing a
    listener, the first one woken took every connection waiting: a keep-alive client's 10
    connections, opened together (wrk, a proxy's pool of upstream connections), all landed on one
    worker, and --workers 2 served them no faster than one. One per turn leaves the rest to
    whichever worker accepts next, as cheroot's loop does. A listener nobody shares keeps the
    batches: one per turn cost a single worker a quarter of its new connections per second.

    After a failed accept the loop (3.11, python/cpython#151615) would otherwise go on calling
    accept(), up to the backlog per wake-up, each failure logging a traceback and scheduling a
    retry that wakes it to do the same again (on a closed socket after a stop). Here: one log
    record and one retry a second. (uvloop accepts natively, without this socket's accept(): neither
    applies there; wspbus's extras do not install it.)
    """

    _taken = False
    every_accept = False  # every accept ends the turn (a shared listener), not only a failed one
    RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

    @classmethod
    def taking(cls, listener: socket.socket, every_accept: bool) -> "OneAcceptPerTurn":
        """This socket class on ``listener``'s descriptor (``listener`` is detached)."""
        paced = cls(listener.family, listener.type, listener.proto, fileno=listener.detach())
        paced.every_accept = every_accept
        return paced

    def accept(self) -> tuple[socket.socket, Any]:
        if self._taken:
            raise BlockingIOError(errno.EAGAIN, "one accept() per turn of the loop")
        try:
            accepted = super().accept()
        except OSError as exc:
            if exc.errno in self.RESOURCE_ERRORS:
                self._end_turn()
            raise
        if self.every_accept:
            self._end_turn()
        return accepted

    def _end_turn(self) -> None:
        """No more accepts in this turn of the running loop (none running: nothing to pace)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # an accept outside the loop: refusing the next ones would never end
        loop.call_soon(self._next_turn)
        self._taken = True

    def _next_turn(self) -> None:
        self._taken = False


def _stop_accepting(servers: list[asyncio.Server]) -> None:
    """Stop asyncio accepting on the servers' sockets, without closing the servers yet.

    A selector loop accepts in a reader callback on the listening socket and makes each accepted
    connection's transport in a task of its own, a loop turn later (``_accept_connection2``).
    A server closed in between makes that task fail (the transport cannot attach to a closed
    server, CPython gh-109564), and asyncio then neither closes the accepted socket nor reports
    it: the connection, its request unread, is reset when the socket is collected or, on a
    restart, at the exec. Without the reader no accept can follow; connections that arrive from
    now on wait in the kernel's queue (for the next process, on a restart). The reader is a
    selector loop's (asyncio's default); another loop (uvloop) accepts its own way, left as is.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, selector_events.BaseSelectorEventLoop):
        return
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())


async def _accepts_in_progress(timeout: float) -> None:
    """Let connections asyncio accepted before _stop_accepting() become connections uvicorn knows.

    asyncio accepts a socket at once but makes its transport in a task of its own
    (``_accept_connection2``); until that task has run, uvicorn's shutdown cannot see the
    connection. The servers must still be open while it runs: see _stop_accepting().
    """
    current = asyncio.current_task()
    accepting = [task for task in asyncio.all_tasks()
                 if task is not current and getattr(task.get_coro(), "__name__", "") == "_accept_connection2"]
    if accepting:
        await asyncio.wait(accepting, timeout=timeout)


async def _first_requests(connections: set[Any], timeout: float) -> None:
    """Wait (at most ``timeout``) until every connection that has not yet sent its first request
    has sent it (it then counts as in flight) or closed. Woken by the bytes themselves."""
    arrived = asyncio.Event()

    def waiting() -> list[Any]:
        return [c for c in connections if getattr(c, "cycle", True) is None and not c.transport.is_closing()]

    for connection in waiting():
        _notify_on_data(connection, arrived)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting() and loop.time() < deadline:
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), deadline - loop.time())
        except asyncio.TimeoutError:
            break


def _notify_on_data(connection: Any, arrived: asyncio.Event) -> None:
    receive = connection.data_received

    def data_received(data: bytes) -> None:
        receive(data)
        arrived.set()

    connection.data_received = data_received  # the transport looks the method up per call
