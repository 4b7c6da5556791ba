"""ThreadManager: per-thread setup and teardown hooks for the worker threads of a server.

A server's worker thread publishes 'acquire_thread' when it starts serving and 'release_thread'
when it ends; the manager turns these into 'start_thread'(i) and 'stop_thread'(i), where i is a
number given to that thread, so a site can open one database connection per thread and close it.
"""

from __future__ import annotations

import itertools
import threading

from .._core.bus import Bus, ChannelFailures
from .base import SimplePlugin, declare_channel

__all__ = ["ThreadManager"]

CHANNELS = ("acquire_thread", "release_thread", "start_thread", "stop_thread")


class ThreadManager(SimplePlugin):
    """Publish 'start_thread'(i) once per acquiring thread and 'stop_thread'(i) when it is released.

    ``threads`` maps each acquired ``threading.Thread`` to its number. Keys are thread objects,
    not idents as in CherryPy: the OS reuses the ident of a finished thread, and a new thread
    with a dead one's ident would be taken as already acquired and get no 'start_thread'.
    Numbers start at 1 and are never reused while the manager lives (CherryPy's ``len + 1`` gave
    two live threads the same number after a release). Thread-safe, with one guarantee: every
    'start_thread'(i) is followed by exactly one 'stop_thread'(i), after 'start_thread'(i)
    returned, even when 'stop' releases everything while a thread is still starting.
    Listeners run outside the manager's lock, in the thread that acquires or releases (or the
    one running 'stop' for the threads it releases).
    """

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.threads: dict[threading.Thread, int] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._starting: set[threading.Thread] = set()
        self._generation = 0  # bumped by stop(): a thread still starting then is released at once
        for channel in CHANNELS:
            declare_channel(bus, channel)

    def acquire_thread(self) -> None:
        """Give the calling thread a number and publish 'start_thread'(number), once per thread."""
        thread = threading.current_thread()
        with self._lock:
            if thread in self.threads or thread in self._starting:
                return
            self._starting.add(thread)
            number = next(self._numbers)
            generation = self._generation
        try:
            self.bus.publish("start_thread", number)
        finally:
            with self._lock:
                self._starting.discard(thread)
                released_meanwhile = generation != self._generation
                if not released_meanwhile:
                    self.threads[thread] = number
            if released_meanwhile:
                self.bus.publish("stop_thread", number)

    def release_thread(self) -> None:
        """Publish 'stop_thread'(number) for the calling thread and forget it."""
        with self._lock:
            number = self.threads.pop(threading.current_thread(), None)
        if number is not None:
            self.bus.publish("stop_thread", number)

    def stop(self) -> None:
        """Release every thread still acquired; one failing release does not skip the others."""
        with self._lock:
            numbers = list(self.threads.values())
            self.threads.clear()
            self._generation += 1
        failures = ChannelFailures()
        for number in numbers:
            try:
                self.bus.publish("stop_thread", number)
            except Exception as failed:  # ChannelFailures: ours, or on CherryPy's bus its own class
                for exc in getattr(failed, "get_instances", lambda: [failed])():
                    failures.add(exc)
        if failures:
            raise failures

    graceful = stop
