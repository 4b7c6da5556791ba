"""waitress: a pure-Python WSGI server (HTTP/1.1, keep-alive, a fixed pool of worker threads).

waitress has no graceful stop of its own, so stop() drains it from its event loop: the
listener is closed, each connection closes once it is idle (after the response in flight is
flushed; a connection that has sent nothing yet first gets its request answered), and when the
last one is gone the loop ends. Past the graceful timeout everything left is closed.

A stop asked for by one of its own requests (an exit() in the app: the bus runs 'stop' on the
thread that publishes) cannot wait for the drain, which ends only once that request returns:
it starts the drain and leaves the waiting to a thread of its own.

A server whose every thread has a request (queued or running) stops accepting until one is free,
as servers/cheroot_server.py explains: with several workers on one listener, a request no longer
waits behind a busy worker while another idles. The listener's ``readable()`` says no while it is
full, its ``handle_accept()`` declines (an event already polled), and a thread that finishes a
request while it was full wakes the loop (the trigger) to listen again.

waitress warns on its 'waitress.queue' logger for every request that waits for a free thread:
under load (more connections than threads, the usual case) a log line per request, formatted
and written while the site is busiest. Unless the site set that logger's level, only its errors
are kept.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from .backend import ServeOptions
from .request_head import INCOMPLETE, HeadLimits, Refusal, inspect_head
from .sockets.binds import BACKLOG

__all__ = ["create"]

DEFAULT_THREADS = 4
#: Connections waitress keeps open at once (its own default, 100, is what a slowloris of 100 takes).
#: It polls them (poll(), not select(), which fails past descriptor 1023); idle ones cost no thread.
CONNECTION_LIMIT = 1000


def create(app: Any, listener: socket.socket, options: ServeOptions) -> "WaitressServer":
    return WaitressServer(app, listener, options)


class WaitressServer:
    """A waitress server on a socket that already listens, with a draining stop."""

    def __init__(self, app: Any, listener: socket.socket, options: ServeOptions) -> None:
        self._app = app
        self._listener = listener
        self._options = options
        self._map: dict[int, Any] = {}  # descriptor -> waitress's dispatcher on it
        self._server: Any = None
        self._draining = False
        self._loop_done = threading.Event()
        #: Set once everything is closed (after a forced stop, when the stuck requests ended).
        self.closed = threading.Event()
        self._request = threading.local()  # ``active`` on a worker thread while it runs the app
        self._threads = options.threads or DEFAULT_THREADS
        self._in_hand = 0  # requests queued for a thread or running on one
        self._hand_lock = threading.Lock()

    def prepare(self) -> None:
        from waitress.server import create_server  # type: ignore[import-untyped]  # waitress ships no types

        limits = self._options.limits
        self._server = create_server(self._run_app, map=self._map, sockets=[self._listener],
                                     threads=self._threads, backlog=BACKLOG,
                                     # a slowloris: idle connections end after head_timeout, and
                                     # waitress's 100 connections are not all an attacker needs
                                     connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True,
                                     channel_timeout=limits.head_timeout,
                                     cleanup_interval=max(1, min(30, int(limits.head_timeout / 2))))
        self._server.channel_class = _draining_channel_class(self)
        self._server.channel_class.parser_class = _checked_parser_class(self._options.limits)
        self._pause_when_full(self._server)
        queue_log = logging.getLogger("waitress.queue")
        if queue_log.level == logging.NOTSET:
            queue_log.setLevel(logging.ERROR)

    def _pause_when_full(self, server: Any) -> None:
        """Wrap the listener's readable(), handle_accept() and add_task() (its instance's, not the class's)."""
        readable, handle_accept, add_task = server.readable, server.handle_accept, server.add_task

        def readable_unless_full() -> bool:
            return bool(readable()) and not self._full  # readable() also runs waitress's upkeep: always called

        def accept_unless_full() -> None:
            if not self._full:
                handle_accept()

        def counted_add_task(task: Any) -> None:
            with self._hand_lock:
                self._in_hand += 1
            add_task(task)

        server.readable, server.handle_accept, server.add_task = readable_unless_full, accept_unless_full, counted_add_task

    @property
    def _full(self) -> bool:
        return self._in_hand >= self._threads

    def task_done(self) -> None:
        """A thread finished one request (the channel's service()): listen again if that frees one."""
        with self._hand_lock:
            self._in_hand -= 1
            freed = self._in_hand == self._threads - 1
        if freed:
            self._server.pull_trigger()

    def _run_app(self, environ: Any, start_response: Any) -> Any:
        self._request.active = True
        try:
            return self._app(environ, start_response)
        finally:
            self._request.active = False

    def runs_current_request(self) -> bool:
        """True on a worker thread while it runs the app (so a stop from there cannot wait)."""
        return bool(getattr(self._request, "active", False))

    def serve(self) -> None:
        try:
            self._server.run()
        finally:
            self._loop_done.set()

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight (bounded), end the loop and the workers."""
        if self.runs_current_request():
            threading.Thread(target=self._stop, name="%s stop" % self._options.name, daemon=True).start()
            return
        self._stop()

    def _stop(self) -> None:
        timeout = self._options.graceful_timeout
        trigger = self._server.trigger
        trigger.pull_trigger(self._begin_draining)
        drained = self._loop_done.wait(timeout)
        if not drained:
            assert timeout is not None  # without a bound, the wait ends only once drained
            self._options.log("waitress: requests still running after %g s; closing their connections"
                              % timeout, 30)
            trigger.pull_trigger(self._close_everything)
            self._loop_done.wait(timeout)
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout if drained else 0)
        if drained:
            self._close_trigger()
        else:  # a worker still running may pull the trigger: close it once the last one is gone
            threading.Thread(target=self._close_trigger_after_workers, daemon=True,
                             name="%s cleanup" % self._options.name).start()

    def _close_trigger_after_workers(self) -> None:
        dispatcher = self._server.task_dispatcher
        with dispatcher.lock:
            while dispatcher.threads:
                dispatcher.thread_exit_cv.wait()
        self._close_trigger()

    def _close_trigger(self) -> None:
        self._server.trigger.close()
        self.closed.set()

    # -- in the event loop's thread ------------------------------------------------------

    def _begin_draining(self) -> None:
        from waitress import wasyncore  # type: ignore[import-untyped]

        self._draining = True
        wasyncore.dispatcher.close(self._server)  # the listener: stop accepting
        self.channel_closed()

    def channel_closed(self) -> None:
        """Once draining and the last connection is gone, take the trigger out of the loop's map:
        the loop then ends. The trigger stays open: another thread may be pulling it right now."""
        if self._draining and not self._server.active_channels:
            self._server.trigger.del_channel()

    def _close_everything(self) -> None:
        trigger = self._server.trigger
        for dispatcher in list(self._map.values()):
            if dispatcher is trigger:
                trigger.del_channel()
            else:
                dispatcher.close()

    @property
    def draining(self) -> bool:
        return self._draining


def _draining_channel_class(owner: WaitressServer) -> type:
    from waitress.channel import HTTPChannel  # type: ignore[import-untyped]

    class DrainingChannel(HTTPChannel):  # type: ignore[misc]  # an untyped base
        """An HTTPChannel that closes itself once idle while its server drains."""

        has_received = False

        def received(self, data: bytes) -> bool:
            self.has_received = True
            return bool(super().received(data))

        def writable(self) -> bool:
            if owner.draining and self._idle():
                self.will_close = True
            return bool(super().writable())

        def _idle(self) -> bool:
            waited_for = self.has_received or not self.connected  # a fresh client may still send
            return waited_for and not self.requests and self.request is None and not self.total_outbufs_len

        def service(self) -> None:
            try:
                super().service()
            finally:
                owner.task_done()

        def del_channel(self, map: Any = None) -> None:
            super().del_channel(map)
            owner.channel_closed()

    return DrainingChannel


def _checked_parser_class(limits: HeadLimits) -> type:
    """waitress's request parser, refusing a head past ``limits`` or with ambiguous framing
    (request_head.inspect_head) as waitress refuses one past its own size limit, and a head that
    trickles in for longer than ``limits.head_timeout`` (408; waitress's channel_timeout only
    ends connections that send nothing)."""
    from waitress.parser import HTTPRequestParser  # type: ignore[import-untyped]
    from waitress.utilities import BadRequest  # type: ignore[import-untyped]

    class CheckedParser(HTTPRequestParser):  # type: ignore[misc]  # an untyped base
        completed: bool  # waitress's, declared for mypy (annotations only: no class attributes)
        header_plus: bytes

        head_started: float | None = None

        def received(self, data: bytes) -> int:
            if self.body_rcv is None and not self.completed:  # still reading the head
                now = time.monotonic()
                self.head_started = self.head_started or now
                verdict = inspect_head(self.header_plus + data, limits)
                if verdict == INCOMPLETE and now - self.head_started > limits.head_timeout:
                    verdict = Refusal("408 Request Timeout", "The request head took too long.")
                if isinstance(verdict, Refusal):
                    self.parse_header(b"GET / HTTP/1.0\r\n")  # what waitress does before its own refusal
                    self.error = BadRequest(verdict.explanation)
                    self.error.code, self.error.reason = int(verdict.status[:3]), verdict.status[4:]
                    self.completed = True
                    return len(data)
            return int(super().received(data))

    return CheckedParser
