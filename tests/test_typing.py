"""The package ships py.typed: its annotations must hold under ``mypy --strict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "wspbus"


@pytest.mark.slow
def test_mypy_strict_reports_no_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(SRC)],
        capture_output=True, text=True, timeout=300, cwd=SRC.parents[1],  # .mypy_cache at the root
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
