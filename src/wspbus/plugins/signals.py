"""SignalHandler: OS signals become bus transitions, acted on outside the signal handler.

The handler installed with the OS only queues the signal number; a small daemon thread takes
it from there (the pipeline every plugin shares, in _signal_worker) and publishes the channel
named after the signal ('SIGTERM', 'SIGHUP', ...) on a thread of its own, so an exit that takes
long never keeps the next signal waiting. The default listeners of those channels
are in ``handlers``:

========  ==================================================================================
SIGTERM   ``bus.exit``
SIGINT    ``bus.exit``
SIGHUP    ``handle_SIGHUP``: exit if stdin is a terminal (it went away), else restart (reload)
SIGUSR1   ``bus.graceful``
========  ==================================================================================

Change ``handlers`` before ``subscribe()`` to change an action (a draining SIGTERM, say).

A SIGINT or SIGTERM that arrives while the process is already shutting down (an earlier
SIGINT/SIGTERM was received, or the bus is STOPPING or EXITING other than for a restart) ends
the process at once:
the line is logged, stdout and stderr are flushed and ``os._exit(128 + signum)`` runs (130 for
SIGINT, 143 for SIGTERM, the shell's convention for "killed by this signal"). That is the
second Ctrl-C that gets you out of a hung shutdown. A first SIGINT or SIGTERM during a
restart (a reload) cancels the re-exec: the process ends with status 0. Signals arriving
during the re-exec itself wait, blocked, until the new process has started (reexec.SignalHold).

Only the seed bus API is used (subscribe, unsubscribe, publish, log, state, states, exit,
restart, graceful), so the SignalHandler also works on CherryPy's bus.
"""

from __future__ import annotations

import os
import signal as _signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .._core.bus import Bus
from ._signal_worker import TERMINATING, SignalWorker, Termination
from .base import cancel_restart, ignore_listener_failures, restart_requested

__all__ = ["SignalHandler"]


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
        #: Signals of which a second one (or one while the bus shuts down for good) ends the
        #: process at once; a process that must stop once however many come (a supervised
        #: worker: a signal to the whole group, then its supervisor's stop) empties it.
        self.terminating: frozenset[int] = TERMINATING
        self._subscribed: list[tuple[str, Callable[[], Any]]] = []
        self._termination = Termination(bus, already_ending=self._bus_is_shutting_down)
        self._worker = SignalWorker(bus, self._dispatch, name="wspbus signals")

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
        self._worker.restore()
        for name, listener in self._subscribed:
            self.bus.unsubscribe(name, listener)
        self._subscribed.clear()
        self._worker.stop()

    def set_handler(self, signal: int | str, listener: Callable[[], Any] | None = None) -> None:
        """Handle ``signal`` (a name like 'SIGTERM' or a number); subscribe ``listener`` to it.

        Without a listener the signal is only published on its channel. Must be called from
        the main thread, as Python requires.
        """
        signum, name = self._resolve(signal)
        self._worker.install(signum)
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

    def _dispatch(self, signum: int) -> None:
        """On the worker thread: a second terminating signal ends the process, any other is
        published on a thread of its own."""
        if signum in self.terminating:
            self._termination.claim(signum)
            cancel_restart(self.bus)  # told to end: a restart under way must not bring it back
        name = self.signals.get(signum, "signal %d" % signum)
        threading.Thread(target=self._act, args=(name,), name="wspbus %s" % name, daemon=True).start()

    def _bus_is_shutting_down(self) -> bool:
        """STOPPING or EXITING, and not for a restart: a first SIGTERM during a reload is an
        exit (it cancels the re-exec and the process ends 0), not a second signal."""
        states = self.bus.states
        return self.bus.state in (states.STOPPING, states.EXITING) and not restart_requested(self.bus)

    def _act(self, name: str) -> None:
        self.bus.log("Caught signal %s." % name)
        ignore_listener_failures(self.bus.publish, name)

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
