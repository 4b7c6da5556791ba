"""SimplePlugin: the base class of every plugin."""

from __future__ import annotations

from .._core.bus import Bus


class SimplePlugin:
    """A plugin whose methods named after the bus's channels become their listeners.

    ``subscribe()`` binds every method whose name is a channel the bus knows (its ``priority``
    attribute, if any, is used); ``unsubscribe()`` undoes exactly that. A plugin that listens on
    a channel of its own declares it first: ``bus.listeners.setdefault(name, set())``.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _channel_methods(self):
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
