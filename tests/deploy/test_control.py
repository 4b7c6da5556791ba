"""Controlling a site from outside: the status file kept by the site, and the pid file read by the commands.

The end-to-end commands against a real `wspbus serve` are in test_cli.py; these check the parts.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

import wspbus
from wspbus.deploy import control
from wspbus.deploy.config import SiteConfig
from wspbus.deploy.control import ControlError, StatusFile, status_path
from wspbus.deploy.launch import Deployment
from wspbus.plugins.pidfile import PIDFile
from wspbus.deploy.site import Site, mount_app


def read(path):
    with open(path) as file:
        return json.load(file)


def hello(environ, start_response):
    start_response("200 OK", [])
    return [b"hi"]


def test_status_file_sits_beside_the_pid_file():
    assert status_path("/run/site.pid") == "/run/site.status.json"
    assert status_path("/run/pidfile") == "/run/pidfile.status.json"


def test_the_status_file_follows_the_state_and_goes_away_on_exit(tmp_path, monkeypatch):
    monkeypatch.delenv(control.SINCE_ENV, raising=False)
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig(reload=True))
    pidfile = str(tmp_path / "site.pid")
    status = StatusFile(bus, pidfile, deployment)
    status.subscribe()
    seen = []
    bus.watch_state(lambda state: seen.append(read(status.path)["state"] if os.path.exists(status.path) else None))
    bus.subscribe("start", lambda: seen.append(read(status.path)["state"]), priority=72)
    bus.start()
    record = read(status.path)
    assert record["state"] == "STARTED" and record["pid"] == os.getpid()
    assert record["mounts"] == ["/ -> test_control:hello (wsgi)"] and record["reload"] is True
    assert record["since"] <= record["started"] <= record["updated"]
    assert seen == [None, "STARTING", "STARTED"]  # nothing before the pid file is claimed (priority 70)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]  # written by rename
    bus.exit()
    assert seen == [None, "STARTING", "STARTED", "STOPPING", "STOPPED", None]
    status.unsubscribe()


def site_with_status_file(pidfile):
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig())
    PIDFile(bus, pidfile).subscribe()
    status = StatusFile(bus, pidfile, deployment)
    status.subscribe()
    return bus, status


def test_a_second_instance_refused_by_the_pid_file_leaves_the_status_file_alone(tmp_path):
    pidfile = str(tmp_path / "site.pid")
    running, status = site_with_status_file(pidfile)
    running.start()
    before = read(status.path)
    second, _ = site_with_status_file(pidfile)  # another lock on the same file: refused like a second process
    with pytest.raises(wspbus.ChannelFailures, match="another instance is already running"):
        second.start()
    assert read(status.path) == before  # neither rewritten (STARTING, STOPPED) nor removed
    running.exit()
    assert not os.path.exists(status.path)


def test_a_status_file_recording_another_pid_is_not_removed(tmp_path):
    bus = wspbus.Bus()
    status = StatusFile(bus, str(tmp_path / "site.pid"), Deployment(bus, Site([mount_app("/", hello)]), SiteConfig()))
    status.subscribe()

    def taken_over(state):  # runs after the status file's own watcher wrote STOPPED
        if state.name == "STOPPED":
            with open(status.path, "w") as file:
                json.dump({"state": "STARTED", "pid": os.getppid()}, file)

    bus.watch_state(taken_over)
    bus.start()
    bus.exit()
    assert read(status.path)["pid"] == os.getppid()


def test_a_restart_is_recorded_and_the_first_start_time_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(control.SINCE_ENV, raising=False)
    bus = wspbus.Bus()
    deployment = Deployment(bus, Site([mount_app("/", hello)]), SiteConfig())
    status = StatusFile(bus, str(tmp_path / "site.pid"), deployment)
    status.subscribe()
    bus.start()
    first = read(status.path)["since"]
    bus.execv = True  # what restart() sets; block() would then re-execute
    bus.exit()
    assert read(status.path)["state"] == "RESTARTING"
    assert os.environ[control.SINCE_ENV] == "%d:%r" % (os.getpid(), first)  # what the new process reads
    assert control._first_start() == first


def test_commands_refuse_a_missing_a_stale_or_a_garbled_pid_file(tmp_path, spawn):
    pidfile = tmp_path / "site.pid"
    with pytest.raises(ControlError, match="no such pid file") as info:
        control.read_pid(str(pidfile))
    assert info.value.status == control.NOT_RUNNING
    child = spawn([sys.executable, "-c", "pass"])
    child.wait()
    pidfile.write_text("%d\n" % child.pid)
    with pytest.raises(ControlError, match="stale pid file: process %d is not running" % child.pid) as info:
        control.send(str(pidfile), "reload")
    assert info.value.status == control.NOT_RUNNING
    pidfile.write_text("twelve")
    with pytest.raises(ControlError, match="expected a process id in the pid file, found 'twelve'"):
        control.read_status(str(pidfile))


LOCKED_PID_FILE = """
    import fcntl, os, signal, sys, threading
    pidfile = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
    fcntl.flock(pidfile, fcntl.LOCK_EX)  # what PIDFile does for the life of the site
    os.write(pidfile, b"%d\\n" % os.getpid())
"""


def test_a_pid_file_naming_a_live_process_but_not_locked_is_stale(tmp_path):
    pidfile = tmp_path / "site.pid"
    pidfile.write_text("%d\n" % os.getpid())  # alive, but nobody holds the lock: the pid was reused
    with pytest.raises(ControlError, match="stale pid file: process %d is not running" % os.getpid()):
        control.read_pid(str(pidfile))


@pytest.mark.parametrize("timeout", [10, float("inf")])  # inf (wspbus stop --timeout inf): no limit
def test_stop_signals_and_waits_for_the_exit(tmp_path, spawn, timeout):
    pidfile = tmp_path / "site.pid"
    child = spawn(LOCKED_PID_FILE + """
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *args: done.set())
    print("ready", flush=True)
    done.wait()
    print("got SIGTERM", flush=True)
    """, str(pidfile))
    child.expect("ready")
    assert control.read_pid(str(pidfile)) == child.pid
    assert control.stop(str(pidfile), timeout=timeout) == child.pid
    assert child.proc.poll() is not None or child.wait(1) == 0  # gone when stop() returned
    child.expect("got SIGTERM")


def test_stop_reports_a_process_that_does_not_exit(tmp_path, spawn):
    pidfile = tmp_path / "site.pid"
    child = spawn(LOCKED_PID_FILE + """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    threading.Event().wait()
    """, str(pidfile))
    child.expect("ready")
    with pytest.raises(ControlError, match="still running 0.2 s after SIGTERM"):
        control.stop(str(pidfile), timeout=0.2)
    child.send(signal.SIGKILL)


def test_status_lines_for_a_person():
    record = {"state": "STARTED", "pid": 42, "since": 1000.0, "started": 3000.0,
              "binds": ["http://127.0.0.1:8080"], "mounts": ["/ -> app:app (wsgi)"], "reload": True}
    assert control.describe_status(record, now=1000.0 + 3 * 3600 + 62) == [
        "state: STARTED", "pid: 42", "uptime: 3h 01m 02s (last reload 2h 27m 42s ago)",
        "bind: http://127.0.0.1:8080", "mounted: / -> app:app (wsgi)", "autoreload: on"]
