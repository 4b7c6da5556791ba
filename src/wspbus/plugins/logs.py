"""LogRouter: send the bus's log and the servers' access log to stderr/stdout or files.

The bus hands every message to the stdlib logger 'wspbus' (``Bus.log_to_stdlib``); servers write
pre-formatted Combined Log Format lines to 'wspbus.access' at INFO. This plugin attaches handlers
to those two loggers, so anything else that logs to 'wspbus.*' is routed too, and routes the
warnings and errors of the libraries that run inside a server (asyncio, uvicorn, waitress) to the
error log as well.

The error log's warnings and errors are rate-limited (RepeatLimiter): of identical ones (same
logger, level, first line, exception type and place) the first is written, the repeats within
``REPEAT_WINDOW`` seconds are counted, and one line says how many there were. Floods come from
below the application: asyncio logs a traceback for every failed accept (with too few
descriptors, thousands a second), and a log on a full disk makes ``logging`` print a traceback to
stderr for every line it cannot write; the same limiter bounds both (``handleError`` writes one
line, then counts). INFO lines are never held back: each says something new about the bus.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from .._core.bus import Bus
from .._core.stdlib_log import StdlibLogger
from ._repeats import RateLimitedHandler, RateLimitedStreamHandler
from .base import SimplePlugin, priority

__all__ = ["HeldLog", "LogRouter"]

ERROR_LOGGER = "wspbus"
ACCESS_LOGGER = "wspbus.access"
#: Timestamp (RFC 3339, local time with offset, milliseconds), level name, message.
ERROR_FORMAT = "%(asctime)s %(levelname)s %(message)s"
ACCESS_FORMAT = "%(message)s"  # servers already format the line
#: Files are reopened before the other 'graceful' listeners run, so what they log lands in them.
REOPEN_PRIORITY = 10
#: Loggers of the libraries servers run, routed to the error log at WARNING and above (their
#: INFO lines repeat what the bus already says).
LIBRARY_LOGGERS = ("asyncio", "uvicorn", "waitress")


class Rfc3339Formatter(logging.Formatter):
    """A Formatter whose default ``asctime`` is RFC 3339: 2024-05-01T12:00:00.123+02:00."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        moment = datetime.datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler that can open its path again, so logrotate's move-then-signal works."""

    def reopen(self) -> None:
        """Open the path anew (creating the file logrotate moved away), then close the old one.

        The new file is opened before the old one is closed: if opening fails (say, after
        privileges were dropped), the OSError is raised and logging goes on to the old file.
        """
        fresh = self._open()  # how FileHandler opens it: path, mode, encoding and errors
        self.acquire()
        try:
            old, self.stream = self.stream, fresh
        finally:
            self.release()
        if old is not None:
            old.close()


class _Route:
    """One handler on some loggers (name -> level), and their settings to restore when removed."""

    def __init__(self, levels: dict[str, int], handler: logging.Handler) -> None:
        self.handler = handler
        self.loggers = [logging.getLogger(name) for name in levels]
        self.saved = [(logger.level, logger.propagate) for logger in self.loggers]
        for logger, level in zip(self.loggers, levels.values()):
            logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = False  # our handler prints it; the root's must not print it again

    def remove(self) -> None:
        for logger, (level, propagate) in zip(self.loggers, self.saved):
            logger.removeHandler(self.handler)
            logger.propagate = propagate
            logger.setLevel(level)  # setLevel, not assignment: it clears isEnabledFor caches
        self.handler.close()


class RateLimitedFileHandler(RateLimitedHandler, ReopenableFileHandler):
    """A reopenable log file, rate-limited."""

    pass


