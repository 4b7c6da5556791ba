"""Controlling a running site from outside: ``wspbus stop|reload|graceful|status --pidfile FILE``.

The commands signal the pid in the site's pid file (stop = SIGTERM, reload = SIGHUP, graceful =
SIGUSR1). ``status`` reads the small JSON file the site keeps next to its pid file
(``site.pid`` -> ``site.status.json``, written by wspbus.plugins.status.StatusFile).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from typing import Any

from .._core.errors import StartupError
from ..plugins.pidfile import check_owner
from ..plugins.status import status_path

__all__ = ["ControlError", "read_pid", "read_status", "send", "status_path", "stop"]

#: LSB status codes for ``wspbus status``: running, not running (no live process).
RUNNING, NOT_RUNNING = 0, 3
COMMAND_SIGNALS = {"stop": signal.SIGTERM, "reload": signal.SIGHUP, "graceful": signal.SIGUSR1}


class ControlError(Exception):
    """The site cannot be controlled; ``str()`` is one line, ``status`` the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def read_pid(pidfile: str) -> int:
    """The pid of the live site owning ``pidfile``; ControlError when there is none.

    The site holds an flock on its pid file for as long as it runs: a file nobody has locked
    is stale, whatever pid it names (pids are reused).
    """
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ControlError("%s: no such pid file: the site is not running" % pidfile, NOT_RUNNING) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ControlError("%s: the pid file is a symbolic link; refusing to follow it" % pidfile) from None
        raise ControlError("%s: cannot read the pid file: %s" % (pidfile, exc.strerror)) from None
    try:
        try:  # in a directory like /tmp, a file someone else put there names whatever pid they like
            check_owner(os.path.abspath(pidfile), os.fstat(fd), trusted=(0,))
        except StartupError as exc:
            raise ControlError(str(exc)) from None
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        locked = _locked_by_another(fd)
    finally:
        os.close(fd)
    if not text.isdigit():
        raise ControlError("%s: expected a process id in the pid file, found %r" % (pidfile, text[:20]))
    pid = int(text)
    if not locked or not _alive(pid):
        raise ControlError("%s: stale pid file: process %d is not running" % (pidfile, pid), NOT_RUNNING)
    return pid


def _locked_by_another(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _alive(pid: int) -> bool:
    """The process exists and has not ended (a zombie waiting to be reaped has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    try:
        with open("/proc/%d/stat" % pid, "rb") as file:
            return file.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc here: existing is all we can tell


def send(pidfile: str, command: str) -> int:
    """Signal the site for ``command`` (stop, reload, graceful); returns its pid."""
    pid = read_pid(pidfile)
    try:
        os.kill(pid, COMMAND_SIGNALS[command])
    except PermissionError:
        raise ControlError("%s: not allowed to signal process %d (run as its user or root)" % (pidfile, pid)) from None
    return pid


def stop(pidfile: str, timeout: float | None) -> int:
    """SIGTERM the site and wait (on a pidfd, no polling) until it is gone or ``timeout`` passes.

    ``timeout``: seconds; None or infinity waits without limit.
    """
    if timeout == float("inf"):
        timeout = None  # a selector refuses an infinite timeout (OverflowError)
    pid = read_pid(pidfile)
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None  # no pidfd here: signal and return
    try:
        send(pidfile, "stop")
        if handle is not None and not _wait_readable(handle, timeout):
            assert timeout is not None  # without a bound, the wait ends only with the process
            raise ControlError("%s: process %d is still running %g s after SIGTERM" % (pidfile, pid, timeout))
    finally:
        if handle is not None:
            os.close(handle)
    return pid


def _wait_readable(fd: int, timeout: float | None) -> bool:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def read_status(pidfile: str) -> dict[str, Any]:
    """The live site's status record; the pid file decides whether it runs at all."""
    pid = read_pid(pidfile)
    path = status_path(pidfile)
    try:
        with open(path, encoding="utf-8") as file:
            record: dict[str, Any] = json.load(file)
    except (OSError, ValueError):
        record = {"state": "UNKNOWN (no status file %s)" % path}
    record["pid"] = pid
    return record


def describe_status(record: dict[str, Any], now: float | None = None) -> list[str]:
    """The status record as lines for a person."""
    now = time.time() if now is None else now
    lines = ["state: %s" % record.get("state"), "pid: %s" % record.get("pid")]
    if record.get("since"):
        uptime = "uptime: %s" % _duration(now - record["since"])
        if record.get("started") and record["started"] - record["since"] > 1:
            uptime += " (last reload %s ago)" % _duration(now - record["started"])
        lines.append(uptime)
    lines += ["bind: %s" % bind for bind in record.get("binds", [])]
    lines += ["mounted: %s" % mount for mount in record.get("mounts", [])]
    if record.get("reload"):
        lines.append("autoreload: on")
    return lines


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return "%dh %02dm %02ds" % (hours, minutes, seconds) if hours else "%dm %02ds" % (minutes, seconds)
