"""Run the bus inside a process another program owns: gunicorn, mod_wsgi, uWSGI.

The host owns the sockets, signals, reloading and daemonizing; the bus only runs the site's own
services (caches, background tasks, connection pools). In the module the host loads::

    import wspbus
    from wspbus import hosted

    MyCachePlugin(wspbus.bus).subscribe()
    application = hosted.attach(create_app())

``attach()`` starts the bus in the worker that imports it and arranges for the bus to exit when
that worker's interpreter ends, *before* Python waits for non-daemon threads, so a plugin that
owns such a thread is stopped instead of hanging the worker. Where the host has a worker-exit
hook (gunicorn's ``worker_exit``), calling ``hosted.detach()`` there is equivalent.

With an app loaded before the host forks (gunicorn ``--preload``), call ``attach()`` from the
host's post-fork hook (gunicorn ``post_worker_init``) instead: threads do not survive a fork.
"""

from __future__ import annotations

import atexit
import os
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
        _exit_with_interpreter(bus)
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


def _exit_with_interpreter(bus: Bus) -> None:
    """Exit the bus when the interpreter ends, before Python joins the non-daemon threads."""
    def on_interpreter_exit() -> None:
        if _ATTACHMENTS.attached_here(bus):
            detach(bus)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(on_interpreter_exit)  # runs before threading._shutdown joins threads
    else:
        atexit.register(on_interpreter_exit)
