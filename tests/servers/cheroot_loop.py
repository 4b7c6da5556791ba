"""A bare cheroot adapter on a listener the test shares (the test plays another worker), and a
gate on its connection loop's select(), to hand the loop one batch of events at a time."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from wspbus.servers import cheroot_server
from wspbus.servers.backend import ServeOptions

from support import DEADLINE


class LoopGate:
    """Wraps the loop's select(): free-running until ``hold()``, then one batch per ``one_batch()``."""

    def __init__(self, server: Any) -> None:
        selector = server._connections._selector
        self._select = selector.select
        self._changed = threading.Condition()
        self._calls = 0
        self._allowed = float("inf")
        selector.select = self._gated_select

    def _gated_select(self, timeout: float | None = None) -> Any:
        with self._changed:
            self._calls += 1
            call = self._calls
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._allowed >= call)
        return self._select(timeout)

    def hold(self) -> None:
        """Return once the loop waits just before its next select()."""
        with self._changed:
            self._allowed = self._calls
            assert self._changed.wait_for(lambda: self._calls > self._allowed, DEADLINE), "the loop never came back"

    def one_batch(self) -> None:
        """Let one select() through and wait until the loop has handled what it returned."""
        with self._changed:
            self._allowed += 1
            self._changed.notify_all()
            assert self._changed.wait_for(lambda: self._calls > self._allowed, DEADLINE), "the batch never ended"

    def free(self) -> None:
        with self._changed:
            self._allowed = float("inf")
            self._changed.notify_all()


class SharedListener:
    """A listening socket the test keeps, and a cheroot adapter serving another descriptor of it."""

    def __init__(self, app: Any, threads: int = 1, graceful_timeout: float = 5.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        served = socket.socket(fileno=os.dup(self.listener.fileno()))
        self.server = cheroot_server.create(app, served, ServeOptions(threads=threads, graceful_timeout=graceful_timeout))
        self.server.prepare()
        self.gate = LoopGate(self.server)
        self._serving = threading.Thread(target=self.server.serve, name="cheroot under test")
        self._serving.start()

    def close(self) -> None:
        self.gate.free()
        self.server.stop()
        self._serving.join(DEADLINE)
        self.listener.close()


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body
