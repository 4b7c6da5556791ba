"""A worker's stack dump, as lines of the supervisor's log that each name the worker (and thread).

faulthandler writes from C, in a signal handler: raw lines with no pid, one small write() per
piece of a line, so two workers dumping into one log interleave mid-line. So a worker's
faulthandler writes into a pipe of its own (``FAULT_FD_ENV`` names its end), which the
supervisor reads on its event loop (``add_reader``: nothing polls). Why a pipe and not the
channel: the channel carries JSON lines from several threads under a lock, and a signal handler
that writes raw text into it (perhaps in the middle of a message) would break the protocol. Why
the supervisor writes the lines: only one process then writes them, whole, in order.

What a worker writes there is collected until the worker ends (faulthandler writes only on a
fatal signal, after which the process is gone), then logged at once, so one worker's dump is
never interleaved with another's. Each line gets the prefix the worker's own log lines carry
(``[worker PID]``) and, below a thread's header, that thread's id: two threads stopped at the
same line would otherwise be identical lines, which the error log's rate limiter counts instead
of writing.
"""

from __future__ import annotations

import re

__all__ = ["FAULT_FD_ENV", "StackDump"]

#: Names the worker's end of its stack-dump pipe (a descriptor number) in its environment.
FAULT_FD_ENV = "WSPBUS_FAULT_FD"
#: Past this many bytes held back, the complete lines are logged without waiting for the end.
HELD_MAX = 1 << 20
#: "Thread 0x00007f... (most recent call first):" or "Current thread 0x...": a thread's stack begins.
_THREAD_HEADER = re.compile(rb"^(?:Current thread|Thread) (0x[0-9a-f]+)")


class StackDump:
    """Bytes a worker's faulthandler wrote in, log lines out (``take()``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._held = b""
        self._thread: str | None = None

    def feed(self, data: bytes) -> list[str]:
        """Keep ``data``; the lines to log now (only when too much is held back)."""
        self._held += data
        if len(self._held) <= HELD_MAX:
            return []
        complete, _, self._held = self._held.rpartition(b"\n")
        return self._lines(complete)

    def take(self) -> list[str]:
        """Everything held back, as log lines (the worker ended: nothing more comes)."""
        held, self._held = self._held, b""
        return self._lines(held)

    def _lines(self, data: bytes) -> list[str]:
        return [self._named(line) for line in data.split(b"\n") if line.strip()]

    def _named(self, line: bytes) -> str:
        """'[worker PID] LINE'; a line of a thread's stack also names the thread."""
        header = _THREAD_HEADER.match(line)
        if header is not None:
            self._thread = header.group(1).decode()
        text = line.decode("utf-8", "replace").rstrip()
        if header is None and self._thread is not None and text.startswith(" "):
            return "[worker %d] thread %s %s" % (self.pid, self._thread, text.lstrip())
        return "[worker %d] %s" % (self.pid, text)
