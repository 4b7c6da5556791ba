"""wspbus: a framework-neutral Web Site Process Bus.

``import wspbus`` loads only the bus core (stdlib only). Plugins live in ``wspbus.plugins``,
HTTP server adapters in ``wspbus.servers``, the deployer in ``wspbus.launch``; every other
name below is imported on first use.
"""

from __future__ import annotations

import importlib

from ._bus import Bus, ChannelFailures, StartupError, State, states

__version__ = "0.1.0"

#: The process's bus, as ``cherrypy.process.wspbus.bus``; frameworks share this one object.
bus = Bus()

# name -> (module, attribute or None for the module itself), loaded on first access.
_LAZY = {
    "quickstart": ("wspbus.launch", "quickstart"),
    "attach": ("wspbus.hosted", "attach"),
    "detach": ("wspbus.hosted", "detach"),
    "run_bus": ("wspbus.aio", "run_bus"),
}

__all__ = ["Bus", "ChannelFailures", "StartupError", "State", "bus", "states", *sorted(_LAZY)]


def __getattr__(name: str):
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module(home[0]), home[1])
    globals()[name] = value
    return value
