"""The five states of the bus, and who watches them change."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

StateWatcher = Callable[["State"], None]


class State:
    """One state of the bus; compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "states.%s" % self.name


class _StateEnum:
    STOPPED = State("STOPPED")
    STARTING = State("STARTING")
    STARTED = State("STARTED")
    STOPPING = State("STOPPING")
    EXITING = State("EXITING")

    def __iter__(self) -> Iterator[State]:
        return iter((self.STOPPED, self.STARTING, self.STARTED, self.STOPPING, self.EXITING))


states = _StateEnum()


def as_state_set(state: State | Iterable[State]) -> frozenset[State]:
    """One state or several, as a set."""
    if isinstance(state, State):
        return frozenset((state,))
    return frozenset(state)


class StateWatchers:
    """The callables a bus tells of every state change, in the order they began watching."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a signal handler may watch mid-watch
        self._watchers: list[StateWatcher] = []

    def add(self, watcher: StateWatcher) -> Callable[[], None]:
        """Start telling ``watcher``; returns the function that stops it."""
        with self._lock:
            self._watchers.append(watcher)

        def unwatch() -> None:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

        return unwatch

    def current(self) -> tuple[StateWatcher, ...]:
        """The watchers now, to call outside the lock."""
        with self._lock:
            return tuple(self._watchers)
