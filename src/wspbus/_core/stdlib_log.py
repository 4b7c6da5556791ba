"""The bridge from the bus's 'log' channel to the stdlib ``logging`` module.

Every bus hands its messages to the stdlib logger named 'wspbus', so an application's logging
configuration sees them. ``logging`` is imported on the first message, not with the bus: a
process that routes its logs elsewhere never pays for it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    import logging


class StdlibLogger:
    """A 'log' listener passing (message, level) to a stdlib logger, fetched on first use.

    It takes any publish on 'log' (CherryPy's own tests publish 'log' with no arguments, and
    with ``arg=...``): no message, nothing logged; a level that is not a number, INFO.
    """

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: logging.Logger | None = None

    def __call__(self, msg: object = None, level: object = 20, *more: object, **named: object) -> None:
        if msg is None:
            return
        if not isinstance(level, int):
            level = 20
        logger = self._logger
        if logger is None:
            import logging

            logger = self._logger = logging.getLogger(self._name)
        if logger.isEnabledFor(level):
            logger.log(level, str(msg))
