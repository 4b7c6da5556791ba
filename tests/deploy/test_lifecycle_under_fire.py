"""Issue #11: the single-process site under signals sent at chosen moments (not timed hopes).

A moment is chosen with a 'start' listener at priority 80 (after the servers listen) that says
"slow start waiting" and then blocks reading a FIFO the test holds: the test signals while the
site is STARTING, then lets the start go on by writing a line to the FIFO.
"""

from __future__ import annotations

import os
import signal
import socket
import textwrap

import pytest
from serve_support import EXAMPLES, WSPBUS, banner_port, get
from support import DEADLINE

MINIMAL = EXAMPLES / "minimal"

SLOW_START = """
    import os
    import wspbus

    @wspbus.bus.subscribe("start", priority=80)
    def slow_start():
        path = os.environ["SLOW_START_FIFO"]
        print("slow start waiting in", os.getpid(), flush=True)
        with open(path) as fifo:  # blocks until the test opens it for writing
            fifo.readline()
        print("slow start done", flush=True)
"""


class SlowStart:
    """The FIFO a slow 'start' listener waits on, and the test's side of it."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.fifo = tmp_path / "start.fifo"
        os.mkfifo(self.fifo)
        (tmp_path / "slow_start.py").write_text(textwrap.dedent(SLOW_START))
        self.env = {"SLOW_START_FIFO": str(self.fifo)}

    def args(self):
        return ["--pythonpath", MINIMAL, "--pythonpath", self.dir, "--import", "slow_start"]

    def release(self):
        """Let the waiting start listener return (opening for writing waits for its reader)."""
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


def bound_port(child) -> int:
    """The port the server listens on, from its 'Serving on' log line (the banner comes later)."""
    return int(child.expect(r"Serving on http://127\.0\.0\.1:(\d+)").group(1))


# -- 1. a signal while the site is starting ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exit_requested_while_starting_wins_and_the_first_signal_ends_it(spawn, tmp_path, signum):
    slow = SlowStart(tmp_path)
    child = spawn([*WSPBUS, "serve", *map(str, slow.args()), "-b", "127.0.0.1:0", "hello:app"],
                  env=slow.env)
    port = bound_port(child)
    child.expect("slow start waiting")
    child.send(signum)
    child.expect("Caught signal %s" % signal.Signals(signum).name)
    slow.release()
    assert child.wait() == 0
    output = child.output()
    assert "Bus STARTED" not in output, output
    assert "wspbus: serving" not in output, output
    assert output.index("Bus EXITING") < output.index("Bus EXITED")
    assert refused(port)


def test_reload_requested_while_starting_restarts_into_a_serving_site(spawn, tmp_path):
    slow = SlowStart(tmp_path)
    child = spawn([*WSPBUS, "serve", *map(str, slow.args()), "--pidfile", tmp_path / "site.pid",
                   "-b", "127.0.0.1:0", "hello:app"], env=slow.env)
    child.expect("slow start waiting")
    child.send(signal.SIGHUP)
    child.expect("Caught signal SIGHUP")
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
