"""ServerAdapter: runs an HTTP server object in its own thread for the life of the bus.

CherryPy's contract: ``ServerAdapter(bus, httpserver=None, bind_addr=None)``, ``subscribe()``,
listeners on 'start' (priority 75, before DropPrivileges gives up root), 'stop' and 'graceful',
``bound_addr`` (the port the kernel chose for port 0), ``wait()`` and ``restart()``. It uses
only the seed bus API, so it runs on CherryPy's engine too: ``graceful_timeout`` and
``exit_code`` are used where the bus has them.

The server object may follow either of two shapes:

* ``prepare()`` / ``serve()`` / ``stop()`` (cheroot's, and every server of this package):
  prepare() binds and listens, and runs in the start listener, so the bus is STARTED only once
  the socket listens and a bind error fails start() itself; serve() then runs in a thread.
* ``start()`` / ``stop()`` with an optional ``ready`` flag (older CherryPy-style servers):
  start() runs in a thread and the listener waits for ``ready``. Such a server gives no
  readiness event, so this is the one place that checks a flag: between checks the listener
  waits on the server thread itself, so a server that dies is noticed at once.

A server thread that ends while nobody asked it to is a failure: it is logged, the bus's
``exit_code`` (if it has one) becomes 1 and the bus exits, so ``block()`` returns and the process ends non-zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..plugins.base import SimplePlugin, ignore_listener_failures, priority
from .reporting import one_line
from .sockets.addresses import bracketed

__all__ = ["ServerAdapter"]

#: Longest pause between two looks at a legacy server's ``ready`` flag.
_LEGACY_READY_CHECK = 0.05


class ServerAdapter(SimplePlugin):
    """Adapter for an HTTP server: start it at 'start', stop it at 'stop', restart it at 'graceful'."""

    def __init__(self, bus: Any, httpserver: Any = None, bind_addr: Any = None) -> None:
        super().__init__(bus)
        self.httpserver = httpserver
        self.bind_addr = bind_addr
        #: The exception that ended the server thread unexpectedly (None while all is well).
        self.interrupt: BaseException | None = None
        self.running = False
        self._thread: threading.Thread | None = None
        self._started = False  # start() ran and stop() has not yet cleaned up
        self._stopping = False
        self._changed = threading.Condition()  # notified when it starts serving or dies (wait())
        bus.listeners.setdefault("health", set())  # liveness probes and the systemd watchdog ask it

    def health(self) -> bool:
        """The 'health' listener: False once the server thread has died."""
        return self.interrupt is None

    @property
    def description(self) -> str:
        """What the log calls this server: its URL when the bind address is known."""
        address = self.bind_addr
        if isinstance(address, tuple) and len(address) >= 2:
            return "http://%s:%s" % (bracketed(str(address[0])), address[1])
        if address is None:
            return "unknown interface (dynamic?)"
        return str(address)

    @property
    def bound_addr(self) -> Any:
        """The address served: ``bind_addr``, with the port the kernel chose if it was 0."""
        address = self.bind_addr
        if not (isinstance(address, tuple) and len(address) >= 2 and address[1] == 0):
            return address
        bound = getattr(self.httpserver, "bind_addr", None)  # cheroot's, once it listens
        if isinstance(bound, tuple) and len(bound) >= 2 and bound[1] != 0:
            return bound[:2]
        listening = getattr(self.httpserver, "socket", None)
        if listening is not None and hasattr(listening, "getsockname"):
            return listening.getsockname()[:2]
        return address

    def wait(self) -> None:
        """Return once the server listens; raise what ended it if it died instead."""
        with self._changed:
            self._changed.wait_for(lambda: self.running or self.interrupt is not None)
            if self.interrupt is not None:
                raise self.interrupt

    def restart(self) -> None:
        """Stop the server, then start it again."""
        self.stop()
        self.start()

    # -- start ---------------------------------------------------------------------------

    @priority(75)
    def start(self) -> None:
        """Start the server; return once it listens (or raise why it cannot)."""
        if self.running:
            self.bus.log("Already serving on %s" % self.description)
            return
        if self.httpserver is None:
            raise RuntimeError("ServerAdapter has no httpserver to start")
        self.interrupt = None
        self._stopping = False
        server = self.httpserver
        if callable(getattr(server, "prepare", None)) and callable(getattr(server, "serve", None)):
            server.prepare()
            self._thread = self._spawn(server.serve)
        else:
            self._thread = self._spawn(server.start)
            self._wait_legacy_ready(self._thread)
        with self._changed:
            self._started = self.running = True
            self._changed.notify_all()
        self.bus.log("Serving on %s" % self.description)

    def _spawn(self, target: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(target,), name="HTTPServer " + self.description,
                                  daemon=True)
        thread.start()
        return thread

    def _wait_legacy_ready(self, thread: threading.Thread) -> None:
        pause = 0.001
        while not getattr(self.httpserver, "ready", True):
            thread.join(pause)  # returns at once if the server thread ended
            if not thread.is_alive():
                raise RuntimeError("HTTP server %s ended before it was ready: %r"
                                   % (self.description, self.interrupt))
            pause = min(pause * 2, _LEGACY_READY_CHECK)

    def _run(self, target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # whatever ends the server thread is reported below
            if not self._stopping:
                self._died(exc)
        else:
            if not self._stopping:
                self._died(None)

    def _died(self, exc: BaseException | None) -> None:
        """The server thread ended by itself: log it and end the process non-zero."""
        with self._changed:
            self.interrupt = exc if exc is not None else RuntimeError("the server returned")
            self.running = False
            self._changed.notify_all()
        self._thread = None  # this thread runs the exit below; stop() must not wait for it
        reason = "stopped by itself" if exc is None else "died: %s" % one_line(exc)
        self.bus.log("HTTP server %s %s; exiting" % (self.description, reason), level=40,
                     traceback=exc is not None)
        if hasattr(self.bus, "exit_code") and not self.bus.exit_code:  # a wspbus extra
            self.bus.exit_code = 1
        ignore_listener_failures(self.bus.exit)  # this dying thread has no caller to raise to

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server: it stops accepting and finishes the requests in flight."""
        if not self._started:
            return  # a stop without a start: CherryPy's contract
        thread, self._thread = self._thread, None
        self._started = self.running = False
        self._stopping = True
        try:
            self.httpserver.stop()
        finally:
            if thread is not None and thread is not threading.current_thread() and not self._in_own_request():
                thread.join(getattr(self.bus, "graceful_timeout", None))  # a wspbus extra
        self.bus.log("HTTP Server %s shut down" % self.description)

    def _in_own_request(self) -> bool:
        """True if this thread runs one of the server's requests: the server's thread ends only
        after that request, so it is not waited for here."""
        runs_current_request = getattr(self.httpserver, "runs_current_request", None)
        return bool(runs_current_request()) if callable(runs_current_request) else False

    def graceful(self) -> None:
        """Restart the server (CherryPy's meaning of 'graceful' for a server)."""
        if self._may_restart():
            self.stop()
            self.start()

    def _may_restart(self) -> bool:
        """Only a serving server on a STARTED bus: not after a stop, nor during an exit or restart."""
        if self.running and self.bus.state is self.bus.states.STARTED:
            return True
        self.bus.log("Not restarting %s (%s, bus %s)" % (self.description, "serving" if self.running else
                                                         "not serving", self.bus.state.name), level=10)
        return False

