"""What every server module of this package shares.

A server module exposes ``create(app, listener, options)`` returning an object with cheroot's
shape, which ServerAdapter runs: ``prepare()`` (in the start listener: may fail the start),
``serve()`` (in the server thread, returns once stopped) and ``stop()`` (stop accepting, finish
the requests in flight within ``options.graceful_timeout``, release everything).

The listener handed to a server is a duplicate of the socket HTTPServer owns: the server may
close its copy when it stops, while the listening socket itself stays open for a restart.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["ServeOptions", "Waker"]


def _no_log(msg: str, level: int = 20, traceback: bool = False) -> None:
    pass


@dataclass
class ServeOptions:
    """Settings every server module understands."""

    #: Worker threads (None: the server's own default). ASGI servers ignore it.
    threads: int | None = None
    #: Seconds a stop may spend finishing requests in flight (None: no bound).
    graceful_timeout: float | None = None
    #: The bus's log(msg, level, traceback).
    log: Callable[..., None] = _no_log
    #: Names the server's threads.
    name: str = "wspbus"
    #: Servers given the same key (not None) share one event loop, and the app's ASGI lifespan runs
    #: once for all of them (HTTPServer: one key per bus and app, so the binds of a site share both).
    shared_loop: Hashable | None = None


class Waker:
    """A socket pair whose read end a selector watches, so another thread can wake it at once."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closed: either way nobody sleeps on it

    def close(self) -> None:
        self.reader.close()
        self._writer.close()
