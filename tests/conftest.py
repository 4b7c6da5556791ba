from __future__ import annotations

import pytest

from support import Child, python_child
from wspbus import Bus


@pytest.fixture
def spawn(tmp_path):
    """Start real child processes; every one is killed with its process group at teardown."""
    children: list[Child] = []

    def start(code_or_args, *args, **kw):
        if isinstance(code_or_args, str):
            child = python_child(code_or_args, *args, tmp_path=tmp_path, **kw)
        else:
            child = Child(code_or_args, **kw)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


@pytest.fixture
def bus():
    """A fresh bus whose shutdown is bounded for tests; exited at teardown."""
    fresh = Bus(graceful_timeout=10)
    yield fresh
    fresh.exit()
