"""Wakers: how a waiting thread is woken by a state change, a subscription, or a signal.

A waiter registers a waker with the bus, then loops (wait_for): clear it, check its condition,
wait on it. Whoever changes what waiters check sets every registered waker after the change, so
no wake-up is lost between the check and the wait. A waker may be set by any thread at any time,
even after its waiter has gone.

The main thread needs more than an Event. Python runs signal handlers only on the main thread,
but the kernel delivers a signal to any thread; if it lands on another one while the main thread
sleeps in an untimed lock wait, the handler stays pending and SIGTERM is never acted on. So the
main thread waits in poll() on a pipe that ``signal.set_wakeup_fd`` also writes to: every
signal, whichever thread received it, wakes it, and the handler runs.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator


class MainThreadWaker:
    """A waker for the main thread: a pipe that signals write to as well."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # a set() racing close() must not write to a reused fd
        self._closed = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._poller = select.poll()  # not select(): it fails for descriptors past 1023
        self._poller.register(self._read_fd, select.POLLIN)
        try:
            self._previous = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main interpreter's main thread after all
            self.close_pipe()
            raise

    def set(self) -> None:
        with self._guard:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is pending already

    def clear(self) -> None:
        try:
            while True:
                data = os.read(self._read_fd, 512)
                if not data:
                    break
                self._pass_on_signals(data)
        except BlockingIOError:
            pass

    def _pass_on_signals(self, data: bytes) -> None:
        """Hand the signal numbers we drained to whoever had the wakeup fd before us (an asyncio
        loop learns of its signals that way); our own wake-ups are zero bytes."""
        signals = data.replace(b"\0", b"")
        if signals and self._previous >= 0:
            try:
                os.write(self._previous, signals)
            except OSError:
                pass  # full or gone: nothing better to do from here

    def wait(self, timeout: float | None) -> None:
        self._poller.poll(None if timeout is None else timeout * 1000.0)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        with self._guard:
            self._closed = True
            self.close_pipe()

    def close_pipe(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)


class ThreadWaker(threading.Event):
    """A waker for any other thread."""

    def close(self) -> None:
        pass


Waker = MainThreadWaker | ThreadWaker


def new_waker() -> Waker:
    """The right waker for the calling thread."""
    if threading.current_thread() is threading.main_thread():
        try:
            return MainThreadWaker()
        except ValueError:
            pass
    return ThreadWaker()


def wait_for(waker: Waker, ready: Callable[[], bool], timeout: float | None = None) -> bool:
    """Wait until ``ready()`` is true (return True) or ``timeout`` seconds pass (return False).

    ``ready`` is checked after every wake-up; whoever makes it true must set the waker after.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        waker.clear()
        if ready():
            return True
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
        waker.wait(remaining)


class Waiters:
    """The threads waiting on one bus, each by its waker; wake_all() after every change they check."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may register a waiter too
        self._wakers: list[Waker] = []

    @contextlib.contextmanager
    def registered(self) -> Iterator[Waker]:
        """A waker for the calling thread, set by every wake_all() until the block ends."""
        waker = new_waker()
        with self._lock:
            self._wakers.append(waker)
        try:
            yield waker
        finally:
            with self._lock:
                self._wakers.remove(waker)
            waker.close()

    def wait(self, reached: Callable[[], bool], interval: float | None = None, *,
             ticking: Callable[[], bool] = lambda: False, tick: Callable[[], object] = lambda: None) -> None:
        """Return once ``reached()``; meanwhile call ``tick()`` every ``interval`` while ``ticking()``.

        Whoever changes what ``reached`` or ``ticking`` read must call wake_all() after.
        While nothing ticks, the thread sleeps until woken: no periodic wake-up.
        """
        with self.registered() as waker:
            while not reached():
                was_ticking = ticking()
                changed = wait_for(waker, lambda: reached() or ticking() != was_ticking,
                                   interval if was_ticking else None)
                if not changed:  # a whole interval passed with nothing else happening
                    tick()

    def wake_all(self) -> None:
        # No lock: a signal handler may call this on the main thread while it is registering
        # under the lock; copying the list is atomic.
        for waker in tuple(self._wakers):
            waker.set()
