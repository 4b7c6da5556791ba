"""What every file-watching backend of the Autoreloader shares: its thread and its contract.

A backend watches the files that ``watched()`` returns (a frozenset, the same object while
nothing was imported or added since) and calls ``on_change(paths)`` with the watched paths
that changed, once per burst of saves. ``start()`` begins watching before it returns (so a
save made once the bus is STARTED is seen), then watches on a thread, calling ``watched()``
every ``interval`` seconds so that modules imported later are watched too. ``stop()`` is
prompt: it wakes the thread, it does not wait out an interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: A burst of saves is over once this long passes without another change...
QUIET_SECONDS = 0.05
#: ...or once it has lasted this long (a file rewritten without pause must not starve a reload).
SETTLE_SECONDS = 0.4

WatchedFiles = Callable[[], frozenset[str]]
ChangeHandler = Callable[[set[str]], None]


class FileWatcher:
    """Base of the backends: owns the thread, the stop event and error reporting."""

    #: What the backend is called in logs and in ``Autoreloader(backend=...)``.
    name = "base"

    def __init__(self, watched: WatchedFiles, on_change: ChangeHandler, interval: float,
                 log: Callable[..., None]) -> None:
        self.watched = watched
        self.on_change = on_change
        self.interval = interval
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching now, then go on on a daemon thread (a wedged one must not hold up exit)."""
        self.prepare()
        self._thread = threading.Thread(target=self._run_reporting_errors,
                                        name="wspbus autoreload (%s)" % self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Wake the thread, wait for it to end, then release what the backend holds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return  # never started, or stopped already
        self._stop.set()
        self.wake()
        if thread is not threading.current_thread():
            thread.join()
        if not thread.is_alive():
            self.release()

    def wake(self) -> None:
        """Wake the thread where it sleeps out of the stop event's reach (inotify's poll)."""

    def release(self) -> None:
        """Close what prepare() opened; the thread has ended."""

    def _run_reporting_errors(self) -> None:
        try:
            self.run()
        except Exception:
            self.log("Autoreloader: the %s watcher failed; files are no longer watched" % self.name,
                     level=40, traceback=True)

    def report_burst(self, changed: set[str], more_changes: Callable[[float], set[str]]) -> None:
        """Report ``changed`` plus what ``more_changes(timeout)`` finds until the files are quiet.

        ``more_changes`` waits up to ``timeout`` seconds and returns the watched files that
        changed meanwhile (empty when none did, even if other files did). A burst of saves
        thus becomes one report, made QUIET_SECONDS after its last save, or SETTLE_SECONDS
        after its first at the latest.
        """
        now = time.monotonic()
        deadline, quiet_at = now + SETTLE_SECONDS, now + QUIET_SECONDS
        while now < min(deadline, quiet_at) and not self._stop.is_set():
            more = more_changes(min(deadline, quiet_at) - now)
            now = time.monotonic()
            if more:
                changed |= more
                quiet_at = now + QUIET_SECONDS
        if not self._stop.is_set():
            self.on_change(changed)

    def announce(self, files: frozenset[str]) -> None:
        """Say that newly imported files are watched from now on."""
        self.log("Autoreloader: now watching %d files" % len(files), level=10)

    def prepare(self) -> None:
        """Begin watching, on the thread that calls start()."""
        raise NotImplementedError

    def run(self) -> None:
        """Watch until the stop event is set."""
        raise NotImplementedError
