"""The bus in an asyncio program: coroutine listeners and a bus run inside the program's loop.

A coroutine function subscribed to a channel runs on ``bus.loop`` (the site's event loop); the
publishing thread waits for its result, so publish() returns it like any other listener's.
``run_bus()`` starts the bus from a coroutine without blocking the loop: transitions run on a
worker thread (so coroutine listeners can use the loop meanwhile), signals arrive through the
loop's own signal handling, and the coroutine returns once the bus has exited.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from ._core.bus import Bus, states

__all__ = ["CoroutineListener", "run_bus"]


class CoroutineListener:
    """Runs a coroutine function to completion on the bus's loop and returns its result."""

    __slots__ = ("bus", "func")

    def __init__(self, bus: Bus, func: Callable[..., Coroutine[Any, Any, Any]]) -> None:
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


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def run_bus(bus: Bus, *, exit_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Start ``bus`` on this loop's behalf and return when it has exited.

    ``exit_signals`` are handled with ``loop.add_signal_handler`` (main thread only); each one
    calls ``bus.exit()`` on a worker thread. A failing start raises here, after the bus has shut
    down. The bus does not re-execute the process: a restart ends this coroutine with
    ``bus.execv`` set, for the caller to act on (``wspbus._process.reexec``) once the loop is closed.
    """
    loop = asyncio.get_running_loop()
    bus.loop = loop
    installed = []
    if threading.current_thread() is threading.main_thread():
        for signum in exit_signals:
            loop.add_signal_handler(signum, _in_worker, bus.exit, "wspbus exit on signal")
            installed.append(signum)
    try:
        await _off_loop(bus.start)
        await bus.wait_async(states.EXITING)
        await _off_loop(bus._wait_exit_done)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _in_worker(func: Callable[[], Any], name: str) -> threading.Thread:
    worker = threading.Thread(target=func, name=name, daemon=True)
    worker.start()
    return worker


async def _off_loop(func: Callable[[], Any]) -> Any:
    """Run a blocking bus call on a worker thread; the loop stays free to serve its listeners."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def run() -> None:
        try:
            result = func()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    _in_worker(run, "wspbus %s" % getattr(func, "__name__", "call"))
    return await done


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
