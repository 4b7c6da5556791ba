"""What a new user meets first (issue 13): short start-up failures, --version, a PID file in /tmp, a
daemon that says where it serves, errors that point at the user's code."""

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


def test_a_port_in_use_is_one_short_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % port, "hello:app")
    assert_short_failure(result, 69, "cannot bind 127.0.0.1:%d: address already in use" % port)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop a capability")
def test_permission_denied_on_a_bind_is_one_short_message():
    """Without CAP_NET_BIND_SERVICE (dropped by setpriv, so even root is refused: EACCES), a port
    below ip_unprivileged_port_start cannot be bound."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as file:
        if int(file.read()) <= 80:
            pytest.skip("port 80 is unprivileged on this system")
    drop = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    result = subprocess.run([*drop, *WSPBUS, "serve", "-b", "127.0.0.1:80", "hello:app"], cwd=MINIMAL,
                            capture_output=True, text=True, timeout=30)
    assert_short_failure(result, 69, "cannot bind 127.0.0.1:80: permission denied")


def test_a_pid_file_locked_by_a_running_site_is_one_short_message(spawn, tmp_path):
    pidfile = tmp_path / "site.pid"
    serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    result = run("serve", "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    assert_short_failure(result, 69, "another instance is already running: PID file %s is locked" % pidfile)


def test_a_failing_asgi_lifespan_is_one_short_message(tmp_path):
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        async def app(scope, receive, send):
            assert scope["type"] == "lifespan"
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
    """))
    result = run("serve", "--chdir", tmp_path, "-b", "127.0.0.1:0", "failing:app")
    assert_short_failure(result, 69, "the database is unreachable")


def test_a_missing_pid_file_directory_is_a_configuration_error_found_before_starting(tmp_path):
    pidfile = tmp_path / "missing" / "site.pid"
    result = run("serve", "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    assert_short_failure(result, 78, "the directory of PID file %s does not exist" % pidfile)
    assert "STARTING" not in result.stderr


def test_the_full_story_of_a_failed_start_still_reaches_a_log_file(tmp_path):
    """Only the terminal is spared: a --log-file keeps what the bus logged."""
    log = tmp_path / "site.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % port, "--log-file", log, "hello:app")
    assert_short_failure(result, 69, "address already in use")
    text = log.read_text()
    assert "Bus STARTING" in text and "Bus EXITED" in text
    # The listener that failed to bind: the server's own (a single process) or the supervisor's sockets.
    assert re.search(r"Error in 'start' listener (HTTPServer|Listeners)\.start: cannot bind", text), text
    assert "object at 0x" not in text


# -- --version ----------------------------------------------------------------------------


def test_version_prints_the_package_version():
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as file:
        version = tomllib.load(file)["project"]["version"]
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wspbus %s\n" % version


# -- errors that point into the user's code ------------------------------------------------


def test_a_factory_that_needs_arguments_is_reported_at_the_users_file(tmp_path):
    (tmp_path / "factory.py").write_text(textwrap.dedent("""
        def helper():
            pass


        def create_app(config):
            return None
    """))
    result = run("serve", "--chdir", tmp_path, "-b", "127.0.0.1:0", "factory:create_app()")
    assert_short_failure(result, 78, "missing 1 required positional argument: 'config'")
    assert "(at %s:6)" % (tmp_path / "factory.py") in result.stderr
    assert "wspbus/deploy" not in result.stderr


def test_ctrl_c_while_a_slow_app_imports_is_one_line_and_status_130(spawn, tmp_path):
    (tmp_path / "slow.py").write_text(textwrap.dedent("""
        import threading
        print("importing slowly", flush=True)
        threading.Event().wait(60)

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b""]
    """))
    child = spawn([*WSPBUS, "serve", "--chdir", str(tmp_path), "-b", "127.0.0.1:0", "slow:app"])
    child.expect("^importing slowly$")
    child.send(signal.SIGINT)
    output = child.output().strip()
    assert child.proc.returncode == 130, output
    assert output == "wspbus: interrupted while loading the site", output  # "importing slowly" was read above




# -- a PID file in /tmp ---------------------------------------------------------------------


def test_a_pid_file_in_tmp_is_accepted_and_controls_the_site(spawn):
    """/tmp is sticky: nobody else can rename or delete our file there."""
    pidfile = "/tmp/wspbus-test-%d-%d.pid" % (os.getpid(), time.monotonic_ns())
    try:
        child, urls = serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
        assert get(urls[0]) == (200, b"Hello from wspbus!\n")
        status = run("status", "--pidfile", pidfile)
        assert status.returncode == 0 and str(child.pid) in status.stdout, status.stderr
        assert run("stop", "--pidfile", pidfile).returncode == 0
        assert child.wait() == 0
        assert not os.path.exists(pidfile)
    finally:
        for leftover in (pidfile, pidfile[:-len(".pid")] + ".status.json"):
            if os.path.lexists(leftover):
                os.unlink(leftover)


# -- --daemon -------------------------------------------------------------------------------


def test_the_daemon_launcher_prints_where_the_daemon_serves(tmp_path):
    pidfile = tmp_path / "site.pid"
    launcher = run("serve", "--chdir", MINIMAL, "--daemon", "--pidfile", pidfile, "-b", "127.0.0.1:0",
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
        assert "wspbus: mounted / -> hello:app (wsgi)" in lines  # (a supervisor names its workers after it)
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


def test_socket_activation_with_no_bind_serves_on_the_passed_socket_and_binds_nothing(spawn):
    # A single process: its reload re-executes it, which must find the same sockets (with workers,
    # tests/deploy/supervisor/test_supervisor_process.py).
    child = spawn(ACTIVATING_LAUNCHER, "systemd", *WSPBUS, "serve", "--single-process", "--chdir", str(MINIMAL),
                  "hello:app", name="launcher.py")
    port = int(child.expect(r"^launcher bound (\d+)$").group(1))
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    child.expect(r"^wspbus: mounted ")
    assert url == "http://127.0.0.1:%d" % port
    assert get(url) == (200, b"Hello from wspbus!\n")
    assert listening_ports(child.pid) == [port]
    child.send(signal.SIGHUP)  # a reload re-executes: LISTEN_* are gone, the socket is inherited
    child.expect(r"Re-spawning")
    assert child.expect(r"^wspbus: serving (\S+)$").group(1) == url
    assert get(url) == (200, b"Hello from wspbus!\n")
    assert listening_ports(child.pid) == [port]
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
