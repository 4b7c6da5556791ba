"""wspbus.attach() under a real Apache with Debian's mod_wsgi (the seeds' scenario 2).

Each test writes its own Apache configuration (a port of its own on 127.0.0.1, its own ServerRoot,
PID file and error log) and runs ``apache2 -DFOREGROUND`` as a child whose whole process group is
killed at the end. The site's WSGI script attaches the process's bus and subscribes listeners that
append one JSON line per event, with the pid, to a file. The test waits for Apache's processes to
end (an event: the process is gone), then reads what each of them wrote.

Debian's mod_wsgi embeds Debian's own /usr/bin/python3, not the interpreter running the tests:
the site finds wspbus through ``WSGIPythonPath`` / ``python-path`` pointing at a copy of the package
under test (the checkout may sit where the Apache user cannot read), importable there because the
bus core needs only the stdlib.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import DEADLINE, Child, http_get

import wspbus

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
PACKAGE_UNDER_TEST = Path(wspbus.__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    not (os.access(APACHE, os.X_OK) and (MODULES / "mod_wsgi.so").exists()),
    reason="needs Apache with mod_wsgi (Debian packages apache2 and libapache2-mod-wsgi-py3)")

DAEMON_PROCESSES = 2  # more than one, so "once per process" is checked per process

# Lines in the error log that mean something went wrong: wspbus tried to take a signal (mod_wsgi
# refuses and says so), a process had to be killed because it did not exit, the app failed.
ALARMS = ("Callback registration for signal", "still did not exit", "Aborting process",
          "timer expired", "Traceback", "Exception occurred")

SITE = '''\
"""The site under test: the process's bus attached as a hosted site would, every event one line."""

import atexit
import json
import os
import signal
import threading
import time

EVENTS = {events!r}
SIGNALS = [number for number in signal.valid_signals() if number not in (signal.SIGKILL, signal.SIGSTOP)]


def record(event, **facts):
    line = json.dumps(dict(event=event, pid=os.getpid(), **facts)) + "\\n"
    with open(EVENTS, "a") as events:  # one append per line: processes share the file
        events.write(line)


def handlers():
    return {{int(number): repr(signal.getsignal(number)) for number in SIGNALS}}


def handlers_changed():
    now = handlers()
    return sorted(number for number in now if now[number] != HANDLERS_BEFORE[number])


HANDLERS_BEFORE = handlers()
THREADS_BEFORE = set(threading.enumerate())

import wspbus  # noqa: E402  (after the baseline above, so anything it installs shows)

stopping = threading.Event()
site_worker = threading.Thread(target=stopping.wait, name="site worker")  # non-daemon, as a pool's


def on_start():
    site_worker.start()
    record("start", ppid=os.getppid(), sid=os.getsid(0))


def on_stop():
    stopping.set()
    if site_worker.ident is not None:
        site_worker.join()
    record("stop")


def on_exit():
    record("exit")


wspbus.bus.subscribe("start", on_start)
wspbus.bus.subscribe("stop", on_stop)
wspbus.bus.subscribe("exit", on_exit)


