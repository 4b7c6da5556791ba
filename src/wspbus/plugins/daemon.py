"""Daemonizer: detach from the terminal, and let the launching process report the outcome.

At start (priority 65, before the PID file at 70 and servers at 75) the process forks twice
with a setsid in between, so the daemon is in a session of its own without being its leader
(it can never acquire a controlling terminal); it changes to '/', sets its umask and points
stdin, stdout and stderr at the given files.

Unlike the classic recipe, the launching process does not exit at once. It waits, on a pipe
from the daemon, until the daemon's bus is STARTED (exit status 0) or its start failed (exit
status the daemon's ``bus.exit_code``, else 1, after printing the daemon's error to the
launcher's stderr, which is still the terminal or the service manager's log). A daemon that
dies before either is reported too: the pipe closes with nothing written. The code that calls
``bus.start()`` may tell the failure itself, with its own exit status and line (``wspbus serve``
does, so a daemon that cannot start ends the launcher as an attached site would):
set ``owner_reports_failure`` before the start and call ``report_start_failure()`` when it fails.
The owner may also give ``launcher_lines``, called in the daemon once it is STARTED: the lines
the launcher prints on its stdout before it exits 0 (``wspbus serve`` tells where the site serves).

Threads do not survive a fork, and a lock one of them held stays locked in the daemon, so
the Daemonizer warns when other threads run at fork time. Threads that mark themselves with
``thread.restarted_after_fork = True`` (the signal workers of the SignalHandler, Drainer and
ChildReaper) have a replacement started in the daemon and are not warned about.

A daemon that restarts (re-executes itself) stays the same process and does not fork again:
the daemon's pid is noted in the environment variable ``WSPBUS_DAEMON_PID``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from .._process import reexec
from .._core.bus import Bus, State
from .base import SimplePlugin, priority, watch_state

__all__ = ["Daemonizer"]

#: Separates the lines of the report's message (the report itself is one line on the pipe).
LINE_SEPARATOR = "\x1f"
#: Set in the daemon to its pid: a re-executed daemon does not daemonize again.
DAEMON_PID_ENV = "WSPBUS_DAEMON_PID"


class Daemonizer(SimplePlugin):
    """Daemonize at start; the launching process exits with the daemon's start outcome.

    ``umask`` (keyword-only) is set in the daemon; None keeps the inherited one. The default
    0o022 differs from CherryPy's 0, which left files created without an explicit mode
    writable by everyone.
    """

    def __init__(self, bus: Bus, stdin: str = "/dev/null", stdout: str = "/dev/null",
                 stderr: str = "/dev/null", *, umask: int | None = 0o022) -> None:
        super().__init__(bus)
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.umask = umask
        self.finalized = False
        #: True: a failed start is told by report_start_failure(), not when the bus stops.
        self.owner_reports_failure = False
        #: Called in the daemon once STARTED: lines for the launcher to print (see the module's doc).
        self.launcher_lines: Callable[[], list[str]] | None = None
        self._report: StartReport | None = None

    @priority(65)
    def start(self) -> None:
        """Become the daemon; the launching process waits for the outcome and exits with it."""
        if self.finalized or os.environ.get(DAEMON_PID_ENV) == str(os.getpid()):
            self.bus.log("Already daemonized (pid %d)." % os.getpid())
            self._settle()  # a restart came back to the directory it started in
            return
        self._warn_about_threads()
        reexec.flush_stdio()
        report_fd, write_fd = os.pipe()
        intermediate = os.fork()
        if intermediate:
            os.close(write_fd)
            self._launcher_waits(report_fd, intermediate)  # does not return
        os.close(report_fd)
        _detach(write_fd)
        os.environ[DAEMON_PID_ENV] = str(os.getpid())
        self._report = StartReport(self.bus, write_fd, deferred=self.owner_reports_failure,
                                   started_lines=self.launcher_lines)
        self.finalized = True
        self._settle()
        self._redirect_streams()
        self.bus.log("Daemonized to PID: %d" % os.getpid())

    def report_start_failure(self, status: int, line: str) -> None:
        """In the daemon, after its start failed: the launcher prints ``line`` and exits ``status``."""
        if self._report is not None:
            self._report.fail(status, line)

    def _settle(self) -> None:
        os.chdir("/")  # hold no mount busy
        if self.umask is not None:
            os.umask(self.umask)

    def _warn_about_threads(self) -> None:
        current = threading.current_thread()
        others = [t.name for t in threading.enumerate()
                  if t is not current and not getattr(t, "restarted_after_fork", False)]
        if others:
            self.bus.log(
                "Daemonizing with %d other thread(s) running (%s): they do not exist in the daemon, "
                "and a lock one of them holds stays locked there; start threads after the "
                "Daemonizer (start priority above 65)." % (len(others), ", ".join(others)),
                level=30,
            )

    def _launcher_waits(self, report_fd: int, intermediate: int) -> None:
        os.waitpid(intermediate, 0)  # it forks the daemon and exits at once
        status, message = read_report(report_fd)
        os.close(report_fd)
        first, *lines = message.split(LINE_SEPARATOR)
        if status == 0:
            self.bus.log("Daemon started: %s; the launching process exits." % first)
            sys.stdout.write("".join(line + "\n" for line in lines))
        else:
            sys.stderr.write(first + "\n")
        reexec.end_process(status)

    def _redirect_streams(self) -> None:
        reexec.flush_stdio()
        for fd, path, flags in (
            (0, self.stdin, os.O_RDONLY),
            (1, self.stdout, os.O_WRONLY | os.O_APPEND | os.O_CREAT),
            (2, self.stderr, os.O_WRONLY | os.O_APPEND | os.O_CREAT),
        ):
            opened = os.open(path, flags, 0o666)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


def _detach(write_fd: int) -> None:
    """In the first child: new session, fork again, and let the middle process go."""
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException as exc:  # the launcher must hear of it; nothing here may return
        _write_all(write_fd, b"1 Daemon failed to start: cannot detach: %s\n" % _one_line(str(exc)))
        os._exit(1)


class StartReport:
    """Tells the launcher, through a pipe, whether this daemon's bus reached STARTED.

    The report is an exit status and the line the launcher prints. Unless ``deferred`` (the
    caller of ``bus.start()`` then calls fail()), a failure is told as the bus stops: exit status
    ``bus.exit_code`` and the last line (``Type: message``) of the first error the bus logged
    since, which is how the bus reports a failing start listener.
    """

    def __init__(self, bus: Bus, fd: int, deferred: bool = False,
                 started_lines: Callable[[], list[str]] | None = None) -> None:
        self.bus = bus
        self.fd: int | None = fd
        self.deferred = deferred
        self.started_lines = started_lines
        self.first_error: str | None = None
        bus.subscribe("log", self.note_error)
        self._unwatch = watch_state(bus, self.on_state)

    def note_error(self, msg: str, level: int = 20) -> None:
        if level >= 40 and self.first_error is None:
            lines = [line for line in msg.splitlines() if line.strip()]
            self.first_error = lines[-1].strip() if lines else msg

    def on_state(self, state: State) -> None:
        if state is self.bus.states.STARTING:
            return
        if state is self.bus.states.STARTED:
            lines = self.started_lines() if self.started_lines is not None else []
            self.send(b"0 %s\n" % LINE_SEPARATOR.join(["pid %d" % os.getpid(), *map(_one_line_text, lines)]).encode())
        elif not self.deferred:
            reason = self.first_error or "the bus stopped before it was STARTED"
            self.fail(getattr(self.bus, "exit_code", 0) or 1, "Daemon failed to start: %s" % reason)

    def fail(self, status: int, line: str) -> None:
        """Have the launcher print ``line`` (one line) and exit with ``status`` (non-zero)."""
        self.send(b"%d %s\n" % (status or 1, _one_line(line)))

    def send(self, line: bytes) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        self._unwatch()
        self.bus.unsubscribe("log", self.note_error)
        try:
            _write_all(fd, line)
        except OSError:
            pass  # the launcher is gone (killed); nobody is left to tell
        finally:
            os.close(fd)


def read_report(fd: int) -> tuple[int, str]:
    """(exit status, message) from the daemon's one-line report; EOF before it is a failure."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\n", 1)[0].decode(errors="replace")
    status, _, message = line.partition(" ")
    if not status.isdigit():
        return 1, "Daemon failed to start: the daemon ended before its bus was STARTED (see its log)"
    code = int(status)
    return (code if code < 256 else 1), message  # an exit status is one byte


def _one_line(text: str) -> bytes:
    return _one_line_text(text).encode(errors="replace")


def _one_line_text(text: str) -> str:
    return " ".join(text.replace(LINE_SEPARATOR, " ").split("\n"))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
