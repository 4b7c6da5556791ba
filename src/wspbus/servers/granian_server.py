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
ASGI apps run on the event loop their app's servers share, with the ASGI lifespan ours
(app_loop.py), so what the app opens at startup belongs to the loop that serves it.

The worker API is granian's internal one (``granian._granian``), called with keyword arguments
so that a renamed parameter fails loudly; tests/servers run every server test against it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import threading
from typing import Any

from .app_loop import AppLoop, join_app_loop, leave_app_loop
from .backend import ServeOptions, SharedLoop
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 10
#: The most requests one worker handles at once (granian's default for one worker).
BACKPRESSURE = 128


def create(app: Any, listener: socket.socket, options: ServeOptions) -> "GranianServer":
    return GranianServer(app, listener, options)


class GranianServer:
    """One granian worker on a socket that already listens, stopped by its WorkerSignal."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions) -> None:
        self._app = app
        self._listener = listener
        self._options = options
        #: ASGI: the loop this server runs on, the one its app's servers share, else one of its own.
        self._loop_share = options.shared_loop or SharedLoop()
        self._signal: Any = None
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # WSGI: granian wants one, never runs it
        self._shared: AppLoop | None = None  # ASGI: the running loop and lifespan, once joined

    def prepare(self) -> None:
        """Start the worker on the listener; it accepts once this returns."""
        logging.getLogger("_granian").setLevel(logging.WARNING)  # its "Started worker-1": the bus says it
        try:
            worker, scheduler, loop = self._worker()
        except BaseException:
            self._listener.close()
            self._release_loop()
            raise
        self._stopped = threading.Event()
        self._signal = _native().WorkerSignal()
        self._signal.add_cb(self._stopped.set)
        serve = worker.serve_mtr_uds if self._unix else worker.serve_mtr
        serve(scheduler, loop, self._signal)

    def _worker(self) -> tuple[Any, Any, asyncio.AbstractEventLoop]:
        """granian's worker for our app on our listener, with the scheduler that runs the app."""
        futures: Any = importlib.import_module("granian._futures")
        if self._options.protocol == "asgi":
            asgi: Any = importlib.import_module("granian.asgi")
            self._shared = join_app_loop(self._loop_share, self._app, self._options, None)  # the lifespan starts
            loop = self._shared.thread.loop
            callback = futures._future_watcher_wrapper(
                asgi._callback_wrapper(self._shared.lifespan.with_state(self._app), {}, {}, None))
            worker = _native().ASGIWorker(**self._settings(), websockets_enabled=True)
        else:
            wsgi: Any = importlib.import_module("granian.wsgi")
            loop = self._loop = asyncio.new_event_loop()
            callback = wsgi._callback_wrapper(self._app, {}, None)
            worker = _native().WSGIWorker(**self._settings(), py_threads=self._options.threads or DEFAULT_THREADS)
        return worker, futures._new_cbscheduler(loop, callback, impl_asyncio=True), loop

    def _settings(self) -> dict[str, Any]:
        """The worker's settings; the listener's descriptor goes to granian, which closes it at its stop."""
        holder = _native().SocketHolder(self._listener.detach(), self._unix, BACKLOG)
        return dict(worker_id=1, sock=(None, holder), ipc=None, threads=1, backpressure=BACKPRESSURE,
                    http_mode="auto")

    @property
    def _unix(self) -> bool:
        return self._listener.family == socket.AF_UNIX

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
            self._options.log("granian: requests still running after %s s; not waiting" % timeout, 30)
            self._stopped.set()  # serve() returns: the server thread is done with it
        self._release_loop()

    def _release_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        shared, self._shared = self._shared, None
        if shared is not None:
            leave_app_loop(self._loop_share, shared, self._options.graceful_timeout)


def _native() -> Any:
    """granian's compiled module; its type stubs lag behind what it takes (ipc, metrics)."""
    return importlib.import_module("granian._granian")
