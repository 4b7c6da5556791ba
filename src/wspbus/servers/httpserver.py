"""HTTPServer: one app served on one bind by the server of your choice, as a bus plugin.

The listening socket is ours, not the server's: the start listener opens it (or takes it from
a previous incarnation of the process, or from the service manager) before anything else, so
the bus is STARTED only once the socket listens, and a bind error fails start() with one line.
The server gets a duplicate of it. At 'stop' the server finishes its requests in flight; then
the socket is closed, unless the bus is restarting: it is then left open and passed across the
re-exec, and clients queue in its backlog until the new process serves them.
"""

from __future__ import annotations

import importlib
import itertools
import socket
from typing import Any

from .._process import reexec
from ..plugins.base import priority, restart_requested
from .access import asgi_access_log, wsgi_access_log
from .adapter import ServerAdapter
from .backend import ServeOptions, SharedLoop
from .bridge import adapted
from .inflight import InFlight
from .request_head import HeadLimits
from .protocols import PROTOCOLS, choose_server, detect_protocol, module_of, spoken_by
from .sockets.activation import PASSED
from .sockets.addresses import address_of, bracketed
from .sockets.binds import Bind, close_listener, no_delay, open_listener, second_descriptor, unix_file_identity

__all__ = ["HTTPServer"]

#: Seconds an ASGI request cut off at the end of a stop has to send its 503 (part of the stop's margin).
CUT_OFF_GRACE = 0.2


