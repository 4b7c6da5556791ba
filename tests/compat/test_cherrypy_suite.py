"""The contract, proven by its real client: CherryPy's own test suite on wspbus.

The engine-related files of the installed ``cherrypy.test`` package run twice in subprocesses:
stock, and with ``cherrypy.process.wspbus``'s bus API swapped for wspbus's (``cherrypy_swap/
sitecustomize.py``: ``cherrypy.engine`` becomes ``wspbus.bus``; nothing else changes). Every test
that passes stock must pass swapped, in about the same time.

Each run gets its own copy of the installed ``cherrypy`` package, because CherryPy's tests write
next to themselves (logs, sessions, a config for cherryd, a touched module for autoreload).
Where the machine allows it (root: ``unshare``), each run also gets its own network namespace,
because CherryPy's harness binds the fixed port 54583, and its own PID namespace, so that nothing
it started (daemonized cherryd included) outlives it; the two runs then go side by side.
Otherwise they run one after the other in process groups.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import wspbus

HERE = Path(__file__).resolve().parent
SWAP_DIR = HERE / "cherrypy_swap"
NETNS_LAUNCH = HERE / "netns_launch.py"
WSPBUS_SRC = Path(wspbus.__file__).resolve().parents[1]

#: The files of cherrypy.test that exercise the engine, and why each is here. They run in
#: alphabetical order, as in CherryPy's own runs: some leave the engine's config behind (after
#: test_wsgi_unix_socket, test_native's start fails and CherryPy's bus ends the process).
ENGINE_FILES = dict(sorted({
    "test_bus.py": "the Bus API itself, on a fresh Bus()",
    "test_states.py": "start/stop/restart/exit of the engine in-process and in cherryd, signals, daemonize, autoreload",
    "test_core.py": "requests served between engine.start() and engine.exit() per class",
    "test_conn.py": "keep-alive and pipelining across the engine's server; exit with connections open",
    "test_logging.py": "the engine's 'log' channel routed to CherryPy's loggers",
    "test_session.py": "session locks and the cleanup Monitor on the engine",
    "test_misc_tools.py": "tools bound to the engine's before/after_request channels",
    "test_mime.py": "request bodies through the engine-run server",
    "test_plugins.py": "CherryPy's plugins (Autoreloader) on the engine",
    "test_config.py": "'engine.*' config keys set attributes of the bus and its plugins",
    "test_config_server.py": "server config (sockets, sizes) applied when the engine starts the server",
    "test_wsgi_unix_socket.py": "the ServerAdapter binding and waiting on a UNIX socket",
    "test_native.py": "engine.start()/stop() around the native server adapter",
}.items()))
CHERRYPY_MIN_VERSION = (18, 10)
#: Per-test bound inside a run (pytest-timeout); a hang shows as that test failing, not as a stall.
TEST_TIMEOUT = 60
#: Bound on one whole run.
RUN_TIMEOUT = 420
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


@dataclass
class Outcome:
    passed: bool
    message: str = ""


@dataclass
class Run:
    """One run of the suite: each test's outcome, the wall time, and where its output is."""

    name: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0
    log: Path | None = None

    def passed(self, file: str | None = None) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome.passed
                and (file is None or test.startswith(file.removesuffix(".py") + "."))}


def installed_cherrypy() -> Path:
    """The installed cherrypy package's directory, found without importing it here."""
    version = tuple(int(part) for part in importlib.metadata.version("cherrypy").split(".")[:2])
    assert version >= CHERRYPY_MIN_VERSION, "CherryPy >= 18.10 is needed (the test extra)"
    spec = importlib.util.find_spec("cherrypy")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0])


