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
way (``base.cancel_restart``): the process was asked to end, not to come back.

Standalone, ``subscribe()`` installs SIGTERM and SIGINT handlers itself (main thread), through
the signal pipeline every plugin shares (_signal_worker: the OS handler only queues the signal,
a worker thread acts on it; the "ends at once" rule lives there too). With a
SignalHandler, pass it as ``signal_handler=``: the Drainer takes over its 'SIGTERM' entry (subscribe
the Drainer first, or it swaps the listener the SignalHandler already subscribed on 'SIGTERM'),
and the SignalHandler keeps doing the rest, the "second signal ends it at once" included.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .._core.bus import Bus, State
from ._signal_worker import SignalWorker, Termination
from .base import SimplePlugin, cancel_restart, ignore_listener_failures, watch_state
from .health import DRAIN_CHANNEL

__all__ = ["Drainer"]

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalHandlerLike(Protocol):
    """What the Drainer uses of a SignalHandler: its map of signal name -> listener."""

    handlers: dict[str, Callable[..., Any]]


class Drainer(SimplePlugin):
    """Turn SIGTERM into: not ready, serve ``drain_delay`` seconds more, then a graceful exit."""

    def __init__(self, bus: Bus, drain_delay: float = 0.0, *,
                 signal_handler: SignalHandlerLike | None = None) -> None:
        super().__init__(bus)
        if isinstance(drain_delay, bool) or not isinstance(drain_delay, (int, float)) or not (
            math.isfinite(drain_delay) and drain_delay >= 0
        ):
            raise ValueError("drain_delay=%r: expected a number of seconds >= 0" % (drain_delay,))
        self.drain_delay = float(drain_delay)
        self.signal_handler = signal_handler
        self._termination = Termination(bus)
        self._signals = SignalWorker(bus, self.signal_received, name="wspbus drain signals")
        self._drain_over = threading.Event()
        self._replaced: dict[str, Callable[..., Any] | None] = {}  # the SignalHandler's entries we took
        self._subscribed = False
        self._unwatch: Callable[[], None] = _nothing

    @property
    def draining(self) -> bool:
        """True from the first signal on: the site should get no new traffic."""
        return self._termination.begun

    # -- bus wiring ----------------------------------------------------------------------

    def subscribe(self) -> None:
        """Hook SIGTERM and SIGINT (through ``signal_handler`` if given) and follow the bus."""
        if self._subscribed:
            return
        self._subscribed = True
        self.bus.listeners.setdefault(DRAIN_CHANNEL, set())
        if self.signal_handler is not None:
            self._take_over_signal_handler(self.signal_handler)
        else:
            self._install_handlers()
        self._unwatch = watch_state(self.bus, self._state_changed)  # a state change cuts a drain short

    def unsubscribe(self) -> None:
        if not self._subscribed:
            return
        self._subscribed = False
        self._unwatch()
        self._unwatch = _nothing
        if self.signal_handler is not None:
            self._give_back_signal_handler(self.signal_handler)
        else:
            self._signals.restore()
            self._signals.stop()

    def _take_over_signal_handler(self, signal_handler: SignalHandlerLike) -> None:
        handlers = signal_handler.handlers
        self._replaced["SIGTERM"] = handlers.get("SIGTERM")
        handlers["SIGTERM"] = self.handle_SIGTERM
        self._swap_listener("SIGTERM", self._replaced["SIGTERM"], self.handle_SIGTERM)

    def _give_back_signal_handler(self, signal_handler: SignalHandlerLike) -> None:
        handlers = signal_handler.handlers
        for name, previous in self._replaced.items():
            ours = handlers.pop(name, None)
            if previous is not None:
                handlers[name] = previous
            self._swap_listener(name, ours, previous)
        self._replaced.clear()

    def _swap_listener(self, channel: str, old: Callable[..., Any] | None, new: Callable[..., Any] | None) -> None:
        """If the SignalHandler already subscribed ``old`` on ``channel``, put ``new`` there."""
        if old is not None and old in self.bus.listeners.get(channel, ()):
            self.bus.unsubscribe(channel, old)
            if new is not None:
                self.bus.subscribe(channel, new)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.bus.log("Drainer: signals can only be hooked from the main thread; SIGTERM is not drained", level=30)
            return
        for signum in HANDLED_SIGNALS:
            self._signals.install(signum)

    # -- signals -------------------------------------------------------------------------

    def handle_SIGTERM(self, *_ignored: Any) -> None:
        """The 'SIGTERM' listener for a SignalHandler: drain, then exit."""
        self.signal_received(signal.SIGTERM)

    def signal_received(self, signum: int) -> None:
        """The first signal begins the drain (returning at once); any later one ends the process."""
        self._termination.claim(signum)
        self._begin(signal.Signals(signum))

    def _begin(self, signum: signal.Signals) -> None:
        cancel_restart(self.bus)  # the process is to end: a restart under way must not bring it back
        started = self.bus.state is self.bus.states.STARTED
        delay = self.drain_delay if signum == signal.SIGTERM and started else 0.0
        # Return at once: a later signal must find its dispatcher free to end the process.
        threading.Thread(target=self._drain_then_exit, args=(signum, delay), name="wspbus drain", daemon=True).start()

    def _drain_then_exit(self, signum: signal.Signals, delay: float) -> None:
        # First: readiness turns false before anything else; a failing listener must not stop the exit.
        ignore_listener_failures(self.bus.publish, DRAIN_CHANNEL)
        if delay:
            self.bus.log("%s: draining: not ready, serving %g s more, then exiting" % (signum.name, delay))
            self._drain_over.wait(delay)
        else:
            self.bus.log("%s: exiting" % signum.name)
        ignore_listener_failures(self.bus.exit)

    def _state_changed(self, state: State) -> None:
        """The bus left STARTED by other means (exit(), a failure): do not keep it waiting."""
        if state is not self.bus.states.STARTED and self.draining:
            self._drain_over.set()


def _nothing() -> None:
    """What unsubscribing undoes when there was nothing to undo."""
