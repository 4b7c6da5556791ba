from __future__ import annotations

import pytest

from serving import exit_quietly, new_bus


@pytest.fixture
def bus():
    """A bus for one test, exited at teardown whatever happened."""
    fresh = new_bus()
    yield fresh
    exit_quietly(fresh)
