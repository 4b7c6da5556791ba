"""The supervisor's handle on one worker process: start it, hear it, signal it, see it end.

A worker is a fresh interpreter (``subprocess.Popen``: fork and exec at once, in C), never a
fork of the supervisor, which holds threads and must never have imported the site. Its end is
an event: a pidfd (``os.pidfd_open``) becomes readable when the process exits, and the event
loop watches it next to the worker's channel. The Popen object reaps it, so a PID 1 reaper
(plugins/reaper.py) leaves its exit status alone. A third descriptor, a pipe, carries what the
worker's faulthandler writes (its stacks, when it is hung or crashes; stacks.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ..._process.reexec import STARTUP_CWD
from .channel import FD_ENV, ChannelError, LineReader, Message, encode
from .stacks import FAULT_FD_ENV, StackDump

__all__ = ["WorkerFailed", "WorkerProcess", "describe_exit", "spawn_worker"]

WORKER_MODULE = "wspbus.deploy.supervisor.worker"
#: Meant for the supervisor alone: a worker must not notify systemd, take activated sockets,
#: or believe it is a re-executed daemon.
SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
                       "LISTEN_FDNAMES", "WSPBUS_DAEMON_PID", "WSPBUS_INHERITED_FDS")


class WorkerFailed(Exception):
    """A worker did not reach STARTED: ``status`` is the exit status to end with, ``line`` says why."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status
        self.line = line


class WorkerProcess:
    """One worker: its process, its channel, its state and what it last reported.

    ``state`` goes 'starting' -> 'serving' -> 'stopping' -> 'exited' (a worker that fails
    to start goes to 'exited' from 'starting'). ``started`` resolves with the 'started' message
    (or fails with WorkerFailed); ``exited`` resolves with the exit status (Popen's returncode:
    negative for a signal).
    """

    def __init__(self, generation: int, slot: int, popen: subprocess.Popen[bytes], sock: socket.socket,
                 fault_fd: int | None = None) -> None:
        self.generation = generation
        self.slot = slot
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.state = "starting"
        self.born = time.monotonic()
        self.created = time.time()
        self.serving_since: float | None = None
        self.requests = 0
        self.rss = 0
        self.last_heard = self.born
        self.report: Message = {}
        self.failure: Message | None = None
        #: The supervisor asked it to end (a reload, a stop, a scale-down): its end is no crash.
        self.stop_requested = False
        #: It asked to be replaced (--max-requests, --max-worker-memory) and its replacement starts.
        self.recycling = False
        self._reader = LineReader()
        self._pidfd: int | None = None
        #: The read end of the pipe the worker's faulthandler writes into, and what came through it.
        self._fault_fd = fault_fd
        self._stacks = StackDump(self.pid)
        self.started: asyncio.Future[Message] | None = None
        self.exited: asyncio.Future[int] | None = None
        #: Resolved once the worker's bus left STARTED (its servers stop accepting) or it ended.
        self.stopping: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return "worker %d (generation %d)" % (self.pid, self.generation)

    # -- event loop wiring -----------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, on_message: Callable[["WorkerProcess", Message], None],
              on_exit: Callable[["WorkerProcess"], None],
              on_stacks: Callable[["WorkerProcess", list[str]], None] = lambda worker, lines: None) -> None:
        """Have ``loop`` call on_message for each message, on_stacks with the lines of its stack
        dump (stacks.py), and on_exit once the process ended."""
        self.started = loop.create_future()
        self.exited = loop.create_future()
        self.stopping = loop.create_future()
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable, loop, on_message)
        if self._fault_fd is not None:
            os.set_blocking(self._fault_fd, False)
            loop.add_reader(self._fault_fd, self._fault_readable, loop, on_stacks)
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._ended, loop, on_message, on_exit, on_stacks)

    def _readable(self, loop: asyncio.AbstractEventLoop, on_message: Callable[["WorkerProcess", Message], None]) -> None:
        for message in self._receive(loop):
            self.last_heard = time.monotonic()
            on_message(self, message)

    def _receive(self, loop: asyncio.AbstractEventLoop) -> list[Message]:
        """The messages that arrived; at end-of-file or a protocol error, stop listening."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        try:
            messages = self._reader.feed(data) if data else []
        except ChannelError:
            data = b""
            messages = []
        if not data:
            loop.remove_reader(self.sock.fileno())
        return messages

    def _fault_readable(self, loop: asyncio.AbstractEventLoop,
                        on_stacks: Callable[["WorkerProcess", list[str]], None]) -> None:
        """Its faulthandler wrote: keep it until the worker ends (at end-of-file, stop listening)."""
        assert self._fault_fd is not None
        try:
            data = os.read(self._fault_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(self._fault_fd)
        lines = self._stacks.feed(data)
        if lines:
            on_stacks(self, lines)

    def _close_fault_pipe(self, loop: asyncio.AbstractEventLoop,
                          on_stacks: Callable[["WorkerProcess", list[str]], None]) -> None:
        """The worker ended: read what is left in its stack-dump pipe, log all of it, close it.

        Not at end-of-file: a process the site forked may hold the pipe's write end open."""
        if self._fault_fd is None:
            return
        loop.remove_reader(self._fault_fd)
        while True:
            try:
                data = os.read(self._fault_fd, 65536)
            except OSError:  # BlockingIOError: nothing more was written
                break
            if not data:
                break
            self._stacks.feed(data)
        os.close(self._fault_fd)
        self._fault_fd = None
        lines = self._stacks.take()
        if lines:
            on_stacks(self, lines)

    def _ended(self, loop: asyncio.AbstractEventLoop, on_message: Callable[["WorkerProcess", Message], None],
               on_exit: Callable[["WorkerProcess"], None],
               on_stacks: Callable[["WorkerProcess", list[str]], None]) -> None:
        """The pidfd is readable: read what the worker said last, reap it, report the end."""
        assert self._pidfd is not None and self.exited is not None
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._close_fault_pipe(loop, on_stacks)
        if self.sock.fileno() >= 0:
            while messages := self._receive(loop):  # a 'failed' sent just before the exit
                for message in messages:
                    on_message(self, message)
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
        status = self.popen.wait()
        self.state = "exited"
        self.note_stopping()
        if self.started is not None and not self.started.done():
            self.started.set_exception(self.start_failure(status))
            self.started.exception()  # retrieved: nobody need await it for the log to stay quiet
        self.exited.set_result(status)
        on_exit(self)

    def note_stopping(self) -> None:
        """The worker said its bus is stopping (or it ended)."""
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result(None)

    def start_failure(self, status: int) -> WorkerFailed:
        """Why it did not start: what it said, else how it ended."""
        if self.failure is not None:
            return WorkerFailed(int(self.failure.get("status", 69)), str(self.failure.get("error")))
        return WorkerFailed(69, "%r %s before it started (see its log)" % (self, describe_exit(status)))

    # -- talking to it ---------------------------------------------------------------------

    def send(self, kind: str, **fields: Any) -> None:
        """Send a message; dropped if the worker is gone or does not read (it is hung)."""
        try:
            self.sock.send(encode(kind, **fields))
        except OSError:
            pass  # gone (its end is reported by the pidfd) or not reading (the heartbeat catches it)

    def signal(self, signum: int) -> None:
        """Signal the worker unless it has already been reaped (its pid may be someone else's now)."""
        if self.popen.returncode is None:
            try:
                self.popen.send_signal(signum)
            except ProcessLookupError:
                pass  # ended a moment ago; the pidfd reports it

    @property
    def alive(self) -> bool:
        return self.state != "exited"

    def record(self) -> dict[str, Any]:
        """What ``wspbus status --json`` shows of this worker."""
        return {"pid": self.pid, "generation": self.generation, "slot": self.slot, "state": self.state,
                "age": round(time.monotonic() - self.born, 3), "requests": self.requests, "rss": self.rss}


