"""DropPrivileges: bind as root, then run as an unprivileged user.

At start priority 77, after servers bound their ports at 75, the process gives up root:
supplementary groups first, then the group, then the user, then the umask. Then it checks
that the drop took: real, effective and saved ids are the new ones, and becoming root again
fails. If any of that is not so, start fails; a site never goes on serving as root by mistake.

Choices where CherryPy was silent or unsafe:

* A uid without a gid runs with that user's primary group from the password database
  (CherryPy kept gid 0, root's group).
* Supplementary groups become the user's own (``initgroups``, as login, su and systemd's
  ``User=`` do); with no user to look up (gid only, or a uid with no passwd entry) they are
  cleared.
* A process that is not root can only "drop" to what it already is; asking for anything else
  fails with a clear line rather than half-changing ids.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable

from .._core.bus import Bus, StartupError
from .base import SimplePlugin, priority

__all__ = ["DropPrivileges"]


class DropPrivileges(SimplePlugin):
    """Switch to ``uid``/``gid`` (numbers or names) and set ``umask`` once servers are bound."""

    def __init__(self, bus: Bus, umask: int | None = None, uid: int | str | None = None,
                 gid: int | str | None = None) -> None:
        super().__init__(bus)
        self.finalized = False
        self.uid = uid
        self.gid = gid
        self.umask = umask

    @property
    def uid(self) -> int | None:
        """The user to run as, by number; set it by number or name."""
        return self._uid

    @uid.setter
    def uid(self, value: int | str | None) -> None:
        self._uid = _resolve(value, "user", "uid", lambda name: pwd.getpwnam(name).pw_uid)

    @property
    def gid(self) -> int | None:
        """The group to run as, by number; set it by number or name."""
        return self._gid

    @gid.setter
    def gid(self, value: int | str | None) -> None:
        self._gid = _resolve(value, "group", "gid", lambda name: grp.getgrnam(name).gr_gid)

    @property
    def umask(self) -> int | None:
        return self._umask

    @umask.setter
    def umask(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or not 0 <= value <= 0o777):
            raise ValueError("DropPrivileges: umask must be a number from 0 to 0o777, got %r" % (value,))
        self._umask = value

    @priority(77)
    def start(self) -> None:
        """Drop to uid/gid, verify it took, and set the umask."""
        if self.finalized:
            self.bus.log("Already running as uid: %d gid: %d" % (os.getuid(), os.getgid()), level=10)
            return
        if self.uid is None and self.gid is None:
            self.bus.log("uid/gid not set; running as uid: %d gid: %d" % (os.getuid(), os.getgid()))
        else:
            self._drop(*self._target())
        if self.umask is not None:
            old = os.umask(self.umask)
            self.bus.log("umask old: %03o, new: %03o" % (old, self.umask))
        self.finalized = True

    def _target(self) -> tuple[int | None, int, str | None]:
        """(uid, gid, user name) to switch to; the gid defaults to the user's primary group."""
        user = None
        if self.uid is not None:
            try:
                user = pwd.getpwuid(self.uid)
            except KeyError:
                pass
        gid = self.gid
        if gid is None:
            if user is None:
                raise StartupError("DropPrivileges: uid %s has no entry in the password database, so its "
                                   "group is unknown; give gid= as well" % self.uid)
            gid = user.pw_gid
        return self.uid, gid, (user.pw_name if user else None)

    def _drop(self, uid: int | None, gid: int, name: str | None) -> None:
        if _already(uid, gid):
            self.bus.log("Already running as uid: %s gid: %d" % (uid if uid is not None else os.getuid(), gid))
            return
        groups = os.getgrouplist(name, gid) if name is not None else []
        _import_what_the_bus_imports_late()
        try:
            os.setgroups(groups)
            os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
        except PermissionError as exc:
            raise StartupError("DropPrivileges: cannot switch to uid %s gid %d: %s (only root can; this "
                               "process runs as uid %d)" % (uid, gid, exc.strerror, os.getuid())) from None
        _verify(uid, gid, groups)
        self.bus.log("Running as uid: %d gid: %d groups: %s" % (os.getuid(), os.getgid(), groups))


def _resolve(value: object, kind: str, number: str, lookup: Callable[[str], int]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("DropPrivileges: %s must be a %s name or a %s number, got %r" % (number, kind, number, value))
    if isinstance(value, int):
        if value < 0:
            raise ValueError("DropPrivileges: %s must not be negative, got %d" % (number, value))
        return value
    try:
        return lookup(value)
    except KeyError:
        raise ValueError("DropPrivileges: no such %s %r (expected a %s name or a %s number)"
                         % (kind, value, kind, number)) from None


def _already(uid: int | None, gid: int) -> bool:
    """True if this process runs as exactly these ids (real, effective and saved) already."""
    return set(os.getresgid()) == {gid} and (uid is None or set(os.getresuid()) == {uid})


def _verify(uid: int | None, gid: int, groups: list[int]) -> None:
    """Raise unless the drop took and cannot be undone."""
    if set(os.getresgid()) != {gid} or (uid is not None and set(os.getresuid()) != {uid}):
        raise StartupError("DropPrivileges: the switch did not take: uids %s gids %s"
                           % (os.getresuid(), os.getresgid()))
    if sorted(set(os.getgroups())) != sorted(set(groups)):
        raise StartupError("DropPrivileges: supplementary groups are %s, expected %s" % (os.getgroups(), groups))
    if uid in (None, 0):
        return
    for regain in (os.setuid, os.seteuid):
        try:
            regain(0)
        except PermissionError:
            continue
        raise StartupError("DropPrivileges: the process could become root again after switching "
                           "to uid %d; refusing to go on" % uid)


def _import_what_the_bus_imports_late() -> None:
    """The bus imports these on first need; after the drop the interpreter's own directory may be
    unreadable (a Python under /root, mode 0700), so import them while we still can."""
    import logging  # noqa: F401  (bus.log_to_stdlib)
    import traceback  # noqa: F401  (formatting a failing listener's error)
