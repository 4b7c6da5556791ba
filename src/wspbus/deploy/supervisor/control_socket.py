"""The supervisor's control socket: ``wspbus reload`` and ``wspbus status`` ask, and wait for the answer.

A signal cannot carry an answer: SIGHUP starts a reload, but the sender cannot learn whether the
new code started. So a supervisor with a PID file also listens on a Unix socket beside it
(``site.pid`` -> ``site.control.sock``, mode 0600: only its owner, or root, may connect). A client
sends one line of JSON, ``{"command": "reload"}`` or ``{"command": "status"}``, and gets one line
back once the outcome is known: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
It is bound at 'start' priority 72, once the PID file (70) proved that no other instance runs,
so a stale socket file left by a killed supervisor can be replaced safely.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ...plugins.base import SimplePlugin

__all__ = ["ControlSocket", "bind_control_socket", "control_path"]

#: A request is one short line; anything longer is not a client of ours.
MAX_REQUEST = 4096

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def control_path(pidfile: str) -> str:
    """The control socket beside ``pidfile``: run/site.pid -> run/site.control.sock."""
    root, ext = os.path.splitext(os.path.abspath(pidfile))
    return (root if ext == ".pid" else root + ext) + ".control.sock"


def bind_control_socket(path: str) -> socket.socket:
    """Listen on ``path`` (mode 0600), replacing what is there: the PID file, claimed before,
    proved that no other instance runs, so a socket file there is a dead instance's."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class ControlSocket(SimplePlugin):
    """Binds the control socket at 'start'; ``serve(handler)`` answers on an event loop."""

    def __init__(self, bus: Any, pidfile: str) -> None:
        super().__init__(bus)
        self.path = control_path(pidfile)
        self.sock: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        if self.sock is not None:
            return
        try:
            sock = bind_control_socket(self.path)
        except OSError as exc:
            self.bus.log("No control socket (%s: %s): `wspbus reload` falls back to SIGHUP and does not "
                         "wait for the outcome" % (self.path, exc.strerror), level=30)
            return
        info = os.stat(self.path)
        self.sock, self._identity = sock, (info.st_dev, info.st_ino)

    start.priority = 72  # type: ignore[attr-defined]

    def exit(self) -> None:
        """Close the socket and remove its file, if the file is still ours."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        sock.close()
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass  # gone already: nothing to remove

    async def serve(self, handler: Handler) -> None:
        """Answer requests on the current event loop until ``close_server()``."""
        if self.sock is None:
            return
        self._server = await asyncio.start_unix_server(
            lambda reader, writer: _answer(reader, writer, handler), sock=self.sock, limit=MAX_REQUEST)

    def close_server(self) -> None:
        """Stop accepting requests (on the loop's thread); the socket itself closes at 'exit'."""
        if self._server is not None:
            self._server.close()
            self._server = None


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    try:
        line = await reader.readline()
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            reply: dict[str, Any] = {"ok": False, "error": "expected one line of JSON, such as {\"command\": \"reload\"}"}
        else:
            reply = await handler(request)
        writer.write((json.dumps(reply) + "\n").encode())
        await writer.drain()
    except (OSError, ValueError):
        pass  # the client went away (or sent an endless line): nobody to answer
    finally:
        writer.close()
