"""Autoreloader: real child processes, real file edits, real re-execution.

The child imports ``mod`` from its own directory, prints ``START <incarnation> <mod.VALUE>``
(the incarnation counter travels in the environment across execv), runs a bus with the
Autoreloader, prints every bus log line and also appends it to ``app.log`` next to the
module: a log file the process writes itself, in a watched directory.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from support import DEADLINE
from wspbus import Bus
from wspbus.plugins import Autoreloader

BACKENDS = ["inotify", "watchfiles", "stat"]

CHILD = """
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import mod
incarnation = int(os.environ.get("INCARNATION", "0")) + 1
os.environ["INCARNATION"] = str(incarnation)
print("START", incarnation, mod.VALUE)
from wspbus import Bus
from wspbus.plugins import Autoreloader

import threading, time
lock = threading.Lock()

def show(msg, level=20):
    with lock:
        sys.stdout.write("LOG %s %s\\n" % (level, msg))
        if msg.startswith("Restarting"):
            sys.stdout.write("RESTARTING AT %d\\n" % time.time_ns())
    with open(os.path.join(here, "app.log"), "a") as log:
        log.write(msg + "\\n")

bus = Bus(graceful_timeout=10)
bus.subscribe("log", show)
reloader = Autoreloader(bus, frequency=0.2, backend=sys.argv[1])
for extra in sys.argv[2:]:
    reloader.files.add(extra)
    with open(extra) as f:
        print("EXTRA", f.read().strip())
reloader.subscribe()
# before start
bus.start()
# after start
bus.block()
"""

#: Children write bytecode, as deployed sites do (the environment running the tests may not).
WRITE_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}

#: Module files get this modification time, a whole second, so a later save can keep it.
BASE_MTIME_NS = 1_700_000_000 * 10**9


def save(path, text: str) -> None:
    path.write_text(text)


def save_within_same_second(path, text: str) -> None:
    """Save ``text`` with a new mtime in the same second as before.

    With the same size, this save is invisible to the import system's bytecode check
    (whole seconds and size), so the new process only runs fresh code if the reloader
    discarded the stale bytecode.
    """
    path.write_text(text)
    stamp = BASE_MTIME_NS + 1000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def site(tmp_path, spawn):
    """Start the child with ``VALUE = 1``; returns (child, mod.py path)."""

    def start(backend: str, *extra_args: str, before_start: str = "", after_start: str = ""):
        module_path = tmp_path / "mod.py"
        module_path.write_text("VALUE = 1\n")
        os.utime(module_path, ns=(BASE_MTIME_NS, BASE_MTIME_NS))
        code = CHILD.replace("# before start", before_start).replace("# after start", after_start)
        child = spawn(code, backend, *extra_args, env=WRITE_BYTECODE)
        child.expect(r"^START 1 ")
        child.expect(r"Autoreloader: watching \d+ files in \d+ directories \(%s\)" % backend)
        child.expect(r"^LOG 20 Bus STARTED$")
        return child, module_path

    return start


def restarts(child) -> list[str]:
    return [line for line in child.lines if "Restarting because" in line]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_restarts_the_process_into_the_new_code(site, backend):
    child, module = site(backend)
    pid = child.pid
    save_within_same_second(module, "VALUE = 2\n")  # same size, same second: bytecode looks fresh
    assert child.expect(r"^START 2 (\S+)").group(1) == "2"
    assert child.pid == pid  # re-executed in place, not a new process
    assert restarts(child) == ["LOG 20 Restarting because %s changed." % module]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_that_does_not_compile_is_reported_and_not_restarted_into(site, tmp_path, backend):
    other = tmp_path / "other.py"
    other.write_text("X = 1\n")
    child, module = site(backend, after_start="import other")
    save(module, "VALUE = (\n")
    child.expect(r"^LOG 40 Autoreloader: not restarting: %s:1: " % re.escape(str(module)))
    save(other, "X = 2\n")  # compiles, but restarting would import the broken mod.py
    child.expect(r"^LOG 30 Autoreloader: not restarting while %s does not compile$" % re.escape(str(module)))
    save(module, "VALUE = 3\n")
    assert child.expect(r"^START 2 (\S+)").group(1) == "3"
    before_restart = child.lines[: child.lines.index(restarts(child)[0])]
    assert not any("Bus STOPPING" in line for line in before_restart)  # kept serving the old code
    assert len(restarts(child)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_burst_of_saves_is_one_restart_into_the_last_save(site, backend):
    child, module = site(backend)
    for value in range(10, 20):
        save(module, "VALUE = %d\n" % value)
        time.sleep(0.015)  # the burst: 10 saves 15 ms apart, longer than watchfiles' own grouping
    last_save_ns = module.stat().st_mtime_ns
    assert int(child.expect(r"^RESTARTING AT (\d+)").group(1)) > last_save_ns  # waited for the end
    assert child.expect(r"^START 2 (\S+)").group(1) == "19"
    child.expect(r"^LOG 20 Bus STARTED$")
    save(module, "VALUE = 99\n")  # had the burst caused a second restart, START 3 would show 19
    assert child.expect(r"^START 3 (\S+)").group(1) == "99"
    assert len(restarts(child)) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_made_while_the_new_process_starts_is_not_lost(site, tmp_path, backend):
    go = tmp_path / "go"
    hold_second_start = (
        "import time\n"
        "while incarnation == 2 and not os.path.exists(%r):\n"
        "    time.sleep(0.01)  # held until the test has saved again\n" % str(go))
    child, module = site(backend, before_start=hold_second_start)
    save(module, "VALUE = 2\n")
    assert child.expect(r"^START 2 (\S+)").group(1) == "2"
    save(module, "VALUE = 3\n")  # imported 2 already, not watching yet
    go.touch()
    assert child.expect(r"^START 3 (\S+)").group(1) == "3"
    assert len(restarts(child)) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_swap_backup_bytecode_and_log_files_do_not_restart(site, tmp_path, backend):
    child, module = site(backend)
    pycache = tmp_path / "__pycache__"
    pycache.mkdir(exist_ok=True)
    for name in (".mod.py.swp", "mod.py~", ".#mod.py", "4913", "notes.log",
                 "__pycache__/mod.cpython-311.pyc", "__pycache__/other.cpython-311.pyc"):
        (tmp_path / name).write_text("VALUE = (\n")
    with open(tmp_path / "app.log", "a") as log:  # the file the child logs to
        log.write("VALUE = (\n")
    save(module, "VALUE = 2\n")
    assert child.expect(r"^START 2 (\S+)").group(1) == "2"
    assert restarts(child) == ["LOG 20 Restarting because %s changed." % module]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_extra_registered_file_restarts_too(site, tmp_path, backend):
    conf = tmp_path / "site.conf"
    conf.write_text("port=1\n")
    child, _ = site(backend, str(conf))
    assert child.expect(r"^EXTRA (\S+)").group(1) == "port=1"
    save(conf, "port=2\n")
    child.expect(r"^START 2 ")
    assert child.expect(r"^EXTRA (\S+)").group(1) == "port=2"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_module_imported_after_start_is_watched(site, tmp_path, backend):
    late_dir = tmp_path / "late"  # a directory not watched at start
    late_dir.mkdir()
    late = late_dir / "late.py"
    late.write_text("VALUE = 1\n")
    child, _ = site(backend, after_start="sys.path.insert(0, %r); import late\n"
                                        "with lock: sys.stdout.write('LATE %%s\\n' %% late.VALUE)"
                    % str(late_dir))
    child.expect(r"^LATE 1$")
    child.expect(r"^LOG 10 Autoreloader: now watching \d+ files$")
    save(late, "VALUE = 2\n")
    child.expect(r"^START 2 ")
    assert child.expect(r"^LATE (\S+)").group(1) == "2"


def _native_watch_threads() -> int:
    """watchfiles' own (Rust) threads in this process: not in threading.enumerate()."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % task) as comm:
                count += comm.read().startswith("notify-rs")
        except (FileNotFoundError, ProcessLookupError):
            pass  # ended while we looked (gone, or ending: ESRCH on the read)
    return count


