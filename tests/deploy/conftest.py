"""Fixtures shared by the tests of `wspbus serve` in one process and under a supervisor: ``mode``
runs a test of what `wspbus serve` promises whichever way it runs the site."""

from __future__ import annotations

import os
import tomllib

import pytest
from serve_support import MODES, PYRAMID, Mode


@pytest.fixture(params=MODES, ids=[mode.name for mode in MODES])
def mode(request) -> Mode:
    """Each of the two modes of `wspbus serve`: pass ``*mode.options`` after ``serve``."""
    return request.param


@pytest.fixture(scope="module")
def pyramid_installed(tmp_path_factory):
    """The example project installed as ``pip install -e examples/pyramid_site`` installs it: its
    package importable and its distribution's metadata, with the entry points its pyproject.toml
    declares, on the path, so that ``use = egg:pyramid_site`` resolves. (A real pip install would
    need a build backend and a wheel builder on the test machine; this is the part Paste Deploy reads.)"""
    pytest.importorskip("pyramid")
    pytest.importorskip("plaster_pastedeploy")
    project = tomllib.loads((PYRAMID / "pyproject.toml").read_text())["project"]
    root = tmp_path_factory.mktemp("site-packages")
    info = root / ("%s-%s.dist-info" % (project["name"], project["version"]))
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (project["name"], project["version"]))
    groups = ["[%s]\n%s\n" % (group, "".join("%s = %s\n" % item for item in entries.items()))
              for group, entries in project["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(groups))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), str(PYRAMID), os.environ.get("PYTHONPATH")]))}