class HTTPServer(ServerAdapter):
    """Serve ``app`` on ``bind`` from 'start' to 'stop'; after start, ``address`` is where it listens."""

    def __init__(self, bus: Any, app: Any, bind: Bind | str, *, server: str = "auto", protocol: str = "wsgi",
                 access_log: bool = True, threads: int | None = None, limits: HeadLimits | None = None,
                 shared_listener: bool = False) -> None:
        self.bind = bind if isinstance(bind, Bind) else Bind.parse(bind)
        if protocol == "auto":
            protocol = detect_protocol(app)
        if protocol not in PROTOCOLS:
            raise ValueError("unknown protocol %r: expected 'wsgi', 'asgi' or 'auto'" % (protocol,))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError("threads must be a positive number, not %r" % (threads,))
        self.server = choose_server(server, protocol)
        self.protocol = protocol
        self.app = app
        self.access_log = access_log
        self.threads = threads
        #: What a request head may hold and how long it may take to arrive (servers/request_head.py).
        self.limits = limits or HeadLimits()
        #: Other processes accept on the same socket (servers/backend.ServeOptions.shared_listener).
        self.shared_listener = shared_listener
        #: Where the server listens once started: (host, port) for TCP, the path for a Unix socket.
        self.address: tuple[str, int] | str | None = None
        #: The protocol the server speaks to the app (the app's own, unless it is adapted).
        self.spoken = spoken_by(self.server, protocol)
        self._bridge = adapted(app, protocol, self.spoken, threads)
        #: The requests running, named in the log if a stop cuts them off.
        self.in_flight = InFlight()
        self._served_app = self.in_flight.wrap(_with_access_log(self._bridge or app, self.spoken, access_log),
                                               self.spoken)
        self._listener: socket.socket | None = None
        self._listener_identity: tuple[int, int] | None = None
        #: The name the listener goes by across a restart, while this server holds one.
        self.socket_name: str | None = None
        self._kept_across_exec: socket.socket | None = None  # referenced so nothing closes it before the exec
        self._shared_loop: SharedLoop | None = None
        super().__init__(bus, None, None)

    @property
    def url(self) -> str:
        """http://HOST:PORT ([IPV6] bracketed), or unix:PATH; the bind until the server started."""
        address = self.address
        if address is None:
            return str(self.bind)
        if isinstance(address, tuple):
            return "http://%s:%d" % (bracketed(address[0]), address[1])
        return "unix:" + address.replace("\0", "@")

    @property
    def description(self) -> str:
        return "%s (%s)" % (self.url, self.server)

    @property
    def bound_addr(self) -> Any:
        """Where it listens once started (``address``); before, the bind asked for."""
        return self.address if self.address is not None else self.bind

    @priority(75)
    def start(self) -> None:
        """Open (or inherit) the listening socket, then start the server on it."""
        if self.running:
            return super().start()  # says it already serves
        if self._listener is None:
            self._listener = self._acquire_listener()
        self.address = address_of(self._listener)
        options = ServeOptions(threads=self.threads, graceful_timeout=getattr(self.bus, "graceful_timeout", None),
                               log=self.bus.log, name="wspbus %s" % self.bind, shared_loop=self._loop(),
                               limits=self.limits, protocol=self.spoken, shared_listener=self.shared_listener)
        module = importlib.import_module("." + module_of(self.server), __package__)
        copy = second_descriptor(self._listener)
        try:
            self.httpserver = module.create(self._served_app, copy, options)
            super().start()
        except BaseException:
            copy.close()
            self._release_listener(keep=False)
            raise

    def stop(self) -> None:
        """Stop accepting and finish the requests in flight; keep the socket if restarting.

        Unless it is kept, our socket is closed first: the server closes its copy as soon as it
        stops accepting, so new connections are refused from then on, however long the requests
        in flight take.
        """
        keep = restart_requested(self.bus)
        if not keep:
            self._release_listener(keep=False)
        try:
            super().stop()
        finally:
            if keep:
                self._release_listener(keep=True)
            if self._bridge is not None:
                self._bridge.close()  # its threads go; a start after this stop makes new ones

    def exit(self) -> None:
        """Name the requests the stop cut off (still running at its bound), once, in one line."""
        cut_off = self.in_flight.cut_off(CUT_OFF_GRACE)
        if cut_off:
            self.bus.log("%s: %d request%s cut off at the graceful timeout: %s"
                         % (self.description, len(cut_off), "" if len(cut_off) == 1 else "s", "; ".join(cut_off)),
                         level=30)

    def graceful(self) -> None:
        """Keep serving: 'graceful' (SIGUSR1, ``wspbus graceful``) reopens logs, which the log
        plugin does; restarting the server would close its idle keep-alive connections, and
        the next request on one would get EOF. (ServerAdapter, CherryPy's, still restarts.)"""
        self.bus.log("%s: nothing to do on graceful; still serving" % self.description, level=10)

    # -- what the servers of one bus share -----------------------------------------------

    def _siblings(self) -> list[HTTPServer]:
        """The other HTTPServers on this bus (its 'start' listeners): the servers of one site."""
        siblings = []
        for listener in self.bus.listeners.get("start", ()):
            owner = getattr(listener, "__self__", None)
            if isinstance(owner, HTTPServer) and owner is not self:
                siblings.append(owner)
        return siblings

    def _claim_socket_name(self) -> str:
        """The bind text, or 'TEXT#N' where other servers of this bus listen on the same text.

        Claimed as the listener is acquired, so servers on the same text are numbered in the
        order the bus starts them: the order of the site's configuration, the same in the
        re-executed process. Nothing outside this bus (another bus, a server built and dropped)
        changes the name.
        """
        text = str(self.bind)
        taken = {sibling.socket_name for sibling in self._siblings()}
        names = (text if number == 1 else "%s#%d" % (text, number) for number in itertools.count(1))
        return next(name for name in names if name not in taken)

    def _loop(self) -> SharedLoop:
        """The event loop shared by this bus's servers of the same app (its lifespan runs once)."""
        if self._shared_loop is None:
            for sibling in self._siblings():
                if sibling.app is self.app and sibling._shared_loop is not None:
                    self._shared_loop = sibling._shared_loop
                    break
            else:
                self._shared_loop = SharedLoop()
        return self._shared_loop

    # -- the listening socket ------------------------------------------------------------

    def _acquire_listener(self) -> socket.socket:
        self.socket_name = self._claim_socket_name()
        fd = reexec.take_inherited(self.socket_name)
        if fd is not None:
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self.bus.log("Serving %s on the socket inherited across the restart" % self.bind)
        else:
            PASSED.by_name()  # take LISTEN_* out of the environment before any server sees it
            try:
                sock = open_listener(self.bind)
            except BaseException:
                self.socket_name = None
                raise
        no_delay(sock)  # whoever made it (us, the service manager, a previous incarnation)
        self._listener_identity = unix_file_identity(self.bind)
        return sock

    def _release_listener(self, keep: bool) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        if keep and self.socket_name is not None:
            reexec.keep_across_exec(sock.fileno(), self.socket_name)
            self._kept_across_exec = sock
        else:
            self.socket_name = None
            close_listener(sock, self.bind, self._listener_identity)


def _with_access_log(app: Any, protocol: str, access_log: bool) -> Any:
    if not access_log:
        return app
    return asgi_access_log(app) if protocol == "asgi" else wsgi_access_log(app)
