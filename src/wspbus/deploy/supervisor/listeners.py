"""The site's listening sockets, owned by the supervisor and lent to every worker.

Bound once, at 'start' priority 75 as a single-process site binds them: after the Daemonizer
(65) and the PID file (70), before DropPrivileges (77), so port 80 is bound as root and the
workers never are. Every worker, of every generation, inherits the same sockets, so a reload
never closes a listening socket and clients queue in its backlog until some worker accepts.
At 'stop' the supervisor's copies are closed first: once the workers have closed theirs too,
new connections are refused, as a single-process site refuses them when it stops.
"""

from __future__ import annotations

import socket
from typing import Any

from ...plugins.base import SimplePlugin
from ...servers.sockets import activation
from ...servers.sockets.binds import Bind, close_listener, open_listener, unix_file_identity
from ..config import SiteConfig, default_binds
from .settings import server_configs

__all__ = ["Listeners"]


class _Listener:
    def __init__(self, bind: Bind) -> None:
        self.bind = bind
        self.sock = open_listener(bind)
        self.identity = unix_file_identity(bind)

    def close(self) -> None:
        close_listener(self.sock, self.bind, self.identity)


class Listeners(SimplePlugin):
    """One listening socket per bind of every server, open from 'start' to 'stop'."""

    def __init__(self, bus: Any, config: SiteConfig) -> None:
        super().__init__(bus)
        self.binds = [[Bind.parse(text) for text in server.binds or default_binds()] for server in server_configs(config)]
        self._open: list[list[_Listener]] = []

    def start(self) -> None:
        """Bind every address; if one fails, close those already bound and fail the start (one line)."""
        if self._open:
            return
        activation.listen_fds()  # take LISTEN_* out of the environment before any worker could see it
        opened: list[list[_Listener]] = []
        try:
            for binds in self.binds:
                opened.append([])
                for bind in binds:
                    opened[-1].append(_Listener(bind))
        except BaseException:
            for listener in (each for server in opened for each in server):
                listener.close()
            raise
        self._open = opened

    start.priority = 75  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Close our copies before the workers stop (so the sockets close with the last worker)."""
        opened, self._open = self._open, []
        for listener in (each for server in opened for each in server):
            listener.close()

    stop.priority = 10  # type: ignore[attr-defined]

    def fds(self) -> list[list[int]]:
        """The descriptors, per server and bind, as the workers inherit them."""
        return [[listener.sock.fileno() for listener in server] for server in self._open]

    def sockets(self) -> list[socket.socket]:
        return [listener.sock for server in self._open for listener in server]
