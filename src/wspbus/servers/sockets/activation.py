"""Socket activation: serve on listening sockets that a service manager (systemd) opened.

The protocol (sd_listen_fds(3)): descriptors 3 .. 3+LISTEN_FDS-1 are open in the process,
LISTEN_PID says which process they are meant for, LISTEN_FDNAMES (colon-separated) names them.
The variables are read once and removed from the environment whatever they say, so that a
child process never takes the sockets for its own. A bind ``systemd:NAME`` takes the socket of
that name, ``fd://N`` the socket on descriptor N; the server then binds nothing itself.
"""

from __future__ import annotations

import os
import socket

from .binds import BindError

__all__ = ["LISTEN_FDS_START", "listen_fds", "socket_for_fd", "socket_named"]

LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: (name, socket) passed to this process and not taken yet; None until the environment is read.
_passed: list[tuple[str, socket.socket]] | None = None


def listen_fds() -> dict[str, list[socket.socket]]:
    """The sockets passed to this process and not taken yet, by name ('unknown' if unnamed)."""
    named: dict[str, list[socket.socket]] = {}
    for name, sock in _pool():
        named.setdefault(name, []).append(sock)
    return named


def socket_named(name: str, label: str, backlog: int) -> socket.socket:
    """Take the first passed socket called ``name``; BindError if there is none."""
    pool = _pool()
    for index, (passed_name, sock) in enumerate(pool):
        if passed_name == name:
            del pool[index]
            return _listening(sock, label, backlog)
    if not pool:
        raise BindError("cannot use %s: no socket was passed to this process (LISTEN_FDS)" % label)
    names = ", ".join(sorted({passed_name for passed_name, _ in pool}))
    raise BindError("cannot use %s: the sockets passed to this process are named %s" % (label, names))


def socket_for_fd(fd: int, label: str, backlog: int) -> socket.socket:
    """Take the socket open on descriptor ``fd`` (passed by systemd or by any launcher)."""
    pool = _pool()
    for index, (_name, sock) in enumerate(pool):
        if sock.fileno() == fd:
            del pool[index]
            return _listening(sock, label, backlog)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError("cannot use %s: %s" % (label, _reason(exc))) from None
    return _listening(sock, label, backlog)


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
        raise BindError("cannot use %s: %s" % (label, _reason(exc))) from None
    sock.set_inheritable(False)
    return sock


def _reason(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def _pool() -> list[tuple[str, socket.socket]]:
    global _passed
    if _passed is None:
        _passed = _read_environment()
    return _passed


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
