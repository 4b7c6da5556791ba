"""What a new user meets first (issue 13): short start-up failures, --version, a PID file in /tmp, a
daemon that says where it serves, errors that point at the user's code.

Each promise holds in both modes of `wspbus serve` (the ``mode`` fixture): the default, a supervisor
with one worker, and --single-process. Where the two differ in what they show (which listener binds
the port, what a reload looks like), the test says how.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from serve_support import EXAMPLES, ROOT, WSPBUS, get, run, serve
from support import ACTIVATING_LAUNCHER

MINIMAL = EXAMPLES / "minimal"


def assert_short_failure(result: subprocess.CompletedProcess, status: int, message: str) -> None:
    """At most two lines in all, ``message`` exactly once, no object repr, no traceback."""
    output = (result.stdout + result.stderr).strip()
    lines = output.splitlines()
    assert result.returncode == status, output
    assert len(lines) <= 2, output
    assert output.count(message) == 1, output
    assert "object at 0x" not in output and "<bound method" not in output, output
    assert "Traceback" not in output, output


def test_a_port_in_use_is_one_short_message(mode):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % port, "hello:app")
    assert_short_failure(result, 69, "cannot bind 127.0.0.1:%d: address already in use" % port)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop a capability")
def test_permission_denied_on_a_bind_is_one_short_message(mode):
    """Without CAP_NET_BIND_SERVICE (dropped by setpriv, so even root is refused: EACCES), a port
    below ip_unprivileged_port_start cannot be bound."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as file:
        if int(file.read()) <= 80:
            pytest.skip("port 80 is unprivileged on this system")
    drop = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    result = subprocess.run([*drop, *WSPBUS, "serve", *mode.options, "-b", "127.0.0.1:80", "hello:app"], cwd=MINIMAL,
                            capture_output=True, text=True, timeout=30)
    assert_short_failure(result, 69, "cannot bind 127.0.0.1:80: permission denied")


