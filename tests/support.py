"""Helpers for tests that run real child processes: wait on their output, never on the clock.

``Child`` wraps a Popen whose stdout and stderr are merged and read by a thread into a queue,
so ``expect()`` wakes on the line itself and gives up at a deadline. Every Child is killed
(with its whole process group) at teardown by the ``spawn`` fixture.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

DEADLINE = 15.0  # generous: CI machines are shared; every wait ends early on its event


class Child:
    def __init__(self, args, *, env=None, cwd=None, stdin=subprocess.DEVNULL):
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=stdin,
            env=full_env, cwd=cwd, start_new_session=True, text=True, bufsize=1,
        )
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = DEADLINE) -> re.Match:
        """Wait for a line matching ``pattern`` (re.search); fail with the output so far."""
        regex = re.compile(pattern)
        for line in self.lines:
            match = regex.search(line)
            if match:
                self.lines.remove(line)
                return match
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError("no line matching %r within %gs; output:\n%s"
                                     % (pattern, timeout, "\n".join(self.lines + seen))) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError("process ended (status %s) before a line matching %r; output:\n%s"
                                     % (self.proc.poll(), pattern, "\n".join(self.lines + seen)))
            match = regex.search(line)
            if match:
                self.lines.extend(seen)
                return match
            seen.append(line)

    def output(self, timeout: float = DEADLINE) -> str:
        """All output until the process closes it."""
        self.wait(timeout)
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)
                break
            self.lines.append(line)
        return "\n".join(self.lines)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """End the child and everything in its process group; close the pipe."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        self.proc.stdout.close()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # buffered input the child will never read


def python_child(code: str, *args: str, tmp_path: Path | None = None, name: str = "child.py", **kw) -> Child:
    """Run ``code`` (dedented) as a script file of its own with this interpreter.

    Each child gets a fresh file (``child.py``, ``child-2.py``, ...): rewriting a script that an
    earlier child is still reading would hand it a truncated program.
    """
    if tmp_path is None:
        import tempfile
        tmp_path = Path(tempfile.mkdtemp())
    script = tmp_path / name
    number = 1
    while script.exists():
        number += 1
        script = tmp_path / ("%s-%d%s" % (Path(name).stem, number, Path(name).suffix))
    script.write_text(textwrap.dedent(code))
    return Child([sys.executable, str(script), *args], **kw)


def wait_for_path(path: Path, timeout: float = DEADLINE) -> None:
    """Wait until ``path`` exists, checking with a short backoff until the deadline (test side only)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not path.exists():  # test-side only; the library itself never waits like this
        if time.monotonic() > deadline:
            raise AssertionError("%s did not appear within %gs" % (path, timeout))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def http_get(host: str, port: int, path: str = "/", timeout: float = 5.0):
    """One GET over a fresh connection: (status, body bytes)."""
    from wspbus.servers.sockets.addresses import bracketed
    from wspbus.testing import get

    return get("http://%s:%d" % (bracketed(host), port), path, timeout)


def threads_left_running(before: set, timeout: float = DEADLINE) -> list[str]:
    """Wait (until ``timeout``) for the threads started since ``before`` (a set of
    threading.enumerate()) to end; the names of those still running."""
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sorted(thread.name for thread in set(threading.enumerate()) - before if thread.is_alive())


#: A service manager in small: bind 127.0.0.1:0, leave the socket on descriptor 3, set LISTEN_* as
#: systemd does (argv[1] "systemd"; "plain" sets nothing), and exec argv[2:] in the same process
#: (same pid: LISTEN_PID stays right). Prints "launcher bound PORT" first.
ACTIVATING_LAUNCHER = r'''
import os, socket, sys
protocol, command = sys.argv[1], sys.argv[2:]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print("launcher bound", listener.getsockname()[1], flush=True)
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)  # inheritable, as a service manager leaves it
    listener.close()
else:
    listener.detach()
    os.set_inheritable(3, True)
if protocol == "systemd":
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
os.execv(command[0], command)
'''