def _native_watch_threads_settled() -> int:
    deadline = time.monotonic() + DEADLINE
    while _native_watch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)  # test side: that thread ends asynchronously once its notifier is closed
    return _native_watch_threads()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_is_prompt_and_leaves_no_thread(backend):
    bus = Bus()
    assert _native_watch_threads_settled() == 0  # none left by an earlier test
    reloader = Autoreloader(bus, frequency=60, backend=backend)
    reloader.subscribe()
    bus.start()
    ours = [t for t in threading.enumerate() if "autoreload" in t.name]
    assert [t.name for t in ours] == ["wspbus autoreload (%s)" % backend]
    assert _native_watch_threads() == (backend == "watchfiles")
    began = time.monotonic()
    bus.stop()
    assert time.monotonic() - began < 1.0  # not waiting out the 60 s interval
    assert not any(t.is_alive() for t in ours)
    assert _native_watch_threads_settled() == 0
    bus.start()  # and it can watch again after a stop
    assert any("autoreload" in t.name for t in threading.enumerate())
    bus.exit()


def _wake_ups(thread: threading.Thread) -> int:
    with open("/proc/self/task/%d/status" % thread.native_id) as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def _wait_until_asleep_in_poll(thread: threading.Thread) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        with open("/proc/self/task/%d/wchan" % thread.native_id) as wchan:
            if "poll" in wchan.read():
                return
        time.sleep(0.005)  # test side, with a deadline
    raise AssertionError("the watcher thread never slept in poll()")


def test_auto_picks_inotify_whose_thread_sleeps_while_idle():
    bus = Bus()
    messages = []
    bus.subscribe("log", lambda msg, level=20: messages.append(msg))
    Autoreloader(bus, frequency=60).subscribe()
    bus.start()
    try:
        assert any(re.search(r"watching \d+ files in \d+ directories \(inotify\)$", m) for m in messages)
        [watcher] = [t for t in threading.enumerate() if t.name == "wspbus autoreload (inotify)"]
        _wait_until_asleep_in_poll(watcher)  # its way there (the GIL, the poll itself) is no wake-up
        before = _wake_ups(watcher)
        time.sleep(0.5)  # the idle window measured: nothing changes in it
        assert _wake_ups(watcher) == before  # watchfiles' loop would have woken 10 times
    finally:
        bus.exit()


def test_match_selects_the_modules_whose_files_are_watched():
    from wspbus.plugins import base, reload

    reloader = Autoreloader(Bus(), match=r"wspbus\.plugins\.(reload|base)$")
    assert reloader.sysfiles() == {reload.__file__, base.__file__}


@pytest.mark.parametrize("bad, message", [
    (dict(frequency=0), "frequency must be a positive number of seconds, not 0"),
    (dict(frequency="1"), "frequency must be a positive number of seconds, not '1'"),
    (dict(backend="fsevents"), "backend must be one of 'auto', 'inotify', 'watchfiles', 'stat', not 'fsevents'"),
    (dict(match="("), "match must be a regular expression, not '(' (missing ), unterminated subpattern"),
])
def test_bad_options_are_refused_in_one_line(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Autoreloader(Bus(), **bad)
