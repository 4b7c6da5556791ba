"""The portable kernel-notification Autoreloader backend, through watchfiles (an optional extra).

'auto' uses it where the inotify backend cannot run (macOS' FSEvents, Windows'
ReadDirectoryChangesW, ...).

It watches the directories that hold the watched files, not each file: a site's 10,000
modules live in a few hundred directories, and an editor that saves by writing a new file
and renaming it over the old one replaces the file but not its directory. Events for other
files in those directories (swap files, bytecode, logs) are dropped by a set lookup. While
idle, the cost is watchfiles' own wake-up every QUIET_SECONDS to look at its event queue
(about 0.5% of a core in benchmarks/bench_autoreload.py); it does not grow with the number
of files.

It drives watchfiles' notifier (RustNotify) directly rather than through ``watchfiles.watch``
so that the notifier exists before start() returns, and so that moving to a new set of
directories opens the new notifier before draining and closing the old one: no event is lost.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ._watch import QUIET_SECONDS, SETTLE_SECONDS, FileWatcher

_STEP_MS = int(QUIET_SECONDS * 1000)
_DEBOUNCE_MS = int(SETTLE_SECONDS * 1000)


#: What RustNotify.watch() returns: the (change, path) pairs seen, or why it returned without any.
Events = set[tuple[int, str]] | str


class Notifier(Protocol):
    """What is used of watchfiles' RustNotify (the names are its own)."""

    def watch(self, debounce_ms: int, step_ms: int, timeout_ms: int,
              stop_event: threading.Event | None, /) -> Events: ...

    def close(self) -> None: ...


def _directories(files: frozenset[str]) -> frozenset[str]:
    return frozenset(d for d in {os.path.dirname(path) for path in files} if os.path.isdir(d))


class WatchfilesWatcher(FileWatcher):
    name = "watchfiles"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            from watchfiles._rust_notify import RustNotify
        except ImportError:  # here, where 'auto' can go on to the next backend
            raise ImportError("watchfiles is not installed (pip install 'wspbus[reload]')") from None

        # Called with the arguments of whichever version is installed (see _open).
        self._rust_notify: Callable[..., Notifier] = RustNotify
        super().__init__(*args, **kwargs)

    def prepare(self) -> None:
        self._files = self.watched()
        self._directories = _directories(self._files)
        self._notifier = self._open(self._directories)

    def run(self) -> None:
        timeout_ms = max(1, int(self.interval * 1000))
        while True:
            if self._notifier is None:
                if self._stop.wait(self.interval):
                    return
            else:
                result = self._notifier.watch(_DEBOUNCE_MS, _STEP_MS, timeout_ms, self._stop)
                if result == "stop":
                    return
                if isinstance(result, set):
                    self._report_burst(result)
            self._follow_new_files()

    def release(self) -> None:
        if self._notifier is not None:
            self._notifier.close()  # ends watchfiles' thread now, not at garbage collection
            self._notifier = None

    def _open(self, directories: frozenset[str]) -> Notifier | None:
        if not directories:
            return None
        args = (sorted(directories), False, False, 300, False)  # paths, debug, polling, delay, recursive
        try:
            return self._rust_notify(*args, True)  # watchfiles >= 0.22: ignore_permission_denied
        except TypeError:
            return self._rust_notify(*args)

    def _watched_among(self, events: Events) -> set[str]:
        files = self._files
        return {path for _, path in events} & files if isinstance(events, set) else set()

    def _report_burst(self, events: Events) -> None:
        """watchfiles ends a batch when no *new* (change, path) pair came for a step, so a file
        saved over and over ends it early; collect until the saves stop."""
        changed = self._watched_among(events)
        if changed:
            self.report_burst(changed, self._changes_after_a_pause)

    def _changes_after_a_pause(self, timeout: float) -> set[str]:
        timeout_ms = max(1, int(timeout * 1000))
        step_ms = min(_STEP_MS, timeout_ms)
        assert self._notifier is not None, "a burst is only reported while a notifier watches"
        return self._watched_among(self._notifier.watch(step_ms, step_ms, timeout_ms, self._stop))

    def _follow_new_files(self) -> None:
        """Watch the files of modules imported since; open a new notifier for new directories."""
        latest = self.watched()
        if latest is self._files:
            return
        self._files = latest
        new_directories = _directories(latest) - self._directories
        if new_directories:
            old = self._notifier
            self._directories |= new_directories  # tried once, not again every interval
            try:
                self._notifier = self._open(self._directories)
            except (OSError, RuntimeError) as exc:  # e.g. the system's limit of watches
                self.log("Autoreloader: cannot watch %s (%s); modules there are not watched"
                         % (", ".join(sorted(new_directories)), exc), level=30)
                return
            if old is not None:
                pending = old.watch(1, 1, 1, None)  # events that came before the new notifier
                old.close()
                self._report_burst(pending)
        self.announce(latest)
