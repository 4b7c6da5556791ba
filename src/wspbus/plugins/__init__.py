"""The site-wide services, one module each; every name is imported on first use.

CherryPy users: ``from cherrypy.process import plugins`` becomes ``from wspbus import plugins``.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "SimplePlugin": "base",
    "SignalHandler": "signals",
    "PIDFile": "pidfile",
    "Daemonizer": "daemon",
    "DropPrivileges": "privileges",
    "PerpetualTimer": "tasks",
    "BackgroundTask": "tasks",
    "Monitor": "tasks",
    "ThreadManager": "threads",
    "LogRouter": "logs",
    "Autoreloader": "reload",
    "SystemdNotifier": "systemd",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("." + home, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
