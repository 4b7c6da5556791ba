"""Every plugin of wspbus.plugins on CherryPy's own bus (a fresh cherrypy.process.wspbus.Bus).

A plugin written to the seed's bus API works on any bus that keeps it: wspbus extras
(watch_state, declare_channel, graceful_timeout, exit_code, exit_begun, the stdlib log route)
are used only where the bus has them. Each test checks the plugin does its job there.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import DEADLINE, wait_for_path
from wspbus import plugins

cherrypy_wspbus = pytest.importorskip("cherrypy.process.wspbus")

#: A child's preamble: CherryPy's bus, whose log lines are printed.
PRELUDE = """\
import os, sys, threading
from cherrypy.process.wspbus import Bus
engine = Bus()
engine.subscribe('log', lambda msg='', level=20, *more, **named: print('LOG', msg, flush=True))
"""


@pytest.fixture
def engine():
    bus = cherrypy_wspbus.Bus()
    yield bus
    if bus.state is not bus.states.EXITING:
        bus.exit()


def run_child(spawn, body: str, *args: str):
    return spawn(PRELUDE + textwrap.dedent(body), *args)


def test_simple_plugin_binds_to_a_channel_it_declares(engine):
    class Ticker(plugins.SimplePlugin):
        ticks = 0

        def tick(self):
            self.ticks += 1

    engine.listeners.setdefault("tick", set())
    ticker = Ticker(engine)
    ticker.subscribe()
    engine.publish("tick")
    ticker.unsubscribe()
    engine.publish("tick")
    assert ticker.ticks == 1


def test_signal_handler_exits_cherrypys_bus_on_sigterm(spawn):
    child = run_child(spawn, """
        from wspbus.plugins import SignalHandler
        SignalHandler(engine).subscribe()
        engine.start()
        print('ready', flush=True)
        engine.block()
        print('ended', flush=True)
    """)
    child.expect("^ready$")
    child.proc.send_signal(signal.SIGTERM)
    child.expect("^LOG Bus EXITING$")
    child.expect("^ended$")
    assert child.wait() == 0


def test_drainer_drains_then_exits_cherrypys_bus_on_sigterm(spawn):
    child = run_child(spawn, """
        from wspbus.plugins import Drainer
        Drainer(engine, drain_delay=0.2).subscribe()
        engine.subscribe('drain', lambda: print('draining', flush=True))
        engine.start()
        print('ready', flush=True)
        engine.block()
        print('ended', flush=True)
    """)
    child.expect("^ready$")
    child.proc.send_signal(signal.SIGTERM)
    child.expect("^draining$")
    child.expect("^LOG Bus EXITING$")
    child.expect("^ended$")
    assert child.wait() == 0


def test_child_reaper_reaps_an_orphan_on_cherrypys_bus(spawn):
    child = run_child(spawn, """
        import subprocess, time
        from wspbus.plugins import ChildReaper
        reaper = ChildReaper(engine, always=True)  # a child subreaper: orphans come to us
        reaper.subscribe()
        engine.start()
        subprocess.run(['sh', '-c', 'sleep 0.1 & exit 0'], check=True)  # leaves an orphan
        deadline = time.monotonic() + 10
        while not reaper.reaped and time.monotonic() < deadline:  # the child's own test-side wait
            time.sleep(0.01)
        print('reaped', reaper.reaped, flush=True)
        engine.exit()
    """)
    child.expect("^reaped 1$")
    assert child.wait() == 0


@pytest.fixture
def subreaper():
    """The test process adopts the daemon (it becomes our child), so it can be ended and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        pytest.skip("cannot become a child subreaper")
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # already gone and reaped
    libc.prctl(36, 0, 0, 0, 0)


def test_daemonizer_and_pidfile_the_launcher_exits_once_cherrypys_bus_started(spawn, tmp_path, subreaper):
    """The launcher's report comes from the bus's state: on CherryPy's bus, its 'Bus STARTED' line."""
    pidfile = tmp_path / "site.pid"
    child = run_child(spawn, """
        from wspbus.plugins import Daemonizer, PIDFile
        Daemonizer(engine).subscribe()
        PIDFile(engine, sys.argv[1]).subscribe()
        engine.start()
        engine.block()
    """, str(pidfile))
    assert child.wait() == 0, child.output()  # the launcher: its daemon reached STARTED
    wait_for_path(pidfile)
    pid = int(pidfile.read_text())
    subreaper.append(pid)
    os.kill(pid, 0)  # the daemon runs
    assert pid != child.pid


def test_drop_privileges_sets_the_umask_on_cherrypys_bus(spawn):
    child = run_child(spawn, """
        from wspbus.plugins import DropPrivileges
        DropPrivileges(engine, umask=0o027).subscribe()
        os.umask(0o022)
        engine.start()
        print('umask', oct(os.umask(0o022)), flush=True)
        engine.exit()
    """)
    child.expect("^umask 0o27$")
    assert child.wait() == 0


