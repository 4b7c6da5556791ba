"""Autoreloader: restart the process when the source of an imported module (or an extra file) changes.

What it watches: the file of every module in ``sys.modules`` whose name matches ``match``,
plus the paths in ``files``. Bytecode, editor swap and backup files, logs and everything
else that merely sits next to a watched file is never reported. Modules imported after
start are picked up every ``frequency`` seconds by a check that costs one ``len(sys.modules)``
while nothing new was imported (the module table is only walked when its size changed).

How it watches (``backend='auto'`` takes the first that works): 'inotify', the Linux kernel's
notification through ctypes, whose thread sleeps until a watched directory changes;
'watchfiles' (an optional dependency: inotify, FSEvents, ReadDirectoryChangesW), which wakes
20 times a second to look at its queue; 'stat', a stat of every watched file every
``frequency`` seconds, whose cost grows with the number of files (see _watch_stat).
One module per backend, behind the interface in _watch.

What it does on a change: each changed ``.py`` file is compiled first. A file that does not
compile is logged with its file and line and the process keeps serving the old code; a
later save that compiles restarts it. The stale bytecode of the changed files is removed
so the new process cannot load it (a save within the same second and of the same size
would otherwise look unchanged to the import system). Then ``bus.restart()``. A save
made while the new process starts (after the old one decided, before the new one watches)
is caught by comparing modification times with the moment of the decision, passed across
the re-exec in the environment.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import zipimport
from types import ModuleType

from .._process import reexec
from .._core.bus import Bus
from ._watch import FileWatcher
from .base import SimplePlugin, ignore_listener_failures, priority

__all__ = ["Autoreloader"]

BACKENDS = ("auto", "inotify", "watchfiles", "stat")
#: Passed across the re-exec: when the restarting process saw the change (time.time_ns()).
RELOAD_SINCE_ENV = "WSPBUS_RELOAD_SINCE"


class Autoreloader(SimplePlugin):
    """Restart the process (``bus.restart()``) when a watched file changes.

    ``frequency``: seconds between looks for newly imported modules, and between stat passes
    when the stat backend is used. ``match``: regular expression the module names to watch
    must match (``re.match``). ``files``: a set of extra paths to watch. ``backend``:
    'inotify', 'watchfiles', 'stat', or 'auto' (the first of these that works here).
    """

    def __init__(self, bus: Bus, frequency: float = 1, match: str = ".*", *, backend: str = "auto") -> None:
        if isinstance(frequency, bool) or not isinstance(frequency, (int, float)) or not frequency > 0:
            raise ValueError("Autoreloader frequency must be a positive number of seconds, not %r"
                             % (frequency,))
        if backend not in BACKENDS:
            raise ValueError("Autoreloader backend must be one of %s, not %r"
                             % (", ".join(map(repr, BACKENDS)), backend))
        try:
            re.compile(match)
        except (re.error, TypeError) as exc:
            raise ValueError("Autoreloader match must be a regular expression, not %r (%s)" % (match, exc)) from None
        super().__init__(bus)
        self.frequency = frequency
        self.match = match
        self.backend = backend
        #: Extra files to watch (configuration files, templates that are compiled once, ...).
        self.files: set[str] = set()
        self._watcher: FileWatcher | None = None
        self._broken: dict[str, str] = {}  # changed file -> why it does not compile
        self._restarting = False
        self._lock = threading.Lock()
        self._change_lock = threading.Lock()
        self._module_files: set[str] = set()
        self._modules_seen: set[str] = set()
        self._module_count = -1
        self._extra: frozenset[str] = frozenset()
        self._watched: frozenset[str] = frozenset()

    # -- the bus's channels --------------------------------------------------------------

    @priority(70)
    def start(self) -> None:
        """Start watching (once; a second start while watching does nothing)."""
        if self._watcher is not None:
            return
        self._restarting = False
        self._watcher = self._make_watcher()
        files = self._watched_files()
        self.bus.log("Autoreloader: watching %d files in %d directories (%s)"
                     % (len(files), len({os.path.dirname(f) for f in files}), self._watcher.name))
        self._catch_up(files)

    def stop(self) -> None:
        """Stop watching now; the watcher's thread has ended when this returns."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def graceful(self) -> None:
        """Watch again from scratch (the modules and files are looked up anew)."""
        self.stop()
        if self.bus.state is self.bus.states.STARTED:  # no thread while the bus is stopped or exiting
            self.start()

    # -- what is watched -----------------------------------------------------------------

    def sysfiles(self) -> set[str]:
        """The files of the imported modules whose names match ``match``."""
        return _files_of_modules(list(sys.modules.items()), re.compile(self.match))

    def _watched_files(self) -> frozenset[str]:
        """The watched paths; the same object for as long as nothing was imported or added.

        Cheap enough to call every second: one ``len(sys.modules)`` and a copy of the few
        extra ``files``; only the modules not seen before are looked at.
        """
        with self._lock:
            extra = frozenset(self.files)
            if len(sys.modules) == self._module_count and extra == self._extra:
                return self._watched
            self._module_count = len(sys.modules)
            self._extra = extra
            new = [(name, module) for name, module in list(sys.modules.items())
                   if name not in self._modules_seen]
            self._modules_seen.update(name for name, _ in new)
            self._module_files |= _files_of_modules(new, re.compile(self.match))
            self._watched = frozenset(self._module_files | {_absolute(p) for p in extra})
            return self._watched

    # -- reacting to a change ------------------------------------------------------------

    def _make_watcher(self) -> FileWatcher:
        """The first backend that works, of the one asked for or, for 'auto', of all in order."""
        args = (self._watched_files, self._on_change, self.frequency, self.bus.log)
        names = BACKENDS[1:] if self.backend == "auto" else (self.backend,)
        for name in names:
            try:
                watcher = _BACKEND_LOADERS[name]()(*args)
                watcher.start()
                return watcher
            except ImportError as exc:
                if self.backend != "auto":
                    raise RuntimeError("Autoreloader backend %r is not available: %s" % (name, exc)) from None
            except (OSError, RuntimeError) as exc:
                if self.backend != "auto":
                    raise
                self.bus.log("Autoreloader: the %s backend failed (%s); trying the next" % (name, exc),
                             level=30)
        raise AssertionError("the stat backend is always available")

    def _catch_up(self, files: frozenset[str]) -> None:
        """Restart once more if a file was saved while this process was starting.

        A save made after the previous process decided to restart and before this one
        watched may be missing from the code this one imported. Checked only after a restart
        of ours, and that catch-up restart does not ask for another check: it cannot loop.
        """
        since = os.environ.pop(RELOAD_SINCE_ENV, "")
        if since.isdigit():
            saved = {path for path in files if _modified_after(path, int(since))}
            if saved:
                self._on_change(saved, catching_up=True)

    def _on_change(self, paths: set[str], catching_up: bool = False) -> None:
        """Restart for changed files, unless one that changed does not compile."""
        with self._change_lock:
            self._restart_unless_broken(sorted(p for p in paths if os.path.exists(p)), catching_up)

    def _restart_unless_broken(self, present: list[str], catching_up: bool) -> None:
        if self._restarting or not present:  # a deleted file: wait for it to come back
            return
        for path in present:
            self._check_compiles(path)
        if self._broken:
            if not set(present) <= self._broken.keys():
                self.bus.log("Autoreloader: not restarting while %s does not compile"
                             % ", ".join(sorted(self._broken)), level=30)
            return
        for path in present:
            discard_bytecode(path)
        self._restarting = True
        if not catching_up:
            os.environ[RELOAD_SINCE_ENV] = str(time.time_ns())
        self.bus.log("Restarting because %s changed." % ", ".join(present))
        threading.Thread(target=self._restart_bus, name="wspbus autoreload restart").start()

    def _check_compiles(self, path: str) -> None:
        if not path.endswith(".py"):
            return
        error = compile_error(path)
        if error is None:
            if self._broken.pop(path, None) is not None:
                self.bus.log("Autoreloader: %s compiles again" % path)
            return
        self._broken[path] = error
        self.bus.log("Autoreloader: not restarting: %s; the old code keeps running until a save "
                     "that compiles" % error, level=40)

    def _restart_bus(self) -> None:
        # Not on the watcher's thread: restart() stops this plugin, which joins that thread.
        # And not before the bus has finished starting (a catch-up happens while it starts).
        states = self.bus.states  # the bus's own: CherryPy's bus has its own state objects
        self.bus.wait((states.STARTED, states.STOPPING, states.STOPPED, states.EXITING))
        if self.bus.state is not states.STARTED:
            return
        ignore_listener_failures(self.bus.restart)
        if self.bus.state is states.STARTED:  # refused (the new code failed its check): still here
            self._restarting = False  # the next save tries again


