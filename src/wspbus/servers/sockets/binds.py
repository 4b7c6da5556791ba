"""Where a server listens: the bind syntax, and opening the listening socket for it.

Syntax (``str(Bind.parse(text))`` parses back to the same Bind):

=====================  ==========================================================================
``HOST:PORT``          TCP on a host name or IPv4 address (``localhost:8080``, ``0.0.0.0:80``)
``[IPV6]:PORT``        TCP on an IPv6 address, IPv6 only (``[::1]:8080``, ``[::]:80``)
``PORT``               ``127.0.0.1:PORT``: a bare port is local only, as CherryPy's default host
``:PORT``              ``0.0.0.0:PORT``: every IPv4 interface, as gunicorn reads it
``unix:PATH``          a Unix socket; a relative PATH is taken from the startup directory,
                       ``unix:@NAME`` is an abstract socket (Linux)
``fd://N``             a listening socket already open as descriptor N (a launcher passed it)
``systemd:NAME``       the socket systemd passed under that name (LISTEN_FDNAMES)
=====================  ==========================================================================

Port 0 asks the kernel for a free port; the server's ``address`` tells which one it got.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from ..._process import reexec
from .activation import PASSED
from .addresses import bracketed
from .errors import BindError, reason

__all__ = ["BACKLOG", "Bind", "BindError", "close_listener", "no_delay", "open_listener", "second_descriptor",
           "unix_file_identity"]

#: Connections the kernel queues while nobody accepts (during a restart, for instance).
BACKLOG = socket.SOMAXCONN

SYNTAX = "HOST:PORT, [IPV6]:PORT, PORT, unix:PATH, fd://N or systemd:NAME"


@dataclass(frozen=True)
class Bind:
    """One address to listen on: ``kind`` is 'tcp', 'unix', 'fd' or 'systemd'."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> "Bind":
        """Read a bind; ValueError names the text and the syntax expected."""
        if not isinstance(text, str):
            raise ValueError("bad bind %r: expected a string such as %s" % (text, SYNTAX))
        try:
            return _parse(text.strip())
        except _Bad as bad:
            raise ValueError("bad bind %r: %s (expected %s)" % (text, bad, SYNTAX)) from None

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.path
        if self.kind == "fd":
            return "fd://%d" % self.fd
        if self.kind == "systemd":
            return "systemd:" + self.name
        return "%s:%d" % (bracketed(self.host), self.port)

    @property
    def is_ipv6(self) -> bool:
        return self.kind == "tcp" and ":" in self.host


class _Bad(Exception):
    """What is wrong with a bind text (becomes part of a ValueError)."""


def _parse(text: str) -> Bind:
    if not text:
        raise _Bad("it is empty")
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path or path == "@":
            raise _Bad("the socket path is missing")
        return Bind("unix", path=path)
    if text.startswith("fd://"):
        return Bind("fd", fd=_number(text[len("fd://"):], "descriptor", 0, None))
    if text.startswith("systemd:"):
        name = text[len("systemd:"):]
        if not name or ":" in name:
            raise _Bad("the socket name is missing or contains ':'")
        return Bind("systemd", name=name)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise _Bad("an IPv6 address is written [ADDRESS]:PORT")
        if not _is_ipv6(host):
            raise _Bad("%r is not an IPv6 address" % host)
        return Bind("tcp", host=host, port=_port(port))
    host, sep, port = text.rpartition(":")
    if not sep:
        if text.isdigit():
            return Bind("tcp", host="127.0.0.1", port=_port(text))
        raise _Bad("the port is missing")
    if ":" in host:
        raise _Bad("an IPv6 address needs brackets, as in [::1]:8080")
    return Bind("tcp", host=host or "0.0.0.0", port=_port(port))


def _number(text: str, what: str, low: int, high: int | None) -> int:
    if not text.isdigit():
        raise _Bad("%s %r is not a number" % (what, text))
    value = int(text)
    if value < low or (high is not None and value > high):
        expected = "%d-%d" % (low, high) if high is not None else "%d or more" % low
        raise _Bad("%s %d is out of range %s" % (what, value, expected))
    return value


