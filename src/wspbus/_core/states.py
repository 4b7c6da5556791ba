"""The five states of the bus."""

from __future__ import annotations

from collections.abc import Iterable


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

    def __iter__(self):
        return iter((self.STOPPED, self.STARTING, self.STARTED, self.STOPPING, self.EXITING))


states = _StateEnum()


def as_state_set(state: State | Iterable[State]) -> frozenset[State]:
    """One state or several, as a set."""
    if isinstance(state, State):
        return frozenset((state,))
    return frozenset(state)
