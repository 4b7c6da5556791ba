"""PIDFile: a PID file that guards against a second instance, not just a note of the pid.

How the file is claimed (start priority 70: after the Daemonizer forks at 65, before servers
bind at 75, so a refused instance has done nothing yet):

* The pid is written to a temporary file in the same directory, which is then locked
  (``flock``) and only then given the PID file's name, by ``link`` (when no file is there) or
  ``rename`` (over a stale one). A reader never sees an empty or half-written PID file, and
  the lock goes with the file: it is held for the life of the process.
* An existing file whose lock is held belongs to a running instance: start fails with one
  line naming that pid. The lock, not the pid in the file, decides: a pid can be reused.
* An existing file whose lock is free is stale (its process died) and is replaced; to replace
  it one must hold its lock and see that the name still points to it, so two instances
  starting at once cannot both win.
* On exit the file is removed only if the name still points to our file and this is the
  process that wrote it (a forked child exiting does not remove its parent's file). On
  restart the locked file is kept and handed to the re-executed process, so no second
  instance can slip in between.

Where the file may live: a path that is a symbolic link is refused (and the file is always
opened without following links), and so is a directory that belongs to another user than this
process's or root, or that group or others can write without the sticky bit (anyone could swap
the file). A sticky directory others can write, such as /tmp, is accepted: there nobody else can
rename or delete our file; a file of that name that is not ours (someone took the name first)
is refused rather than replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile

from .._process import reexec
from .._core.bus import Bus, StartupError
from .base import SimplePlugin, priority, restart_requested

__all__ = ["PIDFile"]

#: How often a claim may find the file changed under it before giving up.
MAX_CLAIM_ATTEMPTS = 100


class PIDFile(SimplePlugin):
    """Write this process's pid to ``pidfile`` on start, locked; remove it on exit."""

    def __init__(self, bus: Bus, pidfile: str) -> None:
        super().__init__(bus)
        self.pidfile = os.path.abspath(pidfile)
        self.finalized = False
        self._fd: int | None = None
        self._writer_pid: int | None = None

    @property
    def _inherit_name(self) -> str:
        return "pidfile:" + self.pidfile

    @priority(70)
    def start(self) -> None:
        """Claim the PID file, or raise RuntimeError naming the instance that holds it."""
        if self._fd is not None:
            self.bus.log("PID file %s already written." % self.pidfile, level=10)
            return
        fd = self._take_from_previous_incarnation()
        if fd is None:
            check_location(self.pidfile)
            fd = claim(self.pidfile)
        self._fd = fd
        self._writer_pid = os.getpid()
        self.finalized = True
        self.bus.log("PID %d written to %s." % (self._writer_pid, self.pidfile))

    def exit(self) -> None:
        """Remove the PID file if it is still ours; on restart keep it, locked, for the new process."""
        fd = self._fd
        if fd is None:
            return
        try:
            ours = self._writer_pid == os.getpid() and names_file(self.pidfile, os.fstat(fd))
            if ours and restart_requested(self.bus):
                reexec.keep_across_exec(fd, self._inherit_name)
                self.bus.log("PID file %s kept, locked, across the restart." % self.pidfile, level=10)
                return
            if ours:
                os.unlink(self.pidfile)
                self.bus.log("PID file removed: %s." % self.pidfile)
        except OSError as exc:  # typically: privileges were dropped since it was written
            self.bus.log("Could not remove PID file %s (%s); it is left unlocked, and the next "
                         "start replaces it." % (self.pidfile, exc), level=30)
        self._fd = None
        self.finalized = False
        reexec.forget(fd)
        os.close(fd)

    def _take_from_previous_incarnation(self) -> int | None:
        fd = reexec.take_inherited(self._inherit_name)
        if fd is None:
            return None
        if names_file(self.pidfile, os.fstat(fd)) and read_pid(fd) == os.getpid():
            os.set_inheritable(fd, False)
            return fd
        os.close(fd)  # the file was removed or replaced meanwhile: claim it afresh
        return None


def check_location(path: str) -> None:
    """Refuse a PID file path others could tamper with; RuntimeError with one clear line."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISLNK(mode):
            raise StartupError("PID file %s is a symbolic link; refusing to follow it "
                               "(give the path of a regular file)" % path)
        if not stat.S_ISREG(mode):
            raise StartupError("PID file %s exists and is not a regular file" % path)
    directory = os.path.dirname(path)
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise StartupError("the directory of PID file %s does not exist" % path) from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise StartupError("PID file directory %s is writable by %s without the sticky bit; refusing "
                           "(they could swap the PID file): use a directory only its owner can write, "
                           "like /run, or a sticky one like /tmp"
                           % (directory, "others" if info.st_mode & stat.S_IWOTH else "its group"))
    if info.st_uid not in (0, os.geteuid()):
        raise StartupError("PID file directory %s belongs to uid %d, neither root nor this process "
                           "(uid %d); refusing" % (directory, info.st_uid, os.geteuid()))


def check_owner(path: str, info: os.stat_result, trusted: tuple[int, ...] = ()) -> None:
    """In a directory others can write (sticky), a PID file that is not ours (nor of a ``trusted``
    uid) was put there by someone else: refuse it rather than trust or replace it."""
    if info.st_uid == os.geteuid() or info.st_uid in trusted:
        return
    mode = os.stat(os.path.dirname(path)).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StartupError("PID file %s belongs to uid %d, not to this process (uid %d), in a directory "
                           "others can write; refusing (remove it, or use a directory like /run)"
                           % (path, info.st_uid, os.geteuid()))


def claim(path: str) -> int:
    """Make ``path`` a locked file holding our pid; return its descriptor (the lock lives with it)."""
    directory, base = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, b"%d\n" % os.getpid())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        for _ in range(MAX_CLAIM_ATTEMPTS):
            try:
                os.link(temp, path)
                return fd
            except FileExistsError:
                if replace_if_stale(path, temp):
                    return fd
        raise StartupError("PID file %s kept changing while claiming it; giving up" % path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass  # renamed into place


def replace_if_stale(path: str, temp: str) -> bool:
    """Rename ``temp`` over ``path`` if nobody holds its lock; False if ``path`` changed meanwhile."""
    try:
        existing = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StartupError("PID file %s is a symbolic link; refusing to follow it" % path) from None
        raise
    try:
        info = os.fstat(existing)
        if not stat.S_ISREG(info.st_mode):
            raise StartupError("PID file %s exists and is not a regular file" % path)
        try:
            fcntl.flock(existing, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not names_file(path, info):
                return False
            raise StartupError(already_running(path, read_pid(existing))) from None
        if not names_file(path, info):
            return False  # replaced by another claimer before we got the lock
        check_owner(path, info)
        os.rename(temp, path)
        return True
    finally:
        os.close(existing)


def already_running(path: str, pid: int | None) -> str:
    holder = "process %d" % pid if pid is not None else "a running process (its pid is unreadable)"
    return "another instance is already running: PID file %s is locked by %s; refusing to start" % (path, holder)


def names_file(path: str, info: os.stat_result) -> bool:
    """True if ``path`` (not followed) is the file ``info`` describes."""
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (info.st_dev, info.st_ino)


def read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 64, 0).strip())
    except (OSError, ValueError):
        return None
