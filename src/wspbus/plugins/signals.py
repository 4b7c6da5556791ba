"""SignalHandler: OS signals become bus transitions, acted on outside the signal handler.

The handler installed with the OS only puts the signal number on a queue (``SimpleQueue.put``
is safe in a signal handler). A small daemon thread takes it from there and publishes the
channel named after the signal ('SIGTERM', 'SIGHUP', ...) on a thread of its own, so an exit
that takes long never keeps the next signal waiting. The default listeners of those channels
are in ``handlers``:

========  ==================================================================================
SIGTERM   ``bus.exit``
SIGINT    ``bus.exit``
SIGHUP    ``handle_SIGHUP``: exit if stdin is a terminal (it went away), else restart (reload)
SIGUSR1   ``bus.graceful``
========  ==================================================================================

Change ``handlers`` before ``subscribe()`` to change an action (a draining SIGTERM, say).

A SIGINT or SIGTERM that arrives while the process is already shutting down (an earlier
SIGINT/SIGTERM was received, or the bus is STOPPING or EXITING) ends the process at once:
the line is logged, stdout and stderr are flushed and ``os._exit(128 + signum)`` runs (130 for
SIGINT, 143 for SIGTERM, the shell's convention for "killed by this signal"). That is the
second Ctrl-C that gets you out of a hung shutdown; it also keeps a SIGTERM sent during a
restart from being lost to the re-executed process.
"""

from __future__ import annotations

import os
import queue
import signal as _signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._process import reexec
from .._core.bus import Bus, states

__all__ = ["SignalHandler"]

#: Signals asking the process to end; a second one while shutting down ends it at once.
TERMINATING = frozenset(("SIGINT", "SIGTERM"))


