"""The site-wide services, one module each; every name is imported on first use.

CherryPy users: ``from cherrypy.process import plugins`` becomes ``from wspbus import plugins``.
"""

from __future__ import annotations

from .._core.lazy import lazy_exports

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
    "Drainer": "drain",
    "Health": "health",
    "ChildReaper": "reaper",
    "StatusFile": "status",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = lazy_exports(globals(), _HOMES)
