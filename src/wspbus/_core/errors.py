"""The bus's exceptions."""

from __future__ import annotations

import sys
from typing import Any


class ChannelFailures(Exception):
    """One or more listeners of a channel raised; every exception is kept."""

    delimiter = "\n"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._exceptions: list[BaseException] = []

    def handle_exception(self) -> None:
        """Record the exception being handled now."""
        self._exceptions.append(sys.exc_info()[1])

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
