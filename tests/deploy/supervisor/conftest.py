"""Fixtures for the supervisor's tests: real supervisors and workers, none left behind.

Every process these tests start carries a tag in its environment (workers inherit it from their
supervisor, a daemon from its launcher). At teardown every process with this test's tag is
killed with its process group, whoever its parent is by then: a worker orphaned by a SIGKILLed
supervisor, a daemon that detached, a worker a broken test forgot.
"""

from __future__ import annotations

import uuid

import pytest

from supervised import Site, kill_tagged


@pytest.fixture
def site(tmp_path, spawn):
    """A Site (see supervised.py); every process it started is killed at teardown."""
    tag = uuid.uuid4().hex
    made = Site(tag, tmp_path, spawn)
    try:
        yield made
    finally:
        kill_tagged(tag)
