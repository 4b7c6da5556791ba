"""A restart's head start on imports: where each module was found, handed to the new process.

A restarted process imports everything again, and with thousands of modules most of that
time goes to looking for them: every import tries each finder, builds candidate paths and
stats them. The process that restarts already knows the answers, so reexec() hands them
over: for every submodule loaded from source, the file it came from and its bytecode cache.
The new process is told about them before ``__main__`` runs (a ``sitecustomize`` put on
PYTHONPATH for that one start, which takes itself out again and then runs the real one).

Fresh code is never traded for speed. A module is loaded from the handed-over file only if
its package's first directory is still the one it was found in and that directory (and,
for a package, its own directory) has not changed since: any file created, removed or
renamed there changes a directory's modification time, so what the normal search would
pick is then looked up normally. The bytecode cache is used only if it matches the source's
modification time and size, the same check the import system makes; otherwise the source is
compiled. Top-level modules, whose search depends on all of ``sys.path``, and modules from
any other loader (extensions, zip files, import hooks) are always looked up normally.
"""

from __future__ import annotations

import _imp
import io
import marshal
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.machinery import (BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, SOURCE_SUFFIXES, ModuleSpec,
                                 SourceFileLoader)
from importlib.util import MAGIC_NUMBER
from types import CodeType, ModuleType
from typing import Literal

#: Names the descriptor holding the map, and PYTHONPATH as it was before the restart.
MAP_ENV = "WSPBUS_IMPORT_MAP"
#: Set (to anything) to restart without a map: every module is searched for as usual.
NO_MAP_ENV = "WSPBUS_NO_IMPORT_MAP"
#: The directory whose sitecustomize takes the map over in the new process.
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "restart_site")
_FORMAT = 1

#: A mapped module: (origin, cached, index of the directory searched, index of the package's
#: own directory or -1); the map is {module name: MapEntry}.
MapEntry = tuple[str, str, int, int]
#: What a directory must keep for the map to hold: (st_dev, st_ino, st_mtime_ns).
Identity = tuple[int, int, int]
#: The directories the map depends on: [(path, identity)].
Directories = list[tuple[str, Identity]]


def hand_over() -> int | None:
    """Write this process's import map to an unlinked file; its descriptor, to keep across exec.

    Sets the environment so that the next interpreter takes it over. Nothing is handed over
    when that interpreter would not run sitecustomize or would ignore PYTHONPATH, or when
    WSPBUS_NO_IMPORT_MAP is set.
    """
    if sys.flags.no_site or sys.flags.ignore_environment or os.environ.get(NO_MAP_ENV):
        return None
    modules, directories = _collect(list(sys.modules.items()))
    if not modules:
        return None
    data = marshal.dumps((_FORMAT, MAGIC_NUMBER, modules, directories))
    handle = tempfile.TemporaryFile(prefix="wspbus-import-map-")
    handle.write(data)
    handle.flush()
    handle.seek(0)  # the descriptor shares this offset: the new process reads from the start
    fd = os.dup(handle.fileno())
    handle.close()
    original = os.environ.get("PYTHONPATH")
    os.environ[MAP_ENV] = "%d:%d:%s" % (os.getpid(), fd, "-" if original is None else "=" + original)
    os.environ["PYTHONPATH"] = SITE_DIR if not original else SITE_DIR + os.pathsep + original
    return fd


def take_over(site_dir: str) -> None:
    """In the new process, from the sitecustomize in ``site_dir``: undo what was set for
    this start (``site_dir`` on sys.path and PYTHONPATH), and load the map."""
    pid, fd, original = _read_env()
    sys.path[:] = [entry for entry in sys.path if entry != site_dir]
    _restore_pythonpath(original, site_dir)
    if fd is None or pid != os.getpid():  # none, or a child's copy of a restarted one's environment
        return
    try:
        with os.fdopen(fd, "rb") as handle:
            record = marshal.loads(handle.read())
    except (OSError, EOFError, ValueError, TypeError):
        return  # no map after all: every module is looked up as usual
    if isinstance(record, tuple) and record[:2] == (_FORMAT, MAGIC_NUMBER):
        sys.meta_path.insert(0, HandedOverFinder(record[2], record[3]))


