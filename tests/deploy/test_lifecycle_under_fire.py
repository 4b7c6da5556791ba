"""Issue #11: the single-process site under signals sent at chosen moments (not timed hopes).

A moment is chosen with a 'start' listener at priority 80 (after the servers listen) that says
"slow start waiting" and then blocks reading a FIFO the test holds: the test signals while the
site is STARTING, then lets the start go on by writing a line to the FIFO.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import textwrap
import threading

import pytest
from serve_support import EXAMPLES, WSPBUS, SteadyClient, banner_port, get, run
from support import DEADLINE

MINIMAL = EXAMPLES / "minimal"

SLOW_START = """
    import os
    import wspbus

    @wspbus.bus.subscribe("start", priority=80)
    def slow_start():
        print("slow start waiting in", os.getpid(), flush=True)
        with open(os.environ["GATE_FIFO"]) as fifo:  # blocks until the test opens it for writing
            fifo.readline()
        print("slow start done", flush=True)

    @wspbus.bus.subscribe("stop")
    def say_stop():  # printed, not logged: the log is held while the site starts
        print("stop listener ran", flush=True)
"""

#: Imported by --import before the plugins are built: the moment before the SignalHandler installs.
#: Not in the child that checks the new code before a reload (deploy.precheck): it only imports.
SLOW_IMPORT = """
    import os

    if not os.environ.get("WSPBUS_CHECK_ONLY"):
        print("slow import waiting in", os.getpid(), flush=True)
        with open(os.environ["GATE_FIFO"]) as fifo:
            fifo.readline()
"""


class Gate:
    """A module (imported with --import) that waits on a FIFO, and the test's side of that FIFO."""

    def __init__(self, tmp_path, code=SLOW_START, module="slow_start"):
        self.dir = tmp_path
        self.module = module
        self.fifo = tmp_path / (module + ".fifo")
        os.mkfifo(self.fifo)
        (tmp_path / (module + ".py")).write_text(textwrap.dedent(code))
        self.env = {"GATE_FIFO": str(self.fifo)}

    def args(self):
        return ["--pythonpath", MINIMAL, "--pythonpath", self.dir, "--import", self.module]

    def release(self):
        """Let the waiting module go on (opening for writing waits for its reader)."""
        fd = os.open(self.fifo, os.O_WRONLY)
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
    except ConnectionRefusedError:
        return True
    return False


