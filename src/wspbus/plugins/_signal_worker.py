"""The one signal pipeline of the plugins (SignalHandler, Drainer, ChildReaper).

Python runs a signal's handler on the main thread between two bytecodes, maybe while that
thread holds a lock, and a second signal may interrupt the first handler. So the handler
installed with the OS (:meth:`SignalWorker.os_handler`) only puts the signal number on a
``queue.SimpleQueue``, whose ``put`` is safe there (a Lock or an Event could deadlock); a daemon
worker thread takes it from there and calls the plugin's ``act(signum)``.

A SIGINT or SIGTERM that comes while the process is already shutting down ends it at once
(:class:`Termination`): one line in the log, stdout and stderr flushed, then
``os._exit(128 + signum)`` (130 for SIGINT, 143 for SIGTERM: the shell's "killed by this
signal"). That is the second Ctrl-C that gets you out of a hung shutdown.

A worker thread does not survive ``os.fork()`` (the Daemonizer's): the child starts one of its
own for every worker that ran in the parent. Worker threads say so with
``restarted_after_fork = True``, so the Daemonizer does not warn about them.

Only the seed bus API is used here (``log``), so the pipeline also serves on CherryPy's bus.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from .._core.bus import Bus
from .._process import reexec

__all__ = ["TERMINATING", "OSHandler", "SignalWorker", "Termination"]

#: Signals asking the process to end; a second one while it is shutting down ends it at once.
TERMINATING = frozenset((signal.SIGINT, signal.SIGTERM))

#: What ``signal.signal()`` takes and returns: a function, SIG_DFL/SIG_IGN, or None (set from C).
OSHandler = Callable[[int, FrameType | None], Any] | int | None


def _never() -> bool:
    return False


class Termination:
    """The first SIGINT/SIGTERM begins the shutdown; a later one ends the process at once.

    ``already_ending()`` (optional) tells whether the process is shutting down for another
    reason (the bus is STOPPING, say): a first terminating signal then ends it at once too.
    """

    def __init__(self, bus: Bus, *, already_ending: Callable[[], bool] = _never) -> None:
        self.bus = bus
        self._already_ending = already_ending
        self._lock = threading.Lock()  # never taken in an OS handler: claim() runs on threads
        self._begun = False

    @property
    def begun(self) -> bool:
        """True from the first terminating signal on."""
        return self._begun

    def claim(self, signum: int) -> None:
        """Note a terminating signal: the first one returns; a later one ends the process now."""
        with self._lock:
            ending = self._begun or self._already_ending()
            self._begun = True
        if ending:
            self.end_now(signum)

    def end_now(self, signum: int) -> None:
        """Log one line and end the process with status 128 + signum (no cleanup, no joins)."""
        status = 128 + signum
        self.bus.log("Received %s while shutting down: exiting now with status %d."
                     % (signal.Signals(signum).name, status), level=40)
        reexec.end_process(status)


class _WorkerThread(threading.Thread):
    #: Read by the Daemonizer: a replacement of this thread is started in a forked child.
    restarted_after_fork = True


class SignalWorker:
    """OS signals queued by their handler and acted on, one by one, by a daemon thread.

    ``act(signum)`` runs on the worker thread; it should return soon (start a thread for long
    work) so that the next signal is not kept waiting. ``coalesce``: signals queued while the
    worker was busy are acted on once each (for signals that only mean "look again", like
    SIGCHLD). ``blocks``: signals the worker thread blocks, so that the kernel delivers them to
    the main thread, where Python runs their handlers. The thread starts with the first
    ``install()``; ``stop()`` ends it after the signals already queued.
    """

    def __init__(self, bus: Bus, act: Callable[[int], object], *, name: str, coalesce: bool = False,
                 blocks: Iterable[int] = ()) -> None:
        self.bus = bus
        self.act = act
        self.name = name
        self.coalesce = coalesce
        self.blocks = frozenset(blocks)
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._previous: dict[int, OSHandler] = {}
        self._fork_hook_registered = False

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- OS handlers ---------------------------------------------------------------------

    def install(self, signum: int, os_handler: Callable[[int, FrameType | None], Any] | None = None) -> None:
        """Handle ``signum`` with ``os_handler`` (default: :meth:`os_handler`); main thread only.

        The handler found there first is remembered for :meth:`restore`.
        """
        self.start()
        previous = signal.signal(signum, os_handler or self.os_handler)
        self._previous.setdefault(signum, previous)

    def previous(self, signum: int) -> OSHandler:
        """The handler ``signum`` had before it was installed here."""
        return self._previous.get(signum)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`; main thread only."""
        for signum, previous in self._previous.items():
            if previous is None:  # installed from C; the closest we can restore is the default
                previous = signal.SIG_DFL
            self.bus.log("Restoring %s handler %r." % (signal.Signals(signum).name, previous), level=10)
            signal.signal(signum, previous)
        self._previous.clear()

    def os_handler(self, signum: int, frame: FrameType | None) -> None:
        """The handler the OS calls: queue the signal for the worker, nothing more."""
        self._queue.put(signum)

    def put(self, signum: int) -> None:
        """Have the worker act on ``signum`` as if it had been received."""
        self._queue.put(signum)

    # -- the worker thread ---------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread, unless it runs already."""
        if self._thread is not None:
            return
        if not self._fork_hook_registered:
            os.register_at_fork(after_in_child=_restart_in_child(weakref.ref(self)))
            self._fork_hook_registered = True
        self._queue = queue.SimpleQueue()  # a worker still ending drains the old one
        self._thread = _WorkerThread(target=self._run, args=(self._queue,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, *, join: bool = False) -> None:
        """End the worker once it has acted on the signals already queued (and wait, if ``join``)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        if join and thread is not threading.current_thread():
            thread.join()

    def _restart_after_fork(self) -> None:
        if self._thread is not None:
            self._thread = None
            self.start()

    def _run(self, pending: queue.SimpleQueue[int | None]) -> None:
        if self.blocks:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.blocks)
        while True:
            for signum in self._next_batch(pending):
                if signum is None:
                    return
                self.act(signum)

    def _next_batch(self, pending: queue.SimpleQueue[int | None]) -> list[int | None]:
        """The next signal; with ``coalesce``, every one queued by then, each once, in order."""
        batch = [pending.get()]
        if self.coalesce:
            while not pending.empty():
                batch.append(pending.get())
            batch = list(dict.fromkeys(batch))
        return batch


def _restart_in_child(worker_ref: weakref.ref[SignalWorker]) -> Callable[[], None]:
    """The fork hook: a weak reference, so that a dropped worker is not kept alive by it."""

    def restart() -> None:
        worker = worker_ref()
        if worker is not None:
            worker._restart_after_fork()

    return restart
