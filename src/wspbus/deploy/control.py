"""Controlling a running site from outside: ``wspbus stop|reload|graceful|status --pidfile FILE``.

The commands signal the pid in the site's pid file (stop = SIGTERM, reload = SIGHUP, graceful =
SIGUSR1). ``status`` reads a small JSON file the site keeps next to its pid file
(``site.pid`` -> ``site.status.json``), rewritten atomically on every state change: state, pid,
when it first started (kept across reloads), when it last started, its binds and its mounts.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

__all__ = ["ControlError", "StatusFile", "read_pid", "read_status", "send", "status_path", "stop"]

#: LSB status codes for ``wspbus status``: running, not running (no live process).
RUNNING, NOT_RUNNING = 0, 3
SINCE_ENV = "WSPBUS_SITE_SINCE"
COMMAND_SIGNALS = {"stop": signal.SIGTERM, "reload": signal.SIGHUP, "graceful": signal.SIGUSR1}


class ControlError(Exception):
    """The site cannot be controlled; ``str()`` is one line, ``status`` the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def status_path(pidfile: str) -> str:
    """The status file kept beside ``pidfile``: run/site.pid -> run/site.status.json."""
    root, ext = os.path.splitext(pidfile)
    return (root if ext == ".pid" else pidfile) + ".status.json"


# -- inside the site ----------------------------------------------------------------------


class StatusFile:
    """Keeps the status file current: written on each state change, removed on a final exit.

    The file belongs to the process holding the pid file: nothing is written before this
    process has claimed it (PIDFile, start priority 70), so a second instance refused there
    leaves the running site's status file alone; and it is removed only if it records our pid.
    """

    #: Just after PIDFile (70) claims the pid file, before the servers bind (75).
    CLAIMED_PRIORITY = 71

    def __init__(self, bus: Any, pidfile: str, deployment: Any) -> None:
        self.bus = bus
        self.path = status_path(pidfile)
        self.deployment = deployment
        self.started_at: float | None = None
        self.claimed = False
        self._unwatch = None

    def subscribe(self) -> None:
        self._unwatch = self.bus.watch_state(self.on_state)
        self.bus.subscribe("start", self.on_claimed, self.CLAIMED_PRIORITY)

    def unsubscribe(self) -> None:
        self.bus.unsubscribe("start", self.on_claimed)
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def on_claimed(self) -> None:
        """The pid file is ours (a start listener after PIDFile's): the status file is too."""
        if not self.claimed:
            self.claimed = True
            self._write(self._record("STARTING"))

    def on_state(self, state: Any) -> None:
        if not self.claimed:
            return
        name = state.name
        if name == "STARTED":
            self.started_at = time.time()
        elif name == "EXITING":
            if not self.bus.execv:
                self._remove()
                return
            name = "RESTARTING"
        self._write(self._record(name))

    def _record(self, state: str) -> dict[str, Any]:
        live = state == "STARTED"
        return {
            "state": state,
            "pid": os.getpid(),
            "since": _first_start(),
            "started": self.started_at if live else None,
            "binds": self.deployment.urls() if live else [],
            "mounts": self.deployment.site.describe(),
            "reload": bool(self.deployment.config.reload),
            "updated": time.time(),
        }

    def _write(self, record: dict[str, Any]) -> None:
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(record, file)
            os.replace(temporary, self.path)
        except OSError as exc:
            self.bus.log("Cannot write the status file %s: %s" % (self.path, exc.strerror), level=30)

    def _remove(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as file:
                if json.load(file).get("pid") != os.getpid():
                    return  # another process's record
            os.unlink(self.path)
        except (FileNotFoundError, ValueError, AttributeError):
            pass  # gone, or not a record of ours (written whole by rename: never half of one)
        except OSError as exc:
            self.bus.log("Cannot remove the status file %s: %s" % (self.path, exc.strerror), level=30)


def _first_start() -> float:
    """When this site first started; re-executions of the same pid keep the first time."""
    recorded = os.environ.get(SINCE_ENV, "")
    pid, _, when = recorded.partition(":")
    if pid == str(os.getpid()):
        try:
            return float(when)
        except ValueError:
            pass
    now = time.time()
    os.environ[SINCE_ENV] = "%d:%r" % (os.getpid(), now)
    return now


# -- outside the site ---------------------------------------------------------------------


def read_pid(pidfile: str) -> int:
    """The pid of the live site owning ``pidfile``; ControlError when there is none.

    The site holds an flock on its pid file for as long as it runs: a file nobody has locked
    is stale, whatever pid it names (pids are reused).
    """
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ControlError("%s: no such pid file: the site is not running" % pidfile, NOT_RUNNING) from None
    except OSError as exc:
        raise ControlError("%s: cannot read the pid file: %s" % (pidfile, exc.strerror)) from None
    try:
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
            record = json.load(file)
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
