"""HTTP servers on the bus: ServerAdapter (CherryPy's) and HTTPServer, which serves an app on a bind.

Every name is imported on first use, so ``import wspbus.servers`` costs nothing and no server
package is imported until a server is built. CherryPy users:
``from cherrypy.process.servers import ServerAdapter`` becomes ``from wspbus.servers import ServerAdapter``.
"""

from __future__ import annotations

from .._core.lazy import lazy_exports

_HOMES = {
    "ServerAdapter": "adapter",
    "Bind": "sockets.binds",
    "BindError": "sockets.errors",
    "HTTPServer": "httpserver",
    "SERVERS": "protocols",
    "choose_server": "protocols",
    "detect_protocol": "protocols",
    "protocols_of": "protocols",
    "LifespanError": "lifespan",
    "listen_fds": "sockets.activation",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
