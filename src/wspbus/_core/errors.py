"""The bus's exceptions, and how a failing listener's exception is recorded and told."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any


class ChannelFailures(Exception):
    """One or more listeners of a channel raised; every exception is kept."""

    delimiter = "\n"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exceptions: list[BaseException] = []

    def handle_exception(self) -> None:
        """Record the exception being handled now."""
        exc = sys.exc_info()[1]
        if exc is not None:
            self._exceptions.append(exc)

    def add(self, exc: BaseException) -> None:
        """Record an exception caught elsewhere (another thread)."""
        self._exceptions.append(exc)

    def get_instances(self) -> list[BaseException]:
        """A copy of the recorded exceptions, in the order they happened."""
        return self._exceptions[:]

    def __str__(self) -> str:
        return self.delimiter.join(map(repr, self.get_instances()))

    __repr__ = __str__

    def __bool__(self) -> bool:
        return bool(self._exceptions)


class StartupError(RuntimeError):
    """A failure whose message says all the user needs (port in use, already running, ...).

    Raised from a listener, it is logged as one line, without a traceback.
    """


def add_failure(failures: ChannelFailures | None, exc: BaseException) -> ChannelFailures:
    """Record a listener's exception in ``failures`` (a new one if None) and return it.

    KeyboardInterrupt and SystemExit are raised at once instead: the process is going away.
    SystemExit's code becomes 1 if a listener had already failed, so the failure shows.
    """
    if isinstance(exc, SystemExit):
        if failures and exc.code == 0:
            exc.code = 1
        raise exc
    if not isinstance(exc, Exception):
        raise exc
    if failures is None:
        failures = ChannelFailures()
    failures.add(exc)
    return failures


def failure_message(channel: str, listener: object, exc: BaseException) -> str:
    """The log line for a failed listener: a StartupError's message says all; others get a traceback."""
    if isinstance(exc, StartupError):
        return "Error in %r listener %s: %s" % (channel, listener_name(listener), exc)
    import traceback

    return "Error in %r listener %s\n%s" % (channel, listener_name(listener), "".join(traceback.format_exception(exc)))


def listener_name(listener: object) -> str:
    """``Class.method`` or a function's qualified name: what a reader looks for, without the
    object's repr (an address that says nothing and changes on every run)."""
    owner = getattr(listener, "__self__", None)
    function = getattr(listener, "__func__", None)
    if owner is not None and function is not None:
        return "%s.%s" % (type(owner).__name__, getattr(function, "__name__", "?"))
    name = getattr(listener, "__qualname__", None)
    return name if isinstance(name, str) else type(listener).__name__
