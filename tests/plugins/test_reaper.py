"""ChildReaper with real orphans: a child forks a grandchild and exits, the grandchild is
re-parented to the site's process and exits; it must not stay a zombie. Once as a Linux
"child subreaper" (always=True), once as a real PID 1 in a new pid namespace (unshare)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import time

import pytest

DEADLINE = 15.0

# Runs as a subprocess of the site: forks grandchildren (argv[1] of them, default 1) in a chain:
# the first exits once this process is gone, each next one once the one before it is gone.
ORPHAN_MAKER = """
import os, sys
readable, writable = os.pipe()
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    next_readable, next_writable = os.pipe()
    if os.fork() == 0:
        os.close(writable)
        os.close(next_readable)
        os.read(readable, 1)  # end of file: the process before us has exited
        os.write(1, b"orphan %d exiting\\n" % os.getpid())  # one write: lines do not interleave
        os._exit(0)  # ...and the next one sees end of file on next_readable
    os.close(readable)
    os.close(next_writable)
    readable, writable = next_readable, writable
os._exit(0)
"""

SITE = """
import ctypes, os, subprocess, sys, time
from wspbus import Bus
from wspbus.plugins.reaper import ChildReaper

ORPHAN_MAKER = %r
mode = sys.argv[1]
bus = Bus(graceful_timeout=10)
reaper = ChildReaper(bus, always=(mode == "always"))
if mode in ("always", "pid1"):
    reaper.subscribe()
elif mode == "subreaper-only":  # the control: adopts orphans, never reaps them
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
bus.start()
print("pid", os.getpid(), "started", flush=True)

def state_of(pid):
    with open("/proc/%%d/stat" %% pid) as stat:
        return stat.read().rpartition(")")[2].split()[0]

def wait_until(condition):
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)

if "--popen-status" in sys.argv:
    # A subprocess exits with 3 while the app does not wait for it yet...
    app_child = subprocess.Popen(["sh", "-c", "exit 3"])
    wait_until(lambda: state_of(app_child.pid) == "Z")
    # ...then an orphan exits and gets reaped: the reaper ran with that zombie in sight.
    subprocess.run([sys.executable, "-c", ORPHAN_MAKER], check=True)
    wait_until(lambda: reaper.reaped >= 1)
    print("app's zombie left alone:", state_of(app_child.pid) == "Z", flush=True)
    print("app's subprocess status", app_child.wait(), flush=True)
else:
    orphans = sys.argv[sys.argv.index("--orphans") + 1] if "--orphans" in sys.argv else "1"
    subprocess.run([sys.executable, "-c", ORPHAN_MAKER, orphans], check=True)
bus.block()
print("exited cleanly", flush=True)
""" % ORPHAN_MAKER


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None once the process is gone (reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or while, we looked
        return None
    return fields[0], int(fields[1])


def wait_until(condition, what: str):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not within %gs: %s" % (DEADLINE, what))
        time.sleep(0.005)  # test side only


@pytest.fixture
def site_script(tmp_path):
    path = tmp_path / "site.py"
    path.write_text(textwrap.dedent(SITE))
    return str(path)


def test_subreaper_reaps_the_orphan(spawn, site_script):
    child = spawn([sys.executable, site_script, "always"])
    orphan = int(child.expect(r"orphan (\d+) exiting").group(1))
    wait_until(lambda: proc_state(orphan) is None, "orphan %d reaped" % orphan)


def test_orphans_exiting_one_after_another_are_all_reaped(spawn, site_script):
    """A SIGCHLD may arrive while the handler of the previous one runs: nothing may deadlock."""
    child = spawn([sys.executable, site_script, "always", "--orphans", "200"])
    orphans = [int(child.expect(r"orphan (\d+) exiting").group(1)) for _ in range(200)]
    wait_until(lambda: all(proc_state(pid) is None for pid in orphans), "200 orphans reaped")


def test_control_without_reaper_the_orphan_stays_a_zombie(spawn, site_script):
    child = spawn([sys.executable, site_script, "subreaper-only"])
    orphan = int(child.expect(r"orphan (\d+) exiting").group(1))
    wait_until(lambda: proc_state(orphan) == ("Z", child.pid), "orphan %d a zombie of the site" % orphan)


def test_the_apps_own_subprocess_keeps_its_exit_status(spawn, site_script):
    child = spawn([sys.executable, site_script, "always", "--popen-status"])
    child.expect("app's zombie left alone: True")
    child.expect("app's subprocess status 3")  # 0 if the reaper had taken it


# -- as PID 1 of a new pid namespace ------------------------------------------------------

needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare(1) and root"
)


def namespace_init(launcher_pid: int) -> int:
    """The host pid of the process unshare forked (PID 1 inside its namespace)."""
    found = []

    def look():
        found[:] = [pid for pid in _host_pids() if (proc_state(pid) or ("", 0))[1] == launcher_pid]
        return found

    wait_until(look, "unshare's child")
    return found[0]


def in_namespace(init_pid: int, ns_pid: int) -> int | None:
    """The host pid of the process known as ``ns_pid`` in ``init_pid``'s namespace, if it exists."""
    try:
        namespace = os.readlink("/proc/%d/ns/pid" % init_pid)
    except FileNotFoundError:
        return None
    for pid in _host_pids():
        try:
            if os.readlink("/proc/%d/ns/pid" % pid) != namespace:
                continue
            with open("/proc/%d/status" % pid) as status:
                nspids = next(line for line in status if line.startswith("NSpid:")).split()[1:]
        except (OSError, StopIteration):  # gone meanwhile, or not ours to look at
            continue
        if int(nspids[-1]) == ns_pid:
            return pid
    return None


def _host_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def orphan_under_pid_1(spawn, site_script, mode):
    """Run the site as PID 1 of a new pid namespace; (unshare's Child, PID 1's host pid, orphan)."""
    child = spawn(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, site_script, mode])
    child.expect("pid 1 started")
    init = namespace_init(child.pid)
    orphan = int(child.expect(r"orphan (\d+) exiting").group(1))  # its pid inside the namespace
    return child, init, orphan


@needs_unshare
def test_as_pid_1_orphans_are_reaped_and_sigterm_is_heard(spawn, site_script):
    child, init, orphan = orphan_under_pid_1(spawn, site_script, "pid1")
    # A zombie stays listed in /proc; gone means reaped.
    wait_until(lambda: in_namespace(init, orphan) is None, "orphan %d reaped by PID 1" % orphan)

    # PID 1 receives only the signals it has a handler for; the reaper made sure of SIGTERM.
    os.kill(init, signal.SIGTERM)
    child.expect("exited cleanly")
    assert child.wait() == 0


@needs_unshare
def test_control_as_pid_1_without_reaper_the_orphan_stays_a_zombie(spawn, site_script):
    child, init, orphan = orphan_under_pid_1(spawn, site_script, "none")

    def zombie():
        pid = in_namespace(init, orphan)
        return pid is not None and proc_state(pid) == ("Z", init)

    wait_until(zombie, "orphan %d a zombie of PID 1" % orphan)