def _read_env() -> tuple[int | None, int | None, str | None | Literal[False]]:
    """(pid, descriptor, PYTHONPATH before the restart: a string, None if unset, False if unknown)."""
    raw = os.environ.pop(MAP_ENV, "")
    pid, _, rest = raw.partition(":")
    fd, _, original = rest.partition(":")
    if not (pid.isdigit() and fd.isdigit() and original[:1] in ("-", "=")):
        return None, None, False
    return int(pid), int(fd), original[1:] if original[:1] == "=" else None


def _restore_pythonpath(original: str | None | Literal[False], site_dir: str) -> None:
    if original is False:  # not known: take out only what was put in
        entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        original = os.pathsep.join(entry for entry in entries if entry != site_dir) or None
    if original is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = original


# -- the process that restarts -------------------------------------------------------------

#: A directory changed this recently may change again within the same tick of the file
#: system's clock without its modification time showing it: it is not mapped.
_SETTLED_NS = 50_000_000


def _collect(modules: list[tuple[str, ModuleType]]) -> tuple[dict[str, MapEntry], Directories]:
    """The map of the submodules loaded from source files, and the directories it depends on.

    A module is mapped only where the import system's own search, run now, would find the
    file it was loaded from: the directory may have changed since the module was imported.
    """
    directories = _Directories()
    found: dict[str, MapEntry] = {}
    for name, module in modules:
        where = _where_found(name, module)
        if where is None:
            continue
        origin, cached, searched, tail, is_package = where
        listing = directories.listing(searched)
        if listing is None or not listing.finds(tail, origin, is_package):
            continue
        searched_index = directories.index(searched)  # known: it has a listing
        own_index = directories.index(origin.rpartition(os.sep)[0]) if is_package else -1
        if own_index is not None and searched_index is not None:
            found[name] = (origin, cached, searched_index, own_index)
    return found, directories.identities


def _where_found(name: str, module: ModuleType) -> tuple[str, str, str, str, bool] | None:
    """(origin, cached, directory searched, last part of the name, is a package), or None if
    the module is not one to map: a submodule loaded from source in its package's first
    directory."""
    spec = getattr(module, "__spec__", None)
    parent_name, dot, tail = name.rpartition(".")
    if not dot or spec is None or spec.name != name or type(spec.loader) not in _SOURCE_LOADERS:
        return None
    origin, cached = spec.origin, spec.cached
    if not (isinstance(origin, str) and isinstance(cached, str)):
        return None
    try:
        searched = next(iter(sys.modules[parent_name].__path__), None)
    except (KeyError, AttributeError, TypeError):
        return None
    if not isinstance(searched, str):
        return None
    is_package = spec.submodule_search_locations is not None
    if origin != searched + os.sep + (tail + os.sep + "__init__.py" if is_package else tail + ".py"):
        return None  # found somewhere the search of its package would not look first
    return origin, cached, searched, tail, is_package


class _Listing:
    """A directory's entries, as the import system's search looks at them."""

    def __init__(self, path: str) -> None:
        self.path = path
        with os.scandir(path) as entries:
            self.entries = {entry.name: entry.is_dir() for entry in entries}
        self.extension_stems = {name[:-len(suffix)] for name in self.entries if name.endswith(_EXTENSIONS)
                                for suffix in _EXTENSIONS if name.endswith(suffix)}

    def finds(self, tail: str, origin: str, is_package: bool) -> bool:
        """Whether a search here for ``tail`` finds ``origin`` first: a directory with an
        ``__init__`` (extension, source, then bytecode), then a module (extension, source)."""
        if self.entries.get(tail):
            for suffix in _INIT_SUFFIXES:
                init = self.path + os.sep + tail + os.sep + "__init__" + suffix
                if os.path.isfile(init):
                    return init == origin
        return not is_package and tail not in self.extension_stems and tail + ".py" in self.entries


