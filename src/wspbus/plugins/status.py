"""StatusFile: the site's status, kept current in a small JSON file beside its pid file.

``wspbus status --pidfile FILE`` reads it (``site.pid`` -> ``site.status.json``); it is rewritten
atomically on every state change: state, pid, when the site first started (kept across reloads),
when it last started, its binds and its mounts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, Protocol

from .base import restart_requested, watch_state

__all__ = ["SINCE_ENV", "StatusFile", "status_path"]

#: Where a re-executed site finds when the site first started: "PID:TIME".
SINCE_ENV = "WSPBUS_SITE_SINCE"


def status_path(pidfile: str) -> str:
    """The status file kept beside ``pidfile``: run/site.pid -> run/site.status.json."""
    root, ext = os.path.splitext(pidfile)
    return (root if ext == ".pid" else pidfile) + ".status.json"


class _Site(Protocol):
    def describe(self) -> list[str]: ...


class _Config(Protocol):
    @property
    def reload(self) -> bool: ...


class SiteFacts(Protocol):
    """What the status file records of a deployed site (wspbus.deploy.launch.Deployment has it)."""

    @property
    def site(self) -> _Site: ...

    @property
    def config(self) -> _Config: ...

    def urls(self) -> list[str]: ...


class StatusFile:
    """Keeps the status file current: written on each state change, removed on a final exit.

    The file belongs to the process holding the pid file: nothing is written before this
    process has claimed it (PIDFile, start priority 70), so a second instance refused there
    leaves the running site's status file alone; and it is removed only if it records our pid.
    """

    #: Just after PIDFile (70) claims the pid file, before the servers bind (75).
    CLAIMED_PRIORITY = 71

    def __init__(self, bus: Any, pidfile: str, deployment: SiteFacts) -> None:
        self.bus = bus
        self.path = status_path(pidfile)
        self.deployment = deployment
        self.started_at: float | None = None
        self.claimed = False
        self._unwatch: Callable[[], None] | None = None

    def subscribe(self) -> None:
        self._unwatch = watch_state(self.bus, self.on_state)
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
            if not restart_requested(self.bus):
                self._remove()
                return
            name = "RESTARTING"
        self._write(self._record(name))

    def _record(self, state: str) -> dict[str, Any]:
        live = state == "STARTED"
        return {
            "state": state,
            "pid": os.getpid(),
            "since": first_start(),
            "started": self.started_at if live else None,
            "binds": self.deployment.urls() if live else [],
            "mounts": self.deployment.site.describe(),
            "reload": bool(self.deployment.config.reload),
            "updated": time.time(),
        }

    def _write(self, record: dict[str, Any]) -> None:
        directory, name = os.path.split(self.path)
        try:  # a fresh file of a random name (O_EXCL): in a directory like /tmp, no planted link is followed
            fd, temporary = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
            os.fchmod(fd, 0o644)
            with open(fd, "w", encoding="utf-8") as file:
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


def first_start() -> float:
    """When this site first started; re-executions of the same pid keep the first time."""
    recorded = os.environ.get(SINCE_ENV, "")
    pid, _, when = recorded.partition(":")
    if pid == str(os.getpid()):
        try:
            return float(when)
        except ValueError:
            pass  # garbled: this start becomes the first
    now = time.time()
    os.environ[SINCE_ENV] = "%d:%r" % (os.getpid(), now)
    return now
