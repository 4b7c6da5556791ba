"""The event loop and the ASGI lifespan that the asyncio servers of one app share while any of them runs.

Every server of one app (the binds of a site: the same ``options.shared_loop``) joins the app's
loop when it starts and leaves it when it stops: the first to join starts the loop, in a thread
of its own, and the app's lifespan on it; the last to leave runs the lifespan shutdown and ends
the loop. So the lifespan runs once for all the binds, and what the app opens at startup (a
connection pool, say) belongs to the loop that serves every request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .backend import ServeOptions, SharedLoop
from .lifespan import Lifespan
from .loop import LoopThread

__all__ = ["AppLoop", "join_app_loop", "leave_app_loop"]


class AppLoop:
    """The loop and the lifespan the servers of one app share while any of them runs."""

    def __init__(self, app: Any, options: ServeOptions, loop_factory: Callable[[], Any] | None) -> None:
        self.lifespan = Lifespan(app, options.log)
        self.thread = LoopThread("%s loop" % options.name, loop_factory)
        self.users = 0
        self.started = False
        self.starting = threading.Lock()


def join_app_loop(shared: SharedLoop, app: Any, options: ServeOptions, loop_factory: Callable[[], Any] | None) -> AppLoop:
    """The app's running loop, its lifespan started (by the first server to join); raises its failure."""
    with shared.lock:
        running: AppLoop | None = shared.running
        if running is None:
            running = shared.running = AppLoop(app, options, loop_factory)
        running.users += 1
    try:
        with running.starting:
            if not running.started:
                running.thread.run(running.lifespan.startup())
                running.started = True
    except BaseException:
        leave_app_loop(shared, running, options.graceful_timeout)
        raise
    return running


def leave_app_loop(shared: SharedLoop, running: AppLoop, timeout: float | None) -> None:
    """One server less; after the last, the lifespan shutdown (bounded by ``timeout``) and the loop's end."""
    with shared.lock:
        running.users -= 1
        if running.users:
            return
        if shared.running is running:
            shared.running = None
    try:
        if running.started:
            running.thread.run(running.lifespan.shutdown(timeout))
    finally:
        running.thread.close()
