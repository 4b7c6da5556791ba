"""The Web Site Process Bus: a process state machine with topic-based publish/subscribe.

This module holds the Bus; it imports only the stdlib and knows nothing about plugins, servers
or sites, which plug into it through channels. Rules it keeps (README, "Design rules"):

* publish() is the hot path. It reads an immutable, already sorted tuple of listeners for the
  channel; subscribe()/unsubscribe() (rare) rebuild that tuple under the lock. So any number
  of threads may subscribe, unsubscribe and publish at once without losing a listener.
* Nothing waits on a tick. Waiters sleep on a waker (_waking.py) that every state change and
  subscription sets; they only wake periodically while somebody listens on the channel they were
  asked to publish (block() publishes 'main'). On the main thread the waker is a pipe that
  signals write to as well, so a signal delivered to any thread is handled at once.
* Shutdown is bounded. 'stop' and 'exit' listeners run on a worker thread; one that does not
  return within ``graceful_timeout`` is named in the log and left behind, and the rest run.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .._process import reexec
from .errors import ChannelFailures, StartupError
from .shutdown import describe, join_threads, start_listener_worker
from .states import State, as_state_set, states
from .waking import new_waker, wait_for

__all__ = ["Bus", "ChannelFailures", "ListenersView", "StartupError", "State", "states"]

BUILTIN_CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")
DEFAULT_PRIORITY = 50
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
#: Seconds a 'stop'/'exit' listener, or a thread at exit, may take before the bus gives up on it.
#: gunicorn's default graceful timeout, and what Kubernetes' default grace period leaves room for.
DEFAULT_GRACEFUL_TIMEOUT = 30.0

Listener = Callable[..., Any]


class ListenersView(Mapping):
    """Read-only mapping of channel -> frozenset of listeners, backed by the bus."""

    __slots__ = ("_bus",)

    def __init__(self, bus: "Bus") -> None:
        self._bus = bus

    def __getitem__(self, channel: str) -> frozenset:
        with self._bus._lock:
            return frozenset(self._bus._subscriptions[channel])

    def __iter__(self):
        with self._bus._lock:
            return iter(list(self._bus._subscriptions))

    def __len__(self) -> int:
        return len(self._bus._subscriptions)

    def setdefault(self, channel: str, default: Any = None) -> frozenset:
        self._bus.declare_channel(channel)
        return self[channel]


class Bus:
    """Process state machine and messenger for HTTP site deployment.

    All state changes go through the ``state`` property, which wakes every waiter.
    """

    states = states

    def __init__(self, *, graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT) -> None:
        self.execv = False
        #: Bound on each 'stop'/'exit' listener and on waiting for threads at exit (None: no bound).
        self.graceful_timeout = graceful_timeout
        #: Exit status a failure asked for (a server that died, a start that failed); 0 otherwise.
        self.exit_code = 0
        self._lock = threading.RLock()
        self._wakers: list = []  # one per waiting thread; set after every change waiters check
        self._state = states.STOPPED
        self._exit_begun = False
        self._exit_done = False
        self._state_watchers: list[Callable[[State], None]] = []
        #: The asyncio loop coroutine listeners run on (set by wspbus.aio.run_bus or by hand).
        self.loop = None
        # channel -> {listener: (priority, sequence, invoker)}; mutated only under the lock.
        self._subscriptions: dict[str, dict[Listener, tuple[int, int, Listener]]] = {
            channel: {} for channel in BUILTIN_CHANNELS
        }
        # channel -> listeners sorted by (priority, sequence); replaced, never mutated.
        self._ordered: dict[str, tuple[Listener, ...]] = {}
        self._sequence = 0
        self._stdlib_logger = None
        self.subscribe("log", self.log_to_stdlib, priority=100)

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        with self._lock:
            self._state = value
            watchers = tuple(self._state_watchers)
        self._wake_waiters()
        for watcher in watchers:
            try:
                watcher(value)
            except Exception:  # one broken watcher must not stop the transition
                self.log("Error in state watcher %r" % (watcher,), level=40, traceback=True)

    @property
    def exit_begun(self) -> bool:
        """True once exit() has begun: the process is going away, even while 'stop' listeners
        still run (a plain stop() may be followed by start(); an exit may not)."""
        return self._exit_begun

    # -- subscriptions -------------------------------------------------------------------

    @property
    def listeners(self) -> "ListenersView":
        """Channel name -> frozenset of its listeners (a live, read-only view).

        ``listeners.setdefault(channel, ...)`` declares a channel, as CherryPy plugins do so
        that SimplePlugin binds their methods to it.
        """
        return ListenersView(self)

    def declare_channel(self, channel: str) -> None:
        """Make ``channel`` known (it appears in ``listeners``) even with no listener yet."""
        with self._lock:
            self._subscriptions.setdefault(channel, {})

    def subscribe(self, channel: str, callback: Listener | None = None, priority: int | None = None):
        """Add ``callback`` to ``channel``; with no callback, a decorator returning the callback.

        Lower priority runs first (default ``callback.priority``, else 50); equal priorities run
        in subscription order. Subscribing again only updates the priority.
        """
        if callback is None:
            return lambda func: self.subscribe(channel, func, priority)
        if priority is None:
            priority = getattr(callback, "priority", DEFAULT_PRIORITY)
        with self._lock:
            subs = self._subscriptions.setdefault(channel, {})
            previous = subs.get(callback)
            if previous is None:
                self._sequence += 1
                subs[callback] = (priority, self._sequence, self._invoker(callback))
            else:
                subs[callback] = (priority, *previous[1:])
            self._reorder(channel)
        return callback

    def _invoker(self, callback: Listener) -> Listener:
        """What publish() calls: the callback, or for a coroutine function a blocking runner."""
        code = getattr(getattr(callback, "__func__", callback), "__code__", None)
        if code is None or not code.co_flags & _CO_COROUTINE:
            return callback
        from ..aio import CoroutineListener

        return CoroutineListener(self, callback)

    def unsubscribe(self, channel: str, callback: Listener) -> None:
        """Remove ``callback`` from ``channel``; unknown pairs are ignored."""
        with self._lock:
            subs = self._subscriptions.get(channel)
            if subs is not None and subs.pop(callback, None) is not None:
                self._reorder(channel)

    def _reorder(self, channel: str) -> None:
        subs = self._subscriptions[channel]
        ordered = tuple(entry[2] for entry in sorted(subs.values(), key=lambda entry: entry[:2]))
        if ordered:
            self._ordered[channel] = ordered
        else:
            self._ordered.pop(channel, None)
        # A waiter publishing this channel periodically may now need to start (or stop) ticking.
        self._wake_waiters()

    def watch_state(self, watcher: Callable[[State], None]) -> Callable[[], None]:
        """Call ``watcher(state)`` after every state change; returns a function that stops it.

        The watcher runs in the thread that changed the state and must not block.
        """
        with self._lock:
            self._state_watchers.append(watcher)

        def unwatch() -> None:
            with self._lock:
                if watcher in self._state_watchers:
                    self._state_watchers.remove(watcher)

        return unwatch

    # -- publishing ----------------------------------------------------------------------

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call every listener of ``channel``; return their results in order.

        Every listener runs even if another fails; the failures are logged and raised together
        as one ChannelFailures. KeyboardInterrupt and SystemExit propagate at once.
        """
        listeners = self._ordered.get(channel)
        if not listeners:
            return []
        output: list[Any] = []
        append = output.append
        failures = None
        # Two loops only so that the common no-argument call skips packing empty *args/**kwargs.
        if args or kwargs:
            for listener in listeners:
                try:
                    append(listener(*args, **kwargs))
                except BaseException as exc:
                    failures = self._listener_failed(channel, listener, exc, failures)
        else:
            for listener in listeners:
                try:
                    append(listener())
                except BaseException as exc:
                    failures = self._listener_failed(channel, listener, exc, failures)
        if failures:
            raise failures
        return output

    def _listener_failed(self, channel: str, listener: Listener, exc: BaseException,
                         failures: ChannelFailures | None) -> ChannelFailures:
        """Record a listener's exception; KeyboardInterrupt and SystemExit propagate at once."""
        if isinstance(exc, SystemExit):
            if failures and exc.code == 0:
                exc.code = 1
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        if failures is None:
            failures = ChannelFailures()
        failures.add(exc)
        self._log_failure(channel, listener, exc)
        return failures

    def _publish_until_failure(self, channel: str) -> None:
        """Call the listeners of ``channel`` in order; the first failure ends the publish."""
        for listener in self._ordered.get(channel, ()):
            try:
                listener()
            except BaseException as exc:
                raise self._listener_failed(channel, listener, exc, None) from None

    def _log_failure(self, channel: str, listener: Listener, exc: BaseException) -> None:
        if channel == "log":
            return  # a broken log listener must not recurse into the log
        if isinstance(exc, StartupError):
            self.log("Error in %r listener %r: %s" % (channel, listener, exc), level=40)
            return
        import traceback

        formatted = "".join(traceback.format_exception(exc))
        self.log("Error in %r listener %r\n%s" % (channel, listener, formatted), level=40)

    def _publish_bounded(self, channel: str) -> None:
        """Publish ``channel`` with each listener bounded by ``graceful_timeout``.

        A listener that overruns is named in the log and abandoned on its (daemon) worker; a
        fresh worker runs the listeners after it.
        """
        if self.graceful_timeout is None:
            self.publish(channel)
            return
        listeners = self._ordered.get(channel, ())
        if not listeners:
            return
        failures = None
        index = 0
        with self._waker(register=False) as waker:
            while index < len(listeners):
                reports: collections.deque = collections.deque()
                abandoned = start_listener_worker(listeners, index, "wspbus %s" % channel,
                                                  lambda *report: (reports.append(report), waker.set()))
                while index < len(listeners):
                    if not wait_for(waker, lambda: bool(reports), self.graceful_timeout):
                        abandoned.set()  # if the stuck listener ever returns, its worker stops there
                        self.log("Listener %s on channel %r did not return within %g s; going on without it"
                                 % (describe(listeners[index]), channel, self.graceful_timeout), level=40)
                        index += 1
                        break
                    done_index, outcome = reports.popleft()
                    index = done_index + 1
                    if outcome is not None:
                        failures = self._listener_failed(channel, listeners[done_index], outcome, failures)
        if failures:
            raise failures

    # -- transitions ---------------------------------------------------------------------

    def start(self) -> None:
        """Start all services; on a failing start listener, shut down and re-raise its error."""
        if self._exit_begun:
            raise RuntimeError("cannot start the bus: it is %s" % self.state.name)
        self.state = states.STARTING
        self.log("Bus STARTING")
        try:
            self._publish_until_failure("start")
        except ChannelFailures as failures:
            self.log("Shutting down due to error in start listener: %s" % failures, level=40)
            if not self.exit_code:
                self.exit_code = 1
            self._exit_quietly()
            raise
        self.state = states.STARTED
        self.log("Bus STARTED")

    def stop(self) -> None:
        """Stop all services. Listeners must tolerate a stop without a start."""
        self.state = states.STOPPING
        self.log("Bus STOPPING")
        try:
            self._publish_bounded("stop")
        finally:
            self.state = states.STOPPED
            self.log("Bus STOPPED")

    def exit(self) -> None:
        """Stop all services and prepare to exit the process. A second call does nothing."""
        if self._begin_exit():
            self._run_exit()

    def _begin_exit(self) -> bool:
        """Claim the exit; False if another call already did."""
        with self._lock:
            if self._exit_begun:
                return False
            self._exit_begun = True
            return True

    def _run_exit(self) -> None:
        failures = ChannelFailures()
        try:
            _collect_failures(failures, self.stop)
        finally:  # even a SystemExit from a 'stop' listener must not leave the exit half done
            try:
                self.state = states.EXITING
                self.log("Bus EXITING")
                _collect_failures(failures, self._publish_bounded, "exit")
            finally:
                self.log("Bus EXITED")
                self._exit_done = True
                self._wake_waiters()
        if failures:
            raise failures

    def restart(self) -> None:
        """Exit, then have block() (on the main thread) re-execute the process.

        Ignored once an exit has begun: a process told to end must not come back.
        """
        with self._lock:
            if self._exit_begun:
                self.log("Restart ignored: the bus is already exiting", level=30)
                return
            self._exit_begun = True
            self.execv = True
        self._run_exit()

    def graceful(self) -> None:
        """Advise all services to reload."""
        self.log("Bus graceful")
        self.publish("graceful")

    # -- waiting -------------------------------------------------------------------------

    def wait(self, state: State | Iterable[State], interval: float = 0.1, channel: str | None = None) -> None:
        """Return as soon as the state is one of ``state``.

        While waiting, publish ``channel`` every ``interval`` seconds if it has listeners;
        without listeners the thread sleeps until the state changes.
        """
        wanted = as_state_set(state)

        def reached() -> bool:
            return self._state in wanted

        with self._waker() as waker:
            while not reached():
                ticking = channel is not None and channel in self._ordered
                changed = wait_for(waker, lambda: reached() or (channel in self._ordered) != ticking,
                                   interval if ticking else None)
                if not changed:  # a whole interval passed with nothing else happening
                    self.publish(channel)

    @contextlib.contextmanager
    def _waker(self, register: bool = True) -> Iterator[Any]:
        """A waker for the calling thread, set (if registered) by every change waiters check."""
        waker = new_waker()
        if register:
            with self._lock:
                self._wakers.append(waker)
        try:
            yield waker
        finally:
            if register:
                with self._lock:
                    self._wakers.remove(waker)
            waker.close()

    def _wake_waiters(self) -> None:
        for waker in tuple(self._wakers):
            waker.set()

    def _wait_exit_done(self) -> None:
        with self._waker() as waker:
            wait_for(waker, lambda: self._exit_done)

    async def wait_async(self, state: State | Iterable[State]) -> None:
        """Wait for ``state`` without blocking the running asyncio event loop."""
        import asyncio

        wanted = as_state_set(state)
        loop = asyncio.get_running_loop()
        reached = loop.create_future()

        def on_change(new_state: State) -> None:
            if new_state in wanted and not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, reached)

        unwatch = self.watch_state(on_change)
        try:
            if self._state in wanted:
                return
            await reached
        finally:
            unwatch()

    def block(self, interval: float = 0.1) -> None:
        """Wait for the bus to exit, wait for the process's threads, then re-exec if asked.

        KeyboardInterrupt and SystemExit while waiting shut the bus down. Threads still running
        after ``graceful_timeout`` are named in the log and not waited for any longer.
        """
        try:
            self.wait(states.EXITING, interval=interval, channel="main")
        except (KeyboardInterrupt, OSError):
            self.log("Keyboard Interrupt: shutting down bus")
            self._exit_quietly()
        except SystemExit:
            self.log("SystemExit raised: shutting down bus")
            self._exit_quietly()
            raise
        self._wait_exit_done()
        self.log("Waiting for child threads to terminate...")
        stuck = join_threads(self.graceful_timeout)
        if stuck:
            self.log(
                "Threads still running after %g s, not waited for: %s"
                % (self.graceful_timeout, ", ".join(t.name for t in stuck)),
                level=30,
            )
        if self.execv:
            self._do_execv()
        elif self.graceful_timeout is not None:
            reexec.bound_interpreter_exit(self.graceful_timeout, self.log, lambda: self.exit_code)

    def _exit_quietly(self) -> None:
        try:
            self.exit()
        except ChannelFailures:
            pass  # each failure was logged where it happened

    def _do_execv(self) -> None:
        """Re-execute this process: same interpreter, flags, arguments and working directory."""
        args = reexec.command_line()
        self.log("Re-spawning %s" % " ".join(args))
        reexec.reexec(args)

    def start_with_callback(self, func: Callable[..., Any], args: tuple | None = None, kwargs: dict | None = None) -> threading.Thread:
        """Start the bus, and run ``func(*args, **kwargs)`` in a new thread once it is STARTED."""
        args = () if args is None else tuple(args)
        kwargs = {} if kwargs is None else dict(kwargs)

        def run_when_started() -> None:
            self.wait((states.STARTED, states.EXITING))  # a failed start ends in EXITING
            if self._state is states.STARTED:
                func(*args, **kwargs)

        thread = threading.Thread(target=run_when_started)
        thread.name = "Bus Callback " + thread.name
        thread.start()
        self.start()
        return thread

    # -- logging -------------------------------------------------------------------------

    def log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """Publish ``msg`` at stdlib ``level`` on 'log'; with traceback, append the current one."""
        if traceback:
            import traceback as _traceback

            msg += "\n" + "".join(_traceback.format_exception(*sys.exc_info()))
        self.publish("log", msg, level)

    def log_to_stdlib(self, msg: str, level: int = 20) -> None:
        """The 'log' listener that hands bus messages to the stdlib logger named 'wspbus'.

        Unsubscribe it (``bus.unsubscribe('log', bus.log_to_stdlib)``) to silence that route.
        """
        logger = self._stdlib_logger
        if logger is None:
            import logging

            logger = self._stdlib_logger = logging.getLogger("wspbus")
        if logger.isEnabledFor(level):
            logger.log(level, msg)


def _collect_failures(failures: ChannelFailures, func: Callable[..., Any], *args: Any) -> None:
    """Run ``func``; add the listener failures it raises to ``failures``."""
    try:
        func(*args)
    except ChannelFailures as raised:
        for exc in raised.get_instances():
            failures.add(exc)


def _resolve(future) -> None:
    if not future.done():
        future.set_result(None)
