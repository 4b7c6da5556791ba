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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .reporting import no_log
from .request_head import HeadLimits

__all__ = ["ServeOptions", "SharedLoop", "Waker"]


class SharedLoop:
    """The event loop that servers of one app share, and the app's ASGI lifespan on it.

    HTTPServer hands the servers of one app on one bus the same SharedLoop; an asyncio server
    joins it when it starts and leaves it when it stops: the first to join starts the loop and the
    lifespan, the last to leave ends both, and a join after that starts fresh ones. The server
    module keeps its record of the running loop here, so that no module keeps a registry of them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The server module's record of the running loop (None while no server uses it).
        self.running: Any = None


@dataclass
class ServeOptions:
    """Settings every server module understands."""

    #: Worker threads (None: the server's own default). ASGI servers ignore it.
    threads: int | None = None
    #: Seconds a stop may spend finishing requests in flight (None: no bound).
    graceful_timeout: float | None = None
    #: The bus's log(msg, level, traceback).
    log: Callable[..., None] = no_log
    #: Names the server's threads.
    name: str = "wspbus"
    #: Servers given the same SharedLoop share one event loop, and the app's ASGI lifespan runs once
    #: for all of them (HTTPServer: one per bus and app, so the binds of a site share both).
    #: None: a loop of the server's own.
    shared_loop: SharedLoop | None = None
    #: What a request head may hold and how long it may take (servers/request_head.py).
    limits: HeadLimits = field(default_factory=HeadLimits)
    #: The protocol of the app given to create(), for a server that speaks both.
    protocol: str = "wsgi"
    #: Other processes accept on the same listener (supervised workers, more than one): a server
    #: that would take every waiting connection at each wake-up takes one per turn instead, so
    #: that connections opened together are shared (uvicorn_server.OneAcceptPerTurn).
    shared_listener: bool = False


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
