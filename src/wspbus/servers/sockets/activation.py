"""Socket activation: serve on listening sockets that a service manager (systemd) opened.

The protocol (sd_listen_fds(3)): descriptors 3 .. 3+LISTEN_FDS-1 are open in the process,
LISTEN_PID says which process they are meant for, LISTEN_FDNAMES (colon-separated) names them.
The variables are read once and removed from the environment whatever they say, so that a
child process never takes the sockets for its own. A bind ``systemd:NAME`` takes the socket of
that name, ``fd://N`` the socket on descriptor N; the server then binds nothing itself.

With no bind named at all, ``wspbus serve`` serves on every passed socket (``passed_binds()``),
as gunicorn does; the list is remembered in the environment for this pid, so a re-executed
process (a reload: same pid, the sockets inherited, LISTEN_* gone) serves on the same ones.

What was passed is a fact about the process, so one object, ``PASSED``, owns it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from .errors import BindError, reason

__all__ = ["LISTEN_FDS_START", "PASSED", "PassedSockets", "listen_fds", "passed_binds"]

LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
#: "PID fd://3 fd://4": the binds passed_binds() gave, for a re-execution of that process.
PASSED_BINDS_ENV = "WSPBUS_PASSED_BINDS"


class PassedSockets:
    """The sockets passed to this process and not taken yet, read from the environment on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: list[tuple[str, socket.socket]] | None = None  # (name, socket); None: not read yet

    def by_name(self) -> dict[str, list[socket.socket]]:
        """The sockets not taken yet, by name ('unknown' if unnamed)."""
        named: dict[str, list[socket.socket]] = {}
        with self._lock:
            for name, sock in self._read():
                named.setdefault(name, []).append(sock)
        return named

    def binds(self) -> list[str]:
        """``fd://N`` for every passed socket not taken yet (the same list again after a re-exec)."""
        pid, _, remembered = os.environ.get(PASSED_BINDS_ENV, "").partition(" ")
        if pid == str(os.getpid()):
            return remembered.split()
        with self._lock:
            binds = ["fd://%d" % sock.fileno() for _name, sock in self._read()]
        if binds:
            os.environ[PASSED_BINDS_ENV] = "%d %s" % (os.getpid(), " ".join(binds))
        return binds

    def take_named(self, name: str, label: str, backlog: int) -> socket.socket:
        """Take the first passed socket called ``name``; BindError if there is none."""
        with self._lock:
            sock = self._take(lambda passed_name, _sock: passed_name == name)
            names = ", ".join(sorted({passed_name for passed_name, _ in self._read()}))
        if sock is not None:
            return _listening(sock, label, backlog)
        if not names:
            raise BindError("cannot use %s: no socket was passed to this process (LISTEN_FDS)" % label)
        raise BindError("cannot use %s: the sockets passed to this process are named %s" % (label, names))

    def take_fd(self, fd: int, label: str, backlog: int) -> socket.socket:
        """Take the socket open on descriptor ``fd`` (passed by systemd or by any launcher)."""
        with self._lock:
            sock = self._take(lambda _name, passed: passed.fileno() == fd)
        if sock is None:
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise BindError("cannot use %s: %s" % (label, reason(exc))) from None
        return _listening(sock, label, backlog)

    def _take(self, wanted: Callable[[str, socket.socket], bool]) -> socket.socket | None:
        """Remove and return the first passed socket that ``wanted(name, socket)`` accepts (lock held)."""
        pool = self._read()
        for index, (name, sock) in enumerate(pool):
            if wanted(name, sock):
                del pool[index]
                return sock
        return None

    def _read(self) -> list[tuple[str, socket.socket]]:
        """The pool, read from (and taken out of) the environment the first time (lock held)."""
        if self._pool is None:
            self._pool = _read_environment()
        return self._pool


#: This process's passed sockets.
PASSED = PassedSockets()


def listen_fds() -> dict[str, list[socket.socket]]:
    """The sockets passed to this process and not taken yet, by name ('unknown' if unnamed)."""
    return PASSED.by_name()


def passed_binds() -> list[str]:
    """Binds for the sockets passed to this process (``fd://N``); [] when none were."""
    return PASSED.binds()


def _listening(sock: socket.socket, label: str, backlog: int) -> socket.socket:
    """Check that ``sock`` is a stream socket and make it listen; never close a foreign fd."""
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError("cannot use %s: it is not a stream (TCP or Unix stream) socket" % label)
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
    except OSError as exc:
        sock.detach()
        raise BindError("cannot use %s: %s" % (label, reason(exc))) from None
    sock.set_inheritable(False)
    return sock


def _read_environment() -> list[tuple[str, socket.socket]]:
    pid, count, names = (os.environ.pop(name, None) for name in _VARIABLES)
    if not pid or not count or not pid.isdigit() or not count.isdigit() or int(pid) != os.getpid():
        return []
    labels = names.split(":") if names else []
    passed = []
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # a FIFO or another non-socket: not ours to serve on
        name = labels[index] if index < len(labels) and labels[index] else "unknown"
        passed.append((name, sock))
    return passed
