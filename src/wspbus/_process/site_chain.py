"""A sitecustomize that stands in front of another imports that one, as the site module would.

wspbus puts a sitecustomize of its own on the path for one start (restart_site, and the test
suite's CherryPy swap); the user's own sitecustomize must still run after it.
"""

from __future__ import annotations

import importlib
import sys


def import_shadowed_sitecustomize() -> None:
    """Import the next ``sitecustomize`` on the path (the caller took itself off it), if any."""
    this = sys.modules.pop("sitecustomize")
    try:
        importlib.import_module("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        sys.modules["sitecustomize"] = this  # none other: the import system expects this one back
