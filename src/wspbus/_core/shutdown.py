"""Bounding the end without moving it: 'stop' and 'exit' listeners run on the thread that
publishes, each watched; threads joined against one deadline; names for what hung.

Why on the publishing thread: a listener may wait for other threads, as a server's stop waits
for its request threads except the current one (cheroot). Run elsewhere, it would wait for the
very thread that asked for the exit, which waits for it in turn. So the work stays where
CherryPy's bus runs it, and the bound comes from a watchdog instead: if a listener has not
returned within the graceful timeout, the watchdog names it and takes over the rest of the
shutdown (the later listeners, the state changes) on its own thread. The thread that hung, if
its listener ever returns, runs nothing more. Work moves only off a thread that is already stuck.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

from .errors import ChannelFailures

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any, Protocol

    Listener = Callable[..., Any]

    class ShutdownHost(Protocol):
        """What a Shutdown needs of its bus."""

        graceful_timeout: float | None
        _ordered: dict[str, tuple[Listener, ...]]

        def time_left(self) -> float | None: ...

        def log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None: ...

        def _enter(self, channel: str) -> None: ...

        def _leave(self, channel: str) -> None: ...

        def _listener_failed(self, channel: str, listener: Listener, exc: BaseException,
                             failures: ChannelFailures | None) -> ChannelFailures: ...

        def _exit_relieved(self, caller: threading.Thread, caller_back: threading.Event) -> None: ...


#: Seconds a listener entered once the exit's bound is spent still gets before it is named.
MIN_LISTENER_BOUND = 0.05


class Shutdown:
    """One run of 'stop' (or 'stop' then 'exit') with its state changes, on the calling thread.

    Every listener runs even if another fails, and the state changes happen even after a
    KeyboardInterrupt or SystemExit from a listener; the failures (or that interruption) are
    raised at the end, by the thread that called, unless it was relieved of the run.
    """

    def __init__(self, host: ShutdownHost, channels: tuple[str, ...]) -> None:
        self._host = host
        self._channels = channels
        self.failures = ChannelFailures()
        self._interrupt: BaseException | None = None
        self._caller = threading.current_thread()
        #: Set once a relieved caller is back from the listener it hung in.
        self._caller_back = threading.Event()

    def run(self) -> None:
        if not self._run_from(0, None, 0):
            self._caller_back.set()  # the watchdog's thread finished (or finishes) the run
            return
        if self._interrupt is not None:
            raise self._interrupt
        if self.failures:
            raise self.failures

    def _run_from(self, position: int, listeners: tuple[Listener, ...] | None, first: int) -> bool:
        """Run the channels from ``channels[position]`` (its listeners from ``first`` if given);
        False if this thread was relieved on the way."""
        for index in range(position, len(self._channels)):
            channel = self._channels[index]
            completed = True
            with self._collecting():
                if listeners is None:
                    self._host._enter(channel)
                    listeners = self._host._ordered.get(channel, ())
                completed = self._publish(index, listeners, first)
            if not completed:
                return False
            with self._collecting():
                self._host._leave(channel)
            listeners, first = None, 0
        return True

    @contextlib.contextmanager
    def _collecting(self) -> Iterator[None]:
        """Keep what a step raised for the end: failures of 'log' listeners telling a state
        change, or a KeyboardInterrupt or SystemExit from a listener."""
        try:
            yield
        except ChannelFailures as raised:
            for exc in raised.get_instances():
                self.failures.add(exc)
        except BaseException as exc:  # raised by run() once the shutdown is complete
            if self._interrupt is None:
                self._interrupt = exc

    def _publish(self, position: int, listeners: tuple[Listener, ...], first: int) -> bool:
        channel = self._channels[position]

        def call(listener: Listener) -> None:
            try:
                listener()
            except BaseException as exc:
                self._host._listener_failed(channel, listener, exc, self.failures)

        if self._host.graceful_timeout is None or first >= len(listeners):
            for listener in listeners[first:]:
                call(listener)
            return True

        def bound() -> float:
            # What is left of the exit's one bound (graceful_timeout for a plain stop), so that
            # a stop's listeners and an exit's share it; a floor lets a quick listener run even
            # once it is spent.
            left = self._host.time_left()
            return MIN_LISTENER_BOUND if left is None else max(left, MIN_LISTENER_BOUND)

        def overran(index: int, hung: threading.Thread, waited: float) -> None:
            self._take_over(position, listeners, index, hung, waited)

        return run_watched(listeners, first, call, bound, overran, "wspbus %s watchdog" % channel)

    def _take_over(self, position: int, listeners: tuple[Listener, ...], index: int,
                   hung: threading.Thread, timeout: float) -> None:
        """On the watchdog's thread: name the listener that overran, then run the rest."""
        with self._collecting():
            self._host.log("Listener %s on channel %r did not return within %.2g s; going on without it"
                           " (it keeps thread %r)" % (describe(listeners[index]), self._channels[position],
                                                      timeout, hung.name), level=40)
        if self._run_from(position, listeners, index + 1) and self._channels[-1] == "exit":
            self._host._exit_relieved(self._caller, self._caller_back)


