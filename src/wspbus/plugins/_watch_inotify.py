"""The Linux Autoreloader backend: inotify through ctypes, with no dependency and no idle wake-up.

Its thread sleeps in poll() on the inotify descriptor and on a pipe that stop() writes to;
the kernel wakes it when a watched directory changes. The only timed wake-up is the look
for newly imported modules every ``interval`` seconds (one ``len(sys.modules)``). Like the
watchfiles backend it watches directories, not files, and drops events for other files
by a set lookup; a new directory is simply added to the same inotify descriptor.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
from collections.abc import Iterator
from typing import Any

from ._watch import FileWatcher

IN_MODIFY = 0x2
IN_ATTRIB = 0x4  # touch, utime: a reload asked for by hand
IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80  # an editor's save: write a new file, rename it over the old one
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000  # the directory went away
IN_ONLYDIR = 0x1000000
_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows


def _load_libc() -> ctypes.CDLL:
    """libc's inotify functions; ImportError where there are none (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        raise ImportError("inotify is not available on this system") from None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    return libc


def _events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """(wd, mask, name) of each inotify event in ``data``."""
    offset = 0
    while offset < len(data):
        wd, mask, _, length = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        name = data[offset:offset + length].rstrip(b"\0")
        offset += length
        yield wd, mask, os.fsdecode(name)


class InotifyWatcher(FileWatcher):
    name = "inotify"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._libc = _load_libc()  # fails here, where 'auto' can pick another backend
        super().__init__(*args, **kwargs)

    def prepare(self) -> None:
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1: " + os.strerror(ctypes.get_errno()))
        self._fd = fd
        self._wake_read, self._wake_write = os.pipe()
        self._directories: dict[int, set[str]] = {}  # watch descriptor -> its paths (symlinks)
        self._watched_directories: set[str] = set()
        self._files = self.watched()
        self._watch_directories_of(self._files)

    def wake(self) -> None:
        os.write(self._wake_write, b"\0")

    def release(self) -> None:
        for fd in (self._fd, self._wake_read, self._wake_write):
            os.close(fd)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        self._poller = poller
        timeout_ms = max(1, int(self.interval * 1000))
        while not self._stop.is_set():
            if poller.poll(timeout_ms) and not self._stop.is_set():
                changed = self._read_changes()
                if changed:
                    self.report_burst(changed, self._changes_after_a_pause)
            self._follow_new_files()

    def _changes_after_a_pause(self, timeout: float) -> set[str]:
        if not self._poller.poll(max(1, int(timeout * 1000))) or self._stop.is_set():
            return set()
        return self._read_changes()

    def _read_changes(self) -> set[str]:
        """The watched files named by the events waiting on the descriptor."""
        changed: set[str] = set()
        files = self._files
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            for wd, mask, name in _events(data):
                if mask & IN_Q_OVERFLOW:
                    self.log("Autoreloader: inotify queue overflowed; some changes were missed", level=30)
                elif mask & IN_IGNORED:
                    self._forget(wd)
                for directory in self._directories.get(wd, ()):
                    path = os.path.join(directory, name)
                    if path in files:
                        changed.add(path)

    def _forget(self, wd: int) -> None:
        self._watched_directories -= self._directories.pop(wd, set())

    def _follow_new_files(self) -> None:
        latest = self.watched()
        if latest is not self._files:
            self._files = latest
            self._watch_directories_of(latest)
            self.announce(latest)

    def _watch_directories_of(self, files: frozenset[str]) -> None:
        failed: dict[str, int] = {}
        for directory in {os.path.dirname(path) for path in files} - self._watched_directories:
            self._watched_directories.add(directory)  # tried once, not again every interval
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
            if wd >= 0:
                self._directories.setdefault(wd, set()).add(directory)
            elif ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):  # gone, or a zip archive
                failed[directory] = ctypes.get_errno()
        if failed:
            first = min(failed)
            self.log("Autoreloader: cannot watch %d directories (%s: %s%s); modules there are not watched"
                     % (len(failed), first, os.strerror(failed[first]),
                        ", see fs.inotify.max_user_watches" if failed[first] == errno.ENOSPC else ""),
                     level=30)