def free_port() -> int:
    """A port nothing listens on now (the log, which would tell the server's, is held during a start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- 1. a signal while the site is starting ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exit_requested_while_starting_wins_and_the_first_signal_ends_it(spawn, tmp_path, signum):
    slow = Gate(tmp_path)
    port = free_port()
    child = spawn([*WSPBUS, "serve", "--single-process", *map(str, slow.args()), "-b", "127.0.0.1:%d" % port,
                   "hello:app"], env=slow.env)
    child.expect("slow start waiting")
    child.send(signum)
    child.expect("stop listener ran")  # the exit ran while the start listener still waits: the start must not go on
    slow.release()
    assert child.wait() == 0
    output = child.output()
    assert "Bus STARTED" not in output, output
    assert "wspbus: serving" not in output, output
    assert refused(port)


def test_reload_requested_while_starting_restarts_into_a_serving_site(spawn, tmp_path):
    slow = Gate(tmp_path)
    child = spawn([*WSPBUS, "serve", "--single-process", *map(str, slow.args()), "--pidfile", tmp_path / "site.pid",
                   "-b", "127.0.0.1:0", "hello:app"], env=slow.env)
    child.expect("slow start waiting")
    child.send(signal.SIGHUP)
    child.expect("stop listener ran")
    slow.release()
    child.expect("Re-spawning")
    child.expect("slow start waiting")  # the new process
    slow.release()
    port = banner_port(child.expect(r"^wspbus: serving (\S+)$").group(1))
    assert get("http://127.0.0.1:%d" % port) == (200, b"Hello from wspbus!\n")
    output_so_far = "\n".join(child.lines)
    assert "Restart ignored" not in output_so_far
    child.send(signal.SIGTERM)  # one SIGTERM, as `wspbus stop` sends
    assert child.wait() == 0


def test_sigterm_while_a_reloaded_process_starts_abandons_that_start(spawn, tmp_path):
    """Signals held across the re-exec are taken as the new start begins, not once it ends."""
    gate = Gate(tmp_path)
    child = spawn([*WSPBUS, "serve", "--single-process", *map(str, gate.args()), "-b", "127.0.0.1:0", "hello:app"], env=gate.env)
    child.expect("slow start waiting")
    gate.release()
    child.expect(r"^wspbus: serving")
    child.send(signal.SIGHUP)
    child.expect("Re-spawning")
    child.expect("slow start waiting")
    child.lines.clear()  # what the first process said: from here on, only the new one's lines
    child.send(signal.SIGTERM)
    child.expect("stop listener ran")
    gate.release()
    assert child.wait() == 0
    assert "Bus STARTED" not in child.output()


# -- 2. a second signal right after a reload ---------------------------------------------


def reloaded_and_waiting_in_import(spawn, tmp_path):
    """A site reloaded once, its new process held in an --import before any handler is installed."""
    gate = Gate(tmp_path, SLOW_IMPORT, "slow_import")
    child = spawn([*WSPBUS, "serve", "--single-process", *map(str, gate.args()), "--pidfile", tmp_path / "site.pid",
                   "-b", "127.0.0.1:0", "hello:app"], env=gate.env)
    first = int(child.expect(r"slow import waiting in (\d+)").group(1))
    gate.release()
    child.expect(r"^wspbus: serving")
    child.send(signal.SIGHUP)
    child.expect("Re-spawning")
    assert int(child.expect(r"slow import waiting in (\d+)").group(1)) == first  # re-executed, same pid
    return gate, child


def test_sighup_while_the_reloaded_process_imports_reloads_again(spawn, tmp_path):
    gate, child = reloaded_and_waiting_in_import(spawn, tmp_path)
    child.send(signal.SIGHUP)
    gate.release()
    child.expect(r"^wspbus: serving")
    child.expect("Caught signal SIGHUP")  # taken once the new process was up: a reload
    child.expect("slow import waiting in")
    gate.release()
    url = child.expect(r"^wspbus: serving (\S+)$").group(1)
    assert get(url) == (200, b"Hello from wspbus!\n")
    child.send(signal.SIGTERM)
    assert child.wait() == 0


def test_sigterm_while_the_reloaded_process_imports_ends_it_with_status_0(spawn, tmp_path):
    gate, child = reloaded_and_waiting_in_import(spawn, tmp_path)
    child.send(signal.SIGTERM)
    gate.release()
    assert child.wait() == 0
    assert "Caught signal SIGTERM" in child.output()


SLOW_STOP = """
    import os
    import wspbus

    @wspbus.bus.subscribe("stop", priority=10)
    def slow_stop():
        print("slow stop waiting in", os.getpid(), flush=True)
        with open(os.environ["GATE_FIFO"]) as fifo:
            fifo.readline()
"""


def test_sigterm_while_the_old_process_restarts_ends_it_with_status_0(spawn, tmp_path):
    """SIGTERM during the reload's own exit: the process ends (exit 0) instead of re-executing."""
    gate = Gate(tmp_path, SLOW_STOP, "slow_stop")
    child = spawn([*WSPBUS, "serve", "--single-process", *map(str, gate.args()), "-b", "127.0.0.1:0", "hello:app"], env=gate.env)
    child.expect(r"^wspbus: serving")
    child.send(signal.SIGHUP)
    child.expect("slow stop waiting")
    child.send(signal.SIGTERM)
    child.expect("Caught signal SIGTERM")
    gate.release()
    status = child.wait()
    output = child.output()
    assert status == 0, output
    assert "Re-spawning" not in output


# -- 3. reloads coalesce -----------------------------------------------------------------

#: Sites whose body is the %s filled in; /slow runs 12 s (item 4), saying so in one write.
WSGI_APP = """
    import os, time

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            os.write(1, b"slow request running\\n")  # one write: three threads print at once
            time.sleep(12)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%s"]
"""

ASGI_APP = """
    import asyncio, os

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/slow":
            os.write(1, b"slow request running\\n")
            await asyncio.sleep(12)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"%s"})
"""


def write_version(directory, version: int, template: str = WSGI_APP, first_line: str = "") -> None:
    (directory / "site_app.py").write_text(first_line + textwrap.dedent(template % ("version %d" % version)))


def serve_versioned(spawn, directory, *options):
    """``wspbus serve`` of site_app:app from ``directory`` (no bytecode: saves in one second differ)."""
    child = spawn([*WSPBUS, "serve", "--single-process", "--chdir", directory, "-b", "127.0.0.1:0", *options, "site_app:app"],
                  env={"PYTHONDONTWRITEBYTECODE": "1"})
    return child, child.expect(r"^wspbus: serving (\S+)$").group(1)


