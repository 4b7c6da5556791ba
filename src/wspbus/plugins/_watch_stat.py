"""The portable Autoreloader backend: stat every watched file every ``interval`` seconds.

Its idle cost grows with the number of files: one ``os.stat`` per watched file per pass,
about 4% of a core at 10,000 files and one pass a second in benchmarks/bench_autoreload.py
(CherryPy's loop: about 7%), and a save is seen ``frequency`` / 2 seconds later on average.
It is the fallback where no kernel notification works; a larger ``frequency`` makes it cheaper.
"""

from __future__ import annotations

import os

from ._watch import FileWatcher


def _stamp(path: str) -> tuple[int, int] | None:
    """What tells a save apart: modification time and size; None while the file is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class StatWatcher(FileWatcher):
    name = "stat"

    def prepare(self) -> None:
        self._stamps: dict[str, tuple[int, int] | None] = {}
        self._files: frozenset[str] = frozenset()
        self._take_new_files()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._take_new_files():
                self.announce(self._files)
            changed = self._changed_files()
            if changed:
                self.report_burst(changed, self._changes_after_a_pause)

    def _take_new_files(self) -> bool:
        """Record a baseline for files that became watched (modules imported since)."""
        latest = self.watched()
        if latest is self._files:
            return False
        for path in latest - self._stamps.keys():
            self._stamps[path] = _stamp(path)
        self._files = latest
        return True

    def _changed_files(self) -> set[str]:
        stamps = self._stamps
        changed: set[str] = set()
        for path in self._files:
            stamp = _stamp(path)
            if stamp != stamps[path]:
                stamps[path] = stamp
                changed.add(path)
        return changed

    def _changes_after_a_pause(self, timeout: float) -> set[str]:
        if self._stop.wait(timeout):
            return set()
        return self._changed_files()
