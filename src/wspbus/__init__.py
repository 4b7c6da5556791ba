"""wspbus: a framework-neutral Web Site Process Bus.

``import wspbus`` loads only the bus core and the process's bus (stdlib only). Plugins live in
``wspbus.plugins``, HTTP server adapters in ``wspbus.servers``, the deployer in
``wspbus.deploy.launch``; every other name below is imported on first use.
"""

from __future__ import annotations

from ._core.bus import ChannelFailures, StartupError, State, states
from ._core.lazy import lazy_exports
from ._process.bus import Bus

__version__ = "0.1.0"

#: The process's bus, as ``cherrypy.process.wspbus.bus``; frameworks share this one object.
bus = Bus()

# name -> the module that defines it, imported on first access.
_HOMES = {
    "quickstart": "deploy.launch",
    "attach": "deploy.hosted",
    "detach": "deploy.hosted",
    "run_bus": "aio",
}

__all__ = ["Bus", "ChannelFailures", "StartupError", "State", "bus", "states", *sorted(_HOMES)]

__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
