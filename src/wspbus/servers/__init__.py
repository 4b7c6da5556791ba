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
    "BindError": "sockets.binds",
    "HTTPServer": "httpserver",
    "SERVERS": "httpserver",
    "choose_server": "httpserver",
    "detect_protocol": "httpserver",
    "protocols_of": "httpserver",
    "LifespanError": "lifespan",
    "listen_fds": "sockets.activation",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
