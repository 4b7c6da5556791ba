"""HTTP serving speed, `wspbus serve` side by side with its peers in one run, measured by wrk.

    python benchmarks/bench_http.py [--duration S] [--rounds N] [--only TEXT ...] [--quick]

Every server runs in a process of its own (its own process group, stdin on /dev/null, output to
a log file shown on failure) on 127.0.0.1, on a port picked by binding port 0 first. All of them
are started first; once one answers a GET with 200, wrk (Debian's package: apt-get install wrk)
warms it up for 1 s. Then each round measures every server in turn, twice, ``--duration``
seconds each, with one thread and 10 connections:

* keep-alive: ``wrk -t1 -c10``: each connection sends its requests one after another;
* new connections: the same with ``-H 'Connection: close'``: a new connection per request.

The servers waiting for their turn are idle. With ``--rounds N`` the table shows each figure's
median over the N rounds, so that a change of the machine's load during the run hits every row
alike. At the end every server gets SIGTERM (its whole group SIGKILL 5 s later if it is still
there). wrk runs on the same two cores as the servers: compare ratios, not absolute figures.

Apps (benchmarks/apps): a hello WSGI app and a hello ASGI app (9 bytes of text), CherryPy's
hello page, and a CPU-bound WSGI app (2 ms of the request thread's CPU time per request).

Rows: `wspbus serve` with each server it runs (cheroot is the default for WSGI, uvicorn for
ASGI), a WSGI app inside a mixed WSGI+ASGI site (served as ASGI, the WSGI app on the bridge),
and, once the supervisor mode exists, `--single-process` and `--workers` 1 and 2 (a row whose
option this wspbus lacks is skipped and named); the peers alone: CherryPy's
engine on cheroot (cherrypy.quickstart), gunicorn (sync with 2 workers; gthread, 1 worker with
10 threads), uvicorn, granian (its defaults: 1 worker; and 2 workers, beside wspbus --workers 2
on granian) and waitress. A row whose tool is not
installed is skipped and named. Ratios are row / reference (above 1: the row is faster).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_serve import APPS, BenchError, free_port

START_DEADLINE = 30.0
STOP_DEADLINE = 5.0
WARM_UP = 1.0
CONNECTIONS = 10
CLIENTS = {"keep-alive": [], "new connection": ["-H", "Connection: close"]}


@dataclass
class Target:
    name: str
    table: str  # "hello" or "cpu"
    app: str  # what the row serves, as the table says it
    command: list[str]  # run with this Python in benchmarks/apps; {port} is filled in
    needs: tuple[str, ...] = ()  # modules that must be importable
    ours: bool = False

    def argv(self, port: int) -> list[str]:
        return [sys.executable] + [part.format(port=port) for part in self.command]


def wspbus(*args: str) -> list[str]:
    return ["-m", "wspbus", "serve", "--bind", "127.0.0.1:{port}", *args]


def gunicorn(*args: str) -> list[str]:
    return ["-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--log-level", "warning", *args]


def granian(interface: str, app: str) -> list[str]:
    return ["-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", app]


UVICORN = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
           "--no-access-log"]

HELLO = [
    Target("wspbus (default: cheroot)", "hello", "WSGI", wspbus("hello_wsgi:app"), ("cheroot",), ours=True),
    Target("wspbus --server waitress", "hello", "WSGI", wspbus("--server", "waitress", "hello_wsgi:app"),
           ("waitress",), ours=True),
    Target("wspbus --server granian", "hello", "WSGI", wspbus("--server", "granian", "hello_wsgi:app"),
           ("granian",), ours=True),
    Target("wspbus --server uvicorn (bridged)", "hello", "WSGI", wspbus("--server", "uvicorn", "hello_wsgi:app"),
           ("uvicorn",), ours=True),
    Target("wspbus --server stdlib (HTTP/1.0)", "hello", "WSGI", wspbus("--server", "stdlib", "hello_wsgi:app"),
           ours=True),
    Target("wspbus mixed site (WSGI app)", "hello", "WSGI in ASGI site",
           wspbus("/asgi=hello_asgi:app", "/=hello_wsgi:app"), ("uvicorn",), ours=True),
    Target("wspbus --single-process", "hello", "WSGI", wspbus("--single-process", "hello_wsgi:app"), ours=True),
    Target("wspbus --workers 1", "hello", "WSGI", wspbus("--workers", "1", "hello_wsgi:app"), ours=True),
    Target("wspbus --workers 2", "hello", "WSGI", wspbus("--workers", "2", "hello_wsgi:app"), ours=True),
    Target("CherryPy (engine + cheroot)", "hello", "CherryPy", ["hello_cherrypy.py", "{port}", "quiet"],
           ("cherrypy",)),
    Target("gunicorn sync -w 2", "hello", "WSGI", gunicorn("--workers", "2", "hello_wsgi:app"), ("gunicorn",)),
    Target("gunicorn gthread", "hello", "WSGI",
           gunicorn("--worker-class", "gthread", "--threads", "10", "hello_wsgi:app"), ("gunicorn",)),
    Target("waitress alone", "hello", "WSGI", ["-m", "waitress", "--listen=127.0.0.1:{port}", "hello_wsgi:app"],
           ("waitress",)),
    Target("granian alone", "hello", "WSGI", granian("wsgi", "hello_wsgi:app"), ("granian",)),
    Target("wspbus --workers 2 --server granian", "hello", "WSGI",
           wspbus("--workers", "2", "--server", "granian", "hello_wsgi:app"), ("granian",), ours=True),
    Target("granian alone --workers 2", "hello", "WSGI", granian("wsgi", "hello_wsgi:app") + ["--workers", "2"],
           ("granian",)),
    Target("wspbus (default: uvicorn)", "hello", "ASGI", wspbus("hello_asgi:app"), ("uvicorn",), ours=True),
    Target("wspbus --server granian", "hello", "ASGI", wspbus("--server", "granian", "hello_asgi:app"),
           ("granian",), ours=True),
    Target("uvicorn alone", "hello", "ASGI", UVICORN + ["hello_asgi:app"], ("uvicorn",)),
    Target("wspbus --workers 2 (uvicorn)", "hello", "ASGI", wspbus("--workers", "2", "hello_asgi:app"), ("uvicorn",),
           ours=True),
    Target("uvicorn alone --workers 2", "hello", "ASGI", UVICORN + ["--workers", "2", "hello_asgi:app"], ("uvicorn",)),
    Target("granian alone", "hello", "ASGI", granian("asgi", "hello_asgi:app"), ("granian",)),
    Target("wspbus --workers 2 --server granian", "hello", "ASGI",
           wspbus("--workers", "2", "--server", "granian", "hello_asgi:app"), ("granian",), ours=True),
    Target("granian alone --workers 2", "hello", "ASGI", granian("asgi", "hello_asgi:app") + ["--workers", "2"],
           ("granian",)),
]
CPU = [
    Target("wspbus (default)", "cpu", "CPU", wspbus("cpu_wsgi:app"), ours=True),
    Target("wspbus --workers 1", "cpu", "CPU", wspbus("--workers", "1", "cpu_wsgi:app"), ours=True),
    Target("wspbus --workers 2", "cpu", "CPU", wspbus("--workers", "2", "cpu_wsgi:app"), ours=True),
    # What docs/serve.md advises for CPU-bound apps: threads beyond one only wait for the GIL.
    Target("wspbus --workers 2 --threads 1", "cpu", "CPU", wspbus("--workers", "2", "--threads", "1", "cpu_wsgi:app"),
           ours=True),
    Target("gunicorn sync -w 1", "cpu", "CPU", gunicorn("--workers", "1", "cpu_wsgi:app"), ("gunicorn",)),
    Target("gunicorn sync -w 2", "cpu", "CPU", gunicorn("--workers", "2", "cpu_wsgi:app"), ("gunicorn",)),
]
#: Each table's ratio columns: (column title, row name, app of that row).
REFERENCES = {
    "hello": [("CherryPy", "CherryPy (engine + cheroot)", "CherryPy"), ("gthread", "gunicorn gthread", "WSGI")],
    "cpu": [("gunicorn -w 2", "gunicorn sync -w 2", "CPU"), ("workers 1", "wspbus --workers 1", "CPU")],
}


# -- running a server and wrk -------------------------------------------------------------------

class Server:
    """A target's process in its own process group, its output in a log file."""

    def __init__(self, target: Target, logdir: Path) -> None:
        self.port = free_port()
        self.log_path = logdir / (re.sub(r"\W+", "-", "%s-%s" % (target.name, target.app)).strip("-") + ".log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(target.argv(self.port), cwd=APPS, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        """Until GET / answers 200 (a refused connection is retried while the process runs)."""
        import http.client

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                try:
                    conn.request("GET", "/")
                    status = conn.getresponse().status
                finally:
                    conn.close()
                if status == 200:
                    return
                raise BenchError("GET / answered %d" % status)
            except (ConnectionRefusedError, ConnectionResetError):
                if self.proc.poll() is not None:
                    raise BenchError("exited (status %s): %s" % (self.proc.returncode, self.tail()))
                if time.monotonic() > deadline:
                    raise BenchError("port %d not answering after %.0f s: %s" % (self.port, timeout, self.tail()))
                time.sleep(0.05)

    def tail(self) -> str:
        self.log.flush()
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "(no output)"

    def stop(self) -> None:
        """SIGTERM to the process, SIGKILL to its group if it is not gone within STOP_DEADLINE."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.log.close()


@dataclass
class Figures:
    rate: float  # requests per second
    p99: float  # seconds
    errors: int  # socket errors and non-2xx responses


LATENCY = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk(port: int, seconds: float, extra: list[str]) -> Figures:
    command = ["wrk", "-t1", "-c%d" % CONNECTIONS, "-d%gs" % seconds, "--latency", *extra,
               "http://127.0.0.1:%d/" % port]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not end within %.0f s" % (seconds + 30)) from None
    rate, latency = RATE.search(done.stdout), LATENCY.search(done.stdout)
    if done.returncode or not rate or not latency:
        raise BenchError("wrk failed (%d): %s" % (done.returncode, (done.stderr or done.stdout).strip()[-200:]))
    errors = sum(int(n) for n in SOCKET_ERRORS.search(done.stdout).groups()) if "Socket errors" in done.stdout else 0
    non_2xx = NON_2XX.search(done.stdout)
    return Figures(float(rate.group(1)), float(latency.group(1)) * UNITS[latency.group(2)],
                   errors + (int(non_2xx.group(1)) if non_2xx else 0))


@dataclass
class Row:
    target: Target
    runs: dict[str, list[Figures]] = field(default_factory=lambda: {client: [] for client in CLIENTS})
    failure: str = ""

    def median(self, client: str) -> Figures | None:
        runs = self.runs[client]
        if not runs:
            return None
        return Figures(statistics.median(run.rate for run in runs), statistics.median(run.p99 for run in runs),
                       sum(run.errors for run in runs))


def measure(rows: list[Row], rounds: int, seconds: float, logdir: Path) -> list[float]:
    """Start every row's server and warm it up; then, each round, run both clients against every
    row in turn; stop them all. A failure is kept in its row. Returns the load average after each round."""
    servers: dict[int, Server] = {}
    loads = []
    try:
        for row in rows:
            try:
                server = servers[id(row)] = Server(row.target, logdir)
                server.wait_ready(START_DEADLINE)
                wrk(server.port, WARM_UP, [])
            except (BenchError, OSError) as exc:
                row.failure = str(exc)
        for round_number in range(rounds):
            for row in rows:
                if row.failure:
                    continue
                try:
                    for client, extra in CLIENTS.items():
                        row.runs[client].append(wrk(servers[id(row)].port, seconds, extra))
                except (BenchError, OSError) as exc:
                    row.failure = str(exc)
            loads.append(os.getloadavg()[0])
            print("  round %d of %d done (load %.2f)" % (round_number + 1, rounds, loads[-1]), file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    return loads


# -- report -----------------------------------------------------------------------------------

def find(rows: list[Row], name: str, app: str) -> Row | None:
    return next((row for row in rows if row.target.name == name and row.target.app == app), None)


def ratio(ours: Figures | None, reference: Row | None, client: str) -> str:
    theirs = reference.median(client) if reference else None
    if not ours or not theirs or not theirs.rate:
        return "-"
    return "%.2fx" % (ours.rate / theirs.rate)


def figures_text(figures: Figures | None) -> tuple[str, str]:
    if figures is None:
        return "failed", "-"
    rate = "{:,.0f}".format(figures.rate) + (" (%d errors)" % figures.errors if figures.errors else "")
    return rate, "%.1f ms" % (figures.p99 * 1000)


def show_table(title: str, table: str, rows: list[Row]) -> None:
    references = REFERENCES[table]
    print("\n## %s\n" % title)
    if not any(row.target.table == table for row in rows):
        print("(no row ran)")
        return
    head = ["server", "app"]
    for client in CLIENTS:
        head += ["%s req/s" % client, "p99"] + ["vs %s" % column for column, _, _ in references]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        if row.target.table != table:
            continue
        cells = ["**%s**" % row.target.name if row.target.ours else row.target.name, row.target.app]
        for client in CLIENTS:
            ours = row.median(client)
            cells += list(figures_text(ours))
            cells += [ratio(ours, find(rows, name, app), client) for _, name, app in references]
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        if row.target.table == table and row.failure:
            print("\n%s (%s): %s" % (row.target.name, row.target.app, row.failure))


def rate_of(rows: list[Row], name: str, app: str, client: str = "keep-alive") -> float:
    row = find(rows, name, app)
    figures = row.median(client) if row else None
    return figures.rate if figures else 0.0


def _cpu_checks(rows: list[Row], client: str) -> list[tuple[str, bool]]:
    """The CPU-bound figures for one client: --workers 2 against --workers 1 and gunicorn -w 2."""
    checks = []
    gunicorn_two = rate_of(rows, "gunicorn sync -w 2", "CPU", client)
    one = rate_of(rows, "wspbus --workers 1", "CPU", client)
    for name in ("wspbus --workers 2", "wspbus --workers 2 --threads 1"):
        two = rate_of(rows, name, "CPU", client)
        label = name.replace("wspbus ", "")
        if one and two and name == "wspbus --workers 2":
            checks.append(("CPU-bound %s, %s >= 1.6x --workers 1 (%.2fx)" % (client, label, two / one), two >= 1.6 * one))
        if two and gunicorn_two:
            checks.append(("CPU-bound %s, %s >= 0.9x gunicorn -w 2 (%.2fx)" % (client, label, two / gunicorn_two),
                           two >= 0.9 * gunicorn_two))
    return checks


def show_targets(rows: list[Row]) -> None:
    """The figures issue 12 asks for, met or missed (a row that did not run: not measured)."""
    default = find(rows, "wspbus (default: cheroot)", "WSGI")
    default_ka = default.median("keep-alive") if default else None
    checks = []
    if default_ka:
        for name, label in (("CherryPy (engine + cheroot)", "CherryPy"), ("gunicorn gthread", "gunicorn gthread")):
            app = "CherryPy" if label == "CherryPy" else "WSGI"
            theirs = rate_of(rows, name, app)
            if theirs:
                checks.append(("hello keep-alive, default server >= %s's req/s (%.2fx)"
                               % (label, default_ka.rate / theirs), default_ka.rate >= theirs))
        checks.append(("hello keep-alive, default server p99 < 20 ms (%.1f ms)" % (default_ka.p99 * 1000),
                       default_ka.p99 < 0.020))
    for client in CLIENTS:
        checks.extend(_cpu_checks(rows, client))
    for app in ("WSGI", "ASGI"):
        alone = rate_of(rows, "granian alone", app)
        ours = [(rate_of(rows, row.target.name, app), row.target.name) for row in rows
                if row.target.ours and row.target.app == app and row.target.table == "hello"]
        best = max(ours, default=(0.0, ""))
        if alone and best[0]:
            checks.append(("hello %s keep-alive, fastest wspbus (%s) >= 0.8x granian alone (%.2fx)"
                           % (app, best[1], best[0] / alone), best[0] >= 0.8 * alone))
        for ours_name, theirs_name in (("wspbus --server granian", "granian alone"),
                                       ("wspbus --workers 2 --server granian", "granian alone --workers 2")):
            mine, theirs = rate_of(rows, ours_name, app), rate_of(rows, theirs_name, app)
            if mine and theirs:  # like for like: the same number of processes serving
                checks.append(("hello %s keep-alive, %s >= 0.8x %s (%.2fx)" % (app, ours_name, theirs_name,
                                                                               mine / theirs), mine >= 0.8 * theirs))
    print("\n## Targets (issue 12)\n")
    for label, met in checks:
        print("- %s: %s" % (label, "met" if met else "MISSED"))


def versions() -> str:
    found = []
    for dist in ("cheroot", "waitress", "uvicorn", "granian", "CherryPy", "gunicorn", "a2wsgi"):
        try:
            found.append("%s %s" % (dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split()
    return ", ".join(found + ["wrk %s" % wrk_version[1] if len(wrk_version) > 1 else "wrk"])


# -- main -------------------------------------------------------------------------------------

def serve_options() -> set[str]:
    """The options this wspbus's `serve` has (`--workers` once the supervisor mode exists)."""
    done = subprocess.run([sys.executable, "-m", "wspbus", "serve", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    return set(re.findall(r"--[a-z][a-z-]*", done.stdout))


def runnable(targets: list[Target], only: list[str]) -> tuple[list[Target], list[str]]:
    known = serve_options()
    chosen, skipped = [], []
    for target in targets:
        if only and not any(text.lower() in ("%s %s" % (target.name, target.app)).lower() for text in only):
            continue
        missing = [module for module in target.needs if importlib.util.find_spec(module) is None]
        if target.ours:
            missing += ["wspbus serve %s" % arg for arg in target.command if arg.startswith("--") and arg not in known]
        if missing:
            skipped.append("%s (%s): needs %s" % (target.name, target.app, ", ".join(missing)))
        else:
            chosen.append(target)
    return chosen, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, help="seconds per wrk measurement (default 5; 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="measure every row N times, interleaved (median)")
    parser.add_argument("--only", action="append", default=[], help="rows whose name or app contains TEXT")
    parser.add_argument("--quick", action="store_true", help="short measurements (a smoke run)")
    options = parser.parse_args()
    seconds = options.duration or (2.0 if options.quick else 5.0)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 69
    targets, skipped = runnable(HELLO + CPU, options.only)
    rows = [Row(target) for target in targets]
    logdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    load = os.getloadavg()[0]
    began = time.perf_counter()
    loads = measure(rows, options.rounds, seconds, logdir)
    print("\n`python %s` (%.0f s in all)\n\nPython %s, %d CPUs, load average %.2f before the run, %s after each "
          "round; %s; wrk -t1 -c%d, %g s per measurement, median of %d round(s)"
          % (" ".join(sys.argv), time.perf_counter() - began, sys.version.split()[0], os.cpu_count(),
             load, ", ".join("%.2f" % each for each in loads), versions(), CONNECTIONS, seconds, options.rounds))
    for line in skipped:
        print("\nnot run: %s" % line)
    show_table("Hello app: keep-alive and new-connection clients", "hello", rows)
    show_table("CPU-bound app (2 ms of Python per request)", "cpu", rows)
    show_targets(rows)
    if not any(row.failure for row in rows):
        shutil.rmtree(logdir, ignore_errors=True)
    else:
        print("\n(server logs in %s)" % logdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