def describe_exit(status: int) -> str:
    """'exited with status 3' or 'was killed by SIGKILL' for a Popen returncode."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "signal %d" % -status
        return "was killed by %s" % name
    return "exited with status %d" % status


def spawn_worker(generation: int, slot: int, listener_fds: list[int], setup: dict[str, Any]) -> WorkerProcess:
    """Start a worker interpreter with the listening sockets, a channel and a pipe for its stack
    dumps; send it ``setup``."""
    ours, theirs = socket.socketpair()
    fault_read, fault_write = os.pipe()
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE], stdin=subprocess.DEVNULL, cwd=STARTUP_CWD,
            env=worker_environment(theirs.fileno(), fault_write),
            pass_fds=(theirs.fileno(), fault_write, *listener_fds))
    except BaseException:
        ours.close()
        os.close(fault_read)
        raise
    finally:
        theirs.close()
        os.close(fault_write)
    ours.sendall(encode("config", **setup))  # waits in the socket until the worker reads it
    return WorkerProcess(generation, slot, popen, ours, fault_read)


def worker_environment(channel_fd: int, fault_fd: int) -> dict[str, str]:
    """The supervisor's environment, minus what is meant for it alone, plus the channel, the
    stack-dump pipe and wspbus."""
    env = {key: value for key, value in os.environ.items() if key not in SUPERVISOR_ONLY_ENV}
    env[FD_ENV] = str(channel_fd)
    env[FAULT_FD_ENV] = str(fault_fd)
    home = _package_root()
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    if home not in paths and home not in _site_directories():
        env["PYTHONPATH"] = os.pathsep.join([*paths, home])  # last: the worker finds this wspbus
    return env


def _package_root() -> str:
    import wspbus

    return os.path.dirname(os.path.dirname(os.path.abspath(wspbus.__file__)))


def _site_directories() -> list[str]:
    """Where an installed wspbus lives; never put on PYTHONPATH (it would shadow the stdlib)."""
    import site

    return [*site.getsitepackages(), site.getusersitepackages()]
