"""Back-off for workers that keep dying: replace the first death at once, wait longer after each next.

A worker killed once (the OOM killer, an operator's SIGKILL) is replaced at once: the site must
not stay a worker short. A worker that dies again soon after its replacement started is most
likely broken (a bad deploy, a missing service); restarting it in a tight loop burns CPU and
floods the log, so each further death in a row doubles the wait, up to ``ceiling``. A worker
that served for ``stable_after`` seconds wipes the slate for its slot.
"""

from __future__ import annotations

import time

__all__ = ["Backoff"]


class Backoff:
    """Per-slot count of quick deaths in a row, and the wait before the next start."""

    def __init__(self, first: float = 0.25, ceiling: float = 30.0, stable_after: float = 10.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.stable_after = stable_after
        self._deaths: dict[int, int] = {}

    def died(self, slot: int, serving_since: float | None) -> float:
        """Note a death in ``slot``; the seconds to wait before starting its replacement.

        ``serving_since``: time.monotonic() when the worker reported STARTED (None: never did).
        """
        served_long = serving_since is not None and time.monotonic() - serving_since >= self.stable_after
        deaths = 1 if served_long else self._deaths.get(slot, 0) + 1
        self._deaths[slot] = deaths
        return self.delay(deaths)

    def delay(self, deaths: int) -> float:
        """0 for a first death, then first, 2 x first, 4 x first ... up to the ceiling."""
        if deaths <= 1:
            return 0.0
        return min(self.ceiling, self.first * 2.0 ** (deaths - 2))

    def deaths(self, slot: int) -> int:
        return self._deaths.get(slot, 0)

    def forget(self, slot: int) -> None:
        """The slot is gone (fewer workers) or its worker was replaced on purpose."""
        self._deaths.pop(slot, None)
