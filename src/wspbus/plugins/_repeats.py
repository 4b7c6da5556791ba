"""Rate-limiting the error log: identical warnings and errors written once, then counted.

Of identical records (same logger, level, first line, exception type and place) the first is
written, the repeats within ``REPEAT_WINDOW`` seconds are counted, and one line says how many
there were. A handler that cannot write (a full disk) says so once on stderr, then counts. Used
by LogRouter (plugins/logs.py); its own module because it is one job with its own state.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

__all__ = ["RateLimitedHandler", "RateLimitedStreamHandler", "RepeatLimiter", "repeated"]

#: Records at this level and above are rate-limited.
LIMITED_LEVEL = logging.WARNING
#: Seconds over which repeats of one message are counted before one line reports them.
REPEAT_WINDOW = 10.0
#: Distinct messages the limiter remembers; past that, those with nothing to report are forgotten.
REPEAT_MEMORY = 1000


class Repeats(NamedTuple):
    """What RepeatLimiter.admit() decides for one message."""

    #: Write the message itself.
    write: bool
    #: Repeats counted (and not written) since the message was last written; 0: nothing to report.
    counted: int
    #: Seconds over which they were counted.
    seconds: float


class RepeatLimiter:
    """Counts repeats of identical messages: the first is written, the rest of ``window`` counted.

    Once the window has passed, the next identical message is written again, after one line
    saying how many were counted; ``flush()`` returns what is still counted (at close).
    """

    def __init__(self, window: float = REPEAT_WINDOW, memory: int = REPEAT_MEMORY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.memory = memory
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Hashable, list[float]] = {}  # key -> [first written at, last seen at, repeats]

    def admit(self, key: Hashable) -> Repeats:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window:
                seen[1] = now
                seen[2] += 1
                return Repeats(False, 0, 0.0)
            if seen is None and len(self._seen) >= self.memory:
                self._forget(now)
            self._seen[key] = [now, now, 0]
        if seen is None or not seen[2]:
            return Repeats(True, 0, 0.0)
        return Repeats(True, int(seen[2]), seen[1] - seen[0])

    def flush(self) -> list[tuple[Hashable, int, float]]:
        """(key, repeats, seconds) of every message with repeats not yet reported; forgets them all."""
        with self._lock:
            seen, self._seen = self._seen, {}
        return [(key, int(s[2]), s[1] - s[0]) for key, s in seen.items() if s[2]]

    def _forget(self, now: float) -> None:
        """Forget messages whose window passed with nothing counted; if that is not enough, all
        with nothing counted (their next repeat is written again, which is still bounded)."""
        for key in [k for k, s in self._seen.items() if not s[2] and now - s[0] >= self.window]:
            del self._seen[key]
        if len(self._seen) >= self.memory:
            for key in [k for k, s in self._seen.items() if not s[2]]:
                del self._seen[key]


def repeated(what: str, count: int, seconds: float) -> str:
    """The line that reports repeats: 'WHAT ... repeated N times in the last S s'."""
    return "%s ... repeated %d times in the last %.1f s" % (what, count, seconds)


class RateLimitedHandler(logging.Handler):
    """A handler that writes identical records once per window and its own failures once per window.

    Mixed in before a stdlib handler class. A failure to write (a full disk) is reported on stderr
    in one line instead of ``logging``'s traceback per record, then counted like a message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the stdlib handler's own arguments
        self.limiter = RepeatLimiter()

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < LIMITED_LEVEL:
            return bool(super().handle(record))  # the bus's own INFO lines: each one is news
        repeats = self.limiter.admit(_record_key(record))
        if repeats.counted:
            super().handle(_summary(record, repeats))
        if not repeats.write:
            return False
        return bool(super().handle(record))

    @property
    def target(self) -> str:
        """Where this handler writes, for the one line that says it cannot."""
        return str(getattr(self, "baseFilename", "the log stream"))

    def handleError(self, record: logging.LogRecord) -> None:
        """One line on stderr for a failure to write, then a count (not a traceback per record)."""
        failure = sys.exc_info()[1]
        repeats = self.limiter.admit(("handleError", type(failure), getattr(failure, "errno", None)))
        what = "wspbus: cannot write to %s: %s" % (self.target, failure)
        if repeats.counted:
            _to_stderr(repeated(what, repeats.counted, repeats.seconds))
        if repeats.write:
            _to_stderr(what + "; repeats of this are counted")

    def close(self) -> None:
        """Report what is still counted, then close (a last failure to write said in one line)."""
        for key, count, seconds in self.limiter.flush():
            if isinstance(key, tuple) and key[:1] == ("handleError",):
                _to_stderr(repeated("wspbus: cannot write to %s" % self.target, count, seconds))
            elif isinstance(key, tuple):
                record = logging.LogRecord(str(key[0]), int(key[1]), "", 0, str(key[2]), None, None)
                super().handle(_summary(record, Repeats(False, count, seconds)))
        try:
            super().close()
        except OSError as failure:
            _to_stderr("wspbus: cannot write to %s: %s" % (self.target, failure))


class RateLimitedStreamHandler(RateLimitedHandler, logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, rate-limited."""


def _record_key(record: logging.LogRecord) -> tuple[str, int, str, str, str]:
    """What makes two records identical: logger, level, the message's first line, and the
    exception's type and where it was raised. Later lines of a message may differ in repeats of
    one error (asyncio names each failing callback's timer handle there)."""
    first_line = record.getMessage().split("\n", 1)[0]
    return (record.name, record.levelno, first_line) + _raised_where(record.exc_info)


def _raised_where(exc_info: Any) -> tuple[str, str]:
    """The exception's type and innermost frame ('' for a record without one)."""
    if not exc_info or exc_info[0] is None:
        return "", ""
    traceback = exc_info[2]
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    where = "%s:%d" % (traceback.tb_frame.f_code.co_filename, traceback.tb_lineno) if traceback else ""
    return exc_info[0].__name__, where


def _summary(record: logging.LogRecord, repeats: Repeats) -> logging.LogRecord:
    """A record (without traceback) that says how often ``record``'s message repeated."""
    first_line = record.getMessage().split("\n", 1)[0]
    summary = logging.makeLogRecord(record.__dict__)
    summary.msg, summary.args = repeated(first_line, repeats.counted, repeats.seconds), None
    summary.exc_info = summary.exc_text = summary.stack_info = None
    return summary


def _to_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # stderr is gone or full as well: there is nowhere left to say it
