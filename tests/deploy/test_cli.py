"""The `wspbus` command, run for real: serve, its errors and exit statuses, and control of a running site."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sysconfig
import textwrap
import time

import pytest
from serve_support import EXAMPLES, SteadyClient, ended, get, one_error_line, run, serve
from support import process_gone, wait_for_path

from wspbus.deploy.cli import build_parser
from wspbus.deploy.control import read_status

MINIMAL = EXAMPLES / "minimal"
# The installed `wspbus` command itself, from this interpreter's scripts directory (PATH may not
# have it: a pyenv shim appears only after a rehash).
CONSOLE_SCRIPT = os.path.join(sysconfig.get_path("scripts"), "wspbus")


def write_app(directory, name="site_app", body="version 1"):
    path = directory / (name + ".py")
    path.write_text(textwrap.dedent("""
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"%s"]
    """ % body))
    return path


def wait_until_restarted(pidfile, started_before, timeout=15.0):
    """Wait until the site's status file says it STARTED again after ``started_before`` (its last
    start): until then a request may still be answered by the process being replaced."""
    deadline = time.monotonic() + timeout
    while True:
        record = read_status(str(pidfile))
        if record["state"] == "STARTED" and record["started"] > started_before:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the site did not start again within %gs: %r" % (timeout, record))
        time.sleep(0.02)  # test side only


# -- help and usage -----------------------------------------------------------------------


def test_help_names_every_option_and_the_exit_statuses():
    result = subprocess.run([CONSOLE_SCRIPT, "serve", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("--bind", "--server", "--reload", "--daemon", "--pidfile", "--user", "--group", "--umask",
                   "--graceful-timeout", "--log-file", "--access-log", "--import", "--chdir", "--pythonpath",
                   "--config", "--protocol", "--threads"):
        assert option in result.stdout
    assert re.search(r"^\s+78\s+the configuration is wrong", result.stdout, re.M)
    assert re.search(r"^\s+69\s+the site could not start", result.stdout, re.M)
    top = run("--help")
    for command in ("serve", "stop", "reload", "graceful", "status"):
        assert command in top.stdout


def test_stop_timeout_inf_waits_without_limit_and_nan_or_negative_is_a_usage_mistake(capsys):
    parser = build_parser()
    assert parser.parse_args(["stop", "--pidfile", "p", "--timeout", "inf"]).timeout is None
    assert parser.parse_args(["stop", "--pidfile", "p", "--timeout", "2.5"]).timeout == 2.5
    for bad in ("nan", "-1", "soon"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["stop", "--pidfile", "p", "--timeout", bad])
        assert exited.value.code == 64
        assert capsys.readouterr().err == ("wspbus stop: error: argument --timeout: expected a number of seconds "
                                           "of 0 or more (inf: no limit), got %r (see wspbus stop --help)\n" % bad)


def test_a_usage_mistake_is_one_line_and_status_64():
    result = run("serve", "--frobnicate", "hello:app")
    assert result.returncode == 64
    assert result.stderr.strip().splitlines() == [
        "wspbus serve: error: unrecognized arguments: --frobnicate (see wspbus serve --help)"]


# -- serving ------------------------------------------------------------------------------


def test_the_console_script_finds_apps_in_the_current_directory(spawn):
    child = spawn([CONSOLE_SCRIPT, "serve", "-b", "127.0.0.1:0", "hello:app"], cwd=MINIMAL)
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    assert get(url) == (200, b"Hello from wspbus!\n")


def test_serves_on_ipv4_ipv6_and_a_unix_socket_and_stops_cleanly_on_sigterm(spawn, tmp_path):
    sock = tmp_path / "site.sock"
    child, urls = serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "-b", "[::1]:0", "-b", "unix:%s" % sock,
                        "hello:app")
    assert urls[0].startswith("http://127.0.0.1:") and not urls[0].endswith(":0")
    assert urls[1].startswith("http://[::1]:") and urls[2] == "unix:%s" % sock
    for url in urls:
        assert get(url) == (200, b"Hello from wspbus!\n")
    started = time.monotonic()
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert time.monotonic() - started < 2
    assert not sock.exists()


def test_import_chdir_and_pythonpath_load_plugins_and_apps_from_the_right_place(spawn, tmp_path):
    (tmp_path / "lib").mkdir()
    write_app(tmp_path / "lib", body="from lib")
    (tmp_path / "site_plugins.py").write_text(textwrap.dedent("""
        import os
        import wspbus

        @wspbus.bus.subscribe("start")
        def announce():
            print("site plugin started in", os.getcwd(), flush=True)
    """))
    child, urls = serve(spawn, "--chdir", tmp_path, "--pythonpath", tmp_path / "lib", "--pythonpath", tmp_path,
                        "--import", "site_plugins", "-b", "127.0.0.1:0", "site_app:app")
    assert child.expect(r"site plugin started in (.*)").group(1) == str(tmp_path)
    assert get(urls[0]) == (200, b"from lib")


def test_logs_and_access_log_go_to_their_files(spawn, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    child, urls = serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--log-file", error_log,
                        "--access-log", access_log, "hello:app")
    get(urls[0], "/some/page")
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert "Bus STARTED" in error_log.read_text() and "Bus EXITED" in error_log.read_text()
    assert re.search(r'"GET /some/page HTTP/1\.1" 200 ', access_log.read_text())


def test_health_endpoints_answer_before_the_apps(spawn, tmp_path):
    (tmp_path / "site.toml").write_text(textwrap.dedent("""
        [[app]]
        target = "hello:app"
        [plugins.health]
        ready_path = "/-/ready"
    """))
    child, urls = serve(spawn, "--config", tmp_path / "site.toml", "--pythonpath", MINIMAL, "-b", "127.0.0.1:0")
    assert get(urls[0], "/-/ready")[0] == 200
    assert get(urls[0], "/livez")[0] == 200
    assert get(urls[0], "/readyz") == (200, b"Hello from wspbus!\n")  # moved: the app has that path now


def test_sigterm_drains_when_the_drain_plugin_is_on(spawn, tmp_path):
    (tmp_path / "site.toml").write_text(textwrap.dedent("""
        [[app]]
        target = "hello:app"
        [plugins.health]
        [plugins.drain]
        drain_delay = 2
    """))
    child, urls = serve(spawn, "--config", tmp_path / "site.toml", "--pythonpath", MINIMAL, "-b", "127.0.0.1:0")
    assert get(urls[0], "/readyz")[0] == 200
    signalled = time.monotonic()
    child.send(signal.SIGTERM)
    child.expect("drain", timeout=10)
    assert get(urls[0], "/readyz")[0] == 503  # out of the load balancer...
    assert get(urls[0], "/") == (200, b"Hello from wspbus!\n")  # ...but still serving
    assert child.wait() == 0  # the drain ran out: a clean exit
    assert time.monotonic() - signalled >= 2


# -- mistakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("toml, args, expected", [
    ("[site]\ngraceful_timout = 3\n", [], r"site\.toml: \[site\] graceful_timout: unknown key"),
    ("[[server]]\nbind = 'localhost:99999'\n", [], r"\[\[server\]\] #1 bind: bad bind 'localhost:99999'"),
    ("[[server]]\nserver = 'bogus'\n", [], r"\[\[server\]\] #1 server: unknown server 'bogus': expected auto,"),
    ("", ["--server", "bogus"], r"--server: unknown server 'bogus': expected auto,"),
    ("[site]\ngroup = -5\n", [], r"\[site\] group: expected an existing group name or gid"),
    ("[plugins.reload]\nmatch = '('\n", ["--reload"], r"site\.toml: \[plugins\.reload\]: Autoreloader match must be a regular expression"),
    ("[site]\nuser = 'no-such-user-xyz'\n", [], r"\[site\] user: expected an existing user"),
    ("[[app]]\ntarget = 'no_such_module_xyz:app'\n", [], r"site\.toml: app 'no_such_module_xyz:app': no module named"),
    ("[[app]]\ntarget = 'site_app:version'\n", [], r"app 'site_app:version' is not callable \(it is str\)"),
    ("[plugins.reload]\nfrequncy = 2\n", ["--reload"], r"\[plugins\.reload\] frequncy: unknown setting \(expected one of: frequency, match"),
    ("[plugins.reload]\nfrequncy = 2\n", [], r"site\.toml: \[plugins\.reload\] frequncy: unknown setting \(expected one of: frequency, match"),
    ("[plugins.teleport]\n", [], r"\[plugins\.teleport\]: unknown plugin 'teleport'"),
    ("[[plugin]]\npath = 'no_such_module_xyz:Plugin'\n", [], r"\[\[plugin\]\] #1 path: no module named 'no_such_module_xyz'"),
    ("[site]\nimport = ['no_such_module_xyz']\n", [], r"import: no module named 'no_such_module_xyz'"),
    ("", ["--bind", "nowhere"], r"--bind: bad bind 'nowhere': the port is missing"),
    ("", ["--user", "no-such-user-xyz"], r"--user: expected an existing user"),
    ("", ["--log-file", "/no/such/dir/error.log"], r"cannot open the error log '/no/such/dir/error\.log'"),
    ("", ["--config", "missing.toml"], r"missing\.toml: no such configuration file"),
])
def test_a_configuration_mistake_is_one_line_and_status_78(tmp_path, toml, args, expected):
    (tmp_path / "site_app.py").write_text("version = '1'\n\ndef app(environ, start_response):\n    pass\n")
    (tmp_path / "site.toml").write_text(toml + ("[[app]]\ntarget = 'site_app:app'\n" if "[[app]]" not in toml else ""))
    config = [] if "--config" in args else ["--config", "site.toml"]
    result = run("serve", *config, "--chdir", tmp_path, *args, cwd=tmp_path)
    assert result.returncode == 78, result.stderr
    assert re.search(expected, one_error_line(result.stderr)), result.stderr


@pytest.mark.parametrize("detach", [[], ["--daemon"]], ids=["attached", "daemon"])
def test_a_port_in_use_is_one_line_and_status_69(tmp_path, detach):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", *detach, "--chdir", MINIMAL, "-b", "127.0.0.1:%d" % port, "hello:app")
    assert result.returncode == 69, result.stderr
    assert one_error_line(result.stderr) == (
        "wspbus: error: the site could not start: cannot bind 127.0.0.1:%d: address already in use" % port)


def test_a_start_listener_that_fails_ends_non_zero_with_its_message(tmp_path):
    (tmp_path / "failing.py").write_text(textwrap.dedent("""
        import wspbus
        wspbus.bus.subscribe("start", lambda: 1 / 0)
    """))
    result = run("serve", "--chdir", tmp_path, "--pythonpath", MINIMAL, "--pythonpath", tmp_path,
                 "--import", "failing", "-b", "127.0.0.1:0", "hello:app")
    assert result.returncode == 69
    assert "the site could not start: division by zero" in result.stderr
    assert "ZeroDivisionError" in result.stderr  # a bug in code keeps its traceback in the log


def test_an_asgi_app_whose_startup_fails_stops_the_site_with_its_message(tmp_path):
    (tmp_path / "failing_asgi.py").write_text(textwrap.dedent("""
        import contextlib
        from starlette.applications import Starlette

        @contextlib.asynccontextmanager
        async def lifespan(app):
            raise RuntimeError("the database is unreachable")
            yield

        app = Starlette(lifespan=lifespan)
    """))
    result = run("serve", "--chdir", tmp_path, "--pythonpath", MINIMAL, "--pythonpath", tmp_path,
                 "-b", "127.0.0.1:0", "/=hello:app", "/api=failing_asgi:app")
    assert result.returncode == 69
    final = result.stderr.strip().splitlines()[-1]  # (the log above has the app's own traceback)
    assert final.startswith("wspbus: error: the site could not start: ASGI lifespan startup failed: the app at /api:")
    assert "the database is unreachable" in final


# -- control ------------------------------------------------------------------------------


def test_status_and_stop_through_the_pid_file(spawn, tmp_path):
    pidfile = tmp_path / "site.pid"
    child, urls = serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "hello:app")
    status = run("status", "--pidfile", pidfile)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[:2] == ["state: STARTED", "pid: %d" % child.pid]
    assert re.match(r"uptime: \dm \d\ds$", lines[2])
    assert "bind: %s" % urls[0] in lines and "mounted: / -> hello:app (wsgi)" in lines
    stopped = run("stop", "--pidfile", pidfile)
    assert stopped.returncode == 0 and "stopped the site (pid %d)" % child.pid in stopped.stdout
    assert process_gone(child.pid) or child.wait(1) == 0
    assert child.wait() == 0
    again = run("status", "--pidfile", pidfile)
    assert again.returncode == 3 and "not running" in again.stderr
    assert not (tmp_path / "site.status.json").exists()


def test_reload_under_a_steady_client_loses_no_request_and_serves_fresh_code(spawn, tmp_path):
    write_app(tmp_path, body="version 1")
    pidfile = tmp_path / "site.pid"
    child, urls = serve(spawn, "--single-process", "--chdir", tmp_path, "-b", "127.0.0.1:0", "--pidfile", pidfile,
                        "site_app:app")
    with SteadyClient(urls[0]) as client:
        client.wait_for(b"version 1")
        write_app(tmp_path, body="version 2")
        assert run("reload", "--pidfile", pidfile).returncode == 0
        child.expect("Re-spawning")
        client.wait_for(b"version 2")
        served_during = len(client.bodies)
    assert client.failures == [], client.failures[:5]
    assert child.proc.poll() is None  # same process (re-executed in place), still serving
    assert run("status", "--pidfile", pidfile).stdout.startswith("state: STARTED\npid: %d" % child.pid)
    print("reload: %d requests, 0 failed, longest gap %.3f s" % (served_during, client.longest_gap))


def test_autoreload_says_it_is_on_and_serves_saved_code(spawn, tmp_path):
    write_app(tmp_path, body="before")
    child, urls = serve(spawn, "--chdir", tmp_path, "-b", "127.0.0.1:0", "--reload", "site_app:app")
    child.expect(r"^wspbus: autoreload is on")
    with SteadyClient(urls[0]) as client:
        client.wait_for(b"before")
        write_app(tmp_path, body="after the save")
        client.wait_for(b"after the save")
    assert client.failures == [], client.failures[:5]


def test_daemon_mode_returns_once_started_and_is_controlled_by_its_pid_file(tmp_path):
    pidfile, log = tmp_path / "site.pid", tmp_path / "error.log"
    launcher = run("serve", "--single-process", "--chdir", MINIMAL, "--daemon", "--pidfile", pidfile,
                   "--log-file", log, "-b", "127.0.0.1:0", "hello:app")
    assert launcher.returncode == 0, launcher.stderr
    pid = int(pidfile.read_text())
    try:
        status = run("status", "--pidfile", pidfile)
        assert status.stdout.startswith("state: STARTED\npid: %d\n" % pid)
        url = re.search(r"^bind: (\S+)$", status.stdout, re.M).group(1)
        assert get(url) == (200, b"Hello from wspbus!\n")
        assert re.search(r"INFO Serving %s$" % re.escape(url), log.read_text(), re.M)  # the banner, logged
        started = read_status(str(pidfile))["started"]
        assert run("reload", "--pidfile", pidfile).returncode == 0  # a daemon re-executes in place
        wait_until_restarted(pidfile, started)
        assert get(url) == (200, b"Hello from wspbus!\n")
        assert run("status", "--pidfile", pidfile).stdout.startswith("state: STARTED\npid: %d\n" % pid)
        assert log.read_text().count("Re-spawning") == 1
        assert run("stop", "--pidfile", pidfile).returncode == 0
        assert ended(pid)
    finally:
        if not ended(pid):
            os.kill(pid, signal.SIGKILL)


def test_graceful_reopens_the_log_files_after_logrotate_moved_them(spawn, tmp_path):
    pidfile, log = tmp_path / "site.pid", tmp_path / "error.log"
    child, urls = serve(spawn, "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--pidfile", pidfile, "--log-file", log,
                        "hello:app")
    log.rename(tmp_path / "error.log.1")
    assert run("graceful", "--pidfile", pidfile).returncode == 0
    wait_for_path(log)
    assert child.proc.poll() is None and get(urls[0]) == (200, b"Hello from wspbus!\n")
    assert "Bus graceful" in (tmp_path / "error.log.1").read_text() + log.read_text()


def test_user_and_group_are_dropped_to_after_binding(spawn, tmp_path):
    child, urls = serve(spawn, "--single-process", "--chdir", MINIMAL, "-b", "127.0.0.1:0", "--user", "nobody",
                        "--group", "nogroup", "--umask", "027", "hello:app")
    assert get(urls[0]) == (200, b"Hello from wspbus!\n")
    with open("/proc/%d/status" % child.pid) as file:
        status = file.read()
    assert re.search(r"^Uid:\s+65534\s+65534\s+65534", status, re.M)
    assert re.search(r"^Gid:\s+65534\s+65534\s+65534", status, re.M)
    assert re.search(r"^Umask:\s+0027", status, re.M)
