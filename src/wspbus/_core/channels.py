"""Who listens on which channel: the table behind subscribe() and the snapshot publish() reads.

publish() is the hot path and subscribe() is rare, so the work is done at subscribe time: each
channel's listeners are kept as a tuple already sorted by (priority, subscription order), and
that tuple is replaced, never mutated. publish() reads it without a lock; any number of threads
may subscribe, unsubscribe and publish at once without losing a listener.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any

    Listener = Callable[..., Any]

#: Channels every bus knows from the start (CherryPy's, plus 'main', published by block()).
BUILTIN_CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")


class Channels:
    """The subscriptions of one bus, and the ordered snapshot of each channel's listeners."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may subscribe mid-subscribe
        # channel -> {listener: (priority, sequence, invoker)}; mutated only under the lock.
        self._entries: dict[str, dict[Listener, tuple[int, int, Listener]]] = {
            channel: {} for channel in BUILTIN_CHANNELS
        }
        #: channel -> the invokers of its listeners, sorted; only channels that have listeners.
        #: The bus's publish() reads this dict directly: each tuple is replaced, never mutated.
        self.ordered: dict[str, tuple[Listener, ...]] = {}
        self._sequence = 0

    def add(self, channel: str, callback: Listener, priority: int, invoker: Listener) -> None:
        """Subscribe ``callback``, called through ``invoker``; a second time only updates its priority."""
        with self._lock:
            entries = self._entries.setdefault(channel, {})
            previous = entries.get(callback)
            if previous is None:
                self._sequence += 1
                entries[callback] = (priority, self._sequence, invoker)
            else:
                entries[callback] = (priority, previous[1], previous[2])
            self._reorder(channel)

    def remove(self, channel: str, callback: Listener) -> bool:
        """Unsubscribe ``callback``; False if it was not subscribed there."""
        with self._lock:
            entries = self._entries.get(channel)
            if entries is None or entries.pop(callback, None) is None:
                return False
            self._reorder(channel)
            return True

    def declare(self, channel: str) -> None:
        """Make ``channel`` known even with no listener yet."""
        with self._lock:
            self._entries.setdefault(channel, {})

    def listeners_of(self, channel: str) -> frozenset[Listener]:
        """The callbacks subscribed to ``channel`` (KeyError for a channel never declared)."""
        with self._lock:
            return frozenset(self._entries[channel])

    def names(self) -> list[str]:
        """Every channel declared or subscribed to."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _reorder(self, channel: str) -> None:
        entries = self._entries[channel]
        ordered = tuple(entry[2] for entry in sorted(entries.values(), key=lambda entry: entry[:2]))
        if ordered:
            self.ordered[channel] = ordered
        else:
            self.ordered.pop(channel, None)


class ListenersView(Mapping[str, "frozenset[Listener]"]):
    """Read-only mapping of channel -> frozenset of listeners, backed by the bus's channels."""

    __slots__ = ("_channels",)

    def __init__(self, channels: Channels) -> None:
        self._channels = channels

    def __getitem__(self, channel: str) -> frozenset[Listener]:
        return self._channels.listeners_of(channel)

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels.names())

    def __len__(self) -> int:
        return len(self._channels)

    def setdefault(self, channel: str, default: object = None) -> frozenset[Listener]:
        """Declare ``channel`` (as CherryPy plugins do, so SimplePlugin binds to it); ``default``
        is ignored: the bus keeps its own record of listeners."""
        self._channels.declare(channel)
        return self[channel]
