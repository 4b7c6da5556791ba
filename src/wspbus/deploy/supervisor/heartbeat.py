"""Heartbeats: a worker says it is alive; the supervisor notices when it stops saying so.

Only with ``--worker-timeout S``. The worker sends a ``heartbeat`` message (with its counts)
every S/4 seconds from a thread of its own. A Python thread runs only while it can take the
GIL, so a worker stuck in a loop that holds the GIL (a C call that never releases it, a
deadlock on the import lock) or stopped altogether falls silent; the supervisor, which keeps
one deadline per worker and pushes it back at each message, then has the worker dump its
stacks and replaces it. No file is touched and polled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["BEATS_PER_TIMEOUT", "Heartbeat"]

#: Heartbeats sent per worker timeout: three may be lost or late before the worker is judged hung.
BEATS_PER_TIMEOUT = 4


class _Sender(Protocol):
    def send(self, kind: str, **fields: int) -> bool: ...


class Heartbeat:
    """Sends ``heartbeat`` every ``interval`` seconds until the channel is gone or stop() is called."""

    def __init__(self, channel: _Sender, interval: float, stats: Callable[[], dict[str, int]]) -> None:
        self.channel = channel
        self.interval = interval
        self.stats = stats
        self._stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._beat, name="wspbus heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            if not self.channel.send("heartbeat", **self.stats()):
                return  # the supervisor is gone; the channel reader ends the worker
