"""Run the bus inside a process another program owns: gunicorn, mod_wsgi, uWSGI.

The host owns the sockets, signals, reloading and daemonizing; the bus only runs the site's own
services (caches, background tasks, connection pools). In the module the host loads::

    import wspbus

    MyCachePlugin(wspbus.bus).subscribe()
    application = wspbus.attach(create_app())

``attach()`` starts the bus in the worker that imports it and arranges for the bus to exit when
that worker ends: on the host's own shutdown event where it has one (mod_wsgi's), and otherwise
when the interpreter ends, *before* Python waits for non-daemon threads, so a plugin that owns
such a thread is stopped instead of hanging the worker. Where the host has a worker-exit hook
(gunicorn's ``worker_exit``), calling ``wspbus.detach()`` there is equivalent. docs/mod_wsgi.md
has the mod_wsgi side.

With an app loaded before the host forks (gunicorn ``--preload``), call ``attach()`` from the
host's post-fork hook (gunicorn ``post_worker_init``) instead: threads do not survive a fork.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._core.bus import Bus, ChannelFailures, states
from .process_bus import process_bus
from .site import Site

__all__ = ["attach", "detach"]


class _Attachments:
    """The buses attached in this process, each with the pid that attached it.

    A fact about the process, so one object owns it: a worker forked from a process that had
    attached a bus inherits the record, and attaching there again registers the exit hook anew.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid_of: dict[Bus, int] = {}  # the bus itself is the key: it lives as long as the process

    def claim(self, bus: Bus) -> bool:
        """Record ``bus`` as attached by this process; False if this process had already."""
        with self._lock:
            if self._pid_of.get(bus) == os.getpid():
                return False
            self._pid_of[bus] = os.getpid()
            return True

    def attached_here(self, bus: Bus) -> bool:
        """``bus`` was attached by this process (not only by the one this worker was forked from)."""
        with self._lock:
            return self._pid_of.get(bus) == os.getpid()


_ATTACHMENTS = _Attachments()


def attach(app: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None = None, *,
           bus: Bus | None = None, plugins: Iterable[Any] = (), protocol: str = "wsgi") -> Any:
    """Start ``bus`` (default ``wspbus.bus``) in this worker and stop it when the worker exits.

    ``plugins`` are subscribed first. ``app`` is returned as is; a mapping ``{prefix: app}`` is
    returned as one site app speaking ``protocol`` (mixed WSGI/ASGI apps are adapted). A start
    that fails raises, so the host reports the worker as failed to boot.
    """
    bus = process_bus(bus)
    for plugin in plugins:
        plugin.subscribe()
    if _ATTACHMENTS.claim(bus):
        _exit_with_process(bus)
    if bus.state in (states.STOPPED, states.STOPPING):
        bus.start()
    if isinstance(app, Mapping):
        return Site.from_apps(app).app(protocol)
    return app


def detach(bus: Bus | None = None) -> None:
    """Exit the bus (stopping its services); a second call, or one for an exited bus, does nothing."""
    try:
        process_bus(bus).exit()
    except ChannelFailures:
        pass  # nothing left to do: the bus logged each failing listener where it happened


class _ExitAtProcessEnd:
    """The bus's exit when this process ends, run by the first of the announcements of that end.

    The host's shutdown event and the interpreter's end may both come; the second does nothing,
    so every 'stop' and 'exit' listener runs once per process.
    """

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, *_event: Any, **_details: Any) -> None:
        with self._lock:
            if self._done or not _ATTACHMENTS.attached_here(self._bus):
                return  # already exited, or a forked worker that never attached this bus
            self._done = True
        detach(self._bus)


def _exit_with_process(bus: Bus) -> None:
    """Exit the bus on the host's shutdown event, or else when the interpreter ends, before Python
    joins the non-daemon threads."""
    exit_once = _ExitAtProcessEnd(bus)
    _subscribe_to_host_shutdown(exit_once)
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(exit_once)  # runs before threading._shutdown joins threads
    else:
        atexit.register(exit_once)


def _subscribe_to_host_shutdown(callback: Callable[..., None]) -> None:
    """Have mod_wsgi (4.8 and later) call ``callback`` when it ends this process.

    mod_wsgi announces the end while the interpreter is still whole, and does so even when it will
    not finalize the interpreter (``WSGIDestroyInterpreter Off``), where atexit never runs. Its
    module is looked up, not imported: mod_wsgi puts it in ``sys.modules`` itself, and an import
    outside Apache would load the unrelated ``mod_wsgi`` package from PyPI.
    """
    subscribe = getattr(sys.modules.get("mod_wsgi"), "subscribe_shutdown", None)
    if subscribe is not None:
        subscribe(callback)
