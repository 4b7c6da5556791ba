"""The reload socket of a single-process site: ``wspbus reload`` learns whether the new code serves.

A signal cannot carry an answer, so a site with a pid file also listens on a Unix socket beside
it (``site.pid`` -> ``site.control.sock``, mode 0600), the same path and protocol as the
supervisor's control socket, so that the same client (supervisor.client, which ``wspbus reload``
uses whenever the socket exists) serves both: one line of JSON in, ``{"command": "reload"}``,
one line out once the outcome is known, ``{"ok": true, "pid": N, "pids": [N], "generation": G}``
or ``{"ok": false, "error": "..."}``.

The outcome of a reload is known in two places. If the new code fails its check (deploy.precheck)
this process answers at once and keeps serving. If it passes, the process re-executes: the
client's connection is handed across the exec with the listening socket (reexec), and the new
process answers once its bus is STARTED, or that its start failed. Requests that arrive during
a reload share its outcome (the new process imports the newest code); clients connecting during
the exec wait in the backlog of the socket handed over.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
from typing import Any

from .._core.bus import State, states
from .._process import reexec
from .._process.bus import Bus
from ..plugins.base import SimplePlugin, priority, restart_requested
from ..servers.backend import Waker
from .supervisor.control_socket import bind_control_socket, control_path

__all__ = ["ReloadSocket"]

#: How many processes this site has been (1, then one more per reload), passed across the exec.
GENERATION_ENV = "WSPBUS_GENERATION"
#: Names the descriptors carry across the exec.
LISTENER_NAME = "wspbus control socket"
REPLY_PREFIX = "wspbus reload reply "
#: A request is one short line; a client that sends nothing for this long is dropped.
MAX_REQUEST, REQUEST_TIMEOUT = 4096, 10.0


class ReloadSocket(SimplePlugin):
    """Answers ``wspbus reload`` with the reload's outcome (see the module's docstring)."""

    def __init__(self, bus: Bus, pidfile: str) -> None:
        super().__init__(bus)
        self.bus: Bus = bus
        self.path = control_path(pidfile)
        self._listener: socket.socket | None = None
        self._waker: Waker | None = None
        self._thread: threading.Thread | None = None
        self._replies: list[socket.socket] = []  # handed over by a previous incarnation
        #: Referenced so that nothing closes them before the exec: the listener and the replies.
        self._handed_over: list[socket.socket] = []
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 1 << 62))
        self._unwatch = bus.watch_state(self._on_state)

    def unsubscribe(self) -> None:
        super().unsubscribe()
        self._unwatch()

    # -- the bus's channels --------------------------------------------------------------

    @priority(72)  # once the pid file (70) proved that no other instance runs here
    def start(self) -> None:
        if self._listener is not None:
            return
        self._replies = [socket.socket(fileno=fd) for fd in reexec.take_inherited_named(REPLY_PREFIX).values()]
        fd = reexec.take_inherited(LISTENER_NAME)
        self._listener = socket.socket(fileno=fd) if fd is not None else bind_control_socket(self.path)
        self._listener.set_inheritable(False)
        self._listener.setblocking(False)
        self._waker = Waker()
        self._thread = threading.Thread(target=self._serve, args=(self._listener, self._waker),
                                        name="wspbus reload socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering; the socket is kept for the next process if restarting, else removed."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._waker is not None:
            self._waker.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._waker is not None:
            self._waker.close()
        if restart_requested(self.bus):
            os.environ[GENERATION_ENV] = str(_generation() + 1)
            reexec.keep_across_exec(listener.fileno(), LISTENER_NAME)
            self._handed_over.append(listener)
            return
        listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass  # removed already, or not ours to remove (privileges dropped): a new start replaces it

    # -- answering ------------------------------------------------------------------------

    def _on_state(self, state: State) -> None:
        """In a re-executed process: answer the clients of the reload that led here."""
        if state is states.STARTED:
            pid = os.getpid()
            self._answer_handed_over({"ok": True, "pid": pid, "pids": [pid], "generation": _generation()})
        elif state is states.EXITING:
            self._answer_handed_over({"ok": False, "error": "the new code did not start; the site is "
                                      "exiting (see its log)"})

    def _answer_handed_over(self, answer: dict[str, Any]) -> None:
        with self._lock:
            replies, self._replies = self._replies, []
        for conn in replies:
            _drain_request(conn)  # unread, it would turn our close into a reset that may beat the answer
            _answer(conn, answer)

    def _serve(self, listener: socket.socket, waker: Waker) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(waker.reader, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is waker.reader:
                        return
                    try:
                        conn, _address = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    self._hand_over(conn)  # a restart may exec before its request is even read
                    threading.Thread(target=self._handle, args=(conn,), name="wspbus reload request",
                                     daemon=True).start()

    def _hand_over(self, conn: socket.socket) -> None:
        """Pass ``conn`` to the next process if this one re-executes: it answers, once STARTED."""
        with self._lock:
            self._handed_over.append(conn)
        reexec.keep_across_exec(conn.fileno(), REPLY_PREFIX + str(next(self._numbers)))

    def _keep(self, conn: socket.socket) -> None:
        """``conn`` is answered here after all: not handed over."""
        reexec.forget(conn.fileno())
        with self._lock:
            if conn in self._handed_over:
                self._handed_over.remove(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            request = json.loads(_read_line(conn) or b"null")
        except (OSError, ValueError):
            self._keep(conn)
            conn.close()
            return
        command = request.get("command") if isinstance(request, dict) else None
        if command != "reload":
            self._keep(conn)
            _answer(conn, {"ok": False, "error": "unknown command %r (this site answers: reload)" % (command,)})
            return
        conn.settimeout(None)
        self._reload(conn)

    def _reload(self, conn: socket.socket) -> None:
        """Restart for ``conn`` (handed across the exec since it was accepted)."""
        error = self.bus.request_restart()
        if error is None and restart_requested(self.bus):
            return  # the process is re-executing: the next one answers
        self._keep(conn)
        _answer(conn, {"ok": False, "error": error or "the site is stopping, not reloading"})


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _generation() -> int:
    text = os.environ.get(GENERATION_ENV, "1")
    return int(text) if text.isdigit() else 1


def _drain_request(conn: socket.socket) -> None:
    """Read what the client sent, if the previous process had not (without waiting for more)."""
    conn.setblocking(False)
    try:
        conn.recv(MAX_REQUEST)
    except OSError:
        pass  # nothing there (read before the exec), or the client is gone: answering tells
    conn.setblocking(True)


def _answer(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.sendall((json.dumps(answer) + "\n").encode())
    except OSError:
        pass  # the client went away: nobody is left to tell
    finally:
        conn.close()