def test_a_pid_file_locked_by_a_running_site_is_one_short_message(spawn, tmp_path, mode):
    pidfile = tmp_path / "site.pid"
    serve(spawn, *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    result = run("serve", *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    assert_short_failure(result, 69, "another instance is already running: PID file %s is locked" % pidfile)


def test_a_failing_asgi_lifespan_is_one_short_message(tmp_path, mode):
    """In the supervisor's mode the worker fails: its story stays off the terminal, and its one
    line reaches it once, through the supervisor."""
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            assert scope["type"] == "lifespan"
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
    """))
    result = run("serve", *mode.options, "--chdir", tmp_path, "-b", "127.0.0.1:0", "failing:app")
    assert_short_failure(result, 69, "the database is unreachable")


@pytest.fixture
def taken_port():
    """A port something else listens on: a command that gets as far as binding it fails 69, not 78."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_missing_pid_file_directory_is_a_configuration_error_found_before_starting(tmp_path, mode, taken_port):
    pidfile = tmp_path / "missing" / "site.pid"
    result = run("serve", *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % taken_port, "--pidfile", pidfile,
                 "hello:app")
    assert_short_failure(result, 78, "the directory of PID file %s does not exist" % pidfile)


def test_a_typo_in_a_plugin_table_is_found_before_starting(tmp_path, mode, taken_port):
    """Even in a table of a plugin that is off, and (in the supervisor's mode) of one the workers
    would run: the supervisor checks every table before it binds anything."""
    (tmp_path / "site.toml").write_text("[[app]]\ntarget = 'hello:app'\n[plugins.reload]\nfrequncy = 1\n")
    result = run("serve", *mode.options, "--config", tmp_path / "site.toml", "--chdir", MINIMAL,
                 "-b", "127.0.0.1:%d" % taken_port)
    assert_short_failure(result, 78, "[plugins.reload] frequncy: unknown setting (expected one of: frequency, ")


def test_the_full_story_of_a_failed_start_still_reaches_a_log_file(tmp_path, mode):
    """Only the terminal is spared: a --log-file keeps what the bus logged. (The listener that binds
    is the supervisor's Listeners in the default mode, the HTTPServer in a single process.)"""
    log = tmp_path / "site.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % port, "--log-file", log,
                     "hello:app")
    assert_short_failure(result, 69, "address already in use")
    text = log.read_text()
    assert "Bus STARTING" in text and "Bus EXITED" in text
    binder = "Listeners.start" if mode.supervised else "HTTPServer.start"
    assert "Error in 'start' listener %s: cannot bind" % binder in text and "object at 0x" not in text


def test_the_full_story_of_a_failed_worker_start_reaches_a_log_file_in_order(tmp_path):
    """Supervisor mode only (a single process has no worker): the worker's story and the
    supervisor's are both in the file, as they happened (the terminal held them back, not the file)."""
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
    """))
    log = tmp_path / "site.log"
    result = run("serve", "--chdir", tmp_path, "-b", "127.0.0.1:0", "--log-file", log, "failing:app")
    assert_short_failure(result, 69, "the database is unreachable")
    lines = log.read_text().splitlines()
    worker_failed = next(i for i, line in enumerate(lines) if re.search(r"\[worker \d+\] Error in 'start' listener "
                                                                     r"HTTPServer\.start: ASGI lifespan", line))
    supervisor_failed = next(i for i, line in enumerate(lines) if "Error in 'start' listener Arbiter.start" in line)
    assert lines[0].endswith(" INFO Bus STARTING") and worker_failed < supervisor_failed, lines
    times = [line.split()[0] for line in lines]
    assert times == sorted(times), lines  # the file is in time order


# -- --version ----------------------------------------------------------------------------


def test_version_prints_the_package_version():
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as file:
        version = tomllib.load(file)["project"]["version"]
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wspbus %s\n" % version


# -- errors that point into the user's code ------------------------------------------------


def test_a_factory_that_needs_arguments_is_reported_at_the_users_file(tmp_path, mode):
    (tmp_path / "factory.py").write_text(textwrap.dedent("""
        def helper():
            pass


        def create_app(config):
            return None
    """))
    result = run("serve", *mode.options, "--chdir", tmp_path, "-b", "127.0.0.1:0", "factory:create_app()")
    assert_short_failure(result, 78, "missing 1 required positional argument: 'config'")
    assert "(at %s:6)" % (tmp_path / "factory.py") in result.stderr
    assert "wspbus/deploy" not in result.stderr


def test_ctrl_c_while_a_slow_app_imports_is_one_line_and_status_130(spawn, tmp_path, mode):
    """Ctrl-C reaches every process of the terminal's group: in the supervisor's mode, the
    supervisor and the worker that imports. Nothing is left running, and the worker's import is
    not waited for (the supervisor's kill deadline, 30 s, is past the wait below)."""
    (tmp_path / "slow.py").write_text(textwrap.dedent("""
        import threading
        print("importing slowly", flush=True)
        threading.Event().wait(60)

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    """))
    child = spawn([*WSPBUS, "serve", *mode.options, "--chdir", str(tmp_path), "-b", "127.0.0.1:0", "slow:app"])
    child.expect("^importing slowly$")
    os.killpg(child.pid, signal.SIGINT)  # as the terminal sends it: the child leads a group of its own
    output = child.output().strip()
    assert child.proc.returncode == 130, output
    assert output == "wspbus: interrupted while loading the site", output  # "importing slowly" was read above
    assert group_gone(child.pid)




# -- a PID file in /tmp ---------------------------------------------------------------------


def test_a_pid_file_in_tmp_is_accepted_and_controls_the_site(spawn, mode):
    """/tmp is sticky: nobody else can rename or delete our file there."""
    pidfile = "/tmp/wspbus-test-%d-%d.pid" % (os.getpid(), time.monotonic_ns())
    try:
        child, urls = serve(spawn, *mode.options, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile,
                            "hello:app")
        assert get(urls[0]) == (200, b"Hello from wspbus!\n")
        status = run("status", "--pidfile", pidfile)
        assert status.returncode == 0 and str(child.pid) in status.stdout, status.stderr
        assert run("stop", "--pidfile", pidfile).returncode == 0
        assert child.wait() == 0
        assert not os.path.exists(pidfile)
    finally:
        for leftover in (pidfile, *(pidfile[:-len(".pid")] + suffix for suffix in (".status.json", ".control.sock"))):
            if os.path.lexists(leftover):
                os.unlink(leftover)


# -- --daemon -------------------------------------------------------------------------------


def test_the_daemon_launcher_prints_where_the_daemon_serves(tmp_path, mode):
    """The launcher prints the daemon's banner; the supervisor's ends with its line naming the workers."""
    pidfile = tmp_path / "site.pid"
    launcher = run("serve", *mode.options, "--chdir", MINIMAL, "--daemon", "--pidfile", pidfile, "-b", "127.0.0.1:0",
                   "-b", "unix:%s" % (tmp_path / "site.sock"), "hello:app")
    pid = int(pidfile.read_text())
    try:
        assert launcher.returncode == 0, launcher.stderr
        lines = launcher.stdout.splitlines()
        assert lines[0] == "wspbus: daemon started, pid %d" % pid
        urls = [line.split()[-1] for line in lines if line.startswith("wspbus: serving ")]
        assert len(urls) == 2 and urls[1] == "unix:%s" % (tmp_path / "site.sock")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", urls[0]) and not urls[0].endswith(":0")  # the real port
        for url in urls:
            assert get(url) == (200, b"Hello from wspbus!\n")
        if mode.supervised:
            assert re.fullmatch(r"wspbus: supervisor %d, 1 worker: \d+" % pid, lines.pop()), lines
        assert lines[-1] == "wspbus: mounted / -> hello:app (wsgi)"
    finally:
        assert run("stop", "--pidfile", pidfile).returncode == 0


# -- socket activation with no --bind -------------------------------------------------------

def listening_ports(pid: int) -> list[int]:
    """The TCP ports process ``pid`` listens on, read from /proc (its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue  # closed meanwhile (a connection the test's request just ended)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            for row in file.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def group_listening_ports(pgid: int) -> dict[int, list[int]]:
    """Every process of group ``pgid`` (a supervisor and its workers, or one process): its TCP listening ports."""
    ports = {}
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            if os.getpgid(pid) == pgid:
                ports[pid] = listening_ports(pid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue  # ended meanwhile
    return ports


def group_gone(pgid: int, timeout: float = 5.0) -> bool:
    """Wait (test side) until no process is left in group ``pgid``."""
    deadline = time.monotonic() + timeout
    while group_listening_ports(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # test side only
    return True


def test_socket_activation_with_no_bind_serves_on_the_passed_socket_and_binds_nothing(spawn, mode):
    """Every process of the site (the supervisor and its worker, or the one process) listens on the
    passed socket only, before a reload and after it: a single process re-executes itself (same pid,
    LISTEN_* gone, the socket inherited); the supervisor starts a new worker on the socket it holds."""
    child = spawn(ACTIVATING_LAUNCHER, "systemd", *WSPBUS, "serve", *mode.options, "--chdir", str(MINIMAL),
                  "hello:app", name="launcher.py")
    port = int(child.expect(r"^launcher bound (\d+)$").group(1))
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    child.expect(r"^wspbus: mounted ")
    assert url == "http://127.0.0.1:%d" % port
    assert get(url) == (200, b"Hello from wspbus!\n")
    processes = group_listening_ports(child.pid)
    assert len(processes) == (2 if mode.supervised else 1) and all(ports == [port] for ports in processes.values()), \
        processes
    child.send(signal.SIGHUP)  # stdin is no terminal: a reload
    if mode.supervised:
        new_worker = int(child.expect(r"Generation 2 serves: pid (\d+)").group(1))
    else:
        child.expect(r"Re-spawning")
        assert child.expect(r"^wspbus: serving (\S+)$").group(1) == url
        new_worker = child.pid
    assert get(url) == (200, b"Hello from wspbus!\n")
    processes = group_listening_ports(child.pid)
    assert processes[child.pid] == [port] and processes[new_worker] == [port], processes
    assert all(ports in ([port], []) for ports in processes.values()), processes  # an old worker may be closing
    child.send(signal.SIGTERM)
    assert child.wait() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_stop_refuses_a_pid_file_someone_else_put_in_a_sticky_directory(spawn, tmp_path):
    """Someone else's file in /tmp, locked and naming an innocent process: stop must not signal it."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    innocent = spawn([sys.executable, "-c", "import sys; print('waiting', flush=True); sys.stdin.read()"],
                     stdin=subprocess.PIPE)
    innocent.expect("^waiting$")
    pidfile = shared / "site.pid"
    pidfile.write_text("%d\n" % innocent.pid)
    os.chown(pidfile, 65534, 65534)
    holder = spawn("""
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.read()
    """, str(pidfile), stdin=subprocess.PIPE)
    holder.expect("^locked$")
    result = run("stop", "--pidfile", pidfile, "--timeout", "1")
    assert result.returncode != 0
    assert result.stderr == ("wspbus: PID file %s belongs to uid 65534, not to this process (uid 0), in a "
                             "directory others can write; refusing (remove it, or use a directory like /run)\n"
                             % pidfile)
    assert innocent.proc.poll() is None
