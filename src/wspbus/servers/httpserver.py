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
import inspect
import socket
import threading
from typing import Any

from .._process import reexec
from .sockets import activation
from .access import asgi_access_log, wsgi_access_log
from .adapter import ServerAdapter
from .backend import ServeOptions
from .sockets.binds import Bind, close_listener, open_listener, unix_file_identity

__all__ = ["HTTPServer", "SERVERS", "choose_server", "detect_protocol", "protocols_of"]

#: The servers HTTPServer can run, by name.
SERVERS = {
    "cheroot": "cheroot: threaded WSGI server, HTTP/1.1 keep-alive (the default for WSGI apps)",
    "waitress": "waitress: threaded WSGI server, HTTP/1.1 keep-alive, pure Python",
    "uvicorn": "uvicorn: asyncio ASGI server with the ASGI lifespan (the default for ASGI apps)",
    "stdlib": "the standard library's wsgiref, one thread per connection, HTTP/1.0 (no dependency)",
}

# name -> (module of this package, what must import, protocol spoken, what to install)
_SERVER_INFO = {
    "cheroot": ("cheroot_server", "cheroot", "wsgi", "wspbus"),
    "waitress": ("waitress_server", "waitress", "wsgi", "wspbus[waitress]"),
    "uvicorn": ("uvicorn_server", "uvicorn", "asgi", "wspbus[asgi]"),
    "stdlib": ("stdlib_server", None, "wsgi", None),
}
_PROTOCOLS = ("wsgi", "asgi")

#: Listening sockets handed to the next incarnation: referenced here so nothing closes them.
_kept_for_exec: list[socket.socket] = []
_names_claimed: dict[str, int] = {}
_names_lock = threading.Lock()


def protocols_of(name: str) -> tuple[str, ...]:
    """The protocols a server speaks natively ('auto': both, by picking the server)."""
    if name == "auto":
        return _PROTOCOLS
    return (_info(name)[2],)


def detect_protocol(app: Any) -> str:
    """'asgi' for a coroutine callable (or an object whose __call__ is one), else 'wsgi'."""
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return "asgi"
    return "wsgi"


def choose_server(name: str, protocol: str) -> str:
    """The server to run for ``name`` ('auto' picks by protocol); ValueError if unknown or missing."""
    if name == "auto":
        if protocol == "asgi":
            name = "uvicorn"
        else:
            name = "cheroot" if _importable("cheroot") else "stdlib"
    module, needs, _protocol, extra = _info(name)
    if needs and not _importable(needs):
        raise ValueError("server %r is not installed: pip install %s" % (name, extra))
    return name


def _info(name: str) -> tuple:
    info = _SERVER_INFO.get(name)
    if info is None:
        raise ValueError("unknown server %r: expected auto, %s" % (name, ", ".join(SERVERS)))
    return info


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _claim_name(bind_text: str) -> str:
    """The name the listening socket goes by across a restart (a second server on the same bind text
    gets 'TEXT#2'; servers are built in the same order by the re-executed process)."""
    with _names_lock:
        count = _names_claimed[bind_text] = _names_claimed.get(bind_text, 0) + 1
    return bind_text if count == 1 else "%s#%d" % (bind_text, count)