def isolation_works() -> bool:
    """True if new network and PID namespaces can be made here (root with util-linux)."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run([*UNSHARE, sys.executable, str(NETNS_LAUNCH), "true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def prepare(workdir: Path, cherrypy_dir: Path) -> Path:
    """A private copy of the installed cherrypy package (its tests write next to themselves)."""
    site = workdir / "site"
    shutil.copytree(cherrypy_dir, site / "cherrypy", symlinks=True,
                    ignore=shutil.ignore_patterns("*.log", "test.conf"))
    (workdir / "pytest.ini").write_text("[pytest]\ntimeout = %d\njunit_family = xunit2\n" % TEST_TIMEOUT)
    return site


def command(workdir: Path, site: Path, isolated: bool) -> list[str]:
    tests = [str(site / "cherrypy" / "test" / name) for name in ENGINE_FILES]
    pytest_args = [sys.executable, "-m", "pytest", "-c", str(workdir / "pytest.ini"), "--rootdir", str(site),
                   "-p", "no:cacheprovider", "-p", "no:wspbus", "-q", "-rfE",
                   "--junitxml", str(workdir / "junit.xml"), *tests]
    if isolated:
        return [*UNSHARE, sys.executable, str(NETNS_LAUNCH), *pytest_args]
    return pytest_args


def environment(site: Path, swap: bool) -> dict[str, str]:
    path = [str(site), str(WSPBUS_SRC)]
    if swap:
        path.insert(0, str(SWAP_DIR))
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


class Runner:
    """Starts one run of the suite and collects it; the run is killed whole at its deadline."""

    def __init__(self, name: str, workdir: Path, cherrypy_dir: Path, isolated: bool) -> None:
        workdir.mkdir()
        self.run = Run(name, log=workdir / "output.txt")
        self.workdir = workdir
        self.site = prepare(workdir, cherrypy_dir)
        self.args = command(workdir, self.site, isolated)
        self.env = environment(self.site, swap=name == "swapped")
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        with open(self.run.log, "wb") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()

    def finish(self, deadline: float) -> Run:
        assert self.proc is not None
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("the %s run did not end within %d s; output: %s" % (self.run.name, RUN_TIMEOUT, self.run.log))
        finally:
            self.kill()
        self.run.seconds = time.monotonic() - self.started
        self.run.outcomes = read_junit(self.workdir / "junit.xml", self.run.log)
        return self.run

    def kill(self) -> None:
        """Kill the run's process group (with unshare, its whole PID namespace goes with it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def read_junit(path: Path, log: Path | None) -> dict[str, Outcome]:
    """test id ('test_file.Class.name') -> outcome, from pytest's junit XML."""
    assert path.exists(), "the run wrote no junit XML; output:\n%s" % tail(log)
    outcomes = {}
    for case in ElementTree.parse(path).iter("testcase"):
        classname = case.get("classname", "").removeprefix("cherrypy.test.")
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        message = "; ".join("%s: %s" % (child.tag, (child.get("message") or "").splitlines()[0][:200]
                                         if child.get("message") else "") for child in problems)
        outcomes["%s.%s" % (classname, case.get("name"))] = Outcome(not problems, message)
    return outcomes


def tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return "(no output)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_both(tmp_path: Path) -> tuple[Run, Run]:
    """Run stock and swapped: side by side when isolated, else one after the other."""
    cherrypy_dir = installed_cherrypy()
    isolated = isolation_works()
    runners = [Runner(name, tmp_path / name, cherrypy_dir, isolated) for name in ("stock", "swapped")]
    try:
        if isolated:
            for runner in runners:
                runner.start()
            deadline = time.monotonic() + RUN_TIMEOUT
            runs = [runner.finish(deadline) for runner in runners]
        else:
            runs = []
            for runner in runners:
                runner.start()
                runs.append(runner.finish(time.monotonic() + RUN_TIMEOUT))
    finally:
        for runner in runners:
            runner.kill()
    return runs[0], runs[1]


def swap_probe(tmp_path: Path, swap: bool) -> str:
    """What cherrypy.engine is in a process with the run's environment."""
    site = tmp_path / "probe"
    code = "import cherrypy, wspbus; print(type(cherrypy.engine) is wspbus.Bus, cherrypy.engine is wspbus.bus)"
    result = subprocess.run([sys.executable, "-c", code], env=environment(site, swap), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def test_the_swap_makes_cherrypy_engine_the_wspbus_bus(tmp_path):
    """Without the swap the engine is CherryPy's own Bus; with it, it is wspbus.bus itself."""
    assert swap_probe(tmp_path, swap=False) == "False False"
    assert swap_probe(tmp_path, swap=True) == "True True"


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT * 2 + 60)
def test_cherrypy_suite_passes_on_wspbus_what_it_passes_stock(tmp_path, record_property):
    stock, swapped = run_both(tmp_path)
    ratio = swapped.seconds / stock.seconds
    summary = ("stock: %d/%d passed in %.1f s; swapped: %d/%d passed in %.1f s; time ratio %.2f"
               % (len(stock.passed()), len(stock.outcomes), stock.seconds,
                  len(swapped.passed()), len(swapped.outcomes), swapped.seconds, ratio))
    print(summary)
    record_property("cherrypy_suite", summary)

    for name in ENGINE_FILES:  # the harness really ran every file
        assert stock.passed(name), "no test of %s passed stock; output:\n%s" % (name, tail(stock.log))
    lost = sorted(stock.passed() - swapped.passed())
    assert not lost, "%s\n%d tests pass stock but not swapped:\n%s\nswapped output: %s" % (
        summary, len(lost), "\n".join("  %s  %s" % (test, swapped.outcomes.get(test, Outcome(False, "not run")).message)
                                      for test in lost), swapped.log)
    assert len(swapped.passed("test_bus.py")) == 12, summary
    assert swapped.seconds <= stock.seconds * 1.5 + 10, summary
