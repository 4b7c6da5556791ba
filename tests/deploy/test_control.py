"""Controlling a site from outside: the pid file read by the commands.

The end-to-end commands against a real `wspbus serve` are in test_cli.py; these check the parts.
The status file the site keeps is tested with its plugin, in tests/plugins/test_status.py.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from wspbus.deploy import control
from wspbus.deploy.control import ControlError


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
