"""The Web Site Process Bus: a process state machine with topic-based publish/subscribe.

This module holds the Bus; it imports only _core and the stdlib, and knows nothing about
plugins, servers or sites, which plug into it through channels. Rules it keeps (docs/design.md):

* publish() is the hot path: it reads an immutable, already sorted tuple of listeners that
  subscribe() and unsubscribe() (rare) replace (channels.py).
* Nothing waits on a tick. Waiters sleep on a waker that every state change and subscription
  sets; they wake periodically only while somebody listens on the channel they publish
  (block() publishes 'main'). The main thread's waker also wakes on signals (waking.py).
* Shutdown is bounded without leaving the calling thread. 'stop' and 'exit' listeners run on
  the thread that publishes, as in CherryPy; one that does not return within
  ``graceful_timeout`` is named in the log, and a watchdog runs the rest (shutdown.py).
* What ending a process takes is not the core's business. After restart(), block() calls
  ``_reexecute()``, and after a plain exit ``_bound_interpreter_exit()``; here both do nothing
  (block() returns with ``execv`` set, for the caller to act on). The process's bus,
  ``wspbus.Bus`` (wspbus._process.bus), re-executes and bounds the interpreter's exit.

(A little over 400 lines: this is the one class of CherryPy's contract, so every public method
lives here; each mechanism behind them has its own module, named above.)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable

from .channels import BUILTIN_CHANNELS, DEFAULT_PRIORITY, Channels, ListenersView
from .errors import ChannelFailures, StartupError, add_failure, failure_message
from .shutdown import Shutdown, join_threads
from .states import State, StateWatcher, StateWatchers, as_state_set, states
from .stdlib_log import StdlibLogger
from .waking import Waiters

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    import asyncio
    from typing import Any, TypeVar, overload

    from .channels import Listener

    ListenerT = TypeVar("ListenerT", bound=Listener)

__all__ = ["BUILTIN_CHANNELS", "Bus", "ChannelFailures", "ListenersView", "StartupError", "State", "states"]

_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect
#: Seconds a 'stop'/'exit' listener, or a thread at exit, may take before the bus gives up on it.
#: gunicorn's default graceful timeout, and what Kubernetes' default grace period leaves room for.
DEFAULT_GRACEFUL_TIMEOUT = 30.0

#: What the interpreter's own exit may take past what is left of ``graceful_timeout`` (flushing,
#: atexit): the end of a process is bounded by graceful_timeout + this, whatever is in flight.
EXIT_MARGIN = 0.25


class Bus:
    """Process state machine and messenger for HTTP site deployment.

    All state changes go through the ``state`` property, which wakes every waiter.
    """

    states = states

    def __init__(self, *, graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT) -> None:
        #: Set by restart(): once the bus has exited, block() re-executes the process.
        self.execv = False
        #: Bound on each 'stop'/'exit' listener and on waiting for threads at exit (None: no bound).
        self.graceful_timeout = graceful_timeout
        #: Exit status a failure asked for (a server that died, a start that failed); 0 otherwise.
        self.exit_code = 0
        self._lock = threading.RLock()
        self._waiters = Waiters()  # woken after every change a waiter checks
        self._state = states.STOPPED
        self._exit_begun = False
        self._exit_done = False
        self._exit_deadline: float | None = None  # graceful_timeout from the exit's beginning
        self._state_watchers = StateWatchers()
        #: The asyncio loop coroutine listeners run on (set by wspbus.aio.run_bus or by hand).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._channels = Channels(self._invoker, self._wake_waiters)
        # channel -> listeners sorted by (priority, sequence): the channels' own snapshot dict,
        # read by publish() without a lock.
        self._ordered = self._channels.ordered
        self._stdlib_log = StdlibLogger("wspbus")
        self.subscribe("log", self.log_to_stdlib, priority=100)

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        self._wake_waiters()
        for watcher in self._state_watchers.current():
            try:
                watcher(value)
            except Exception:  # one broken watcher must not stop the transition
                self.log("Error in state watcher %r" % (watcher,), level=40, traceback=True)

    @property
    def exit_begun(self) -> bool:
        """True once exit() has begun: the process is going away, even while 'stop' listeners
        still run (a plain stop() is not an exit). A start() after the exit ends it: a new life."""
        return self._exit_begun

    # -- subscriptions -------------------------------------------------------------------

    @property
    def listeners(self) -> "ListenersView":
        """Channel name -> the live set of its listeners, as CherryPy's ``bus.listeners``.

        ``listeners[channel] = set()`` or ``listeners.setdefault(channel, set())`` declares a
        channel (so that SimplePlugin binds a method to it); adding to or discarding from a
        channel's set subscribes or unsubscribes (with the callback's own priority).
        """
        return ListenersView(self._channels)

    def declare_channel(self, channel: str) -> None:
        """Make ``channel`` known (it appears in ``listeners``) even with no listener yet."""
        self._channels.declare(channel)

    if TYPE_CHECKING:
        @overload
        def subscribe(self, channel: str, callback: None = None,
                      priority: int | None = None) -> Callable[[ListenerT], ListenerT]: ...

        @overload
        def subscribe(self, channel: str, callback: ListenerT, priority: int | None = None) -> ListenerT: ...

    def subscribe(self, channel: str, callback: ListenerT | None = None,
                  priority: int | None = None) -> ListenerT | Callable[[ListenerT], ListenerT]:
        """Add ``callback`` to ``channel``; with no callback, a decorator returning the callback.

        Lower priority runs first (default ``callback.priority``, else 50); equal priorities run
        in subscription order. Subscribing again only updates the priority.
        """
        if callback is None:
            return lambda func: self.subscribe(channel, func, priority)
        if priority is None:
            priority = getattr(callback, "priority", DEFAULT_PRIORITY)
        # Wakes the waiters: one publishing this channel periodically may need to start ticking.
        self._channels.add(channel, callback, priority)
        return callback

    def _invoker(self, callback: Listener) -> Listener:
        """What publish() calls: the callback, or for a coroutine function a blocking runner."""
        code = getattr(getattr(callback, "__func__", callback), "__code__", None)
        if code is None or not code.co_flags & _CO_COROUTINE:
            return callback
        from .coroutines import CoroutineListener  # imports asyncio: only when a coroutine needs it

        return CoroutineListener(self, callback)

    def unsubscribe(self, channel: str, callback: Listener) -> None:
        """Remove ``callback`` from ``channel``; unknown pairs are ignored."""
        self._channels.remove(channel, callback)  # wakes a waiter that may now stop ticking

    def watch_state(self, watcher: StateWatcher) -> Callable[[], None]:
        """Call ``watcher(state)`` after every state change; returns a function that stops it.

        The watcher runs in the thread that changed the state and must not block.
        """
        return self._state_watchers.add(watcher)

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
        failures: ChannelFailures | None = None
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
        """Record and log a listener's exception; KeyboardInterrupt and SystemExit propagate at once."""
        failures = add_failure(failures, exc)
        if channel != "log":  # a broken log listener must not recurse into the log
            self.log(failure_message(channel, listener, exc), level=40)
        return failures

    def _publish_until_failure(self, channel: str) -> None:
        """Call the listeners of ``channel`` in order; the first failure ends the publish, and
        so does an exit begun meanwhile (its stop has run: nothing more is to be started)."""
        for listener in self._ordered.get(channel, ()):
            if self._exit_begun:
                return
            try:
                listener()
            except BaseException as exc:
                raise self._listener_failed(channel, listener, exc, None) from None

    # -- transitions ---------------------------------------------------------------------

    def start(self) -> None:
        """Start all services; on a failing start listener, shut down and re-raise its error.

        After an exit, a start begins a new life, as with CherryPy's bus (its test harness and
        cherryd start the engine again); while an exit is still running, it is refused.
        """
        with self._lock:
            if self._exit_begun:
                if not self._exit_done:
                    raise RuntimeError("cannot start the bus while it is exiting")
                self._exit_begun = self._exit_done = False
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
        with self._lock:
            if self._exit_begun:  # an exit (a SIGTERM, say) came during the start: it stands
                self.log("Bus start abandoned: an exit was asked for while STARTING")
                return
            self.state = states.STARTED
        self.log("Bus STARTED")

    def stop(self) -> None:
        """Stop all services. Listeners must tolerate a stop without a start."""
        Shutdown(self, ("stop",)).run()

    def exit(self) -> None:
        """Stop all services and prepare to exit the process. A second call does nothing."""
        if self._begin_exit():
            self._run_exit()

    def time_left(self) -> float | None:
        """Seconds left of the exit's bound (``graceful_timeout`` from the moment exit began),
        so that every phase of the end shares one bound; ``graceful_timeout`` before an exit."""
        deadline = self._exit_deadline
        if deadline is None or not self._exit_begun:
            return self.graceful_timeout
        return max(0.0, deadline - time.monotonic())

    def _begin_exit(self, *, execv: bool = False) -> bool:
        """Claim the exit (for a restart if ``execv``); False if another call already did."""
        with self._lock:
            if self._exit_begun:
                return False
            self._exit_begun = True
            if self.graceful_timeout is not None:
                self._exit_deadline = time.monotonic() + self.graceful_timeout
            if execv:
                self.execv = True
            return True

    def _run_exit(self) -> None:
        Shutdown(self, ("stop", "exit")).run()

    def _enter(self, channel: str) -> None:
        """The state change before a Shutdown publishes ``channel``."""
        self.state = states.STOPPING if channel == "stop" else states.EXITING
        self.log("Bus STOPPING" if channel == "stop" else "Bus EXITING")

    def _leave(self, channel: str) -> None:
        """The state change after a Shutdown has published ``channel``."""
        if channel == "stop":
            self.state = states.STOPPED
            self.log("Bus STOPPED")
            return
        try:
            self.log("Bus EXITED")
        finally:
            self._exit_done = True
            self._wake_waiters()

    def _exit_relieved(self, caller: threading.Thread, caller_back: threading.Event) -> None:
        """A watchdog finished the exit that ``caller`` hung in (``caller_back`` is set if it
        ever returns). The core leaves it there: block() on the main thread goes on. The
        process's bus (wspbus.Bus) ends the process if the thread that hung is the main one.
        """

    def restart(self) -> None:
        """Exit, then have block() (on the main thread) re-execute the process.

        Ignored once an exit has begun: a process told to end must not come back.
        """
        if self._begin_exit(execv=True):
            self._run_exit()
        else:
            self.log("Restart ignored: the bus is already exiting", level=30)

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
        if channel is None:
            self._waiters.wait(lambda: self._state in wanted)
            return
        ticks, ordered = channel, self._ordered
        self._waiters.wait(lambda: self._state in wanted, interval,
                           ticking=lambda: ticks in ordered, tick=lambda: self.publish(ticks))

    def _wake_waiters(self) -> None:
        self._waiters.wake_all()

    def _wait_exit_done(self) -> None:
        """Return once exit() has run to its end (on whichever thread runs it)."""
        self._waiters.wait(lambda: self._exit_done)

    async def wait_async(self, state: State | Iterable[State]) -> None:
        """Wait for ``state`` without blocking the running asyncio event loop."""
        from .coroutines import wait_for_state  # imports asyncio, which a caller here has already

        await wait_for_state(self, as_state_set(state))

    def block(self, interval: float = 0.1) -> None:
        """Wait for the bus to exit, wait for the process's threads, then re-exec if asked.

        KeyboardInterrupt and SystemExit while waiting shut the bus down. Threads still running
        after ``graceful_timeout`` are named in the log and not waited for any longer.
        """
        try:
            self.wait(states.EXITING, interval=interval, channel="main")
        except KeyboardInterrupt:
            self.log("Keyboard Interrupt: shutting down bus")
            self._exit_quietly()
        except SystemExit:
            self.log("SystemExit raised: shutting down bus")
            self._exit_quietly()
            raise
        except OSError:  # from a signal handler, say: not an interrupt, an error to show
            self.log("Error while waiting for the bus to exit: shutting down bus", level=40, traceback=True)
            self._exit_quietly()
            raise
        self._wait_exit_done()
        self.log("Waiting for child threads to terminate...")
        join_threads(self.time_left(), self.log)  # what the exit's bound leaves, not a bound of its own
        timeout = self.time_left()
        if self.execv:
            self._reexecute()
        elif timeout is not None:
            self._bound_interpreter_exit(timeout + EXIT_MARGIN)

    def _reexecute(self) -> None:
        """Replace the process with a new run of the same program, after restart().

        The core cannot: block() returns with ``execv`` set, for the caller to act on. The
        process's bus (wspbus.Bus) re-executes here.
        """

    def _bound_interpreter_exit(self, timeout: float) -> None:
        """Keep threads the bus does not own from hanging the interpreter's exit past ``timeout``.

        The core leaves the interpreter's exit alone; the process's bus (wspbus.Bus) bounds it.
        """

    def _exit_quietly(self) -> None:
        try:
            self.exit()
        except ChannelFailures:
            pass  # each failure was logged where it happened

    def start_with_callback(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
                            kwargs: dict[str, Any] | None = None) -> threading.Thread:
        """Start the bus, and run ``func(*args, **kwargs)`` in a new thread once it is STARTED."""
        positional = () if args is None else tuple(args)
        keywords = {} if kwargs is None else dict(kwargs)

        def run_when_started() -> None:
            self.wait((states.STARTED, states.EXITING))  # a failed start ends in EXITING
            if self._state is states.STARTED:
                func(*positional, **keywords)

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

    def log_to_stdlib(self, msg: object = None, level: object = 20, *more: object, **named: object) -> None:
        """The 'log' listener that hands bus messages to the stdlib logger named 'wspbus'.

        It takes any publish on 'log' (see StdlibLogger). Unsubscribe it
        (``bus.unsubscribe('log', bus.log_to_stdlib)``) to silence that route.
        """
        self._stdlib_log(msg, level)

