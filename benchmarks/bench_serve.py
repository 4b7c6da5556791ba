"""`wspbus serve` side by side with its peers, in one run: start, stop and reload a trivial site.

    python benchmarks/bench_serve.py [--quick] [--runs N] [--reload-runs N]

Peers (the benchmark extra): CherryPy's engine with its default server (cherrypy.quickstart),
gunicorn (one sync worker), uvicorn; wspbus serves the same WSGI app (cheroot) and the same
ASGI app (uvicorn inside the bus). Every child runs ``python -m TOOL`` (or the CherryPy script)
on the same interpreter, with stdin on /dev/null, in its own process group, on 127.0.0.1.

1. spawn -> first 200: from Popen to a complete 200 response. Each tool binds port 0 itself;
   the port comes from the line it logs (all four support port 0).
2. SIGTERM -> exit: the same process, idle for 0.2 s after that response, gets SIGTERM;
   the time until the process has exited (waitpid). Runs are interleaved across tools so
   machine-load drift hits all alike; figures are medians.
3. reload under a steady client: a client thread sends GETs back to back, a new connection
   per request (1 ms pause after a failure), for 0.5 s; the app file's greeting is edited,
   then the tool's reload is triggered (wspbus: ``wspbus reload --pidfile``; the others:
   SIGHUP to the main process); the client goes on until fresh code has been served for
   1 s, at most 4 s. Counted: failed requests (refused, reset, timeout, non-200), whether
   fresh code is served at the end, the longest gap between successive successes (or from
   the last success to the end of the window). 3 runs per tool. Ports are picked by binding
   port 0 first, so a tool that re-binds on restart could get its port back.

Ratios are peer / wspbus (above 1: wspbus is faster), against wspbus serving the same kind of
app: CherryPy and gunicorn against wspbus with WSGI, uvicorn against wspbus with ASGI.

Autoreload figures (10,000 modules) are benchmarks/bench_autoreload.py's job.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import importlib.metadata
import importlib.util
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

APPS = Path(__file__).resolve().parent / "apps"
ADDRESS_LINE = re.compile(r"https?://127\.0\.0\.1:([1-9]\d*)")
OLD_GREETING, NEW_GREETING = b"Hello v1\n", b"Hello fresh code, v2\n"
START_DEADLINE = 30.0  # generous: the two cores are shared; every wait ends early on its event
EXIT_DEADLINE = 15.0


class BenchError(Exception):
    """A tool failed a step; reported in its row instead of ending the run."""


class Child:
    """A tool's process in its own process group, its merged output read line by line."""

    live: ClassVar[list[Child]] = []

    def __init__(self, argv: list[str], cwd: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        Child.live.append(self)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self.changed.notify_all()
        with self.changed:
            self.lines.append(None)  # end of output
            self.changed.notify_all()

    def expect(self, pattern: re.Pattern, timeout: float) -> re.Match:
        """The first output line matching pattern; BenchError on a deadline or end of output."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.changed:
            while True:
                for line in self.lines[seen:]:
                    if line is None:
                        raise BenchError("exited (status %s) before printing its address: %s"
                                         % (self.proc.poll(), self.tail()))
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError("no address line within %.0f s: %s" % (timeout, self.tail()))
                self.changed.wait(left)

    def tail(self) -> str:
        return " | ".join(line for line in self.lines[-3:] if line) or "(no output)"

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        self.reader.join(EXIT_DEADLINE)  # the group is gone: the pipe is at its end
        if not self.reader.is_alive():
            self.proc.stdout.close()
        if self in Child.live:
            Child.live.remove(self)

    @classmethod
    def kill_all(cls) -> None:
        for child in list(cls.live):
            child.kill_group()


@dataclass
class Tool:
    name: str
    fixture: str  # file in benchmarks/apps/
    command: list[str]  # {port} and {pidfile} are filled in
    module: str  # must be importable for the tool to run
    reload_with: str = "SIGHUP"  # or "wspbus reload"
    reload_options: tuple[str, ...] = ()  # added for the reload test only

    def argv(self, port: int, workdir: Path, reloading: bool = False) -> list[str]:
        fill = {"port": str(port), "pidfile": str(workdir / "site.pid")}
        command = self.command + list(self.reload_options if reloading else ())
        return [sys.executable] + [part.format(**fill) for part in command]


WSPBUS_SERVE = ["-m", "wspbus", "serve", "--bind", "127.0.0.1:{port}"]
WSPBUS_RELOAD = {"reload_with": "wspbus reload", "reload_options": ("--pidfile", "{pidfile}")}
TOOLS = [
    Tool("wspbus", "hello_wsgi.py", WSPBUS_SERVE + ["hello_wsgi:app"], "wspbus", **WSPBUS_RELOAD),
    Tool("wspbus-asgi", "hello_asgi.py", WSPBUS_SERVE + ["hello_asgi:app"], "wspbus", **WSPBUS_RELOAD),
    Tool("cherrypy", "hello_cherrypy.py", ["hello_cherrypy.py", "{port}"], "cherrypy"),
    Tool("gunicorn", "hello_wsgi.py",
         ["-m", "gunicorn", "--no-control-socket", "--bind", "127.0.0.1:{port}", "hello_wsgi:app"],
         "gunicorn"),
    Tool("uvicorn", "hello_asgi.py",
         ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "hello_asgi:app"], "uvicorn"),
]
#: which wspbus row each peer is compared with
COUNTERPART = {"cherrypy": "wspbus", "gunicorn": "wspbus", "uvicorn": "wspbus-asgi"}


def workdir_for(tool: Tool) -> Path:
    """A fresh directory holding a copy of the tool's app (the reload test edits the copy)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-%s-" % tool.name))
    shutil.copy(APPS / tool.fixture, workdir / tool.fixture)
    return workdir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def first_200(child: Child, port: int, timeout: float) -> float:
    """When the first complete 200 arrived (perf_counter); refused connections are retried
    while the child runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_get(port, timeout)
            if status == 200:
                return time.perf_counter()
            raise BenchError("first response: status %d %r" % (status, body[:60]))
        except ConnectionRefusedError:
            if child.proc.poll() is not None:
                raise BenchError("exited (status %s): %s" % (child.proc.poll(), child.tail()))
            if time.monotonic() > deadline:
                raise BenchError("port %d still refused after %.0f s" % (port, timeout))
            time.sleep(0.005)
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError("first request failed: %r" % exc)


# -- 1 and 2: spawn -> first 200, SIGTERM -> exit ------------------------------------------------

class ExitWatch:
    """The moment a process exits, as an event (a pidfd); Popen.wait(timeout) polls with
    growing sleeps (up to 50 ms), which would quantize the figures."""

    def __init__(self, proc: subprocess.Popen):
        self.pidfd = os.pidfd_open(proc.pid)

    def wait(self, timeout: float) -> bool:
        readable, _, _ = select.select([self.pidfd], [], [], timeout)
        return bool(readable)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        os.close(self.pidfd)


def start_and_stop(tool: Tool, workdir: Path) -> tuple[float, float, int]:
    """One run: (spawn -> first 200, SIGTERM -> exit, exit status)."""
    child = Child(tool.argv(0, workdir), workdir)
    try:
        port = int(child.expect(ADDRESS_LINE, START_DEADLINE).group(1))
        spawn = first_200(child, port, START_DEADLINE) - child.started
        time.sleep(0.2)  # the definition of "idle": no request for 0.2 s
        with ExitWatch(child.proc) as watch:
            signalled = time.perf_counter()
            child.proc.send_signal(signal.SIGTERM)
            if not watch.wait(EXIT_DEADLINE):
                raise BenchError("still running %.0f s after SIGTERM" % EXIT_DEADLINE)
            exited = time.perf_counter()
        return spawn, exited - signalled, child.proc.wait()
    finally:
        child.kill_group()


@dataclass
class StartStop:
    spawn: list[float] = field(default_factory=list)
    exit: list[float] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def bench_start_stop(tools: list[Tool], runs: int) -> dict[str, StartStop]:
    results = {tool.name: StartStop() for tool in tools}
    workdirs = {tool.name: workdir_for(tool) for tool in tools}
    try:
        for run in range(runs):
            for tool in tools:
                result = results[tool.name]
                if result.errors and not result.spawn:
                    continue  # failed on its first run: not worth repeating
                try:
                    spawn, stop, status = start_and_stop(tool, workdirs[tool.name])
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    result.errors.append(str(exc))
                    continue
                result.spawn.append(spawn)
                result.exit.append(stop)
                result.statuses.add(status)
            print("  run %d/%d done" % (run + 1, runs), file=sys.stderr)
    finally:
        for workdir in workdirs.values():
            shutil.rmtree(workdir, ignore_errors=True)
    return results


# -- 3: reload under a steady client -------------------------------------------------------------

class SteadyClient(threading.Thread):
    """GETs back to back, a new connection each; records (when it ended, body, failure)."""

    def __init__(self, port: int, max_seconds: float, max_requests: int = 50_000):
        super().__init__(daemon=True)
        self.port, self.max_requests = port, max_requests
        self.deadline = time.perf_counter() + max_seconds
        self.stopping = threading.Event()
        self.saw_fresh = threading.Event()
        self.outcomes: list[tuple[float, bytes | None, str]] = []

    def run(self) -> None:
        while (not self.stopping.is_set() and len(self.outcomes) < self.max_requests
               and time.perf_counter() < self.deadline):
            try:
                status, body = http_get(self.port, timeout=2.0)
                failure = "" if status == 200 else "status %d" % status
            except (OSError, http.client.HTTPException) as exc:
                body, failure = None, type(exc).__name__
            self.outcomes.append((time.perf_counter(), None if failure else body, failure))
            if failure:
                time.sleep(0.001)  # a dead port refuses in microseconds: do not starve the server
            elif body == NEW_GREETING:
                self.saw_fresh.set()


def edit_greeting(path: Path) -> None:
    """Save the app with a new greeting, atomically as editors do."""
    text = path.read_bytes()
    fresh = path.with_suffix(".tmp")
    fresh.write_bytes(text.replace(OLD_GREETING.rstrip(), NEW_GREETING.rstrip()))
    os.replace(fresh, path)


def trigger_reload(tool: Tool, child: Child, workdir: Path) -> None:
    if tool.reload_with == "wspbus reload":
        command = [sys.executable, "-m", "wspbus", "reload", "--pidfile", str(workdir / "site.pid")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode:
            raise BenchError("wspbus reload exited %d: %s" % (done.returncode, done.stderr.strip()))
    else:
        child.proc.send_signal(signal.SIGHUP)


@dataclass
class ReloadRun:
    requests: int
    failures: list[str]  # one entry per failed request: what went wrong
    fresh: bool  # the last response came from the edited code
    fresh_after: float | None  # seconds from the trigger to the first fresh response
    gap: float  # longest time without a successful response
    recovered: bool  # the window's last request succeeded
    status: int | None  # None: still running at the end


def reload_under_load(tool: Tool, warm: float, window: float) -> ReloadRun:
    """Steady traffic, edit, reload; go on until fresh code has been served for 1 s."""
    workdir = workdir_for(tool)
    port = free_port()
    child = Child(tool.argv(port, workdir, reloading=True), workdir)
    try:
        child.expect(ADDRESS_LINE, START_DEADLINE)
        first_200(child, port, START_DEADLINE)
        client = SteadyClient(port, warm + window)
        began = time.perf_counter()
        client.start()
        client.join(warm)  # steady traffic before the reload
        edit_greeting(workdir / tool.fixture)
        triggered = time.perf_counter()
        trigger_reload(tool, child, workdir)
        if client.saw_fresh.wait(window):
            client.join(1.0)
        client.stopping.set()
        client.join(5.0)
        return summarize(client.outcomes, began, triggered, child.proc.poll())
    finally:
        child.kill_group()
        shutil.rmtree(workdir, ignore_errors=True)


def summarize(outcomes: list, began: float, triggered: float, status: int | None) -> ReloadRun:
    if not outcomes:
        raise BenchError("the client made no request")
    # a gap runs from one success to the next, or to the end of the window if none came
    times = [began] + [at for at, _, failure in outcomes if not failure] + [outcomes[-1][0]]
    after = [(at, body) for at, body, failure in outcomes if not failure and at >= triggered]
    fresh = [at for at, body in after if body == NEW_GREETING]
    return ReloadRun(
        requests=len(outcomes),
        failures=[failure for _, _, failure in outcomes if failure],
        fresh=bool(after) and after[-1][1] == NEW_GREETING,
        fresh_after=fresh[0] - triggered if fresh else None,
        gap=max(b - a for a, b in pairwise(times)),
        recovered=not outcomes[-1][2],
        status=status,
    )


def bench_reload(tools: list[Tool], runs: int, warm: float, window: float) -> dict[str, list]:
    """Per tool, a ReloadRun or an error text per run."""
    results: dict[str, list[ReloadRun | str]] = {tool.name: [] for tool in tools}
    for run in range(runs):
        for tool in tools:
            try:
                results[tool.name].append(reload_under_load(tool, warm, window))
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                results[tool.name].append("failed: %s" % exc)
        print("  reload run %d/%d done" % (run + 1, runs), file=sys.stderr)
    return results


# -- report ---------------------------------------------------------------------------------------

def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("inf")


def status_text(status: int) -> str:
    if status < 0:
        return "killed by %s" % signal.Signals(-status).name
    return "exited %d" % status


def median_text(samples: list[float]) -> str:
    if not samples:
        return "failed"
    return "%.3f s (min %.3f)" % (statistics.median(samples), min(samples))


def ratio_text(peer: list[float], ours: list[float]) -> str:
    if not peer or not ours:
        return "-"
    return "%.2fx" % (statistics.median(peer) / statistics.median(ours))


def show_start_stop(results: dict[str, StartStop], runs: int) -> None:
    print("\n## Start and stop (median of %d runs; ratio = peer / its wspbus counterpart)\n" % runs)
    print("| tool | spawn -> first 200 | ratio | SIGTERM -> exit | ratio | exit status |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, result in results.items():
        ours = results.get(COUNTERPART.get(name, ""))
        spawn_ratio = ratio_text(result.spawn, ours.spawn) if ours else ""
        exit_ratio = ratio_text(result.exit, ours.exit) if ours else ""
        statuses = ", ".join(status_text(status) for status in sorted(result.statuses)) or "-"
        print("| %s | %s | %s | %s | %s | %s |" % (name, median_text(result.spawn), spawn_ratio,
                                                  median_text(result.exit), exit_ratio, statuses))
    for name, result in results.items():
        tried = len(result.spawn) + len(result.errors)
        for error in dict.fromkeys(result.errors):
            print("\n%s: %d of %d runs failed: %s" % (name, result.errors.count(error), tried, error))


def reload_row(name: str, runs: list[ReloadRun]) -> str:
    """One table row summing up a tool's reload runs: totals, worst gap, how the process ended."""
    failures = [failure for run in runs for failure in run.failures]
    failed = "%d (%s)" % (len(failures), ", ".join(sorted(set(failures)))) if failures else "0"
    fresh_after = [run.fresh_after for run in runs if run.fresh]
    fresh = "%d of %d runs" % (len(fresh_after), len(runs))
    if fresh_after:
        fresh += ", %.2f s after the trigger (median)" % statistics.median(fresh_after)
    gaps = [run.gap for run in runs]
    gap = "%.3f s (median %.3f)" % (max(gaps), statistics.median(gaps))
    if not all(run.recovered for run in runs):
        gap += ", lasting to the end of the window"
    ended = sorted({"running" if run.status is None else status_text(run.status) for run in runs})
    return "| %s | %d | %s | %s | %s | %s |" % (name, sum(run.requests for run in runs), failed, fresh,
                                                gap, ", ".join(ended))


def show_reload(results: dict[str, list], runs: int) -> None:
    print("\n## Reload under a steady client (%d runs per tool, totals; a new connection per request)\n"
          % runs)
    print("| tool (trigger) | requests | failed | fresh code served | longest gap: worst | process after |")
    print("| --- | --- | --- | --- | --- | --- |")
    triggers = {tool.name: tool.reload_with for tool in TOOLS}
    for name, outcomes in results.items():
        label = "%s (%s)" % (name, triggers[name])
        done = [outcome for outcome in outcomes if isinstance(outcome, ReloadRun)]
        print(reload_row(label, done) if done else "| %s | failed | | | | |" % label)
    for name, outcomes in results.items():
        for error in dict.fromkeys(outcome for outcome in outcomes if isinstance(outcome, str)):
            print("\n%s: %d of %d reload runs %s" % (name, outcomes.count(error), len(outcomes), error))


def show_targets(start_stop: dict[str, StartStop], reload: dict[str, list]) -> None:
    ours, cherrypy = start_stop.get("wspbus"), start_stop.get("cherrypy")
    checks = [("spawn -> first 200 no slower than CherryPy's engine",
               bool(ours and cherrypy and median(ours.spawn) <= median(cherrypy.spawn)))]
    for name in ("wspbus", "wspbus-asgi"):
        if name in start_stop:
            checks.append(("%s: SIGTERM -> exit < 0.1 s" % name, median(start_stop[name].exit) < 0.1))
        outcomes = reload.get(name, [])
        runs = [outcome for outcome in outcomes if isinstance(outcome, ReloadRun)]
        every = bool(outcomes) and len(runs) == len(outcomes)
        checks += [
            ("%s reload: 0 failed requests" % name, every and not any(run.failures for run in runs)),
            ("%s reload: fresh code served" % name, every and all(run.fresh for run in runs)),
            ("%s reload: longest gap < 0.5 s" % name,
             every and all(run.recovered and run.gap < 0.5 for run in runs)),
        ]
    print("\n## Targets (issue 4)\n")
    for label, met in checks:
        print("- %s: %s" % (label, "met" if met else "MISSED"))


def versions() -> str:
    found = []
    for dist in ("wspbus", "cheroot", "CherryPy", "gunicorn", "uvicorn"):
        try:
            found.append("%s %s" % (dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few runs, short windows (a smoke run)")
    parser.add_argument("--runs", type=int, help="start/stop runs per tool (default 9; 3 with --quick)")
    parser.add_argument("--reload-runs", type=int, help="reload runs per tool (default 3; 1 with --quick)")
    options = parser.parse_args()
    runs = options.runs or (3 if options.quick else 9)
    reload_runs = options.reload_runs or (1 if options.quick else 3)
    warm, window = (0.3, 3.0) if options.quick else (0.5, 4.0)

    tools = [tool for tool in TOOLS if importlib.util.find_spec(tool.module)]
    for tool in TOOLS:
        if tool not in tools:
            print("(%s not installed: pip install -e '.[bench]')" % tool.name)
    import wspbus  # installed packages carry bytecode; give ours the same
    compileall.compile_dir(os.path.dirname(wspbus.__file__), quiet=1)

    began = time.perf_counter()
    try:
        start_stop = bench_start_stop(tools, runs)
        reload = bench_reload(tools, reload_runs, warm, window)
    finally:
        Child.kill_all()
    print("\n`python %s` (%.0f s in all)\n\nPython %s, %d CPUs; %s"
          % (" ".join(sys.argv), time.perf_counter() - began, sys.version.split()[0], os.cpu_count(),
             versions()))
    show_start_stop(start_stop, runs)
    show_reload(reload, reload_runs)
    show_targets(start_stop, reload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
