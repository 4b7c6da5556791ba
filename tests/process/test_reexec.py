"""restart(): a real execv with the same interpreter, flags, arguments and start directory."""

from __future__ import annotations

import os
import stat
import sys
import textwrap

from wspbus._process import reexec as _reexec

# A program that restarts itself once: the first incarnation leaves its start directory, opens a
# stray inheritable descriptor and one it asks to keep, then restarts; the second reports.
RESTART_ONCE = """
import os, sys, threading, wspbus
from wspbus._process import reexec as _reexec
marker = os.environ.get('MARKER_FILE')
first = not os.path.exists(marker)
bus = wspbus.Bus()
bus.start()
if first:
    open(marker, 'w').close()
    stray = os.dup2(os.open(os.devnull, os.O_RDONLY), 50, inheritable=True)
    kept = os.dup2(os.open(os.devnull, os.O_RDONLY), 51, inheritable=False)
    _reexec.keep_across_exec(kept, 'kept-one')
    print('first pid', os.getpid(), 'stray', stray, 'kept', kept, flush=True)
    os.chdir('/')
    threading.Timer(0.05, bus.restart).start()
else:
    kept = _reexec.take_inherited('kept-one')
    def is_open(fd):
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True
    print('second pid', os.getpid(), 'argv', sys.argv[1:], 'cwd', os.getcwd(),
          'utf8', sys.flags.utf8_mode, 'kept', kept, 'kept open', is_open(51),
          'stray open', is_open(50), flush=True)
    threading.Timer(0.05, bus.exit).start()
bus.block()
"""


def run_restart(spawn, tmp_path, argv, cwd):
    child = spawn(argv, cwd=cwd, env={"MARKER_FILE": str(tmp_path / "restarted")})
    first = child.expect(r"^first pid (\d+) stray (\d+) kept (\d+)")
    second = child.expect(r"^second pid (\d+) argv (.*) cwd (\S+) utf8 (\d) kept (\S+) kept open (\w+) stray open (\w+)$")
    assert child.wait() == 0
    assert first.group(1) == second.group(1)  # the same process, re-executed
    return first, second


def test_restart_reexecutes_a_script_with_its_flags_arguments_and_directory(spawn, tmp_path):
    script = tmp_path / "site.py"
    script.write_text(RESTART_ONCE)
    first, second = run_restart(spawn, tmp_path, [sys.executable, "-X", "utf8", "site.py", "--port", "8080"], tmp_path)
    assert second.group(2) == "['--port', '8080']"
    assert second.group(3) == str(tmp_path)
    assert second.group(4) == "1"
    assert (first.group(2), first.group(3)) == ("50", "51")
    assert second.group(5) == "51" and second.group(6) == "True"  # the kept one survived
    assert second.group(7) == "False"  # the stray inheritable one did not


def test_restart_reexecutes_python_dash_m(spawn, tmp_path):
    package = tmp_path / "mysite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(RESTART_ONCE)
    _, second = run_restart(spawn, tmp_path, [sys.executable, "-m", "mysite", "serve"], tmp_path)
    assert second.group(2) == "['serve']"


def test_restart_reexecutes_a_console_script(spawn, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mysite"
    script.write_text("#!%s\n%s" % (sys.executable, RESTART_ONCE))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    _, second = run_restart(spawn, tmp_path, [str(script), "run"], tmp_path)
    assert second.group(2) == "['run']"


def test_command_line_keeps_interpreter_flags(spawn):
    child = spawn([sys.executable, "-X", "dev", "-W", "ignore", "-c",
                   "from wspbus._process import reexec as _reexec; print(_reexec.command_line())"])
    line = child.expect(r"^\[.*\]$").group(0)
    assert eval(line) == [sys.executable, "-X", "dev", "-W", "ignore", "-c", textwrap.dedent(
        "from wspbus._process import reexec as _reexec; print(_reexec.command_line())")]


def test_mark_close_on_exec_touches_only_open_descriptors():
    keep_fd = os.open(os.devnull, os.O_RDONLY)
    drop_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        os.set_inheritable(drop_fd, True)
        listed = _reexec.open_descriptors()
        assert keep_fd in listed and drop_fd in listed
        assert len(listed) < 1000  # the kernel's list, not range(SC_OPEN_MAX)
        _reexec.mark_close_on_exec({keep_fd})
        assert os.get_inheritable(keep_fd) and not os.get_inheritable(drop_fd)
        assert os.get_inheritable(1)  # stdio is left alone
    finally:
        os.close(keep_fd)
        os.close(drop_fd)


def test_restart_is_quick_when_the_descriptor_limit_is_huge(spawn, tmp_path):
    """With RLIMIT_NOFILE raised to its hard limit, a loop over every number would be slow."""
    script = tmp_path / "site.py"
    script.write_text("import resource\n"
                      "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
                      "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
                      "print('limit', resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)\n"
                      + RESTART_ONCE)
    child = spawn([sys.executable, "site.py"], cwd=tmp_path, env={"MARKER_FILE": str(tmp_path / "m")})
    assert int(child.expect(r"^limit (\d+)").group(1)) >= 1024
    child.expect(r"^second pid", timeout=5)
    assert child.wait() == 0


def test_inherited_descriptors_are_only_for_the_process_they_were_meant_for(monkeypatch):
    monkeypatch.setenv(_reexec.FDS_ENV, '{"pid": 1, "fds": {"x": 7}}')
    assert _reexec.Handover().take("x") is None  # a fresh one reads the environment
    assert _reexec.FDS_ENV not in os.environ


def test_inherited_descriptors_are_taken_once_and_read_from_the_environment_once(monkeypatch):
    monkeypatch.setenv(_reexec.FDS_ENV, '{"pid": %d, "fds": {"x": 7, "y": 8}}' % os.getpid())
    handover = _reexec.Handover()
    assert handover.take("x") == 7
    assert _reexec.FDS_ENV not in os.environ
    assert handover.take("x") is None  # once only
    assert handover.take("y") == 8


def test_a_forgotten_descriptor_is_not_handed_over():
    handover = _reexec.Handover()
    handover.keep(40, "a")
    handover.keep(41, "b")
    handover.forget(40)
    handover.forget(99)  # never kept: nothing to do
    assert handover.kept() == {41: "b"}