class SignalHandler:
    """Map OS signals to bus actions; each received signal is also published on its channel.

    ``handlers``: signal name -> listener subscribed to the channel of that name.
    ``signals``: signal number -> name, for every signal this platform has.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.handlers: dict[str, Callable[[], Any]] = {
            "SIGTERM": bus.exit,
            "SIGINT": bus.exit,
            "SIGHUP": self.handle_SIGHUP,
            "SIGUSR1": bus.graceful,
        }
        self.signals: dict[int, str] = {sig.value: sig.name for sig in _signal.Signals}
        self._previous_handlers: dict[int, Any] = {}
        self._subscribed: list[tuple[str, Callable[[], Any]]] = []
        self._pending: queue.SimpleQueue | None = None
        self._dispatcher: threading.Thread | None = None
        self._terminating = False
        self._fork_hook_registered = False

    # -- installing ------------------------------------------------------------------------

    def subscribe(self) -> None:
        """Install the OS handlers for every entry of ``handlers`` and subscribe its listener."""
        if not self._on_main_thread("subscribe", "no signal handler was installed"):
            return
        known = set(self.signals.values())
        for name, listener in self.handlers.items():
            if name not in known:
                self.bus.log("No signal named %s on this platform; not handling it." % name, level=30)
                continue
            self.set_handler(name, listener)

    def unsubscribe(self) -> None:
        """Put back the OS handlers that were there before, and unsubscribe our listeners."""
        if not self._on_main_thread("unsubscribe", "the signal handlers were left in place"):
            return
        for signum, previous in self._previous_handlers.items():
            if previous is None:  # installed from C; the closest we can restore is the default
                previous = _signal.SIG_DFL
            self.bus.log("Restoring %s handler %r." % (self.signals.get(signum, signum), previous), level=10)
            _signal.signal(signum, previous)
        self._previous_handlers.clear()
        for name, listener in self._subscribed:
            self.bus.unsubscribe(name, listener)
        self._subscribed.clear()
        self._stop_dispatcher()

    def set_handler(self, signal: int | str, listener: Callable[[], Any] | None = None) -> None:
        """Handle ``signal`` (a name like 'SIGTERM' or a number); subscribe ``listener`` to it.

        Without a listener the signal is only published on its channel. Must be called from
        the main thread, as Python requires.
        """
        signum, name = self._resolve(signal)
        self._start_dispatcher()
        previous = _signal.signal(signum, self._record)
        self._previous_handlers.setdefault(signum, previous)
        if listener is not None:
            self.bus.log("Listening for %s." % name, level=10)
            self.bus.subscribe(name, listener)
            self._subscribed.append((name, listener))

    def _resolve(self, signal: int | str) -> tuple[int, str]:
        if isinstance(signal, str):
            for signum, name in self.signals.items():
                if name == signal:
                    return signum, name
            raise ValueError("No such signal: %r (expected a name like 'SIGTERM')" % signal)
        if signal in self.signals:
            return int(signal), self.signals[signal]
        raise ValueError("No such signal: %r (expected a signal number of this platform)" % signal)

    def _on_main_thread(self, what: str, consequence: str) -> bool:
        if threading.current_thread() is threading.main_thread():
            return True
        self.bus.log(
            "SignalHandler.%s() called from thread %r, not the main thread: %s "
            "(Python handles signals only in the main thread)."
            % (what, threading.current_thread().name, consequence),
            level=30,
        )
        return False

    # -- receiving -------------------------------------------------------------------------

    def _record(self, signum: int, frame: Any) -> None:
        """The OS-level handler: note the signal and wake the dispatcher, nothing more."""
        self._pending.put(signum)

    def _start_dispatcher(self) -> None:
        if self._dispatcher is not None:
            return
        if not self._fork_hook_registered:
            os.register_at_fork(after_in_child=_after_fork_in_child(weakref.ref(self)))
            self._fork_hook_registered = True
        self._pending = queue.SimpleQueue()
        self._dispatcher = threading.Thread(
            target=self._dispatch, args=(self._pending,), name="wspbus signals", daemon=True
        )
        # A forked child (the daemon, say) gets a dispatcher of its own: see _restart_after_fork.
        self._dispatcher.restarted_after_fork = True
        self._dispatcher.start()

    def _stop_dispatcher(self) -> None:
        if self._dispatcher is None:
            return
        self._pending.put(None)  # after any signal already queued
        self._dispatcher = None

    def _restart_after_fork(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher = None
            self._start_dispatcher()

    def _dispatch(self, pending: queue.SimpleQueue) -> None:
        while True:
            signum = pending.get()
            if signum is None:
                return
            name = self.signals.get(signum, "signal %d" % signum)
            if name in TERMINATING:
                if self._shutting_down():
                    self._exit_now(signum, name)
                self._terminating = True
            threading.Thread(target=self._act, args=(name,), name="wspbus %s" % name, daemon=True).start()

    def _shutting_down(self) -> bool:
        return self._terminating or self.bus.state in (states.STOPPING, states.EXITING)

    def _act(self, name: str) -> None:
        self.bus.log("Caught signal %s." % name)
        try:
            self.bus.publish(name)
        except Exception:
            pass  # the bus logged each failing listener

    def _exit_now(self, signum: int, name: str) -> None:
        status = 128 + signum
        self.bus.log("Received %s while shutting down: exiting now with status %d." % (name, status), level=40)
        reexec.end_process(status)

    # -- actions ---------------------------------------------------------------------------

    def handle_SIGHUP(self) -> None:
        """Exit if stdin is a terminal (it hung up), else restart (a service manager's reload)."""
        if _stdin_is_a_tty():
            self.bus.log("SIGHUP with a terminal on stdin: the terminal went away; exiting.")
            self.bus.exit()
        else:
            self.bus.log("SIGHUP without a terminal: restarting.")
            self.bus.restart()


def _stdin_is_a_tty() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _after_fork_in_child(handler_ref: "weakref.ref[SignalHandler]") -> Callable[[], None]:
    def restart_in_child() -> None:
        handler = handler_ref()
        if handler is not None:
            handler._restart_after_fork()

    return restart_in_child