@pytest.mark.parametrize("template", [WSGI_APP, ASGI_APP], ids=["wsgi", "asgi"])
def test_a_burst_of_reloads_ends_on_the_newest_code_with_no_failed_request(spawn, tmp_path, template):
    def write(version: int) -> None:
        write_version(tmp_path, version, template)

    write(0)
    pidfile = tmp_path / "site.pid"
    child, url = serve_versioned(spawn, tmp_path, "--pidfile", pidfile)
    with SteadyClient(url) as client:
        client.wait_for(b"version 0")
        reloads = []
        try:
            for version in range(1, 21):  # fired back to back, not waiting for each other
                write(version)
                reloads.append(subprocess.Popen([*WSPBUS, "reload", "--pidfile", str(pidfile)],
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            outcomes = [(reload.wait(60), reload.stdout.read()) for reload in reloads]
        finally:
            for reload in reloads:
                reload.kill()
                reload.wait()
                reload.stdout.close()
        assert [status for status, _ in outcomes] == [0] * 20, outcomes
        client.wait_for(b"version 20", timeout=30)
    assert client.failures == []
    assert len(client.bodies) > 20
    result = run("stop", "--pidfile", pidfile, "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert child.wait() == 0


# -- 9. --reload and a save that compiles but does not import ------------------------------

BROKEN_IMPORT = "import a_dependency_nobody_installed\n"


def test_autoreload_survives_a_save_that_fails_to_import_and_serves_the_next_good_one(spawn, tmp_path):
    write_version(tmp_path, 1)
    child, url = serve_versioned(spawn, tmp_path, "--reload")
    with SteadyClient(url) as client:
        client.wait_for(b"version 1")
        write_version(tmp_path, 2, first_line=BROKEN_IMPORT)
        child.expect("No module named 'a_dependency_nobody_installed'")
        assert child.proc.poll() is None
        assert get(url) == (200, b"version 1")  # the old code keeps serving
        write_version(tmp_path, 3)
        client.wait_for(b"version 3")
    assert client.failures == []
    child.send(signal.SIGTERM)
    assert child.wait() == 0
    assert "a_dependency_nobody_installed" not in child.output()  # shown once: the line expected above


# -- 8. a reload into broken code in single-process mode -------------------------------------


def test_a_reload_into_broken_code_keeps_serving_and_reload_says_why(spawn, tmp_path):
    write_version(tmp_path, 1)
    pidfile = tmp_path / "site.pid"
    child, url = serve_versioned(spawn, tmp_path, "--pidfile", pidfile)
    with SteadyClient(url) as client:
        client.wait_for(b"version 1")
        write_version(tmp_path, 2, first_line=BROKEN_IMPORT)
        result = run("reload", "--pidfile", pidfile)
        assert result.returncode != 0
        assert "a_dependency_nobody_installed" in result.stderr and "Traceback" not in result.stderr
        assert child.proc.poll() is None
        assert get(url) == (200, b"version 1")
        write_version(tmp_path, 3)
        result = run("reload", "--pidfile", pidfile)
        assert result.returncode == 0, result.stderr
        assert get(url) == (200, b"version 3")  # `wspbus reload` returned once the new code serves
    assert client.failures == []
    assert run("stop", "--pidfile", pidfile).returncode == 0
    assert child.wait() == 0
    assert child.output().count("No module named 'a_dependency_nobody_installed'") == 1  # logged once


# -- 4. --graceful-timeout bounds the whole stop -------------------------------------------

def _slow_request(url: str, outcomes: list) -> None:
    try:
        outcomes.append(get(url, "/slow", timeout=30))
    except OSError as exc:
        outcomes.append(exc)


@pytest.mark.parametrize("template", [WSGI_APP, ASGI_APP], ids=["wsgi", "asgi"])
def test_graceful_timeout_bounds_the_whole_stop_and_names_what_was_cut_off(spawn, tmp_path, template):
    import time

    write_version(tmp_path, 1, template)
    child, url = serve_versioned(spawn, tmp_path, "--graceful-timeout", "2")
    outcomes: list = []
    clients = [threading.Thread(target=_slow_request, args=(url, outcomes)) for _ in range(3)]
    for client in clients:
        client.start()
    for _ in clients:
        child.expect("slow request running")
    sent = time.monotonic()
    child.send(signal.SIGTERM)
    status = child.wait(timeout=30)
    took = time.monotonic() - sent
    for client in clients:
        client.join(30)
    output = child.output()
    assert status == 0, output
    assert took < 2 + 0.5 + 0.5, "the stop took %.2f s with --graceful-timeout 2:\n%s" % (took, output)  # +0.5: test slack
    assert re.search(r"3 requests? cut off", output), output
    assert len(re.findall(r"GET /slow \(running \d+\.\d s\)", output)) == 3, output
    assert len(outcomes) == 3
    if template is ASGI_APP:  # an ASGI client cut off is told so (a WSGI request holds its thread to the end)
        assert [outcome[0] for outcome in outcomes] == [503] * 3, outcomes
