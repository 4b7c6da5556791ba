"""The channel between the supervisor and one worker: JSON messages, one per line, on a socketpair.

Why a socketpair rather than two pipes: one descriptor carries both directions, and end-of-file
tells either side that the other is gone (a worker whose supervisor was SIGKILLed exits instead
of serving on as an orphan nobody supervises). Why lines of JSON: a worker started from fresh
code may be a newer wspbus than its supervisor; named fields let either ignore what it does not
know, and a line is easy to read in strace.

Messages carry ``kind`` and fields of their own:

=====================  ===========================================================================
worker -> supervisor
``started``            the worker's bus is STARTED: ``urls``, ``mounts``
``failed``             it could not start: ``status`` (69 or 78) and ``error`` (one line)
``stats``              an answer to ``stats``: ``requests`` served, ``rss`` bytes, ``ask`` echoed
``stopping``           its bus left STARTED: its servers stop accepting
``drained``            an answer to ``drain``: it answers not-ready now (``ask`` echoed)
``heartbeat``          it is alive (with --worker-timeout): ``requests``, ``rss``
``stuck``              instead of heartbeats: every request thread of a server is stuck (stuck.py);
                       ``reason``
``reload``             its autoreloader saw a change: the supervisor starts a new generation
``terminate``          it got SIGTERM (an admin's, or one sent to the whole group): it serves on
                       until told to ``retire`` (replaced, the new worker first) or ``stop``
supervisor -> worker
``config``             the first message: ``config`` (a SiteConfig as a dict), ``generation``,
                       ``heartbeat`` (seconds, or null), ``autoreload`` (this worker watches files)
``drain``              readiness turns false (the supervisor is draining); ``ask``
``graceful``           reopen logs and the like ('graceful' on the worker's bus)
``stats``              report counts now (``ask`` is echoed back)
``retire``             replaced: answer with ``Connection: close`` for ``linger`` s, then stop
``stop``               the site stops: stop now (stop accepting, finish the requests in flight)
``hold``               the answer to ``terminate``: heard; serve on until ``retire`` or ``stop``
``rearm``              the reload its autoreloader asked for failed: watch the files again
=====================  ===========================================================================
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

__all__ = ["FD_ENV", "LineReader", "WorkerChannel", "encode"]

#: Names the worker's end of the socketpair (a descriptor number) in the worker's environment.
FD_ENV = "WSPBUS_SUPERVISOR_FD"
#: A line longer than this is a protocol error, not a message to keep buffering.
MAX_LINE = 1 << 20

Message = dict[str, Any]


def encode(kind: str, **fields: Any) -> bytes:
    """One message as the bytes of one line."""
    return (json.dumps({"kind": kind, **fields}, separators=(",", ":")) + "\n").encode()


class ChannelError(ValueError):
    """The other side sent something that is not a message (a bug, or not a wspbus worker)."""


class LineReader:
    """Bytes in, whole messages out: for a reader that gets whatever one recv() returned."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``; ChannelError for a malformed or endless line."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            raise ChannelError("a line of more than %d bytes" % MAX_LINE)
        return [_decode(line) for line in lines if line.strip()]


def _decode(line: bytes) -> Message:
    try:
        message = json.loads(line)
    except ValueError:
        raise ChannelError("not JSON: %r" % line[:80]) from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ChannelError("not a message (no 'kind'): %r" % line[:80])
    return message


class WorkerChannel:
    """The worker's end: blocking reads from one thread, sends from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = LineReader()
        self._ready: list[Message] = []
        self._send_lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> "WorkerChannel":
        """The channel the supervisor passed (``FD_ENV``); RuntimeError when run by hand."""
        value = os.environ.pop(FD_ENV, "")
        if not value.isdigit():
            raise RuntimeError("this is the worker process of `wspbus serve --workers N`; "
                               "it is started by the supervisor, not by hand (%s is not set)" % FD_ENV)
        sock = socket.socket(fileno=int(value))
        sock.set_inheritable(False)
        return cls(sock)

    def send(self, kind: str, **fields: Any) -> bool:
        """Send one message; False if the supervisor is gone (nobody is left to tell)."""
        data = encode(kind, **fields)
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                return False
        return True

    def receive(self) -> Message | None:
        """The next message, waiting for it; None once the supervisor closed its end."""
        while not self._ready:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return None
            self._ready.extend(self._reader.feed(data))
        return self._ready.pop(0)

    def close(self) -> None:
        self.sock.close()