def test_pidfile_is_written_at_start_and_removed_at_exit(engine, tmp_path):
    pidfile = tmp_path / "site.pid"
    plugins.PIDFile(engine, str(pidfile)).subscribe()
    engine.start()
    assert int(pidfile.read_text()) == os.getpid()
    engine.exit()
    assert not pidfile.exists()


def test_background_task_and_perpetual_timer_repeat(engine):
    for kind in (plugins.BackgroundTask, plugins.PerpetualTimer):
        calls = threading.Semaphore(0)
        task = kind(0.01, calls.release, bus=engine)
        task.start()
        try:
            assert all(calls.acquire(timeout=DEADLINE) for _ in range(3))
        finally:
            task.cancel()
            task.join(DEADLINE)
        assert not task.is_alive()


def test_monitor_runs_while_started_only(engine):
    calls = threading.Semaphore(0)
    monitor = plugins.Monitor(engine, calls.release, frequency=0.01)
    monitor.subscribe()
    engine.start()
    assert all(calls.acquire(timeout=DEADLINE) for _ in range(3))
    engine.stop()
    assert monitor.thread is None or not monitor.thread.is_alive()


def test_autoreloader_restarts_cherrypys_bus_when_a_file_changes(engine, tmp_path, monkeypatch):
    from wspbus.plugins.reload import RELOAD_SINCE_ENV

    # The restart leaves the time of the save for the re-executed process; this one goes on.
    monkeypatch.setenv(RELOAD_SINCE_ENV, "")
    watched = tmp_path / "settings.cfg"
    watched.write_text("debug = false\n")
    reloader = plugins.Autoreloader(engine, frequency=0.05, match=r"^$", backend="stat")
    reloader.files.add(str(watched))
    reloader.subscribe()
    exiting = threading.Event()
    engine.subscribe("exit", exiting.set)
    engine.start()
    deadline = time.monotonic() + DEADLINE
    later = time.time()
    while not exiting.wait(0.1):  # each save is a change, whenever the reloader took its first look
        assert time.monotonic() < deadline, "no restart after the file changed"
        later += 10
        os.utime(watched, (later, later))
    assert engine.execv is True
    engine.execv = False  # the restart is the test's outcome: nobody is to re-execute pytest


def test_thread_manager_publishes_start_and_stop_thread(engine):
    seen = []
    manager = plugins.ThreadManager(engine)
    manager.subscribe()
    engine.subscribe("start_thread", lambda number: seen.append(("start", number)))
    engine.subscribe("stop_thread", lambda number: seen.append(("stop", number)))
    engine.start()
    worker = threading.Thread(target=engine.publish, args=("acquire_thread",))
    worker.start()
    worker.join(DEADLINE)
    engine.stop()
    assert seen == [("start", 1), ("stop", 1)]


def test_log_router_writes_cherrypys_bus_messages_to_its_file(engine, tmp_path):
    error_log = tmp_path / "error.log"
    router = plugins.LogRouter(engine, error_log=str(error_log))
    router.subscribe()
    try:
        engine.start()
        engine.log("hello from the engine", level=30)
    finally:
        router.unsubscribe()
    text = error_log.read_text()
    assert "INFO Bus STARTED" in text and "WARNING hello from the engine" in text


def test_systemd_notifier_says_ready_once_cherrypys_bus_started(engine, monkeypatch, tmp_path):
    path = "/tmp/wspbus-notify-%d-%d" % (os.getpid(), threading.get_ident())
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        notifier = plugins.SystemdNotifier(engine)
        notifier.subscribe()
        engine.start()
        receiver.settimeout(DEADLINE)
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(receiver.recv(4096).decode())
        notifier.unsubscribe()
    finally:
        receiver.close()
        os.unlink(path)
    assert "STATUS=STARTED" in messages[-1]


def test_health_answers_from_cherrypys_bus_states(engine):
    health = plugins.Health(engine)
    health.subscribe()
    assert health.ready() == (False, "stopped")
    engine.start()
    assert health.live() == (True, "started") and health.ready() == (True, "ready")
    engine.subscribe("health", lambda: False)
    assert health.live() == (False, "a health check failed")


def test_status_file_follows_cherrypys_bus(engine, tmp_path):
    pidfile = tmp_path / "site.pid"
    deployment = SimpleNamespace(urls=lambda: ["http://127.0.0.1:8080"],
                                 site=SimpleNamespace(describe=lambda: ["/ -> app"]),
                                 config=SimpleNamespace(reload=False))
    status = plugins.StatusFile(engine, str(pidfile), deployment)
    plugins.PIDFile(engine, str(pidfile)).subscribe()
    status.subscribe()
    engine.start()
    record = json.loads(Path(status.path).read_text())
    assert record["state"] == "STARTED" and record["binds"] == ["http://127.0.0.1:8080"]
    engine.exit()
    assert not Path(status.path).exists()
