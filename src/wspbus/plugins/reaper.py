"""PID 1 duties: reap orphaned children, and make sure SIGTERM is heard.

In a container the site's process is often PID 1. The kernel then hands it every orphaned
descendant (a worker's double-forked helper, a shell's background job); when one exits it stays
a zombie until PID 1 waits for it, and zombies pile up until the pid table is full. And PID 1
gets no signal whose action is the default: without a handler, ``docker stop`` and Kubernetes'
SIGTERM are ignored until the SIGKILL that follows them.

The ChildReaper reaps on SIGCHLD: the handler only queues the signal; a worker thread (the signal
pipeline every plugin shares, _signal_worker) then waits for every zombie child, once for all
the SIGCHLDs that came while it was busy. It does not steal exit statuses the application waits for: a zombie whose pid
belongs to a live ``subprocess.Popen`` or ``multiprocessing`` process object that has no
return code yet is left to that object (its ``wait()`` keeps the real status). Finding those
objects walks the garbage collector's objects (about 10 ms per 100,000 objects), and only
when some child has exited. Children made with a bare ``os.fork()`` cannot be recognised: the
ChildReaper is therefore active only as PID 1 (where someone must reap), or when asked with
``always=True`` (on Linux it then also becomes the "child subreaper" of its descendants, so that
their orphans come to it rather than to the real init).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

from .._core.bus import Bus
from ._signal_worker import SignalWorker
from .base import SimplePlugin, ignore_listener_failures

__all__ = ["ChildReaper"]

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


class ChildReaper(SimplePlugin):
    """Wait for orphaned children so they do not linger as zombies; hear SIGTERM as PID 1."""

    def __init__(self, bus: Bus, *, always: bool = False) -> None:
        super().__init__(bus)
        self.always = always
        # The worker reaps; it leaves SIGCHLD and SIGTERM to the main thread, where Python runs
        # their handlers (a signal the kernel gave this thread would wait for the main one).
        self._signals = SignalWorker(bus, self._act, name="wspbus child reaper", coalesce=True,
                                     blocks=(signal.SIGCHLD, signal.SIGTERM))
        #: How many children were reaped so far (for the curious, and for tests).
        self.reaped = 0

    @property
    def active(self) -> bool:
        """Reaping happens as PID 1, or anywhere with ``always=True``."""
        return self.always or os.getpid() == 1

    # -- bus wiring ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Install the SIGCHLD handler (main thread) and start the reaping worker."""
        if not self.active or self._signals.running:
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ChildReaper.subscribe() must run on the main thread: it installs signal handlers")
        if os.getpid() != 1:
            _become_subreaper(self.bus)
        else:
            self._hear_exit_signals()
        self._signals.install(signal.SIGCHLD, self._on_sigchld)
        self._signals.put(signal.SIGCHLD)  # children that exited before we listened
        self.bus.subscribe("exit", self.exit)

    def unsubscribe(self) -> None:
        self.bus.unsubscribe("exit", self.exit)
        self.exit()
        self._signals.restore()

    def exit(self) -> None:
        """Stop the worker (the process is ending; PID 1's end takes its namespace along)."""
        self._signals.stop(join=True)

    def _hear_exit_signals(self) -> None:
        """As PID 1, a signal left at its default action is dropped: give SIGTERM a handler."""
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            self._signals.install(signal.SIGTERM)

    def _on_sigchld(self, signum: int, frame: FrameType | None) -> None:
        """The OS handler: queue the signal, then call the handler that was there before us."""
        self._signals.os_handler(signum, frame)
        previous = self._signals.previous(signal.SIGCHLD)
        if callable(previous):
            previous(signum, frame)

    # -- reaping -------------------------------------------------------------------------

    def _act(self, signum: int) -> None:
        """On the worker: SIGTERM (as PID 1) exits the bus; every wake-up reaps."""
        if signum == signal.SIGTERM:
            self.bus.log("SIGTERM received as PID 1: exiting")
            threading.Thread(target=ignore_listener_failures, args=(self.bus.exit,), name="wspbus exit",
                             daemon=True).start()
        try:
            self.reap()
        except Exception:
            self.bus.log("ChildReaper: reaping failed", level=40, traceback=True)

    def reap(self) -> list[tuple[int, int]]:
        """Wait for every exited child nobody else waits for; return their (pid, exit code)."""
        reaped: list[tuple[int, int]] = []
        spoken_for: set[int] | None = None
        while (pid := _exited_child()) is not None:
            if spoken_for is None:
                spoken_for = _pids_awaited_by_the_app()
                if spoken_for is None:
                    break  # a Popen is spawning: its own child's exit will wake us again
            if pid in spoken_for:  # other zombies may queue behind this one: look at them all
                reaped += self._reap_each(set(_zombie_children()) - spoken_for)
                break
            reaped += self._reap_each((pid,))
        return reaped

    def _reap_each(self, pids: Iterable[int]) -> list[tuple[int, int]]:
        reaped = []
        for pid in pids:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue  # somebody else waited for it in the meantime
            if done:
                reaped.append((done, os.waitstatus_to_exitcode(status)))
        self.reaped += len(reaped)
        return reaped


def _exited_child() -> int | None:
    """The pid of one child that has exited, without waiting for it (None when there is none)."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return info.si_pid if info is not None and info.si_pid else None


def _pids_awaited_by_the_app() -> set[int] | None:
    """Pids of live Popen objects that have no return code yet: their owner will wait for them.

    None when one is still spawning (no pid yet): its child, already exited, could be any zombie.
    """
    kinds = tuple(_popen_classes())
    pids: set[int] = set()
    if not kinds:
        return pids
    for obj in gc.get_objects():
        if isinstance(obj, kinds) and getattr(obj, "returncode", 0) is None:
            pid = getattr(obj, "pid", None)
            if pid is None:
                return None
            pids.add(pid)
    return pids


def _popen_classes() -> Iterator[type]:
    subprocess = sys.modules.get("subprocess")
    if subprocess is not None:
        yield subprocess.Popen
    popen_fork = sys.modules.get("multiprocessing.popen_fork")
    if popen_fork is not None:
        yield popen_fork.Popen


def _zombie_children() -> list[int]:
    """Our children that are zombies, read from /proc (empty where there is no /proc)."""
    me = os.getpid()
    zombies: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return zombies
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == me:
            zombies.append(int(name))
    return zombies


def _become_subreaper(bus: Bus) -> None:
    """On Linux, adopt our descendants' orphans (as PID 1 would) so that we can reap them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        bus.log("ChildReaper: could not become a child subreaper: %s" % os.strerror(ctypes.get_errno()), level=30)