def _port(text: str) -> int:
    return _number(text, "port", 0, 65535)


def _is_ipv6(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return False
    return True


# -- opening and closing listening sockets ---------------------------------------------------


def open_listener(bind: Bind, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket for ``bind``, bound now (or taken from the service manager).

    Raises BindError with a one-line message when the address cannot be used.
    """
    if bind.kind == "tcp":
        return _listen_tcp(bind, backlog)
    if bind.kind == "unix":
        return _listen_unix(bind, backlog)
    if bind.kind == "fd":
        return PASSED.take_fd(bind.fd, str(bind), backlog)
    return PASSED.take_named(bind.name, str(bind), backlog)


def no_delay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP listener; the connections it accepts inherit the setting.

    A server that writes a response's headers and body in two sends (cheroot does) otherwise
    holds the body until the client acknowledges the headers, and a keep-alive client delays
    that acknowledgement (40 ms on Linux): every request then takes 40 ms. Unix sockets have
    no such delay.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def second_descriptor(sock: socket.socket) -> socket.socket:
    """Another descriptor for the same listening socket, its blocking mode left as it is.

    ``socket.dup()`` sets the copy's timeout, and the blocking mode lives in the open file that
    every process holding the socket shares: a worker starting beside others turned it blocking
    for the moment its server took a while to start, and another worker's event loop, woken for a
    connection a third process accepted first, then blocked in accept() with a connection of its
    own unanswered (tests/deploy/supervisor/test_supervisor_reload.py).
    """
    return socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))


def close_listener(sock: socket.socket, bind: Bind, identity: tuple[int, int] | None) -> None:
    """Close a listening socket; remove its Unix socket file if it is still the one we had.

    ``identity`` is what unix_file_identity() said once the socket listened (None: remove nothing).
    """
    sock.close()
    path = unix_path(bind)
    if path and identity is not None and unix_file_identity(bind) == identity:
        try:
            os.unlink(path)
        except OSError:
            pass  # removed already, or not ours to remove: the next bind clears a stale file


def unix_path(bind: Bind) -> str:
    """The file of a ``unix:`` bind (absolute), or '' for abstract sockets and other kinds."""
    if bind.kind != "unix" or bind.path.startswith("@"):
        return ""
    return os.path.normpath(os.path.join(reexec.STARTUP_CWD or os.getcwd(), bind.path))


def unix_file_identity(bind: Bind) -> tuple[int, int] | None:
    """(device, inode) of a ``unix:`` bind's socket file, None if there is no such file."""
    path = unix_path(bind)
    if not path:
        return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _failure(bind: Bind, exc: OSError) -> BindError:
    return BindError("cannot bind %s: %s" % (bind, reason(exc)))


def _listen_tcp(bind: Bind, backlog: int) -> socket.socket:
    try:
        candidates = socket.getaddrinfo(bind.host, bind.port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                        0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _failure(bind, exc) from None
    last_error: OSError | None = None
    for family, kind, proto, _name, address in candidates:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # [::]:80 means IPv6 only; bind 0.0.0.0:80 as well for IPv4.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    raise _failure(bind, last_error or OSError(errno.EADDRNOTAVAIL, "no usable address"))


def _listen_unix(bind: Bind, backlog: int) -> socket.socket:
    path = unix_path(bind)
    address = "\0" + bind.path[1:] if not path else path
    if path:
        _clear_stale_socket(bind, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _failure(bind, exc) from None
    return sock


def _clear_stale_socket(bind: Bind, path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live socket or a file that is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _failure(bind, exc) from None
    if not stat.S_ISSOCK(mode):
        raise BindError("cannot bind %s: %s exists and is not a socket" % (bind, path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            pass  # nobody listens: stale, left by a process that died
        else:
            raise BindError("cannot bind %s: another process listens on %s" % (bind, path))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # its owner removed it meanwhile: the path is free either way
    except OSError as exc:
        raise _failure(bind, exc) from None
