"""cheroot: a threaded HTTP/1.1 WSGI server with keep-alive, the default WSGI server.

cheroot binds its own socket in prepare(); here prepare() serves the listener it is given
instead (the two bind hooks hand it over). cheroot's connection loop notices a stop request
only at its next select() timeout (half a second); a Waker registered in that selector ends
the loop at once, so an idle site stops in milliseconds. This touches two attributes of
cheroot's ConnectionManager (``_selector``, ``_stop_requested``); tests/servers time the stop,
so a cheroot release that changes them is caught.

A worker thread gets a connection only once its whole request head has arrived (the head gate).
cheroot alone hands each new connection, and each kept-alive one that turns readable, to a worker
thread at once, which then blocks reading the head: 10 idle or trickling clients (a slowloris)
take all 10 threads and nobody else is answered. Here cheroot's own connection loop, which already
watches idle kept-alive connections in a selector, reads heads too: process_conn() reads what has
arrived without blocking, keeps the connection in the selector until the head is whole, checks it
(servers/request_head.py: size limits, unambiguous framing; a refusal is answered there and the
connection closed) and only then queues it for a worker, the head already in its read buffer.
cheroot's expiry closes a connection whose head has not arrived ``head_timeout`` seconds after it
went idle (cheroot's ``timeout``, which also bounds each read and write once a worker has it).
Touched cheroot internals: the ConnectionManager's selector and ``last_used``, and the read buffer
of the connection's reader (``_read_buf``/``_read_pos``, a ``_pyio.BufferedReader``); the tests
in tests/servers (test_hostile_http, test_slowloris) fail if a cheroot release changes them.

A server whose every thread has a request (a whole head) stops accepting until a thread is free
again: its listener leaves the selector, and the loop's accept declines while paused (a listener
event already in the batch the loop is going through, the Waker's at a stop). cheroot alone accepts
and queues the connection behind the busy threads; with several workers on one listener, that
request waited while another worker idled, because the kernel hands a connection to whichever
worker accepts first, and a worker whose threads are all busy still has an idle connection loop.
Paused, it leaves the connection in the kernel's queue for a worker with a free thread. Connections
still waiting for their head do not count (they take no thread, and counting them would let idle
clients stop a worker accepting): a worker may accept a few at once before their requests arrive.
Touched: the threads' hand-back points (``put_conn()``, the connection's ``close()``), the
ConnectionManager's ``_from_server_socket``, and ``keep_alive_conn_limit`` (cheroot counts the
listener among the selector's entries; paused, it is not there).

What already reached the server is not lost at a stop: its thread pool finishes the requests
workers hold (within the graceful timeout).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any

from .backend import ServeOptions, Waker
from .request_head import INCOMPLETE, HeadLimits, Refusal, inspect_head, refusal_response
from .sockets.addresses import address_of
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 10
#: Seconds a refused connection is kept to read (and drop) what its client still sends, so that
#: closing it does not reset the connection before the client has read the refusal.
LINGER = 1.0
#: Bytes read from a connection at a time while its head arrives.
READ_SIZE = 65536


def create(app: Any, listener: socket.socket, options: ServeOptions) -> Any:
    from cheroot import server, wsgi

    class GatedConnection(server.HTTPConnection):
        """A connection and the part of its next request head received so far."""

        head = b""
        refused = False
        served = False  # has had a request: idle between requests, it is closed at a stop
        in_hand = False  # queued for a thread or held by one

        def close(self) -> None:
            # Only a connection in hand takes the server's lock: cheroot closes the ones in its
            # selector while holding the selector's lock, which hand_back() may be waiting for.
            if self.in_hand:
                self.server.hand_back(self)
            super().close()

    class CherootServer(wsgi.Server):
        """cheroot's WSGI server on a socket that already listens, with a prompt stop."""

        _connections: Any  # cheroot's ConnectionManager, made by prepare() (not in cheroot's stubs)

        def __init__(self) -> None:
            # shutdown_timeout: any number of seconds, or None for no bound (cheroot annotates it int).
            self._threads = options.threads or DEFAULT_THREADS
            super().__init__(address_of(listener), app, numthreads=self._threads, request_queue_size=BACKLOG,
                             shutdown_timeout=options.graceful_timeout)  # type: ignore[arg-type]
            self._listener = listener
            self._in_hand = 0  # connections queued for a thread or held by one
            self._hand_lock = threading.Lock()
            self._accepting = True
            self._waker = Waker()
            self._limits = options.limits
            self.timeout = options.limits.head_timeout
            self.ConnectionClass = GatedConnection

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
            accept = self._connections._from_server_socket

            def accept_unless_paused(listener: socket.socket) -> Any:
                return accept(listener) if self._accepting else None

            self._connections._from_server_socket = accept_unless_paused

        def process_conn(self, conn: Any) -> None:
            """Queue ``conn`` for a worker once its request head is whole; until then, watch it."""
            if conn.refused:
                if _drain_refused(conn):
                    self._watch(conn)
            elif _read_available(conn, self._limits.max_head):
                verdict = inspect_head(conn.head, self._limits) if conn.head else INCOMPLETE
                if isinstance(verdict, Refusal):
                    self._refuse(conn, verdict)
                elif verdict == INCOMPLETE:
                    self._watch(conn)
                else:
                    _unread(conn)
                    conn.served = True
                    self._hand_over(conn)

        def _hand_over(self, conn: Any) -> None:
            """Queue ``conn`` for a thread; with every thread taken, stop accepting."""
            with self._hand_lock:
                conn.in_hand = True
                self._in_hand += 1
                if self._accepting and self._in_hand >= self._threads:
                    self._accepting = not self._set_listening(False)
            super().process_conn(conn)

        def hand_back(self, conn: Any) -> None:
            """A thread is done with ``conn`` (kept alive, or closed): accept again if that frees one."""
            with self._hand_lock:
                if not conn.in_hand:
                    return
                conn.in_hand = False
                self._in_hand -= 1
                if not self._accepting and self._in_hand < self._threads and self.ready:
                    self._accepting = self._set_listening(True)

        def put_conn(self, conn: Any) -> None:
            self.hand_back(conn)
            super().put_conn(conn)

        def _set_listening(self, on: bool) -> bool:
            """Put the listener in the connection loop's selector, or take it out; False if it is gone
            (a stop closed it or the selector)."""
            selector = self._connections._selector
            try:
                if on:
                    selector.register(self.socket.fileno(), selectors.EVENT_READ, data=self)
                else:
                    selector.unregister(self.socket.fileno())
            except (AttributeError, KeyError, ValueError, OSError):
                return False
            if self.keep_alive_conn_limit is not None:  # one entry fewer in the selector while paused
                self.keep_alive_conn_limit += 1 if on else -1
            return True

        def _watch(self, conn: Any) -> None:
            """Back into the selector: the connection loop calls process_conn() once more arrives."""
            if conn.last_used is None:
                conn.last_used = time.time()  # a new connection: its head_timeout counts from now
            try:
                self._connections._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)
            except (KeyError, ValueError, OSError):
                conn.close()  # closed meanwhile (a stop): nothing left to watch

        def _refuse(self, conn: Any, refusal: Refusal) -> None:
            """Answer the refusal, stop sending, and read what the client still sends for LINGER s."""
            conn.refused = True
            conn.head = b""
            try:
                conn.socket.sendall(refusal_response(refusal))
                conn.socket.shutdown(socket.SHUT_WR)
            except OSError:
                conn.close()  # the client is gone already
                return
            # cheroot's expiry closes a watched connection once last_used is older than timeout.
            conn.last_used = time.time() - self.timeout + LINGER
            self._watch(conn)

        def _hand_over_waiting_heads(self) -> None:
            """At a stop, new connections and those part-way through a head go to workers, as
            cheroot alone would have given them: a request that arrives within the graceful
            timeout is answered. Kept-alive connections idle between requests are closed, as
            cheroot closes them."""
            selector = self._connections._selector
            waiting = [(fd, conn) for fd, conn in selector.connections
                       if isinstance(conn, GatedConnection) and not conn.refused and (conn.head or not conn.served)]
            for fd, conn in waiting:
                selector.unregister(fd)
                _unread(conn)
                self._hand_over(conn)

        def stop(self) -> None:
            if not self.ready:
                self._waker.close()
                return
            connections = self._connections
            connections._stop_requested = True
            self._waker.wake()
            connections.stop()  # returns once the loop has ended
            self._hand_over_waiting_heads()
            super().stop()
            self._waker.close()

    return CherootServer()


