"""How a socket address is written: an IPv6 host in brackets, a Unix socket by its path."""

from __future__ import annotations

import socket

__all__ = ["address_of", "bracketed"]


def bracketed(host: str) -> str:
    """``host`` as it stands before ``:PORT``: an IPv6 address in brackets, anything else as is."""
    return "[%s]" % host if ":" in host else host


def address_of(sock: socket.socket) -> tuple[str, int] | str:
    """Where ``sock`` listens: (host, port) for TCP, the path for a Unix socket (abstract: '\\0NAME')."""
    address = sock.getsockname()
    if isinstance(address, tuple):
        return (address[0], address[1])
    if isinstance(address, bytes):
        return address.decode("utf-8", "surrogateescape")
    return str(address)
