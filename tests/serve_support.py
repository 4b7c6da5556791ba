"""Helpers for tests that run the real ``wspbus`` command: start it, read its banner, talk HTTP to it."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wspbus.testing import get  # http:// and unix: URLs, as the banner prints them

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: A Pyramid project as its cookiecutter lays one out (the pyramid_installed fixture puts it on the path).
PYRAMID = EXAMPLES / "pyramid_site"
WSPBUS = [sys.executable, "-m", "wspbus"]


@dataclass(frozen=True)
class Mode:
    """One way ``wspbus serve`` runs a site: ``options`` select it on the command line."""

    name: str
    options: tuple[str, ...]

    @property
    def supervised(self) -> bool:
        return self.name == "supervisor"

    @property
    def log_tag(self) -> str:
        """A pattern for what a log line's message starts with in this mode (a worker names itself)."""
        return r"\[worker \d+\] " if self.supervised else ""


#: The default (a supervisor and one worker, docs/supervisor.md) and --single-process; the
#: ``mode`` fixture (tests/deploy/conftest.py) runs a test in each.
SUPERVISED, SINGLE_PROCESS = MODES = (Mode("supervisor", ()), Mode("single-process", ("--single-process",)))


def serve(spawn, *args: str, cwd=None, env=None):
    """Start ``wspbus serve ARGS`` and wait for its banner; (child, [urls])."""
    child = spawn([*WSPBUS, "serve", *map(str, args)], cwd=cwd, env=env)
    urls = [child.expect(r"^wspbus: serving (\S+)$").group(1)]
    while True:
        line = child.expect(r"^wspbus: (serving|mounted) (\S+)")
        if line.group(1) == "mounted":
            return child, urls
        urls.append(line.group(2))


def run(*args: str, cwd=None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``wspbus ARGS`` to the end: (status, stdout, stderr)."""
    return subprocess.run([*WSPBUS, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


class SteadyClient:
    """Requests back to back on fresh connections, from a thread, counting every failure."""

    def __init__(self, url: str, path: str = "/") -> None:
        self.url, self.path = url, path
        self.bodies: list[bytes] = []
        self.failures: list[str] = []
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady client")

    def __enter__(self) -> "SteadyClient":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                status, body = get(self.url, self.path, timeout=10)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, or cut off mid-response
                self.failures.append(repr(exc))
                continue
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            if status != 200:
                self.failures.append("status %d" % status)
            self.bodies.append(body)

    def wait_for(self, wanted: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(wanted in body for body in self.bodies[-5:]):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("the client never got %r; last bodies %r, failures %r"
                                     % (wanted, self.bodies[-3:], self.failures[:3]))
            time.sleep(0.01)  # test side only


def one_error_line(stderr: str) -> str:
    """The stderr of a refused start: exactly one 'wspbus: error:' line and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("wspbus: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def banner_port(url: str) -> int:
    return int(re.search(r":(\d+)$", url).group(1))


def ended(pid: int) -> bool:
    """The process is gone or a zombie (it ended; its parent, maybe init, has not reaped it yet)."""
    from wspbus.deploy.control import _alive

    return not _alive(pid)
