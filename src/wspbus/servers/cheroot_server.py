"""cheroot: a threaded HTTP/1.1 WSGI server with keep-alive, the default WSGI server.

cheroot binds its own socket in prepare(); here prepare() serves the listener it is given
instead (the two bind hooks hand it over). cheroot's connection loop notices a stop request
only at its next select() timeout (half a second); a Waker registered in that selector ends
the loop at once, so an idle site stops in milliseconds. This touches two attributes of
cheroot's ConnectionManager (``_selector``, ``_stop_requested``); tests/servers time the stop,
so a cheroot release that changes them is caught.

What already reached the server is not lost at a stop: cheroot hands each new connection to a
worker thread at once, and its thread pool finishes those (within the graceful timeout).
"""

from __future__ import annotations

import selectors
import socket
from typing import Any

from .backend import ServeOptions, Waker
from .sockets.addresses import address_of
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 10


def create(app: Any, listener: socket.socket, options: ServeOptions) -> Any:
    from cheroot import wsgi

    class CherootServer(wsgi.Server):
        """cheroot's WSGI server on a socket that already listens, with a prompt stop."""

        _connections: Any  # cheroot's ConnectionManager, made by prepare() (not in cheroot's stubs)

        def __init__(self) -> None:
            # shutdown_timeout: any number of seconds, or None for no bound (cheroot annotates it int).
            super().__init__(address_of(listener), app, numthreads=options.threads or DEFAULT_THREADS,
                             request_queue_size=BACKLOG,
                             shutdown_timeout=options.graceful_timeout)  # type: ignore[arg-type]
            self._listener = listener
            self._waker = Waker()

        # cheroot's prepare() calls one of these to make its socket: give it ours.
        def bind(self, family: int, type: int, proto: int = 0) -> None:
            self.socket = self._listener

        def bind_unix_socket(self, bind_addr: Any) -> None:
            self.socket = self._listener

        def prepare(self) -> None:
            super().prepare()
            self.socket.setblocking(False)
            # Registered with the server as its data, the Waker makes the loop try a
            # (non-blocking) accept and then see that a stop was requested.
            self._connections._selector.register(self._waker.reader.fileno(), selectors.EVENT_READ, data=self)
            if self.keep_alive_conn_limit is not None:
                self.keep_alive_conn_limit += 1  # cheroot counts every selector entry but its listener's

        def stop(self) -> None:
            if not self.ready:
                self._waker.close()
                return
            connections = self._connections
            connections._stop_requested = True
            self._waker.wake()
            connections.stop()  # returns once the loop has ended
            super().stop()
            self._waker.close()

    return CherootServer()
