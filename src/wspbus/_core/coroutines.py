"""Coroutines on the bus: coroutine listeners, and waiting for a state from inside a loop.

A coroutine function subscribed to a channel runs on ``bus.loop`` (the site's event loop); the
publishing thread waits for its result, so publish() returns it like any other listener's.
This module imports asyncio, so the bus imports it only when a coroutine is involved:
``import wspbus`` must not pay for asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .states import State


class HasLoop(Protocol):
    """What a coroutine listener needs of its bus: the loop coroutines run on, if any."""

    loop: asyncio.AbstractEventLoop | None


class WatchesState(Protocol):
    """What waiting for a state needs of a bus."""

    @property
    def state(self) -> State: ...

    def watch_state(self, watcher: Callable[[State], None]) -> Callable[[], None]: ...


class CoroutineListener:
    """Runs a coroutine function to completion on the bus's loop and returns its result."""

    __slots__ = ("bus", "func")

    def __init__(self, bus: HasLoop, func: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self.bus = bus
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        loop = self.bus.loop
        if loop is None or loop.is_closed():
            return asyncio.run(self.func(*args, **kwargs))  # no site loop: a private one
        if _running_loop() is loop:
            raise RuntimeError(
                "coroutine listener %r cannot be run from its own event loop's thread; publish "
                "from another thread (wspbus.aio.run_bus runs transitions on a worker)" % (self.func,)
            )
        return asyncio.run_coroutine_threadsafe(self.func(*args, **kwargs), loop).result()

    def __repr__(self) -> str:
        return "<coroutine listener %r>" % (self.func,)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def wait_for_state(bus: WatchesState, wanted: frozenset[State]) -> None:
    """Return once ``bus.state`` is in ``wanted``, without blocking the running loop."""
    loop = asyncio.get_running_loop()
    reached: asyncio.Future[None] = loop.create_future()

    def on_change(new_state: State) -> None:
        if new_state in wanted and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, reached)

    unwatch = bus.watch_state(on_change)
    try:
        if bus.state in wanted:
            return
        await reached
    finally:
        unwatch()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
