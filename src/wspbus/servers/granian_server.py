"""granian: a Rust HTTP server (hyper on tokio) for WSGI and ASGI apps, run inside this process.

granian's own entry points bind their sockets and run their workers as processes or threads of
their own; its "embedded" server refuses WSGI and binds its socket too. So this module drives
granian's worker directly, the object each of granian's workers runs: it is given a duplicate
of our listening socket, serves from Rust threads (``serve_mtr`` returns at once, accepting),
and a ``WorkerSignal`` stops it. On that signal granian closes its copy of the listener at once
(so new connections are refused) and finishes the requests in flight; when the last one is done
it calls the signal's callbacks, which is the event stop() waits for (bounded by the graceful
timeout; past it the requests left are not waited for, as Rust threads cannot be cut short).

Before that signal, granian is made to stop accepting on its own: hyper's graceful stop closes,
unanswered, a connection whose request it has not read yet, and on a listener other processes
share (a restart, a reload) a connection accepted in the instant before the stop was lost so (one
in about 15 restarts under a steady client). So stop() first puts a quiet listener (one nobody
connects to) under granian's descriptor number (dup2): its accepts find nothing from then on, and
the next connection waits in the shared queue for the process that follows. Then it gives hyper
ACCEPT_SETTLE seconds to read the requests of the connections it took just before, and signals.

WSGI apps run on granian's Python threads (``options.threads``, 10 by default, as cheroot),
called by _WsgiRunner rather than granian's own wrapper, which copies the whole process
environment (secrets included) into every request's environ. ASGI apps run on the event loop
their app's servers share, with the ASGI lifespan ours (app_loop.py), so what the app opens at
startup belongs to the loop that serves it.

Request heads are held to ``options.limits`` as with every server (request_head.py), checked on
what granian parsed, before the app runs. One difference stays: a request with both
Content-Length and Transfer-Encoding reaches us with the Content-Length already dropped (hyper
frames the body as chunked, and closes the connection after the response: RFC 9112 6.3 allows
that as well as a 400). A head that trickles in ends its connection after ``head_timeout``; a
connection that sends nothing at all is kept (tokio holds it without a thread, so it starves
no request).

The worker API is granian's internal one (``granian._granian``), called with keyword arguments
so that a renamed parameter fails loudly; tests/servers run every server test against it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .app_loop import AppLoop, join_app_loop, leave_app_loop
from .backend import ServeOptions, SharedLoop
from .protocols import Environ, WSGIApp
from .request_head import HeadLimits, asgi_head_guard, inspect_environ
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 10
#: The most requests one worker handles at once (granian's default for one worker).
BACKPRESSURE = 128
#: Seconds between granian's last accept and its stop: for hyper to read the requests of the
#: connections it accepted last (a client sends its request right after connecting).
ACCEPT_SETTLE = 0.05


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
        self._granian_fd = -1  # the listener's descriptor, granian's from prepare() on
        self._listener_inode = 0
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
            app = asgi_head_guard(self._app, self._options.limits)
            # granian's wrapper puts a copy of the state it is given in each scope: ours, the lifespan's
            callback = futures._future_watcher_wrapper(asgi._callback_wrapper(app, {}, self._shared.lifespan.state, None))
            worker = _native().ASGIWorker(**self._settings(), websockets_enabled=True)
        else:
            loop = self._loop = asyncio.new_event_loop()
            callback = _WsgiRunner(self._app, self._options.limits)
            worker = _native().WSGIWorker(**self._settings(), py_threads=self._options.threads or DEFAULT_THREADS)
        return worker, futures._new_cbscheduler(loop, callback, impl_asyncio=True), loop

    def _settings(self) -> dict[str, Any]:
        """The worker's settings; the listener's descriptor goes to granian, which closes it at its stop."""
        self._granian_fd = self._listener.detach()
        self._listener_inode = os.fstat(self._granian_fd).st_ino
        holder = _native().SocketHolder(self._granian_fd, self._unix, BACKLOG)
        http: Any = importlib.import_module("granian.http")
        head_timeout = http.HTTP1Settings(header_read_timeout=max(1, int(self._options.limits.head_timeout * 1000)))
        return dict(worker_id=1, sock=(None, holder), ipc=None, threads=1, backpressure=BACKPRESSURE,
                    http_mode="auto", http1_opts=head_timeout)

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
        fd, self._granian_fd = self._granian_fd, -1  # once: after the signal granian closes it
        if _silence(fd, self._listener_inode, self._listener.family):
            time.sleep(ACCEPT_SETTLE)
        elif fd >= 0:
            self._options.log("granian: could not stop accepting before the stop (no quiet socket): "
                              "a connection accepted in the last instant may be closed unanswered", 10)
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


def _silence(fd: int, inode: int, family: int) -> bool:
    """Put a listening socket nobody connects to under descriptor ``fd`` (granian's listener, the
    socket ``inode``); False if there is nothing to silence (no descriptor, or it is another file:
    granian gave the listener up and the number was reused)."""
    try:
        if fd < 0 or os.fstat(fd).st_ino != inode:
            return False
    except OSError:
        return False
    quiet = socket.socket(family, socket.SOCK_STREAM)
    try:
        quiet.bind("" if family == socket.AF_UNIX else (("::1" if family == socket.AF_INET6 else "127.0.0.1"), 0))
        quiet.listen(1)
        quiet.setblocking(False)
        os.dup2(quiet.fileno(), fd, inheritable=False)  # as the listener was: a child must not get it
    except OSError:
        return False
    finally:
        quiet.close()
    return True


def _native() -> Any:
    """granian's compiled module; its type stubs lag behind what it takes (ipc, metrics)."""
    return importlib.import_module("granian._granian")


class _WsgiRunner:
    """What granian's worker calls for each WSGI request, with its response object and the
    request's variables: the environ, the head checked, the app's answer handed to granian."""

    def __init__(self, app: WSGIApp, limits: HeadLimits) -> None:
        self._app = app
        self._limits = limits
        self._base: Environ = {
            "GATEWAY_INTERFACE": "CGI/1.1", "SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr,
            "wsgi.input_terminated": True, "wsgi.multithread": True, "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def __call__(self, proto: Any, scope: Environ) -> int:
        refusal = inspect_environ(scope, self._limits)  # what granian parsed: fewer keys than the whole environ
        environ = self._base | scope
        if refusal is not None:
            body = refusal.explanation.encode("latin-1") + b"\n"
            status = int(refusal.status[:3])
            proto.response_bytes(status, [("content-type", "text/plain"), ("connection", "close")], body)
            return status
        start = _StartResponse()
        result = self._app(environ, start)
        if start.written:  # the app used write(): what it wrote comes first
            result = _Chained(start.written, result)
        if isinstance(result, list):
            proto.response_bytes(start.status, start.headers, b"".join(result))
        else:
            proto.response_iter(start.status, start.headers, _Body(result))
        return start.status


class _StartResponse:
    """start_response for granian: the status and headers, and what write() was given (sent
    before the returned body: granian takes a whole body or an iterator, nothing before it)."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        self.status = int(status[:3])
        self.headers = headers
        return self.written.append


class _Body:
    """The app's iterable as granian iterates it, closed as PEP 3333 says."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result
        self._chunks = iter(result)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class _Chained(_Body):
    """What write() was given, then the returned iterable (closed as the app's)."""

    def __init__(self, written: list[bytes], result: Iterable[bytes]) -> None:
        super().__init__(result)
        self._chunks = iter([*written, *result]) if isinstance(result, list) else _then(written, result)


def _then(first: list[bytes], rest: Iterable[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest
