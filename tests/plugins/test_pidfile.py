"""PIDFile in real child processes: a real lock held by another process, real stale files, inotify."""

from __future__ import annotations

import ctypes
import os
import signal
import struct
import subprocess
import sys

import pytest

CHILD = """\
    import os, sys
    from wspbus import Bus, ChannelFailures
    from wspbus.plugins.pidfile import PIDFile
    from wspbus.plugins.signals import SignalHandler

    def say(*words):
        sys.stdout.write(" ".join(map(str, words)) + "\\n")

    bus = Bus(graceful_timeout=10)
    bus.subscribe("log", lambda msg, level=20: say("LOG", msg))
    incarnation = int(os.environ.get("INCARNATION", "0"))
    os.environ["INCARNATION"] = str(incarnation + 1)
    SignalHandler(bus).subscribe()
    PIDFile(bus, sys.argv[1]).subscribe()
    bus.subscribe("start", lambda: say("server bound"), priority=75)
    try:
        bus.start()
    except ChannelFailures as failures:
        for error in failures.get_instances():
            say("start failed:", error)
        sys.exit(bus.exit_code or 1)
    say("ready", os.getpid(), incarnation)
    bus.block()
    """


@pytest.fixture
def run_dir(tmp_path):
    """A directory only its owner can write, like /run."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    return directory


def start_instance(spawn, pidfile):
    child = spawn(CHILD, str(pidfile))
    child.expect(r"^ready %d 0$" % child.pid)
    return child


def stop_instance(child):
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def refused(spawn, pidfile) -> str:
    child = spawn(CHILD, str(pidfile))
    assert child.wait() == 1
    return child.output()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_writes_the_pid_and_removes_the_file_on_exit(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    child = start_instance(spawn, pidfile)
    assert pidfile.read_text() == "%d\n" % child.pid
    assert oct(pidfile.stat().st_mode & 0o777) == oct(0o644)
    assert os.listdir(run_dir) == ["site.pid"]  # no temporary file left over
    stop_instance(child)
    assert not pidfile.exists()


def test_a_second_instance_is_refused_while_the_first_holds_the_lock(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    first = start_instance(spawn, pidfile)
    inode = pidfile.stat().st_ino
    output = refused(spawn, pidfile)
    assert ("start failed: another instance is already running: PID file %s is locked by process %d; "
            "refusing to start" % (pidfile, first.pid)) in output
    assert pidfile.read_text() == "%d\n" % first.pid
    assert pidfile.stat().st_ino == inode  # the refused instance did not touch it
    stop_instance(first)


def test_a_refused_instance_binds_no_server(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    first = start_instance(spawn, pidfile)
    assert "server bound" not in refused(spawn, pidfile)  # the priority-75 listener never ran
    stop_instance(first)


def test_a_stale_file_is_replaced_by_a_rename(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    pidfile.write_text("%d\n" % dead_pid())
    stale_inode = pidfile.stat().st_ino
    child = start_instance(spawn, pidfile)
    assert pidfile.read_text() == "%d\n" % child.pid
    assert pidfile.stat().st_ino != stale_inode  # a new file renamed over it, not rewritten in place
    assert os.listdir(run_dir) == ["site.pid"]
    stop_instance(child)


IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100


def inotify_events(fd: int) -> list[tuple[int, str]]:
    """The (mask, name) events queued on an inotify descriptor."""
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return []
    events, offset = [], 0
    while offset < len(data):
        _, mask, _, length = struct.unpack_from("iIII", data, offset)
        name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
        events.append((mask, name))
        offset += 16 + length
    return events


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_the_file_appears_whole_and_is_never_written_under_its_name(spawn, run_dir):
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert watch >= 0
    try:
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        assert libc.inotify_add_watch(watch, os.fsencode(run_dir), mask) >= 0
        child = start_instance(spawn, run_dir / "site.pid")
        events = inotify_events(watch)
    finally:
        os.close(watch)
    on_pidfile = [event_mask for event_mask, name in events if name == "site.pid"]
    assert on_pidfile == [IN_CREATE]  # appeared complete (a link to the written file) ...
    assert any(event_mask & IN_MODIFY for event_mask, name in events if name != "site.pid")  # ... written elsewhere
    stop_instance(child)


def test_a_symlink_is_refused_and_its_target_untouched(spawn, run_dir):
    target = run_dir / "target"
    target.write_text("precious\n")
    pidfile = run_dir / "site.pid"
    pidfile.symlink_to(target)
    output = refused(spawn, pidfile)
    assert ("start failed: PID file %s is a symbolic link; refusing to follow it "
            "(give the path of a regular file)" % pidfile) in output
    assert target.read_text() == "precious\n"
    assert pidfile.is_symlink()


@pytest.mark.parametrize("mode, who", [(0o777, "others"), (0o775, "its group")])
def test_a_directory_others_can_write_is_refused(spawn, tmp_path, mode, who):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    output = refused(spawn, shared / "site.pid")
    assert ("start failed: PID file directory %s is writable by %s without the sticky bit; refusing"
            % (shared, who)) in output
    assert os.listdir(shared) == []


@pytest.fixture
def sticky_dir(tmp_path):
    """A directory like /tmp: anyone may write, only a file's owner may rename or delete it."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    directory.chmod(0o1777)
    return directory


def test_a_sticky_directory_others_can_write_is_accepted(spawn, sticky_dir):
    pidfile = sticky_dir / "site.pid"
    child = start_instance(spawn, pidfile)
    assert pidfile.read_text() == "%d\n" % child.pid
    assert "start failed: another instance is already running" in refused(spawn, pidfile)
    stop_instance(child)
    assert os.listdir(sticky_dir) == []


def test_in_a_sticky_directory_a_file_someone_else_put_there_is_refused_not_replaced(spawn, sticky_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    pidfile = sticky_dir / "site.pid"
    pidfile.write_text("%d\n" % dead_pid())
    os.chown(pidfile, 65534, 65534)  # nobody took the name first
    output = refused(spawn, pidfile)
    assert ("start failed: PID file %s belongs to uid 65534, not to this process (uid 0), in a directory "
            "others can write; refusing" % pidfile) in output
    assert os.stat(pidfile).st_uid == 65534


def test_in_a_sticky_directory_a_planted_symlink_is_refused(spawn, sticky_dir, tmp_path):
    target = tmp_path / "precious"
    target.write_text("precious\n")
    (sticky_dir / "site.pid").symlink_to(target)
    assert "is a symbolic link; refusing to follow it" in refused(spawn, sticky_dir / "site.pid")
    assert target.read_text() == "precious\n"


def test_the_file_is_left_alone_on_exit_when_it_is_no_longer_ours(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    child = start_instance(spawn, pidfile)
    replacement = run_dir / "replacement"
    replacement.write_text("12345\n")
    os.replace(replacement, pidfile)  # somebody else's file now has the name
    stop_instance(child)
    assert pidfile.read_text() == "12345\n"


def test_restart_keeps_the_same_locked_file(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    child = start_instance(spawn, pidfile)
    inode = pidfile.stat().st_ino
    child.send(signal.SIGHUP)  # no terminal on stdin: restart (re-exec)
    child.expect(r"^ready %d 1$" % child.pid)
    assert pidfile.stat().st_ino == inode  # never removed and rewritten
    assert pidfile.read_text() == "%d\n" % child.pid
    assert "locked by process %d" % child.pid in refused(spawn, pidfile)  # still locked
    stop_instance(child)
    assert not pidfile.exists()


def test_instances_starting_at_once_over_a_stale_file_have_one_winner(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    pidfile.write_text("%d\n" % dead_pid())
    racer = """\
        import sys
        from wspbus.plugins.pidfile import claim
        sys.stdin.readline()  # everybody starts claiming together
        try:
            claim(sys.argv[1])
        except RuntimeError as exc:
            print("refused:", exc, flush=True)
        else:
            print("won", flush=True)
            sys.stdin.read()  # hold the lock until the test is done
        """
    racers = [spawn(racer, str(pidfile), stdin=subprocess.PIPE) for _ in range(6)]
    for child in racers:
        child.proc.stdin.write("go\n")
        child.proc.stdin.flush()
    outcomes = [child.expect(r"^(won|refused: .*)$").group(1) for child in racers]
    winners = [child for child, outcome in zip(racers, outcomes) if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert pidfile.read_text() == "%d\n" % winners[0].pid
    for outcome in outcomes:
        assert outcome == "won" or outcome.endswith("locked by process %d; refusing to start" % winners[0].pid)
    for child in racers:
        child.proc.stdin.close()
        assert child.wait() == 0
    assert os.listdir(run_dir) == ["site.pid"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_after_dropping_privileges_the_file_is_left_unlocked_and_replaced_next_time(spawn, run_dir):
    pidfile = run_dir / "site.pid"
    dropping = CHILD.replace(
        "SignalHandler(bus).subscribe()\n",
        "SignalHandler(bus).subscribe()\n"
        "    from wspbus.plugins.privileges import DropPrivileges\n"
        "    DropPrivileges(bus, uid='nobody').subscribe()\n")
    child = spawn(dropping, str(pidfile))
    child.expect(r"^ready %d 0$" % child.pid)
    stop_instance(child)  # as nobody it may not unlink in a root-owned directory: a warning, no traceback
    assert "LOG Could not remove PID file %s ([Errno 13] Permission denied" % pidfile in child.output()
    assert "Traceback" not in child.output()
    assert pidfile.read_text() == "%d\n" % child.pid
    successor = start_instance(spawn, pidfile)  # the lock went with the process: stale, replaced
    assert pidfile.read_text() == "%d\n" % successor.pid
    stop_instance(successor)
