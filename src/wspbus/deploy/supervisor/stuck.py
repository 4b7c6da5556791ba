"""When a threaded (WSGI) worker is hung though its heartbeat thread runs: every request thread stuck.

A heartbeat from a thread of its own (heartbeat.py) proves that the worker's interpreter runs,
not that it serves: requests that each wait on a lock nobody releases release the GIL, the
heartbeat thread beats on, and the server, whose threads are all taken, answers nobody. So a
worker whose server runs requests on a fixed pool of threads is hung when, on one of its
servers, the requests running fill the pool (``options.threads``, else the server's own
default) and none began or ended for the whole worker timeout. A slow request while other
threads are free is not a hang: they still serve. Why "any server" and not "every server": a
server whose threads are all stuck still accepts connections, which then wait for good.

The counts are those the server already keeps for its stop (servers/inflight.py InFlight).
Servers with no such pool are never judged here: an event loop serving an ASGI app has its
heartbeat sent through that loop, and a server with a thread per connection (stdlib) is never
full. A WSGI app on an ASGI server is judged by the bridge's threads (wsgi_in_asgi.py); the WSGI
apps of a mixed site are not (its requests, ASGI ones among them, are counted together).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable

from ... import servers
from ...servers.httpserver import HTTPServer
from ...servers import wsgi_in_asgi
from ...servers.protocols import module_of

__all__ = ["StuckThreads", "request_threads"]


def request_threads(server: HTTPServer) -> int | None:
    """How many requests ``server`` runs at once, on its pool of threads; None if it has no pool
    (an event loop, or a thread per connection)."""
    if server.protocol != "wsgi":
        return None  # an ASGI app (a mixed site too): its requests hold no thread
    if server.spoken == "asgi":  # a WSGI app on an ASGI server: each request holds a bridge thread
        return server.threads or wsgi_in_asgi.DEFAULT_THREADS
    module = importlib.import_module("." + module_of(server.server), servers.__name__)
    default = getattr(module, "DEFAULT_THREADS", None)
    if default is None:
        return None
    return server.threads or int(default)


class StuckThreads:
    """Judges a worker's servers; ``reason()`` says why it is hung, or None."""

    def __init__(self, served: Iterable[HTTPServer], timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self.pools = [(server, size) for server in served if (size := request_threads(server)) is not None]

    def reason(self) -> str | None:
        """'has all N request threads of URL (server) busy, and no request ...', for the first
        server whose every thread is stuck; None while each of them serves."""
        now = self.clock()
        for server, size in self.pools:
            running, last_change = server.in_flight.activity()
            if running >= size and now - last_change >= self.timeout:
                return ("has all %d request threads of %s busy, and no request began or ended for %.1f s"
                        % (size, server.description, now - last_change))
        return None
