"""Checking new code before a reload leaves the running code: the site imported in a child.

A single process reloads by re-executing itself; if the new code cannot be imported, the new
process ends and the site is gone. So before the restart, the same command line runs once
more with ``WSPBUS_CHECK_ONLY=1``: that child imports what the site imports (--import
modules, the apps) and exits, 0 or with the one-line error a failed start would print. The
process bus refuses the restart when it fails (wspbus._process.checked_restart).
"""

from __future__ import annotations

import os
import subprocess

from .._process import reexec

__all__ = ["CHECK_ENV", "check_new_code", "check_requested"]

CHECK_ENV = "WSPBUS_CHECK_ONLY"
#: Seconds the child may take to import the site before the reload is refused.
CHECK_TIMEOUT = 120.0
#: What the running process was handed and the child must not take (it only imports).
_NOT_FOR_THE_CHILD = (reexec.FDS_ENV, reexec.HELD_SIGNALS_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                      "NOTIFY_SOCKET")


def check_requested() -> bool:
    """This process is such a child: import the site, start nothing."""
    return os.environ.get(CHECK_ENV) == "1"


def check_new_code() -> str | None:
    """None if the site's code imports in a fresh interpreter; else the one-line reason."""
    args = reexec.command_line()
    env = {name: value for name, value in os.environ.items() if name not in _NOT_FOR_THE_CHILD}
    env[CHECK_ENV] = "1"
    try:
        result = subprocess.run(args, env=env, cwd=reexec.STARTUP_CWD, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=CHECK_TIMEOUT,
                                text=True, errors="replace")
    except subprocess.TimeoutExpired:
        return "the new code did not finish importing within %g s" % CHECK_TIMEOUT
    except OSError as exc:
        return "cannot run %s to check the new code: %s" % (args[0], exc.strerror or exc)
    if result.returncode == 0:
        return None
    return _error_line(result.stderr) or "checking the new code ended with status %d" % result.returncode


def _error_line(stderr: str) -> str | None:
    prefix = "wspbus: error: "
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line[len(prefix):] for line in lines if line.startswith(prefix)]
    return errors[-1] if errors else (lines[-1] if lines else None)
