"""The bus a deployment runs on when the caller names none: the process's own, ``wspbus.bus``."""

from __future__ import annotations

import wspbus

from .._core.bus import Bus

__all__ = ["process_bus"]


def process_bus(bus: Bus | None = None) -> Bus:
    """``bus``, or else the process's bus (looked up now: what ``wspbus.bus`` is at the call)."""
    return wspbus.bus if bus is None else bus
