"""Who listens on which channel: the table behind subscribe() and the snapshot publish() reads.

publish() is the hot path and subscribe() is rare, so the work is done at subscribe time: each
channel's listeners are kept as a tuple already sorted by (priority, subscription order), and
that tuple is replaced, never mutated. publish() reads it without a lock; any number of threads
may subscribe, unsubscribe and publish at once without losing a listener.

``bus.listeners`` is CherryPy's public mapping of channel -> set of listeners, and CherryPy
writes to it (``engine.listeners['before_request'] = set()``; ``listeners.setdefault(name,
set())``). So it is a mutable mapping of live sets: every change made through it goes through
the same table, under the same lock, and rebuilds the same snapshot as subscribe() does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping, MutableSet

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any

    Listener = Callable[..., Any]

#: Channels every bus knows from the start (CherryPy's, plus 'main', published by block()).
BUILTIN_CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")
DEFAULT_PRIORITY = 50


def priority_of(callback: Listener) -> int:
    """A callback's own priority (its ``priority`` attribute), else the default."""
    priority: int = getattr(callback, "priority", DEFAULT_PRIORITY)
    return priority


class Channels:
    """The subscriptions of one bus, and the ordered snapshot of each channel's listeners.

    ``invoker_for(callback)`` is what publish() will call for a callback (the callback itself,
    or a runner for a coroutine function); ``changed()`` is called after every change, outside
    the lock (the bus wakes its waiters: one may publish a channel that just gained listeners).
    """

    def __init__(self, invoker_for: Callable[[Listener], Listener], changed: Callable[[], None]) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may subscribe mid-subscribe
        self._invoker_for = invoker_for
        self._changed = changed
        # channel -> {listener: (priority, sequence, invoker)}; mutated only under the lock.
        self._entries: dict[str, dict[Listener, tuple[int, int, Listener]]] = {
            channel: {} for channel in BUILTIN_CHANNELS
        }
        #: channel -> the invokers of its listeners, sorted; only channels that have listeners.
        #: The bus's publish() reads this dict directly: each tuple is replaced, never mutated.
        self.ordered: dict[str, tuple[Listener, ...]] = {}
        self._sequence = 0

    def add(self, channel: str, callback: Listener, priority: int, *, only_if_new: bool = False) -> None:
        """Subscribe ``callback``; a second time only updates its priority (or, ``only_if_new``,
        does nothing, as adding to a set does)."""
        with self._lock:
            if not self._insert(channel, callback, priority, only_if_new):
                return
            self._reorder(channel)
        self._changed()

    def _insert(self, channel: str, callback: Listener, priority: int, only_if_new: bool) -> bool:
        """Record a subscription (under the lock); False if nothing changed."""
        entries = self._entries.setdefault(channel, {})
        previous = entries.get(callback)
        if previous is None:
            self._sequence += 1
            entries[callback] = (priority, self._sequence, self._invoker_for(callback))
        elif only_if_new:
            return False
        else:
            entries[callback] = (priority, previous[1], previous[2])
        return True

    def remove(self, channel: str, callback: Listener) -> bool:
        """Unsubscribe ``callback``; False if it was not subscribed there."""
        with self._lock:
            entries = self._entries.get(channel)
            if entries is None or entries.pop(callback, None) is None:
                return False
            self._reorder(channel)
        self._changed()
        return True

    def declare(self, channel: str) -> None:
        """Make ``channel`` known even with no listener yet."""
        with self._lock:
            self._entries.setdefault(channel, {})

    def replace(self, channel: str, callbacks: Iterable[Listener], *, only_if_unknown: bool = False) -> None:
        """Make ``callbacks`` the listeners of ``channel``: the others go, the new ones come with
        their own priority, those already there keep theirs. ``only_if_unknown``: do nothing if
        the channel is known already (setdefault)."""
        wanted = list(callbacks)  # first: ``callbacks`` may be this channel's own live set
        with self._lock:
            if only_if_unknown and channel in self._entries:
                return
            entries = self._entries.setdefault(channel, {})
            for callback in [callback for callback in entries if callback not in wanted]:
                del entries[callback]
            for callback in wanted:
                self._insert(channel, callback, priority_of(callback), only_if_new=True)
            self._reorder(channel)
        self._changed()

    def drop(self, channel: str) -> None:
        """Forget ``channel`` and its listeners (KeyError if it is not known)."""
        with self._lock:
            del self._entries[channel]
            self.ordered.pop(channel, None)
        self._changed()

    def listeners_of(self, channel: str) -> frozenset[Listener]:
        """The callbacks subscribed to ``channel`` (KeyError for a channel never declared)."""
        with self._lock:
            return frozenset(self._entries[channel])

    def knows(self, channel: str) -> bool:
        return channel in self._entries

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


class ChannelListeners(MutableSet["Listener"]):
    """The live set of one channel's listeners: adding subscribes (with the callback's own
    priority), discarding unsubscribes. Reading gives a snapshot, so a listener may change the
    set while somebody iterates it."""

    __slots__ = ("_channels", "_channel")

    def __init__(self, channels: Channels, channel: str) -> None:
        self._channels = channels
        self._channel = channel

    def _snapshot(self) -> frozenset[Listener]:
        try:
            return self._channels.listeners_of(self._channel)
        except KeyError:  # the channel was deleted since: it has no listeners
            return frozenset()

    def __contains__(self, callback: object) -> bool:
        return callback in self._snapshot()

    def __iter__(self) -> Iterator[Listener]:
        return iter(self._snapshot())

    def __len__(self) -> int:
        return len(self._snapshot())

    def add(self, callback: Listener) -> None:
        self._channels.add(self._channel, callback, priority_of(callback), only_if_new=True)

    def discard(self, callback: Listener) -> None:
        self._channels.remove(self._channel, callback)

    @classmethod
    def _from_iterable(cls, iterable: Iterable[Listener]) -> set[Listener]:  # type: ignore[override]
        """What ``|``, ``&`` and ``-`` return: a plain set, detached from the bus."""
        return set(iterable)

    def __repr__(self) -> str:
        return "%s(%r: %r)" % (type(self).__name__, self._channel, set(self._snapshot()))


class ListenersView(MutableMapping[str, ChannelListeners]):
    """``bus.listeners``: channel -> the live set of its listeners, backed by the bus's channels.

    ``listeners[name] = set()`` declares a channel (CherryPy's way), ``listeners[name] = {f, g}``
    makes f and g its listeners, ``del listeners[name]`` forgets it.
    """

    __slots__ = ("_channels",)

    def __init__(self, channels: Channels) -> None:
        self._channels = channels

    def __getitem__(self, channel: str) -> ChannelListeners:
        if not self._channels.knows(channel):
            raise KeyError(channel)
        return ChannelListeners(self._channels, channel)

    def __setitem__(self, channel: str, callbacks: Iterable[Listener]) -> None:
        self._channels.replace(channel, callbacks)

    def __delitem__(self, channel: str) -> None:
        self._channels.drop(channel)

    def __contains__(self, channel: object) -> bool:
        return isinstance(channel, str) and self._channels.knows(channel)

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels.names())

    def __len__(self) -> int:
        return len(self._channels)

    def setdefault(self, channel: str, default: Iterable[Listener] | None = None) -> ChannelListeners:
        """Declare ``channel`` with the listeners in ``default`` unless it is known already
        (CherryPy's plugins declare their channels so); return its live set."""
        self._channels.replace(channel, default or (), only_if_unknown=True)
        return ChannelListeners(self._channels, channel)
