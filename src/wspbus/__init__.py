"""wspbus: a framework-neutral Web Site Process Bus.

``import wspbus`` loads only the bus core (stdlib only). Plugins live in ``wspbus.plugins``,
HTTP server adapters in ``wspbus.servers``; both are imported on first use.
"""

from ._bus import Bus, ChannelFailures, StartupError, State, states

__all__ = ["Bus", "ChannelFailures", "StartupError", "State", "bus", "states"]
__version__ = "0.1.0"

#: The process's bus, as ``cherrypy.process.wspbus.bus``; frameworks share this one object.
bus = Bus()