def _read_available(conn: Any, bound: int) -> bool:
    """Add to ``conn.head`` what has arrived (buffered by its reader, or one read of the socket),
    without waiting, until it holds more than ``bound`` bytes; False (and the connection closed)
    if the client closed or failed."""
    reader = conn.rfile
    if reader.has_data():  # a pipelined request cheroot's reader already took from the socket
        conn.head += reader.read1()
    if len(conn.head) > bound:
        return True  # inspect_head refuses it: no head within the limits is that long
    try:
        chunk = _receive(conn.socket)  # once: if the head is not whole, the selector calls again
    except OSError:
        chunk = b""  # reset: as good as closed
    if chunk == b"":
        conn.close()
        return False
    conn.head += chunk or b""  # None: nothing yet (a new connection, say)
    return True


def _receive(sock: socket.socket) -> bytes | None:
    """What has arrived on ``sock`` (b'' at its end), or None if nothing has: never waits.

    The socket keeps its timeout for the worker; a recv with a timeout would first wait for data,
    so the socket is made non-blocking for the call.
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(READ_SIZE)
    except BlockingIOError:
        return None
    finally:
        sock.settimeout(timeout)


def _unread(conn: Any) -> None:
    """Put the bytes read so far back in front of the connection's reader, for the worker to parse."""
    reader = conn.rfile
    reader._read_buf, reader._read_pos = conn.head, 0
    conn.head = b""


def _drain_refused(conn: Any) -> bool:
    """Drop what a refused client still sends; True while it may send more, else closed."""
    try:
        while True:
            chunk = _receive(conn.socket)
            if chunk is None:
                return True  # watched again until its LINGER ends
            if not chunk:
                break
    except OSError:
        pass  # reset by the client: closing is all there is left to do
    conn.close()
    return False
