"""``wspbus reload`` and ``wspbus status`` for a supervised site: ask on its control socket, wait for the answer.

A site without a control socket (a single process) is controlled by signals as before; the
caller falls back to that when ``available()`` says there is no socket.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ..control import NOT_RUNNING, ControlError, read_pid
from .control_socket import control_path

__all__ = ["available", "describe_workers", "reload", "status"]


def available(pidfile: str) -> bool:
    """The site behind ``pidfile`` has a control socket (it runs supervised)."""
    try:
        return socket_exists(control_path(pidfile))
    except OSError:
        return False


def socket_exists(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def request(pidfile: str, command: str, timeout: float | None = None) -> dict[str, Any]:
    """Send ``command``, return the supervisor's answer; ControlError when there is none."""
    pid = read_pid(pidfile)  # the pid file's lock says whether the site runs at all
    path = control_path(pidfile)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall((json.dumps({"command": command}) + "\n").encode())
            reply = _read_line(sock)
    except PermissionError:
        raise ControlError("%s: not allowed to use the control socket of process %d (run as its user or root)"
                           % (path, pid)) from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise ControlError("%s: the supervisor (pid %d) does not answer on its control socket" % (path, pid),
                           NOT_RUNNING) from None
    except OSError as exc:
        raise ControlError("%s: %s" % (path, exc.strerror or exc)) from None
    if not reply:
        raise ControlError("the supervisor (pid %d) closed its control socket without answering "
                           "(it is stopping?)" % pid)
    answer: dict[str, Any] = json.loads(reply)
    answer.setdefault("pid", pid)
    return answer


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reload(pidfile: str) -> dict[str, Any]:
    """Reload the workers and wait for the outcome; ControlError with the new code's error if it failed."""
    answer = request(pidfile, "reload")
    if not answer.get("ok"):
        raise ControlError("reload failed, the old workers keep serving: %s" % answer.get("error"))
    return answer


def status(pidfile: str) -> dict[str, Any]:
    """The status record with live counts from every worker."""
    from ..control import read_status

    record = read_status(pidfile)
    answer = request(pidfile, "status", timeout=10.0)
    if answer.get("ok"):
        record.update({key: answer[key] for key in ("generation", "target_workers", "workers") if key in answer})
    return record


def describe_workers(record: dict[str, Any]) -> list[str]:
    """The workers of a status record as lines for a person."""
    lines = ["generation: %s" % record.get("generation")] if "generation" in record else []
    for worker in record.get("workers", []):
        lines.append("worker %s: %s, generation %s, up %.0f s, %s requests, %.1f MB resident"
                     % (worker.get("pid"), worker.get("state"), worker.get("generation"), worker.get("age", 0),
                        worker.get("requests"), worker.get("rss", 0) / 1e6))
    return lines
