"""Daemonizer with real forks: the launcher's exit status tells the daemon's start outcome.

The test process makes itself a child subreaper for the length of a test, so the orphaned
daemon becomes its child: it can wait for the daemon's exit on a pidfd (with a deadline) and
reap it, and no daemon or zombie is left behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import signal
import sys

import pytest

from support import DEADLINE, wait_for_path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses prctl and pidfds")

PR_SET_CHILD_SUBREAPER = 36

CHILD = """\
    import fcntl, json, os, sys, threading
    from wspbus import Bus
    from wspbus.plugins.daemon import Daemonizer
    from wspbus.plugins.signals import SignalHandler

    work, mode = sys.argv[1], sys.argv[2]
    incarnation = int(os.environ.get("INCARNATION", "0"))
    os.environ["INCARNATION"] = str(incarnation + 1)
    bus = Bus(graceful_timeout=10)
    bus.subscribe("log", lambda msg, level=20: print("LOG", msg, flush=True))
    if mode == "drain and reap":  # the other plugins with a signal worker, without a SignalHandler
        from wspbus.plugins.drain import Drainer
        from wspbus.plugins.reaper import ChildReaper
        Drainer(bus).subscribe()
        ChildReaper(bus, always=True).subscribe()
    else:
        SignalHandler(bus).subscribe()
    daemonizer = Daemonizer(bus, stdout=work + "/out.log", stderr=work + "/err.log")
    daemonizer.subscribe()

    def write(name, text):  # whole or not at all: the test waits for the name
        with open(work + "/" + name + ".tmp", "w") as f:
            f.write(text)
        os.replace(work + "/" + name + ".tmp", work + "/" + name)

    def record():
        print("to stdout from the daemon", flush=True)
        print("to stderr from the daemon", file=sys.stderr, flush=True)
        umask = os.umask(0o022); os.umask(umask)
        write("daemon-%d.json" % incarnation, json.dumps(dict(
            pid=os.getpid(), ppid=os.getppid(), sid=os.getsid(0), pgid=os.getpgid(0),
            cwd=os.getcwd(), umask=umask, threads=[t.name for t in threading.enumerate()],
            fds=[os.readlink("/proc/self/fd/%d" % fd) for fd in (0, 1, 2)])))

    def hold():  # block until the test lets go of its lock on the file 'hold'
        with open(work + "/hold") as held:
            write("holding", "")
            fcntl.flock(held, fcntl.LOCK_EX)

    def fail():
        raise RuntimeError("database unreachable at db:5432")

    bus.subscribe("start", record, priority=66)
    if mode == "hold":
        bus.subscribe("start", hold, priority=80)
    if mode in ("fail", "owner reports"):
        bus.subscribe("start", fail, priority=80)
    daemonizer.owner_reports_failure = mode == "owner reports"
    if mode == "threads":
        threading.Thread(target=threading.Event().wait, name="early-worker", daemon=True).start()
    bus.subscribe("start", lambda: write("started", ""), priority=99)
    try:
        bus.start()
    except Exception as exc:
        if mode != "owner reports":
            raise
        daemonizer.report_start_failure(69, "site could not start:\\n%s" % exc.get_instances()[0])
        sys.exit(69)
    bus.block()
    """


@pytest.fixture
def daemons():
    """Pids of daemons to end and reap at teardown; the test process is their subreaper meanwhile."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper: errno %d" % ctypes.get_errno())
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                wait_exit(pid)
            except (ProcessLookupError, ChildProcessError):
                pass  # already reaped by the test
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def wait_exit(pid: int, timeout: float = DEADLINE) -> int:
    """Wait for our (adopted) child ``pid`` to end, reap it, and return its exit status."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    assert ready, "process %d did not end within %gs" % (pid, timeout)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def daemon_facts(work, daemons, incarnation=0) -> dict:
    path = work / ("daemon-%d.json" % incarnation)
    wait_for_path(path)
    facts = json.loads(path.read_text())
    if facts["pid"] not in daemons:
        daemons.append(facts["pid"])
    return facts


def test_launcher_exits_0_only_once_the_daemon_is_started(spawn, tmp_path, daemons):
    work = tmp_path
    (work / "hold").touch()
    with open(work / "hold") as hold:
        fcntl.flock(hold, fcntl.LOCK_EX)
        launcher = spawn(CHILD, str(work), "hold")
        wait_for_path(work / "holding")  # the daemon is in a start listener, waiting for us
        facts = daemon_facts(work, daemons)
        assert launcher.proc.poll() is None  # so the launcher is still waiting too
    assert launcher.wait() == 0
    assert (work / "started").exists()  # written by the daemon's last start listener
    launcher.expect(r"^LOG Daemon started: pid %d; the launching process exits\.$" % facts["pid"])

    assert facts["ppid"] != launcher.pid  # reparented
    assert facts["sid"] == facts["pgid"] != facts["pid"]  # a session of its own, not its leader
    assert facts["sid"] != launcher.pid  # the launcher led the session the test started it in
    assert facts["cwd"] == "/" and facts["umask"] == 0o022
    assert facts["fds"] == ["/dev/null", str(work / "out.log"), str(work / "err.log")]
    assert "to stdout from the daemon" in (work / "out.log").read_text()
    assert "to stderr from the daemon" in (work / "err.log").read_text()
    assert "to stdout from the daemon" not in launcher.output()

    os.kill(facts["pid"], signal.SIGTERM)  # its SignalHandler works in the daemon too
    assert wait_exit(facts["pid"]) == 0
    assert "Bus EXITED" in (work / "out.log").read_text()


def test_a_failing_start_makes_the_launcher_exit_non_zero_with_the_error(spawn, tmp_path, daemons):
    launcher = spawn(CHILD, str(tmp_path), "fail")
    assert launcher.wait() == 1
    assert "Daemon failed to start: RuntimeError: database unreachable at db:5432" in launcher.output()
    facts = daemon_facts(tmp_path, daemons)
    assert wait_exit(facts["pid"]) == 1  # the daemon shut down and ended on its own
    assert "Bus EXITED" in (tmp_path / "out.log").read_text()


def test_the_code_starting_the_bus_may_report_the_failure_itself(spawn, tmp_path, daemons):
    launcher = spawn(CHILD, str(tmp_path), "owner reports")
    assert launcher.wait() == 69  # its status, not the bus's exit_code
    assert "site could not start: database unreachable at db:5432" in launcher.output()  # made one line
    assert "Daemon failed to start" not in launcher.output()
    facts = daemon_facts(tmp_path, daemons)
    assert wait_exit(facts["pid"]) == 69


def test_other_threads_at_fork_time_are_warned_about(spawn, tmp_path, daemons):
    launcher = spawn(CHILD, str(tmp_path), "threads")
    assert launcher.wait() == 0
    warning = launcher.expect(r"^LOG Daemonizing with .*").group(0)
    assert warning.startswith("LOG Daemonizing with 1 other thread(s) running (early-worker):")
    facts = daemon_facts(tmp_path, daemons)
    assert "early-worker" not in facts["threads"]
    assert "wspbus signals" in facts["threads"]  # restarted after the fork, and not warned about
    os.kill(facts["pid"], signal.SIGTERM)
    assert wait_exit(facts["pid"]) == 0


def test_the_drainer_and_the_reaper_keep_their_signal_worker_in_the_daemon(spawn, tmp_path, daemons):
    launcher = spawn(CHILD, str(tmp_path), "drain and reap")
    assert launcher.wait() == 0
    assert "Daemonizing with" not in launcher.output()  # their worker threads are restarted, not lost
    facts = daemon_facts(tmp_path, daemons)
    assert {"wspbus drain signals", "wspbus child reaper"} <= set(facts["threads"])
    os.kill(facts["pid"], signal.SIGTERM)  # heard by the Drainer's worker in the daemon
    assert wait_exit(facts["pid"]) == 0
    assert "SIGTERM: exiting" in (tmp_path / "out.log").read_text()


def test_a_restarting_daemon_stays_the_same_process(spawn, tmp_path, daemons):
    launcher = spawn(CHILD, str(tmp_path), "plain")
    assert launcher.wait() == 0
    first = daemon_facts(tmp_path, daemons)
    os.kill(first["pid"], signal.SIGHUP)  # stdin is /dev/null: restart
    again = daemon_facts(tmp_path, daemons, incarnation=1)
    assert again["pid"] == first["pid"] and again["sid"] == first["sid"]  # re-executed, not forked
    assert again["cwd"] == "/"
    assert "Already daemonized (pid %d)." % first["pid"] in (tmp_path / "out.log").read_text()
    os.kill(first["pid"], signal.SIGTERM)
    assert wait_exit(first["pid"]) == 0