class HTTPServer(ServerAdapter):
    """Serve ``app`` on ``bind`` from 'start' to 'stop'; after start, ``address`` is where it listens."""

    def __init__(self, bus: Any, app: Any, bind: Bind | str, *, server: str = "auto", protocol: str = "wsgi",
                 access_log: bool = True, threads: int | None = None) -> None:
        self.bind = bind if isinstance(bind, Bind) else Bind.parse(bind)
        if protocol == "auto":
            protocol = detect_protocol(app)
        if protocol not in _PROTOCOLS:
            raise ValueError("unknown protocol %r: expected 'wsgi', 'asgi' or 'auto'" % (protocol,))
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError("threads must be a positive number, not %r" % (threads,))
        self.server = choose_server(server, protocol)
        self.protocol = protocol
        self.app = app
        self.access_log = access_log
        self.threads = threads
        #: Where the server listens once started: (host, port) for TCP, the path for a Unix socket.
        self.address: Any = None
        self._bridge = _bridge(app, protocol, self.server, threads)
        self._served_app = _with_access_log(self._bridge or app, self.server, access_log)
        self._listener: socket.socket | None = None
        self._listener_identity: tuple[int, int] | None = None
        self._name_across_exec = _claim_name(str(self.bind))
        super().__init__(bus, None, None)

    @property
    def url(self) -> str:
        """http://HOST:PORT ([IPV6] bracketed), or unix:PATH; the bind until the server started."""
        address = self.address
        if address is None:
            return str(self.bind)
        if isinstance(address, tuple):
            host = address[0]
            return "http://%s:%d" % ("[%s]" % host if ":" in host else host, address[1])
        return "unix:" + address.replace("\0", "@")

    @property
    def description(self) -> str:
        return "%s (%s)" % (self.url, self.server)

    def start(self) -> None:
        """Open (or inherit) the listening socket, then start the server on it."""
        if self.running:
            return super().start()  # says it already serves
        if self._listener is None:
            self._listener = self._acquire_listener()
        self.address = _address_of(self._listener)
        options = ServeOptions(threads=self.threads, graceful_timeout=self.bus.graceful_timeout,
                               log=self.bus.log, name="wspbus %s" % self.bind,
                               shared_loop=(id(self.bus), id(self.app)))
        module = importlib.import_module("." + _SERVER_INFO[self.server][0], __package__)
        copy = self._listener.dup()
        try:
            self.httpserver = module.create(self._served_app, copy, options)
            super().start()
        except BaseException:
            copy.close()
            self._release_listener(keep=False)
            raise

    start.priority = 75  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop accepting and finish the requests in flight; keep the socket if restarting.

        Unless it is kept, our socket is closed first: the server closes its copy as soon as it
        stops accepting, so new connections are refused from then on, however long the requests
        in flight take.
        """
        keep = self.bus.execv
        if not keep:
            self._release_listener(keep=False)
        try:
            super().stop()
        finally:
            if keep:
                self._release_listener(keep=True)
            if self._bridge is not None:
                self._bridge.close()  # its threads go; a start after this stop makes new ones

    def graceful(self) -> None:
        """Restart the server on the same listening socket: no connection is refused meanwhile."""
        if self._may_restart():
            super().stop()
            self.start()

    def _acquire_listener(self) -> socket.socket:
        fd = reexec.take_inherited(self._name_across_exec)
        if fd is not None:
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self.bus.log("Serving %s on the socket inherited across the restart" % self.bind)
        else:
            activation.listen_fds()  # take LISTEN_* out of the environment before any server sees it
            sock = open_listener(self.bind)
        self._listener_identity = unix_file_identity(self.bind)
        return sock

    def _release_listener(self, keep: bool) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        if keep:
            reexec.keep_across_exec(sock.fileno(), self._name_across_exec)
            _kept_for_exec.append(sock)
        else:
            close_listener(sock, self.bind, self._listener_identity)


def _address_of(sock: socket.socket) -> Any:
    address = sock.getsockname()
    if isinstance(address, tuple):
        return address[:2]
    if isinstance(address, bytes):
        return address.decode("utf-8", "surrogateescape")
    return address


def _bridge(app: Any, protocol: str, server: str, threads: int | None) -> Any:
    """``app`` adapted with a2wsgi to the protocol ``server`` speaks; None if it speaks the app's."""
    spoken = _SERVER_INFO[server][2]
    if protocol == spoken:
        return None
    try:
        from .bridge import AsgiAsWsgi, WsgiAsAsgi

        return WsgiAsAsgi(app, threads) if spoken == "asgi" else AsgiAsWsgi(app)
    except ImportError:
        raise ValueError("serving a %s app with %s needs a2wsgi: pip install wspbus[asgi]"
                         % (protocol.upper(), server)) from None


def _with_access_log(app: Any, server: str, access_log: bool) -> Any:
    if not access_log:
        return app
    return asgi_access_log(app) if _SERVER_INFO[server][2] == "asgi" else wsgi_access_log(app)
