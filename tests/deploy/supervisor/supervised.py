"""Helpers for the supervisor's tests: a site on disk, `wspbus serve --workers N` on it, and clients.

The app answers ``VERSION PID`` so a test sees which code and which worker answered; ``/slow?S``
takes S seconds (and says so on stdout first), ``/spin`` holds the GIL forever (a hung worker; it says so
too), ``/crash`` ends the worker,
``/grow`` leaks 60 MB.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

from serve_support import WSPBUS
from support import DEADLINE, Child

#: Marks every process a test started (workers inherit it); see conftest.py.
TAG_ENV = "WSPBUS_TEST_TAG"

APP = '''
import os
import time

VERSION = %(version)r
HOARD = []
%(extra)s

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        os.write(1, b"slow request in %%d\\n" %% os.getpid())  # one write: workers share stdout
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    elif path == "/spin":
        os.write(1, b"spinning in %%d\\n" %% os.getpid())
        sum(range(10 ** 13))  # one C call: the GIL is never released
    elif path == "/crash":
        os._exit(3)
    elif path == "/grow":
        HOARD.append(b"x" * 60_000_000)  # a leak: resident for good
    body = ("%%s %%d" %% (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


class Site:
    """A directory with an app, a run directory for the pid file, and the processes serving it."""

    def __init__(self, tag: str, root: Path, spawn) -> None:
        self.tag = tag
        self.app_dir = root / "app"
        self.app_dir.mkdir()
        self.run_dir = root / "run"
        self.run_dir.mkdir(mode=0o700)
        self.pidfile = self.run_dir / "site.pid"
        self.spawn = spawn
        self.child: Child | None = None
        self.url = ""
        #: More environment for the processes started from now on.
        self.env_extra: dict[str, str] = {}
        self.write_app()

    @property
    def env(self) -> dict[str, str]:
        # No bytecode: a rewritten app of the same size within the same second must not look unchanged.
        return {TAG_ENV: self.tag, "PYTHONDONTWRITEBYTECODE": "1", **self.env_extra}

    def write_app(self, version: str = "v1", extra: str = "") -> None:
        """(Re)write site_app.py whole (rename), as a deploy would."""
        temporary = self.app_dir / "site_app.py.tmp"
        temporary.write_text(textwrap.dedent(APP % {"version": version, "extra": textwrap.dedent(extra)}))
        os.replace(temporary, self.app_dir / "site_app.py")

    def serve(self, *args: str, workers: int | None = 2, expect_banner: bool = True, app: str = "site_app:app") -> Child:
        """Start ``wspbus serve --workers N`` on the app; wait for its banner (the supervisor STARTED)."""
        count = ["--workers", str(workers)] if workers is not None else []
        command = [*WSPBUS, "serve", *count, "--chdir", str(self.app_dir),
                   "--pidfile", str(self.pidfile), "-b", "127.0.0.1:0", *map(str, args), app]
        self.child = self.spawn(command, env=self.env, cwd=self.app_dir)
        if expect_banner:
            self.url = self.child.expect(r"^wspbus: serving (\S+)$").group(1)
            self.child.expect(r"^wspbus: supervisor \d+")
        return self.child

    def serve_file(self, site_file: str, workers: int = 2) -> Child:
        """Start ``wspbus serve --workers N --config site.toml`` with ``site_file`` as its text; wait for the banner."""
        config = self.app_dir / "site.toml"
        config.write_text(textwrap.dedent(site_file))
        self.child = self.spawn([*WSPBUS, "serve", "--workers", str(workers), "--config", config, "--pythonpath",
                                 self.app_dir, "-b", "127.0.0.1:0", "--pidfile", self.pidfile],
                                env=self.env, cwd=self.app_dir)
        self.url = self.child.expect(r"^wspbus: serving (\S+)$").group(1)
        self.child.expect(r"^wspbus: supervisor \d+")
        return self.child

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``wspbus ARGS`` to its end (a control command, or a serve that fails)."""
        env = {**os.environ, **self.env}
        return subprocess.run([*WSPBUS, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=self.app_dir)

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
        from wspbus.testing import get

        status, body = get(self.url, path, timeout)
        return status, body.decode()

    def get_until(self, prefix: str, timeout: float = DEADLINE) -> str:
        """GET / until the body starts with ``prefix`` (an old worker may answer while it stops)."""
        deadline = time.monotonic() + timeout
        while not (body := self.get()[1]).startswith(prefix):
            assert time.monotonic() < deadline, "still %r, expected %r" % (body, prefix)
            time.sleep(0.01)  # test side only
        return body

    def status(self) -> dict:
        """The status record with live counts: what ``wspbus status --json`` prints, asked in this process
        on the control socket (no interpreter started per question)."""
        from wspbus.deploy.supervisor import client

        return client.status(str(self.pidfile))

    def worker_pids(self, state: str = "serving") -> list[int]:
        return [w["pid"] for w in self.status()["workers"] if w["state"] == state]

    def wait_for_workers(self, count: int, excluding: set[int] = frozenset(), timeout: float = DEADLINE) -> list[int]:
        """Wait (test side: asking the supervisor again and again) for ``count`` serving workers."""
        deadline = time.monotonic() + timeout
        while True:
            pids = [pid for pid in self.worker_pids() if pid not in excluding]
            if len(pids) >= count:
                return pids
            if time.monotonic() > deadline:
                raise AssertionError("%d serving workers expected, got %r" % (count, self.status()["workers"]))
            time.sleep(0.02)


def every_worker_busy(site, workers: list[int], path: str, said: str) -> list[concurrent.futures.Future]:
    """One request for ``path`` in the hands of each of ``workers`` (each says ``said`` PID).

    Which worker accepts a new connection on the shared listener is the kernel's choice, and one
    worker can win every race (CI once saw 20 requests in a row go to the same one). So each worker
    that has its request is held still (``hold_still``) until every other one has theirs: a stopped
    process accepts nothing, and its request goes on once it is let go (SIGCONT) before this returns.
    """
    pool = concurrent.futures.ThreadPoolExecutor(len(workers))
    futures = []
    with HeldStill() as held:
        try:
            for _ in workers:
                futures.append(pool.submit(site.get, path, 60 + DEADLINE))
                pid = int(site.child.expect(r"^%s in (\d+)" % said).group(1))
                assert pid in workers and pid not in held.pids, "request reached %d, held %r of %r" % (
                    pid, held.pids, workers)
                held.hold(pid)
        finally:
            pool.shutdown(wait=False)
    return futures


def answered_by(site: Site, count: int) -> set[int]:
    """The pids of ``count`` workers, each of which answered a request on a new connection.

    Each worker that answered is held still (``hold_still``) until ``count`` did (the kernel may hand
    every connection to the same worker while it is idle), then let go.
    """
    with HeldStill() as held:
        for _ in range(count):
            pid = int(site.get()[1].split()[1])
            assert pid not in held.pids, "%d answered again while stopped: %r" % (pid, held.pids)
            held.hold(pid)
    return set(held.pids)


class HeldStill:
    """Processes held still (``hold_still``) for the length of a ``with`` block, let go (SIGCONT) at its end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def __enter__(self) -> "HeldStill":
        return self

    def hold(self, pid: int) -> None:
        hold_still(pid)
        self.pids.append(pid)

    def __exit__(self, *exc_info: object) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def hold_still(pid: int, timeout: float = DEADLINE) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it has stopped: from then on it accepts nothing.

    Sending the signal is not enough: a thread that is already running (or woken and waiting for a
    core) can still accept the next connection before it stops. Seen on a busy 2-core machine.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    tasks = Path("/proc/%d/task" % pid)
    while not all(_thread_state(task) in "tT" for task in tasks.iterdir()):
        assert time.monotonic() < deadline, "%d did not stop" % pid
        time.sleep(0.001)  # test side only


def _thread_state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile (or is ending: ESRCH)
        return "T"


class KeepAliveClient:
    """GET / back to back on one keep-alive connection (a new one only when the server closes it).

    A failure is any request that got no complete 200 response: a refused or reset connection, an
    empty reply, an error status. ``gaps`` are the times between two consecutive answers.
    """

    def __init__(self, url: str, path: str = "/") -> None:
        match = re.match(r"http://([^:/]+):(\d+)$", url)
        assert match, url
        self.host, self.port, self.path = match.group(1), int(match.group(2)), path
        self.bodies: list[str] = []
        self.failures: list[str] = []
        self.longest_gap = 0.0
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keep-alive client")

    def __enter__(self) -> "KeepAliveClient":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)

    def _connect(self) -> http.client.HTTPConnection:
        self.connections += 1
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def _run(self) -> None:
        connection = self._connect()
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                connection.request("GET", self.path)
                response = connection.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    self.failures.append("status %d" % response.status)
                if response.will_close:
                    connection.close()
                    connection = self._connect()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection.close()
                connection = self._connect()
                continue
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.bodies.append(body)
        connection.close()

    def wait_for_more(self, count: int = 3, timeout: float = DEADLINE) -> None:
        """Wait until ``count`` more requests were answered."""
        wanted = len(self.bodies) + count
        deadline = time.monotonic() + timeout
        while len(self.bodies) < wanted:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("no more answers; last %r, failures %r" % (self.bodies[-3:], self.failures[:3]))
            time.sleep(0.01)  # test side only

    def wait_for(self, wanted: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not any(body.startswith(wanted) for body in self.bodies[-3:]):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("never got %r; last %r, failures %r" % (wanted, self.bodies[-3:], self.failures[:3]))
            time.sleep(0.01)  # test side only


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every process whose environment carries this tag, with its process group."""
    pids = tagged_pids(tag)
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group != os.getpgrp():  # never the test runner's own group
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def wait_gone(pids, timeout: float = DEADLINE) -> None:
    """Wait until none of ``pids`` runs (test side: looks again every 20 ms until the deadline)."""
    from serve_support import ended

    deadline = time.monotonic() + timeout
    while not all(ended(pid) for pid in pids):
        assert time.monotonic() < deadline, "still running: %r" % [pid for pid in pids if not ended(pid)]
        time.sleep(0.02)


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries ``TAG_ENV=tag``."""
    wanted = ("%s=%s" % (TAG_ENV, tag)).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as file:
                if wanted in file.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue  # gone, or not ours to read
    return found
