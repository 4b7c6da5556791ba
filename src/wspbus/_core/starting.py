"""Which thread is running start(), so that an exit asked for meanwhile waits for it.

An exit() or restart() from another thread (a signal's, say) while the bus is STARTING must
win without racing the start: the exit is claimed at once (so the start stops calling its
listeners after the one running and never reports STARTED), then waits here until start()
has returned, and only then stops what started. On the thread running start() (a start
listener that calls exit(), a failing start shutting down) there is nothing to wait for.
"""

from __future__ import annotations

import threading

__all__ = ["StartInProgress"]


class StartInProgress:
    """The thread running start() (None when no start runs), and a way to wait for it to end."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """The calling thread runs a start (until end())."""
        with self._changed:
            self._thread = threading.current_thread()

    def end(self) -> None:
        with self._changed:
            self._thread = None
            self._changed.notify_all()

    def elsewhere(self) -> bool:
        """True while a start runs on a thread other than the caller's."""
        thread = self._thread
        return thread is not None and thread is not threading.current_thread()

    def wait_elsewhere(self) -> None:
        """Return once no start runs on another thread than the caller's."""
        with self._changed:
            self._changed.wait_for(lambda: not self.elsewhere())
