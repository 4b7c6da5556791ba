"""A restart that first checks the new code, one check at a time, requests coalesced.

A reload that re-executes into code that cannot start leaves no site at all. So a process
that can tell (wspbus serve imports the site in a child interpreter) checks first, and keeps
serving the old code when the check fails. Checks are slow (a new interpreter), and reloads
come in bursts: while a check runs, every new request waits for the check that begins after
it (which sees the newest code), and that one check answers them all. Only the caller that
ran the check acts on its outcome (restarts, or reports the refusal once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CheckedRestart"]

#: A check: None if the new code can start, else one line saying why not.
Check = Callable[[], "str | None"]


class CheckedRestart:
    """Run ``check`` before a restart; coalesce the requests that come while one runs."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._requested = 0  # requests so far
        self._answered = 0  # requests the last finished check answers (made before it began)
        self._outcome: str | None = None
        self._running = False

    def request(self, check: Check, restart: Callable[[], object], refused: Callable[[str], object]) -> str | None:
        """Check, then ``restart()`` or ``refused(why)``; or share the outcome of a check that
        began after this request. Returns why the restart was refused, or None."""
        with self._changed:
            self._requested += 1
            ticket = self._requested
            while self._running and self._answered < ticket:
                self._changed.wait()
            if self._answered >= ticket:
                return self._outcome
            self._running = True
            covers = self._requested
        outcome: str | None = "the check of the new code did not finish"
        try:
            outcome = check()
        finally:
            with self._changed:
                self._running = False
                self._answered, self._outcome = covers, outcome
                self._changed.notify_all()
        if outcome is None:
            restart()
        else:
            refused(outcome)
        return outcome
