"""SIGTERM draining: stop getting traffic before stopping serving it.

When Kubernetes ends a pod it signals the pod and removes it from the Service's endpoints *at the
same time*; proxies and kube-proxy learn of the removal a few seconds later and keep sending
requests meanwhile. A site that closes its listening sockets on SIGTERM refuses those requests.
So on the first SIGTERM the Drainer

1. publishes 'drain': readiness turns false (:class:`wspbus.plugins.health.Health`), systemd hears
   STOPPING=1, anyone else subscribed learns the site is going away;
2. keeps serving for ``drain_delay`` seconds (waiting on an Event: an exit begun elsewhere, by
   a failing server say, cuts it short);
3. exits the bus: servers stop accepting and finish the requests in flight within the bus's
   ``graceful_timeout``; the process exits 0.

A second SIGTERM, or a SIGINT, after the first ends the process at once (status 128 + signal
number), drain or no drain, as :class:`~wspbus.plugins.signals.SignalHandler` does; a first SIGINT
exits without the delay (someone at a terminal wants it gone). The default delay is 0: outside
Kubernetes an idle site exits as soon as it is told. The first signal also cancels a restart under
way (``bus.execv``): the process was asked to end, not to come back.

Standalone, ``subscribe()`` installs SIGTERM and SIGINT handlers itself (main thread). With a
SignalHandler, pass it as ``signal_handler=``: the Drainer takes over its 'SIGTERM' entry (subscribe
the Drainer first, or it swaps the listener the SignalHandler already subscribed on 'SIGTERM'),
and the SignalHandler keeps doing the rest, the "second signal ends it at once" included.
"""

from __future__ import annotations

import math
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

from .._process import reexec
from .._core.bus import Bus, ChannelFailures, State, states
from .health import DRAIN_CHANNEL
from .base import SimplePlugin

__all__ = ["Drainer"]

HANDLED_SIGNALS = ("SIGTERM", "SIGINT")


class Drainer(SimplePlugin):
    """Turn SIGTERM into: not ready, serve ``drain_delay`` seconds more, then a graceful exit."""

    def __init__(self, bus: Bus, drain_delay: float = 0.0, *, signal_handler: Any = None) -> None:
        super().__init__(bus)
        if isinstance(drain_delay, bool) or not isinstance(drain_delay, (int, float)) or not (
            math.isfinite(drain_delay) and drain_delay >= 0
        ):
            raise ValueError("drain_delay=%r: expected a number of seconds >= 0" % (drain_delay,))
        self.drain_delay = float(drain_delay)
        self.signal_handler = signal_handler
        self._lock = threading.Lock()
        self._signalled = False
        self._drain_over = threading.Event()
        self._replaced: dict[str, Any] = {}
        self._received: queue.SimpleQueue | None = None
        self._unwatch: Callable[[], None] | None = None

    @property
    def draining(self) -> bool:
        """True from the first signal on: the site should get no new traffic."""
        return self._signalled

    # -- bus wiring ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Hook SIGTERM and SIGINT (through ``signal_handler`` if given) and follow the bus."""
        if self._unwatch is not None:
            return
        self.bus.declare_channel(DRAIN_CHANNEL)
        if self.signal_handler is not None:
            self._take_over_signal_handler()
        else:
            self._install_handlers()
        self._unwatch = self.bus.watch_state(self._state_changed)

    def unsubscribe(self) -> None:
        if self._unwatch is None:
            return
        self._unwatch()
        self._unwatch = None
        if self.signal_handler is not None:
            self._give_back_signal_handler()
        else:
            self._restore_handlers()

    def _take_over_signal_handler(self) -> None:
        handlers = self.signal_handler.handlers
        self._replaced["SIGTERM"] = handlers.get("SIGTERM")
        handlers["SIGTERM"] = self.handle_SIGTERM
        self._swap_listener("SIGTERM", self._replaced["SIGTERM"], self.handle_SIGTERM)

    def _give_back_signal_handler(self) -> None:
        handlers = self.signal_handler.handlers
        for name, previous in self._replaced.items():
            ours = handlers.pop(name, None)
            if previous is not None:
                handlers[name] = previous
            self._swap_listener(name, ours, previous)
        self._replaced.clear()

    def _swap_listener(self, channel: str, old: Any, new: Any) -> None:
        """If the SignalHandler already subscribed ``old`` on ``channel``, put ``new`` there."""
        if old is not None and old in self.bus.listeners.get(channel, ()):
            self.bus.unsubscribe(channel, old)
            if new is not None:
                self.bus.subscribe(channel, new)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.bus.log("Drainer: signals can only be hooked from the main thread; SIGTERM is not drained", level=30)
            return
        self._received = queue.SimpleQueue()
        threading.Thread(target=self._dispatch, args=(self._received,), name="wspbus drain signals", daemon=True).start()
        for name in HANDLED_SIGNALS:
            self._replaced[name] = signal.signal(getattr(signal, name), self._on_signal)

    def _restore_handlers(self) -> None:
        for name, previous in self._replaced.items():
            signal.signal(getattr(signal, name), previous if previous is not None else signal.SIG_DFL)
        self._replaced.clear()
        if self._received is not None:
            self._received.put(None)
            self._received = None

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The OS-level handler: queue the signal, nothing more (a Lock here could deadlock
        when a second signal interrupts the first handler; SimpleQueue.put cannot)."""
        self._received.put(signum)

    def _dispatch(self, received: queue.SimpleQueue) -> None:
        while (signum := received.get()) is not None:
            self.signal_received(signal.Signals(signum))

    def handle_SIGTERM(self, *_ignored: Any) -> None:
        """The 'SIGTERM' listener for a SignalHandler: drain, then exit."""
        self.signal_received(signal.SIGTERM)

    def signal_received(self, signum: signal.Signals) -> None:
        """The first signal begins the drain (returning at once); any later one ends the process."""
        with self._lock:
            first = not self._signalled
            self._signalled = True
        if first:
            self._begin(signum)
        else:
            self._end_at_once(signum)

    def _begin(self, signum: signal.Signals) -> None:
        # The process is to end: a restart under way must not bring it back.
        self.bus.execv = False
        started = self.bus.state is states.STARTED
        delay = self.drain_delay if signum == signal.SIGTERM and started else 0.0
        # Return at once: a later signal must find its dispatcher free to end the process.
        threading.Thread(target=self._drain_then_exit, args=(signum, delay), name="wspbus drain", daemon=True).start()

    def _drain_then_exit(self, signum: signal.Signals, delay: float) -> None:
        try:
            self.bus.publish(DRAIN_CHANNEL)  # first: readiness turns false before anything else
        except ChannelFailures:
            pass  # each failing listener was logged; the exit must go on
        if delay:
            self.bus.log("%s: draining: not ready, serving %g s more, then exiting" % (signum.name, delay))
        else:
            self.bus.log("%s: exiting" % signum.name)
        if delay:
            self._drain_over.wait(delay)
        try:
            self.bus.exit()
        except ChannelFailures:
            pass  # each failing listener was logged where it failed

    def _end_at_once(self, signum: signal.Signals) -> None:
        self.bus.log("%s while shutting down: ending the process at once" % signum.name, level=30)
        reexec.end_process(128 + int(signum))

    def _state_changed(self, state: State) -> None:
        """The bus left STARTED by other means (exit(), a failure): do not keep it waiting."""
        if state is not states.STARTED and self._signalled:
            self._drain_over.set()
