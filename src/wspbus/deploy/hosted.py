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

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._core.bus import Bus, states

__all__ = ["attach", "detach"]

_attached: dict[int, tuple[int, Bus]] = {}  # id(bus) -> (pid that started it, bus)


def attach(app: Callable[..., Any] | Mapping[str, Callable[..., Any]] | None = None, *,
           bus: Bus | None = None, plugins: Iterable[Any] = (), protocol: str = "wsgi") -> Any:
    """Start ``bus`` (default ``wspbus.bus``) in this worker and stop it when the worker exits.

    ``plugins`` are subscribed first. ``app`` is returned as is; a mapping ``{prefix: app}`` is
    returned as one site app speaking ``protocol`` (mixed WSGI/ASGI apps are adapted). A start
    that fails raises, so the host reports the worker as failed to boot.
    """
    if bus is None:
        import wspbus

        bus = wspbus.bus
    for plugin in plugins:
        plugin.subscribe()
    if _attached.get(id(bus), (None,))[0] != os.getpid():
        _attached[id(bus)] = (os.getpid(), bus)
        _exit_with_interpreter(bus)
    if bus.state in (states.STOPPED, states.STOPPING):
        bus.start()
    if isinstance(app, Mapping):
        from .site import Site, mount_app

        return Site([mount_app(prefix, each) for prefix, each in app.items()]).app(protocol)
    return app


def detach(bus: Bus | None = None) -> None:
    """Exit the bus (stopping its services); a second call, or one for an exited bus, does nothing."""
    if bus is None:
        import wspbus

        bus = wspbus.bus
    try:
        bus.exit()
    except Exception:
        pass  # each failure was logged by the bus where it happened


def _exit_with_interpreter(bus: Bus) -> None:
    """Exit the bus when the interpreter ends, before Python joins the non-daemon threads."""
    def on_interpreter_exit() -> None:
        if _attached.get(id(bus), (None,))[0] == os.getpid():
            detach(bus)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(on_interpreter_exit)  # runs before threading._shutdown joins threads
    else:
        import atexit

        atexit.register(on_interpreter_exit)