def _handler(target: str, dash_stream: TextIO, formatter: logging.Formatter, what: str,
             limited: bool) -> logging.Handler:
    """A handler writing to ``target`` ('-': ``dash_stream``), rate-limited if ``limited``."""
    if target == "-":
        handler: logging.Handler = (RateLimitedStreamHandler if limited else logging.StreamHandler)(dash_stream)
    else:
        try:
            handler = (RateLimitedFileHandler if limited else ReopenableFileHandler)(
                target, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            raise ValueError("cannot open the %s log %r for appending: %s; expected '-' or a writable "
                             "file path" % (what, target, exc.strerror or exc)) from None
    handler.setFormatter(formatter)
    return handler


class LogRouter(SimplePlugin):
    """Route the bus's log and the access log, each to '-' or a file; reopen files on demand.

    * ``error_log``: where the 'wspbus' logger goes: '-' is stderr, else a file path, None leaves
      it alone. Lines are ``ERROR_FORMAT``: RFC 3339 timestamp, level name, message
      (``2024-05-01T12:00:00.123+02:00 INFO Bus STARTED``); ``error_format`` replaces it.
    * ``access_log``: where 'wspbus.access' goes: '-' is stdout (as gunicorn's), else a file
      path. None (default) leaves it alone: access lines then reach the error log, the parent
      logger. Access lines are written as the server formatted them, at INFO whatever ``level``.
    * ``level``: the least level of bus messages written (the 'wspbus' logger's level).
    * ``reopen_on``: channel name(s) besides 'graceful' on which files are reopened, such as
      'SIGUSR1' or 'SIGHUP' as published by SignalHandler. With SignalHandler's default map,
      SIGUSR1 also means 'graceful', so files are reopened twice, which is harmless.

    Each routed logger gets ``propagate = False`` while routed, so a handler the application put
    on the root logger does not print the same line a second time. ``unsubscribe()`` removes the
    handlers, closes the files and restores each logger's level and propagation.
    """

    def __init__(
        self,
        bus: Bus,
        *,
        error_log: str | None = "-",
        access_log: str | None = None,
        level: int = logging.INFO,
        error_format: str = ERROR_FORMAT,
        reopen_on: str | Iterable[str] | None = "SIGUSR1",
    ) -> None:
        super().__init__(bus)
        self.error_log = _absolute(error_log)
        self.access_log = _absolute(access_log)
        self.level = level
        self.error_format = error_format
        if reopen_on is None:
            reopen_on = ()
        elif isinstance(reopen_on, str):
            reopen_on = (reopen_on,)
        self.reopen_on = tuple(channel for channel in reopen_on if channel != "graceful")
        self._routes: list[_Route] = []
        #: The route from the bus's 'log' to the 'wspbus' logger, for a bus that has none of its
        #: own (wspbus's has ``log_to_stdlib``; CherryPy's has not).
        self._bridge = StdlibLogger(ERROR_LOGGER) if getattr(bus, "log_to_stdlib", None) is None else None

    def subscribe(self) -> None:
        """Attach the handlers (opening the files) and listen for 'graceful' and ``reopen_on``."""
        if not self._routes:
            self._routes = self._open_routes()
        super().subscribe()
        if self._bridge is not None:
            self.bus.subscribe("log", self._bridge)
        for channel in self.reopen_on:
            self.bus.subscribe(channel, self.reopen, priority=REOPEN_PRIORITY)

    def unsubscribe(self) -> None:
        """Stop listening, detach and close the handlers, restore the loggers' settings."""
        for channel in self.reopen_on:
            self.bus.unsubscribe(channel, self.reopen)
        if self._bridge is not None:
            self.bus.unsubscribe("log", self._bridge)
        super().unsubscribe()
        routes, self._routes = self._routes, []
        for route in reversed(routes):
            route.remove()

    def _open_routes(self) -> list[_Route]:
        """One route per log asked for; if a file cannot be opened, close those already open."""
        routes: list[_Route] = []
        try:
            if self.error_log is not None:
                handler = _handler(self.error_log, sys.stderr, Rfc3339Formatter(self.error_format), "error", True)
                levels = {ERROR_LOGGER: self.level}
                levels.update((name, max(self.level, logging.WARNING)) for name in LIBRARY_LOGGERS)
                routes.append(_Route(levels, handler))
            if self.access_log is not None:
                handler = _handler(self.access_log, sys.stdout, logging.Formatter(ACCESS_FORMAT), "access", False)
                routes.append(_Route({ACCESS_LOGGER: logging.INFO}, handler))
        except ValueError:
            for route in reversed(routes):
                route.remove()
            raise
        return routes

    def hold(self) -> HeldLog:
        """Hold back what the routes would write on a stream (the terminal) until ``release()``: a
        start that fails is then told in one line there. A log file is written as things happen:
        it gets the whole story, in order with the other processes writing to it (workers)."""
        return HeldLog([route.handler for route in self._routes if not isinstance(route.handler, logging.FileHandler)])

    def reopen(self, *args: object) -> None:
        """Reopen every log file at its path; on failure log one line and keep the old file."""
        for route in self._routes:
            if isinstance(route.handler, ReopenableFileHandler):
                try:
                    route.handler.reopen()
                except OSError as exc:
                    self.bus.log("Cannot reopen log file %r (%s); still writing to the old file"
                                 % (route.handler.baseFilename, exc.strerror or exc), level=40)

    @priority(REOPEN_PRIORITY)
    def graceful(self) -> None:
        """Reopen the files first, so what the other 'graceful' listeners log lands in them."""
        self.reopen()


class HeldLog:
    """Records kept from a set of handlers (a filter on each that says no and keeps the record)."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        self.handlers = handlers
        self.records: list[tuple[logging.Handler, logging.LogRecord]] = []
        for handler in handlers:
            handler.addFilter(_Keeper(self, handler))

    def keep(self, handler: logging.Handler, record: logging.LogRecord) -> None:
        self.records.append((handler, record))

    def release(self, terminal: bool = True) -> None:
        """Write the held records, in order; ``terminal`` False drops them (the caller tells the
        terminal what happened itself)."""
        for handler in self.handlers:
            for keeper in [f for f in handler.filters if isinstance(f, _Keeper) and f.held is self]:
                handler.removeFilter(keeper)
        records, self.records = self.records, []
        for handler, record in records:
            if terminal:
                handler.handle(record)


class _Keeper(logging.Filter):
    """The filter HeldLog puts on one handler."""

    def __init__(self, held: HeldLog, handler: logging.Handler) -> None:
        super().__init__()
        self.held = held
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.held.keep(self.handler, record)
        return False


def _absolute(path: str | None) -> str | None:
    """Paths are fixed at construction: a daemon later changes directory to '/'."""
    if path is None or path == "-":
        return path
    return os.path.abspath(path)