def run_watched(listeners: tuple[Listener, ...], first: int, call: Callable[[Listener], None],
                bound: Callable[[], float], overran: Callable[[int, threading.Thread, float], None],
                name: str) -> bool:
    """Call ``call(listener)`` for ``listeners[first:]`` in order, on this thread, watched.

    If one has not returned within ``bound()`` seconds (asked as it is entered),
    ``overran(index, this thread, seconds waited)`` is called on the watchdog's thread, which
    carries on from there; this thread, once that listener returns (if ever), calls no more:
    returns False. True if all ran here.
    """
    watch = _Watch(bound)
    watchdog = threading.Thread(target=watch.watch, args=(overran, threading.current_thread()),
                                name=name, daemon=True)
    watchdog.start()
    completed = False
    try:
        for index in range(first, len(listeners)):
            if not watch.entering(index):
                break
            call(listeners[index])
    finally:
        completed = watch.finish()
    return completed


class _Watch:
    """The watchdog's view of one thread's run through listeners: which one, since when."""

    def __init__(self, bound: Callable[[], float]) -> None:
        self._bound = bound
        self._changed = threading.Condition(threading.Lock())
        self._entered = 0  # how many listeners the run has entered: a change restarts the clock
        self._index = -1
        self._finished = False
        self._relieved_at: int | None = None

    def entering(self, index: int) -> bool:
        """The run enters ``listeners[index]``; False if it has been relieved."""
        with self._changed:
            if self._relieved_at is not None:
                return False
            self._index = index
            self._entered += 1
            self._changed.notify()
            return True

    def finish(self) -> bool:
        """The run is over; False if it had been relieved."""
        with self._changed:
            self._finished = True
            self._changed.notify()
            return self._relieved_at is None

    def watch(self, overran: Callable[[int, threading.Thread, float], None], runner: threading.Thread) -> None:
        waited = 0.0
        with self._changed:
            while not self._finished:
                entered = self._entered
                waited = self._bound()
                if not self._changed.wait_for(lambda: self._finished or self._entered != entered, waited):
                    self._relieved_at = self._index
                    break
            relieved_at = self._relieved_at
        if relieved_at is not None:
            overran(relieved_at, runner, waited)


def join_threads(timeout: float | None, log: Callable[..., None]) -> list[threading.Thread]:
    """Join the other non-daemon threads within ``timeout`` in all; name those still alive in
    the log and return them."""
    deadline = None if timeout is None else time.monotonic() + timeout
    current = threading.current_thread()
    stuck: list[threading.Thread] = []
    for thread in threading.enumerate():
        if thread is current or thread.daemon or thread is threading.main_thread():
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            stuck.append(thread)
    if stuck:
        log("Threads still running after %g s, not waited for: %s"
            % (timeout or 0.0, ", ".join(t.name for t in stuck)), level=30)
    return stuck


def describe(listener: Listener) -> str:
    """A listener's name as a person would look for it: qualified name and owner."""
    name = getattr(listener, "__qualname__", None) or repr(listener)
    owner = getattr(listener, "__self__", None)
    if owner is not None and not isinstance(owner, type(sys)):
        return "%s of %r" % (name, owner)
    module = getattr(listener, "__module__", None)
    return "%s.%s" % (module, name) if module else name