def hello(environ, start_response):
    body = json.dumps({{"pid": os.getpid(), "state": wspbus.bus.state.name}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = wspbus.attach(hello)
record("attached", handlers_changed=handlers_changed())


def started_threads():
    current = threading.current_thread()
    return [thread for thread in set(threading.enumerate()) - THREADS_BEFORE
            if thread.is_alive() and thread is not current and not isinstance(thread, threading._DummyThread)]


def final(*event, **details):
    """As late as the site can look: once the bus has exited, no thread it started is left."""
    exited = wspbus.bus.state is wspbus.states.EXITING
    if exited:
        deadline = time.monotonic() + 2  # a thread that is merely ending is given time to end
        for thread in started_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
    record("final", via="mod_wsgi" if event else "atexit", state=wspbus.bus.state.name,
           threads=sorted(thread.name for thread in started_threads()), handlers_changed=handlers_changed())


atexit.register(final)  # after Python joined the threads, when the interpreter is destroyed
import mod_wsgi  # noqa: E402

mod_wsgi.subscribe_shutdown(final)  # after wspbus's own subscription, if it has one
'''


@dataclass
class Apache:
    """One Apache instance of a test: its files, its port and its foreground main process."""

    root: Path
    port: int
    child: Child

    @property
    def conf(self) -> Path:
        return self.root / "httpd.conf"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "httpd.pid"

    def ctl(self, action: str) -> None:
        """``apache2 -f CONF -k ACTION``: signal the running server as an operator would."""
        done = subprocess.run([APACHE, "-f", str(self.conf), "-k", action], capture_output=True, text=True,
                              timeout=DEADLINE)
        assert done.returncode == 0, done.stdout + done.stderr

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.events_file.read_text().splitlines()]

    def diagnostics(self) -> str:
        texts = [path.read_text() if path.exists() else "(none)" for path in (self.events_file, self.error_log)]
        return "events:\n%s\nerror log:\n%s" % tuple(texts)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def configuration(root: Path, port: int, mode: str, destroy_interpreter: str) -> str:
    """An Apache configuration of its own: nothing from /etc/apache2 is read."""
    script = root / "site.wsgi"
    python_path = root / "python"
    common = f"""\
ServerRoot {root}
DefaultRuntimeDir {root}
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
LogLevel info
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
User nobody
Group nogroup
KeepAlive Off
Timeout 10
GracefulShutdownTimeout 10
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule wsgi_module {MODULES}/mod_wsgi.so
StartServers 1
ServerLimit 4
ThreadsPerChild 4
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 8
WSGISocketPrefix {root}/wsgi
WSGIDestroyInterpreter {destroy_interpreter}
<Directory {root}>
    Require all granted
</Directory>
"""
    if mode == "embedded":  # the script is loaded in the Apache child that gets the first request
        return common + f"""\
WSGIPythonPath {python_path}
WSGIScriptAlias / {script} application-group=%{{GLOBAL}}
"""
    # daemon mode: both groups named, so each daemon process loads the script when it starts
    return common + f"""\
WSGIDaemonProcess site processes={DAEMON_PROCESSES} threads=2 python-path={python_path}
WSGIScriptAlias / {script} process-group=site application-group=%{{GLOBAL}}
"""


def start_apache(spawn, root: Path, mode: str, destroy_interpreter: str) -> Apache:
    port = free_port()
    events = root / "events.jsonl"
    events.touch()
    events.chmod(0o666)  # appended to by the Apache children, which run as nobody
    shutil.copytree(PACKAGE_UNDER_TEST, root / "python" / "wspbus", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "site.wsgi").write_text(SITE.format(events=str(events)))
    (root / "httpd.conf").write_text(configuration(root, port, mode, destroy_interpreter))
    # PYTHONPATH emptied: the site must find wspbus through mod_wsgi's own configuration.
    child = spawn([APACHE, "-f", str(root / "httpd.conf"), "-DFOREGROUND"], env={"PYTHONPATH": ""})
    return Apache(root, port, child)


@pytest.fixture
def run_apache(spawn) -> Iterator[Callable[[str, str], Apache]]:
    """Start Apache with the site in ``mode`` ('embedded' or 'daemon'); at teardown kill all of it
    and remove its directory (one the Apache user, nobody, can read, unlike pytest's tmp_path)."""
    started: list[Apache] = []

    def run(mode: str, destroy_interpreter: str = "On") -> Apache:
        root = Path(tempfile.mkdtemp(prefix="wspbus-mod-wsgi-"))
        root.chmod(0o755)
        started.append(start_apache(spawn, root, mode, destroy_interpreter))
        return started[-1]

    yield run
    for apache in started:
        apache.child.kill()
        kill_escaped(apache)
        shutil.rmtree(apache.root, ignore_errors=True)


def answer(apache: Apache) -> dict:
    """GET / once the port answers (Apache may still be starting): the JSON the site returned."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            status, body = http_get("127.0.0.1", apache.port)
            break
        except ConnectionError:
            assert apache.child.proc.poll() is None, "apache2 ended:\n" + apache.child.output()
            assert time.monotonic() < deadline, "port %d never answered\n%s" % (apache.port, apache.diagnostics())
            time.sleep(0.02)
    assert status == 200, body
    return json.loads(body)


def wait_for(predicate, what: str, apache: Apache, timeout: float = DEADLINE):
    """Test side only: check ``predicate`` with a short backoff until it holds or the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not (result := predicate()):
        assert time.monotonic() < deadline, "%s within %gs\n%s" % (what, timeout, apache.diagnostics())
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return result


def started_pids(apache: Apache) -> set[int]:
    return {event["pid"] for event in apache.events() if event["event"] == "start"}


def new_processes(apache: Apache, count: int, besides: AbstractSet[int] = frozenset()) -> set[int]:
    """Wait until ``count`` processes (other than ``besides``) have started their bus: their pids."""
    return wait_for(lambda: len(started_pids(apache) - besides) == count and started_pids(apache) - besides,
                    "%d new processes started" % count, apache)


def stop_apache(apache: Apache, action: str) -> None:
    """Stop Apache as an operator would and wait until every one of its processes has ended."""
    apache.ctl(action)
    assert apache.child.wait(DEADLINE) == 0
    wait_for(lambda: not group_members(apache.child.pid), "every Apache process ended", apache)
    assert not apache.pid_file.exists()


def running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 in a container may never reap an orphan)."""
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """The running processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def kill_escaped(apache: Apache) -> None:
    """Kill any Apache process of this test that left the process group (a daemonized one would)."""
    pids = started_pids(apache) if apache.events_file.exists() else set()
    for pid in pids:
        try:
            if os.readlink("/proc/%d/exe" % pid) == os.path.realpath(APACHE):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass  # already gone


def check_each_process(apache: Apache, pids: set[int]) -> None:
    """Every process that started its bus stopped and exited it exactly once, with no signal handler
    installed, without daemonizing, and with no thread left running."""
    by_pid: dict[int, list[dict]] = {}
    for event in apache.events():
        by_pid.setdefault(event["pid"], []).append(event)
    report = apache.diagnostics()
    for pid in pids:
        events = by_pid.get(pid, [])
        lifecycle = [event["event"] for event in events if event["event"] in ("start", "stop", "exit")]
        assert lifecycle == ["start", "stop", "exit"], "process %d: %s\n%s" % (pid, lifecycle, report)
        start = next(event for event in events if event["event"] == "start")
        assert (start["ppid"], start["sid"]) == (apache.child.pid, apache.child.pid), \
            "process %d left Apache's session or parent: %s" % (pid, start)
        assert all(event["handlers_changed"] == [] for event in events if "handlers_changed" in event), report
        finals = {event["via"]: event for event in events if event["event"] == "final"}
        # The bus had exited by the end of mod_wsgi's own shutdown event, whether or not the
        # interpreter is then finalized (atexit runs only with WSGIDestroyInterpreter On).
        assert finals.get("mod_wsgi", {}).get("state") == "EXITING", "process %d: %s\n%s" % (pid, finals, report)
        assert all(event["threads"] == [] for event in finals.values()), report


def check_error_log(apache: Apache) -> None:
    alarms = [line for line in apache.error_log.read_text().splitlines() if any(alarm in line for alarm in ALARMS)]
    assert alarms == [], "\n".join(alarms)


@pytest.mark.parametrize("stop_action", ["graceful-stop", "stop"])
# With WSGIDestroyInterpreter Off the interpreter is never finalized (no atexit): on main before
# issue 10, 'stop' and 'exit' never ran there; attach() now follows mod_wsgi's own shutdown event.
@pytest.mark.parametrize("destroy_interpreter", ["On", "Off"])
@pytest.mark.parametrize("mode", ["embedded", "daemon"])
def test_every_apache_process_stops_and_exits_its_bus_once(run_apache, mode, destroy_interpreter, stop_action):
    apache = run_apache(mode, destroy_interpreter)
    expected = 1 if mode == "embedded" else DAEMON_PROCESSES
    first = answer(apache)
    assert first["state"] == "STARTED"
    generation_1 = new_processes(apache, expected)
    assert first["pid"] in generation_1

    apache.ctl("graceful")
    wait_for(lambda: not any(running(pid) for pid in generation_1), "the first generation ended", apache)
    second = answer(apache)
    assert second["pid"] not in generation_1, "a process of the first generation still serves"
    generation_2 = new_processes(apache, expected, besides=generation_1)
    check_each_process(apache, generation_1)

    stop_apache(apache, stop_action)
    check_each_process(apache, generation_2)
    assert {event["pid"] for event in apache.events()} == generation_1 | generation_2
    check_error_log(apache)


@pytest.mark.parametrize("destroy_interpreter", ["On", "Off"])
def test_a_touched_script_replaces_a_daemon_process_and_its_bus(run_apache, destroy_interpreter):
    apache = run_apache("daemon", destroy_interpreter)
    answer(apache)
    generation_1 = new_processes(apache, DAEMON_PROCESSES)
    later = time.time() + 10  # unmistakably newer than what mod_wsgi loaded, whatever the clock's grain
    os.utime(apache.root / "site.wsgi", (later, later))

    reloaded = answer(apache)  # the daemon process that takes it sees the change and is replaced
    assert reloaded["pid"] not in generation_1
    replaced = wait_for(lambda: {pid for pid in generation_1 if not running(pid)}, "a replaced process ended", apache)
    check_each_process(apache, replaced)

    stop_apache(apache, "stop")
    check_each_process(apache, started_pids(apache))
    check_error_log(apache)
