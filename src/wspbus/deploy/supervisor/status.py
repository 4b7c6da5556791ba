"""The supervisor's status file: the single-process record plus its workers.

The supervisor never imports the site, so what it serves and mounts is what its workers
reported in their 'started' message. The file is rewritten on every change of the supervisor's
state and of its workers (started, stopped, replaced); the counts in it (requests served,
resident memory) are as of the workers' last report. ``wspbus status`` asks the supervisor over
its control socket first, which asks every worker for its counts right then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ...plugins.status import StatusFile
from ..config import SiteConfig
from .pool import Pool

__all__ = ["ReportedSite", "SupervisorStatusFile"]


class ReportedSite:
    """What the workers said they serve, in the shape StatusFile reads from a Deployment."""

    def __init__(self, config: SiteConfig, pool: Callable[[], Pool | None]) -> None:
        self.config = config
        self._pool = pool

    @property
    def pool(self) -> Pool | None:
        """The Arbiter's pool (a new one at each start of the supervisor's bus)."""
        return self._pool()

    @property
    def site(self) -> "ReportedSite":
        return self

    def _report(self) -> dict[str, Any]:
        return self.pool.site_report if self.pool is not None else {}

    def urls(self) -> list[str]:
        return [str(url) for url in self._report().get("urls", [])]

    def describe(self) -> list[str]:
        return [str(mount) for mount in self._report().get("mounts", [])]

    def supervision(self) -> dict[str, Any]:
        """The supervisor's part of a status record: its generation and its workers."""
        pool = self.pool
        if pool is None:
            return {"generation": 0, "workers": []}
        return {"generation": pool.generation, "target_workers": pool.target, "workers": pool.records()}


class SupervisorStatusFile(StatusFile):
    """StatusFile with ``generation`` and ``workers``; ``refresh()`` rewrites it after a worker change."""

    def __init__(self, bus: Any, pidfile: str, reported: ReportedSite) -> None:
        super().__init__(bus, pidfile, reported)
        self.reported = reported
        self._writing = threading.Lock()  # the loop thread and the bus's threads both write

    def _record(self, state: str) -> dict[str, Any]:
        record = super()._record(state)
        record.update(self.reported.supervision())
        return record

    def _write(self, record: dict[str, Any]) -> None:
        with self._writing:
            super()._write(record)

    def refresh(self) -> None:
        """Rewrite the record while the site runs (workers change without a state change)."""
        if self.claimed and self.bus.state.name in ("STARTING", "STARTED"):
            self._write(self._record(self.bus.state.name))
