"""Periodic work: PerpetualTimer, BackgroundTask and the Monitor plugin that runs one with the bus.

Three promises, each tested:

* Stopping is prompt. The thread waits for its next run on an Event with the remaining time as
  timeout, so ``cancel()`` wakes it at once instead of after the rest of the interval.
* A failing run is logged (``bus.log`` at level 40 with the traceback, or the stdlib logger
  'wspbus' when there is no bus) and the next run still happens.
* Nothing wakes without work. The thread wakes only when a run is due; runs are scheduled on a
  monotonic deadline (``previous deadline + interval``), so a slow run does not push every later
  run back, and runs missed while one overran are skipped rather than fired in a burst. A Monitor
  has no thread at all while the bus is not started.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._core.bus import Bus, State
from .base import SimplePlugin, priority, watch_state

__all__ = ["BackgroundTask", "Monitor", "PerpetualTimer"]


def next_deadline(previous: float, interval: float, now: float) -> float:
    """The first deadline after ``now`` on the grid ``previous + k * interval`` (k >= 1)."""
    deadline = previous + interval
    if deadline <= now:
        deadline += math.ceil((now - deadline) / interval) * interval
        if deadline <= now:  # float rounding landed exactly on now
            deadline += interval
    return deadline


def _cancelled_before(cancelled: threading.Event, deadline: float) -> bool:
    """Sleep on ``cancelled`` until the monotonic ``deadline``; True if it was set first."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return cancelled.is_set()
        if cancelled.wait(remaining):
            return True


def _checked_interval(interval: float) -> float:
    if not interval > 0:
        raise ValueError("interval must be a number of seconds > 0, got %r" % (interval,))
    return interval


class _Repeating:
    """The loop shared by PerpetualTimer and BackgroundTask.

    Subclasses provide ``interval``, ``function``, ``args``, ``kwargs``, ``bus`` and call
    ``_repeat(cancelled)`` from their thread's ``run()``.
    """

    interval: float
    function: Callable[..., Any]
    args: Iterable[Any]
    kwargs: Mapping[str, Any]
    bus: Bus | None

    def _repeat(self, cancelled: threading.Event) -> None:
        deadline = time.monotonic() + self.interval
        while not _cancelled_before(cancelled, deadline):
            self._run_once()
            deadline = next_deadline(deadline, self.interval, time.monotonic())

    def _run_once(self) -> None:
        try:
            self.function(*self.args, **self.kwargs)
        except Exception:
            message = "Error in periodic task %r; it runs again in %g s" % (self.function, self.interval)
            if self.bus is not None:
                self.bus.log(message, level=40, traceback=True)
            else:
                logging.getLogger("wspbus").exception(message)


class PerpetualTimer(_Repeating, threading.Timer):
    """A ``threading.Timer`` that runs ``function`` every ``interval`` seconds until ``cancel()``."""

    def __init__(
        self,
        interval: float,
        function: Callable[..., Any],
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        bus: Bus | None = None,
    ) -> None:
        super().__init__(_checked_interval(interval), function, tuple(args or ()), dict(kwargs or {}))
        self.bus = bus

    def run(self) -> None:
        self._repeat(self.finished)


class BackgroundTask(_Repeating, threading.Thread):
    """A daemon thread that runs ``function`` every ``interval`` seconds until ``cancel()``.

    Unlike PerpetualTimer it keeps the thread object's ``running`` flag, as CherryPy's does.
    """

    def __init__(
        self,
        interval: float,
        function: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        bus: Bus | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.interval = _checked_interval(interval)
        self.function = function
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.bus = bus
        self.running = False
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop after the current run, if any; a thread waiting for its next run wakes at once."""
        self.running = False
        self._cancelled.set()

    def run(self) -> None:
        self.running = not self._cancelled.is_set()
        try:
            self._repeat(self._cancelled)
        finally:
            self.running = False


class Monitor(SimplePlugin):
    """Run ``callback`` every ``frequency`` seconds in a BackgroundTask while the bus is started.

    The thread is created on 'start' (priority 70) when ``frequency > 0`` and cancelled and
    joined on 'stop' ('graceful' does both). If the callback itself stops the bus (an
    autoreloader calling ``bus.restart()``), 'stop' cancels the thread without joining it: the
    thread is the one waiting for the stop, and joining it would hang until the graceful timeout.
    """

    def __init__(
        self, bus: Bus, callback: Callable[[], Any], frequency: float = 60, name: str | None = None
    ) -> None:
        super().__init__(bus)
        self.callback = callback
        self.frequency = frequency
        self.name = name
        self.thread: BackgroundTask | None = None
        self._lock = threading.Lock()
        self._unwatch: Callable[[], None] | None = None
        self._stopped_by_own_callback = False

    @property
    def thread_name(self) -> str:
        return self.name or type(self).__name__

    @priority(70)
    def start(self) -> None:
        """Start the periodic thread, unless frequency <= 0 or it already runs."""
        if self.frequency <= 0:
            return
        with self._lock:
            if self.thread is not None:
                self.bus.log("Monitor thread %r already started." % self.thread_name)
                return
            self._stopped_by_own_callback = False
            self.thread = BackgroundTask(self.frequency, self.callback, bus=self.bus)
            self.thread.name = self.thread_name
            self._unwatch = watch_state(self.bus, self._note_own_stop)
            self.thread.start()
        self.bus.log("Started monitor thread %r." % self.thread_name)

    def _note_own_stop(self, state: State) -> None:
        # The bus changes state in the thread that called stop()/exit()/restart().
        if state is self.bus.states.STOPPING and threading.current_thread() is self.thread:
            self._stopped_by_own_callback = True

    def stop(self) -> None:
        """Cancel the periodic thread and wait for a run in progress to end."""
        with self._lock:
            thread, self.thread = self.thread, None
            unwatch, self._unwatch = self._unwatch, None
            own_stop, self._stopped_by_own_callback = self._stopped_by_own_callback, False
        if thread is None:
            return
        if unwatch is not None:
            unwatch()
        thread.cancel()
        if not own_stop and thread is not threading.current_thread():
            thread.join()
        self.bus.log("Stopped monitor thread %r." % thread.name)

    def graceful(self) -> None:
        """Restart the periodic thread (a new frequency takes effect)."""
        self.stop()
        if self.bus.state is self.bus.states.STARTED:  # no thread while the bus is stopped or exiting
            self.start()
