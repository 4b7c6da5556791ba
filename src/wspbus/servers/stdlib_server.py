"""The zero-dependency server: the stdlib's WSGI handler (wsgiref), one thread per connection.

HTTP/1.0 without keep-alive (wsgiref's handler); for a site with no server installed, and
for tests. The accept loop is ours: it sleeps in a selector on the listening socket and on a
Waker, so stop() takes effect at once instead of at the next tick of socketserver's loop.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .backend import ServeOptions, Waker
from .request_head import inspect_parsed_head

__all__ = ["create"]

#: Seconds a connection may take to send its request (and to take each piece of the response).
CONNECTION_TIMEOUT = 30.0


def create(app: Any, listener: socket.socket, options: ServeOptions) -> "StdlibServer":
    return StdlibServer(app, listener, options)


class _RequestHandler(WSGIRequestHandler):
    server: StdlibServer

    def parse_request(self) -> bool:
        """http.server's parse, then the head limits and framing rules every server keeps."""
        if not super().parse_request():
            return False
        if self.headers.defects:  # a line the parser could not read as a field: dropped, with what follows
            self.send_error(400, "Malformed header field.")
            return False
        fields = [("%s: %s" % field).encode("latin-1", "replace") for field in self.headers.items()]
        refusal = inspect_parsed_head(len(self.requestline), fields, self.server.options.limits)
        if refusal is not None:
            self.send_error(int(refusal.status[:3]), refusal.explanation)  # and the connection closes
            return False
        return True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged by wspbus.access; errors reach handle_error

    def log_error(self, format: str, *args: Any) -> None:
        self.server.options.log("stdlib server: " + (format % args), 30)


class StdlibServer(WSGIServer):
    """wsgiref's WSGIServer on a socket that already listens, with a bounded, prompt stop."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions) -> None:
        super().__init__(listener.getsockname(), _RequestHandler, bind_and_activate=False)
        self.socket.close()  # the one socketserver made; we serve on the given listener
        self.socket = listener
        self.options = options
        self.set_app(app)
        self._waker = Waker()
        self._stopping = False
        self._loop_done = threading.Event()
        self._handlers: set[threading.Thread] = set()
        self._handlers_changed = threading.Condition()

    def prepare(self) -> None:
        """Nothing to bind: take the listener's address for the WSGI environ."""
        address = self.socket.getsockname()
        if isinstance(address, tuple):
            self.server_name, self.server_port = address[0], address[1]
        else:
            self.server_name, self.server_port = "localhost", 0
        self.setup_environ()
        self.socket.setblocking(False)

    def serve(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._waker.reader, selectors.EVENT_READ)
                while not self._stopping:
                    for key, _ in selector.select():
                        if key.fileobj is self.socket and not self._stopping:
                            self._accept()
        finally:
            self._loop_done.set()

    def _accept(self) -> None:
        try:
            connection, peer = self.socket.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:  # out of descriptors, for instance: keep serving the others
            self.options.log("stdlib server: accept failed: %s" % exc, 30)
            return
        connection.settimeout(CONNECTION_TIMEOUT)
        if not isinstance(peer, tuple):  # a Unix socket's peer has no address
            peer = ("", 0)
        handler = threading.Thread(target=self._handle, args=(connection, peer), daemon=True,
                                   name="%s request" % self.options.name)
        with self._handlers_changed:
            self._handlers.add(handler)
        handler.start()

    def _handle(self, connection: socket.socket, peer: tuple[str, int]) -> None:
        try:
            self.finish_request(connection, peer)
        except Exception:
            self.options.log("stdlib server: error serving %s" % (peer,), 40, traceback=True)
        finally:
            self.shutdown_request(connection)
            with self._handlers_changed:
                self._handlers.discard(threading.current_thread())
                self._handlers_changed.notify_all()

    def stop(self) -> None:
        """Stop accepting, let the requests in flight finish (bounded), close."""
        self._stopping = True
        self._waker.wake()
        self._loop_done.wait(self.options.graceful_timeout)
        self.socket.close()
        def others() -> set[threading.Thread]:
            """Not the request that asked for the stop, if it runs here: it ends after this returns."""
            return self._handlers - {threading.current_thread()}

        with self._handlers_changed:
            finished = self._handlers_changed.wait_for(lambda: not others(), self.options.graceful_timeout)
            left = len(others())
        if not finished:
            assert self.options.graceful_timeout is not None  # without a bound, wait_for() finishes
            self.options.log("stdlib server: %d request(s) still running after %g s; not waiting"
                             % (left, self.options.graceful_timeout), 30)
        self._waker.close()