def _inotify_backend() -> type[FileWatcher]:
    from ._watch_inotify import InotifyWatcher

    return InotifyWatcher


def _watchfiles_backend() -> type[FileWatcher]:
    from ._watch_watchfiles import WatchfilesWatcher

    return WatchfilesWatcher


def _stat_backend() -> type[FileWatcher]:
    from ._watch_stat import StatWatcher

    return StatWatcher


#: Each backend's module is imported only when it is tried.
_BACKEND_LOADERS = {"inotify": _inotify_backend, "watchfiles": _watchfiles_backend, "stat": _stat_backend}


def _files_of_modules(modules: list[tuple[str, ModuleType]], pattern: re.Pattern[str]) -> set[str]:
    found = set()
    for name, module in modules:
        if pattern.match(name):
            path = module_file(module)
            if path is not None:
                found.add(path)
    return found


def _modified_after(path: str, since_ns: int) -> bool:
    try:
        return os.stat(path).st_mtime_ns > since_ns
    except OSError:
        return False


def _absolute(path: str) -> str:
    """An absolute path, relative ones taken from where the process started (not from '/')."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        path = os.path.join(reexec.STARTUP_CWD or os.getcwd(), path)
    return os.path.normpath(path)


def module_file(module: ModuleType) -> str | None:
    """The file a module was loaded from, if it is one that can be edited or replaced.

    Built-in, frozen and namespace modules have none; sourceless bytecode is skipped; a
    module imported from a zip archive is watched through its archive.
    """
    loader = getattr(module, "__loader__", None)
    if isinstance(loader, zipimport.zipimporter):
        return _absolute(loader.archive)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or path.endswith((".pyc", ".pyo")):
        return None
    return _absolute(path)


def compile_error(path: str) -> str | None:
    """None if the source file compiles; otherwise 'file:line: what is wrong'."""
    try:
        with open(path, "rb") as source_file:
            source = source_file.read()
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return "%s:%s: %s" % (exc.filename or path, exc.lineno, exc.msg)
    except Exception as exc:  # null bytes, unreadable, a warning turned into an error
        return "%s: %s" % (path, exc)
    return None


def discard_bytecode(path: str) -> None:
    """Remove the cached bytecode of a changed source file, so the new process compiles it."""
    if not path.endswith(".py"):
        return
    import importlib.util

    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, NotImplementedError, ValueError):
        pass  # no cache, or none we may remove: the import system checks it anyway
