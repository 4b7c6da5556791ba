"""SimplePlugin, the base class of every plugin, and the few helpers every plugin shares.

The helpers use only the seed bus API (the one CherryPy's bus has too):

* ``restart_requested(bus)`` / ``cancel_restart(bus)``: whether the bus will re-execute the
  process once it has exited. ``bus.execv`` is CherryPy's public flag for that (``restart()``
  sets it, ``block()`` reads it); plugins ask and cancel through these two functions only, so
  the protocol has one reader and one writer to look at.
* ``ignore_listener_failures(call, ...)``: a bus call made on a plugin's own thread, where
  nobody is left to hear of the listeners that failed (the bus logged each one).
* ``priority(n)``: CherryPy's ``method.priority = n``, as a decorator a type checker accepts.
* ``declare_channel(bus, name)`` and ``watch_state(bus, watcher)``: wspbus extras, done with
  the seed API where the bus lacks them, so that every plugin also works on CherryPy's engine.

States are compared with the bus's own (``bus.states.STARTED``): CherryPy's bus has its own
state objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._core.bus import Bus, State

__all__ = ["SimplePlugin", "cancel_restart", "declare_channel", "ignore_listener_failures", "priority",
           "restart_requested", "watch_state"]

Method = TypeVar("Method", bound=Callable[..., Any])


class SimplePlugin:
    """A plugin whose methods named after the bus's channels become their listeners.

    ``subscribe()`` binds every method whose name is a channel the bus knows (its ``priority``
    attribute, if any, is used); ``unsubscribe()`` undoes exactly that. A plugin that listens on
    a channel of its own declares it first: ``bus.listeners.setdefault(name, set())``.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _channel_methods(self) -> Iterator[tuple[str, Callable[..., Any]]]:
        for channel in self.bus.listeners:
            method = getattr(self, channel, None)
            if method is not None and callable(method):
                yield channel, method

    def subscribe(self) -> None:
        """Register this plugin's channel methods with the bus."""
        for channel, method in self._channel_methods():
            self.bus.subscribe(channel, method)

    def unsubscribe(self) -> None:
        """Remove this plugin's channel methods from the bus."""
        for channel, method in self._channel_methods():
            self.bus.unsubscribe(channel, method)


def priority(value: int) -> Callable[[Method], Method]:
    """Give a listener method the priority ``bus.subscribe`` uses for it (lower runs first)."""

    def mark(method: Method) -> Method:
        setattr(method, "priority", value)
        return method

    return mark


def restart_requested(bus: Bus) -> bool:
    """True when the bus is to re-execute the process once it has exited (``bus.restart()``)."""
    return bool(bus.execv)


def cancel_restart(bus: Bus) -> None:
    """The process was asked to end: a restart under way must not bring it back."""
    bus.execv = False


def ignore_listener_failures(call: Callable[..., object], *args: object) -> None:
    """``call(*args)`` (a bus transition or publish) on a thread of a plugin's own.

    A failing listener raises ChannelFailures only after the bus logged it with its traceback
    and ran the other listeners; on this thread there is no caller to tell, so nothing more
    can be done with it.
    """
    try:
        call(*args)
    except Exception:  # ChannelFailures, ours or (on CherryPy's bus) its own class
        pass  # each failing listener was logged by the bus where it failed; nobody else to tell


def declare_channel(bus: Bus, channel: str) -> None:
    """Make ``channel`` known to the bus with no listener yet, in the seed's way."""
    bus.listeners.setdefault(channel, set())


#: The line a seed bus logs right after each state change, and the state it tells of.
_STATE_LINES = {"Bus %s" % name: name for name in ("STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING")}


def watch_state(bus: Bus, watcher: Callable[[State], None]) -> Callable[[], None]:
    """Call ``watcher(state)`` after each state change, on the thread that made it; return the
    function that stops it.

    wspbus's bus has ``watch_state``. A bus with only the seed API (CherryPy's) logs the exact
    line 'Bus STARTED' (and so on) right after each change, on the same thread, so a 'log'
    listener reading those lines stands in for it.
    """
    native = getattr(bus, "watch_state", None)
    if native is not None:
        unwatch: Callable[[], None] = native(watcher)
        return unwatch

    def on_log(msg: object = None, *more: object, **named: object) -> None:
        name = _STATE_LINES.get(msg) if isinstance(msg, str) else None
        if name is None:
            return
        try:
            watcher(getattr(bus.states, name))
        except Exception:  # raised from here it would fail the bus's log() and its transition
            import traceback

            traceback.print_exc()  # not through the bus: this is its log

    bus.subscribe("log", on_log, priority=0)
    return lambda: bus.unsubscribe("log", on_log)