_EXTENSIONS = tuple(EXTENSION_SUFFIXES)
_INIT_SUFFIXES = (*EXTENSION_SUFFIXES, *SOURCE_SUFFIXES, *BYTECODE_SUFFIXES)


class _Directories:
    """Each directory the map depends on: its entries and identity, read once."""

    def __init__(self) -> None:
        self.identities: Directories = []
        self._index: dict[str, int | None] = {}
        self._listings: dict[str, _Listing | None] = {}
        self._now = time.time_ns()

    def index(self, path: str) -> int | None:
        """The directory's place in ``identities``; None if it is missing or changing now."""
        if path not in self._index:
            identity = _identity(path)
            if identity is None or self._now - identity[2] < _SETTLED_NS:
                self._index[path] = None
            else:
                self._index[path] = len(self.identities)
                self.identities.append((path, identity))
        return self._index[path]

    def listing(self, path: str) -> _Listing | None:
        """The directory's entries, or None if it cannot be mapped."""
        if path not in self._listings:
            listing = None
            if self.index(path) is not None:
                try:
                    listing = _Listing(path)
                except OSError:
                    pass
            self._listings[path] = listing
        return self._listings[path]


# -- the new process -----------------------------------------------------------------------

class HandedOverLoader(SourceFileLoader):
    """A SourceFileLoader that already knows where the bytecode cache is and reads it directly."""

    def __init__(self, fullname: str, path: str, cached: str) -> None:
        super().__init__(fullname, path)
        self.cached = cached

    def get_code(self, fullname: str) -> CodeType | None:
        """The cached code if it matches the source's mtime and size; else compile as usual."""
        try:
            st = os.stat(self.path)
            with io.open_code(self.cached) as cache:
                data = cache.read()
        except OSError:
            return super().get_code(fullname)
        if (data[:4] != MAGIC_NUMBER or data[4:8] != b"\0\0\0\0"  # a timestamp-checked cache
                or int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
            return super().get_code(fullname)
        try:
            code: CodeType = marshal.loads(memoryview(data)[16:])
        except (EOFError, ValueError, TypeError):
            return super().get_code(fullname)
        _fix_co_filename(code, self.path)  # as the import system does for a moved cache
        return code


#: The import system's own (private) step that points a cached code object at its source.
_fix_co_filename: Callable[[CodeType, str], None] = getattr(_imp, "_fix_co_filename")
_SOURCE_LOADERS = (SourceFileLoader, HandedOverLoader)


class HandedOverFinder:
    """First on sys.meta_path in a restarted process: finds each mapped module once, if the
    map still holds (see the module's docstring); anything else is left to the next finder."""

    def __init__(self, modules: dict[str, MapEntry], directories: Directories) -> None:
        self._modules = modules
        self._directories = directories
        self._unchanged: dict[int, bool] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        entry = self._modules.pop(fullname, None) if self._modules else None
        if entry is None or path is None:
            return None
        origin, cached, searched, own = entry
        try:
            first = next(iter(path), None)
        except TypeError:
            return None
        if first != self._directories[searched][0] or not self._still_as_it_was(searched):
            return None
        if own >= 0 and not self._still_as_it_was(own):
            return None
        spec = ModuleSpec(fullname, HandedOverLoader(fullname, origin, cached), origin=origin,
                          is_package=own >= 0)
        spec.has_location = True
        spec.cached = cached
        if own >= 0:
            spec.submodule_search_locations = [self._directories[own][0]]
        return spec

    def invalidate_caches(self) -> None:
        """importlib.invalidate_caches(): files may have appeared; forget the whole map."""
        self._modules.clear()

    def _still_as_it_was(self, index: int) -> bool:
        unchanged = self._unchanged.get(index)
        if unchanged is None:
            path, identity = self._directories[index]
            unchanged = _identity(path) == tuple(identity)
            self._unchanged[index] = unchanged
        return unchanged


def _identity(directory: str) -> Identity | None:
    """(st_dev, st_ino, st_mtime_ns): what a directory must keep for the map to hold; None if
    it cannot be read. Both processes compare exactly this."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns
