"""granian: a Rust HTTP server (hyper on tokio) for WSGI and ASGI apps, run inside this process.

granian's own entry points bind their sockets and run their workers as processes or threads of
their own; its "embedded" server refuses WSGI and binds its socket too. So this module drives
granian's worker directly, the object each of granian's workers runs: it is given a duplicate
of our listening socket, serves from Rust threads (``serve_mtr`` returns at once, accepting),
and a ``WorkerSignal`` stops it. On that signal granian closes its copy of the listener at once
(so new connections are refused) and finishes the requests in flight; when the last one is done
it calls the signal's callbacks, which is the event stop() waits for (bounded by the graceful
timeout; past it the requests left are not waited for, as Rust threads cannot be cut short).

WSGI apps run on granian's Python threads (``options.threads``, 10 by default, as cheroot).
ASGI apps run on the event loop their app's servers share, with the ASGI lifespan ours (see
uvicorn_server.py), so what the app opens at startup belongs to the loop that serves it.

The worker API is granian's internal one (``granian._granian``), called with keyword arguments
so that a renamed parameter fails loudly; tests/servers run every server test against it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from .backend import ServeOptions
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 10
#: The most requests one worker handles at once (granian's default for one worker).
BACKPRESSURE = 128


def create(app: Any, listener: socket.socket, options: ServeOptions, protocol: str = "wsgi") -> "GranianServer":
    return GranianServer(app, listener, options, protocol)


class GranianServer:
    """One granian worker on a socket that already listens, stopped by its WorkerSignal."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions, protocol: str) -> None:
        self._app = app
        self._listener = listener
        self._options = options
        self._protocol = protocol
        self._signal: Any = None
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # WSGI: granian wants one, never runs it
        self._shared: Any = None  # ASGI: the loop and lifespan this app's servers share

    def prepare(self) -> None:
        """Start the worker on the listener; it accepts once this returns."""
        from granian._granian import WorkerSignal

        logging.getLogger("_granian").setLevel(logging.WARNING)  # its "Started worker-1": the bus says it
        try:
            worker, scheduler, loop = self._worker()
        except BaseException:
            self._listener.close()
            self._release_loop()
            raise
        self._signal = WorkerSignal()
        self._signal.add_cb(self._stopped.set)
        serve = worker.serve_mtr_uds if self._listener.family == socket.AF_UNIX else worker.serve_mtr
        serve(scheduler, loop, self._signal)

    def _worker(self) -> tuple[Any, Any, asyncio.AbstractEventLoop]:
        """granian's worker for our app on our listener, with the scheduler that runs the app."""
        from granian import _granian
        from granian._futures import _new_cbscheduler

        holder = _granian.SocketHolder(self._listener.detach(), self._listener.family == socket.AF_UNIX, BACKLOG)
        settings = dict(worker_id=1, sock=(None, holder), ipc=None, threads=1, backpressure=BACKPRESSURE,
                        http_mode="auto")
        if self._protocol == "asgi":
            from granian._futures import _future_watcher_wrapper
            from granian.asgi import _callback_wrapper as asgi_callback

            self._shared = _shared_loop(self._app, self._options)
            loop = self._shared.thread.loop
            callback = _future_watcher_wrapper(asgi_callback(self._shared.lifespan.with_state(self._app), {}, {}, None))
            worker = _granian.ASGIWorker(**settings, websockets_enabled=True)
        else:
            from granian.wsgi import _callback_wrapper as wsgi_callback

            loop = self._loop = asyncio.new_event_loop()
            callback = wsgi_callback(self._app, {}, None)
            worker = _granian.WSGIWorker(**settings, py_threads=self._options.threads or DEFAULT_THREADS)
        return worker, _new_cbscheduler(loop, callback, impl_asyncio=True), loop

    def serve(self) -> None:
        """Wait until the worker has stopped (its requests finished)."""
        self._stopped.wait()

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight (bounded by the graceful timeout)."""
        if self._signal is None:
            return
        self._signal.set()
        timeout = self._options.graceful_timeout
        if not self._stopped.wait(timeout):
            self._options.log("granian: requests still running after %g s; not waiting" % timeout, 30)
            self._stopped.set()  # serve() returns: the server thread is done with it
        self._release_loop()

    def _release_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        shared, self._shared = self._shared, None
        if shared is not None:
            _leave_shared_loop(shared, self._options)


def _shared_loop(app: Any, options: ServeOptions) -> Any:
    from .uvicorn_server import _join

    return _join(options.shared_loop, app, options, None)


def _leave_shared_loop(shared: Any, options: ServeOptions) -> None:
    from .uvicorn_server import _leave

    _leave(options.shared_loop, shared, options.graceful_timeout)
