"""Recycling: a worker past its request count or its memory limit asks to be replaced.

``--max-requests N --max-requests-jitter J`` (each worker gets its own limit in N..N+J, so
workers started together are not all replaced at once) and ``--max-worker-memory MB`` (resident
size; a slow leak ends in a fresh worker, not in the OOM killer's SIGKILL mid-request).
The worker checks its own counts as it serves (its resident size every ``MEMORY_EVERY``
requests: one read of /proc/self/statm), and says ``recycle`` once; the supervisor starts the
replacement and retires the old worker only once the new one serves.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .counting import resident_bytes

__all__ = ["MEMORY_EVERY", "Recycler", "request_limit"]

#: Requests between two looks at the resident size.
MEMORY_EVERY = 16


def request_limit(max_requests: int | None, jitter: int) -> int | None:
    """One worker's request limit: ``max_requests`` plus a random part of ``jitter``."""
    if not max_requests:
        return None
    return max_requests + random.randint(0, max(0, jitter))


class Recycler:
    """Watches one worker's counts; calls ``ask(reason)`` once, when a limit is passed."""

    def __init__(self, ask: Callable[[str], object], max_requests: int | None, max_rss: int | None) -> None:
        self.ask = ask
        self.max_requests = max_requests
        self.max_rss = max_rss
        self.asked = False

    @property
    def active(self) -> bool:
        return bool(self.max_requests or self.max_rss)

    def counted(self, requests: int) -> None:
        """After each request (RequestCounter.on_count): is it time?"""
        if self.asked:
            return
        if self.max_requests and requests >= self.max_requests:
            self._ask("it served %d requests (--max-requests)" % requests)
        elif self.max_rss and requests % MEMORY_EVERY == 0:
            self.check_memory()

    def check_memory(self) -> None:
        rss = resident_bytes()
        if self.max_rss and not self.asked and rss > self.max_rss:
            self._ask("its resident size is %.0f MB (--max-worker-memory %.0f)" % (rss / 1e6, self.max_rss / 1e6))

    def _ask(self, reason: str) -> None:
        self.asked = True
        self.ask(reason)
