"""The bus in an asyncio program: a bus run inside the program's loop.

A coroutine function subscribed to a channel runs on ``bus.loop`` (the site's event loop): the
bus core does that itself (wspbus._core.coroutines; CoroutineListener is re-exported here).
``run_bus()`` starts the bus from a coroutine without blocking the loop: transitions run on a
worker thread (so coroutine listeners can use the loop meanwhile), signals arrive through the
loop's own signal handling, and the coroutine returns once the bus has exited.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._core.bus import Bus, states
from ._core.coroutines import CoroutineListener

T = TypeVar("T")

__all__ = ["CoroutineListener", "run_bus"]


async def run_bus(bus: Bus, *, exit_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Start ``bus`` on this loop's behalf and return when it has exited.

    ``exit_signals`` are handled with ``loop.add_signal_handler`` (main thread only); each one
    calls ``bus.exit()`` on a worker thread. A failing start raises here, after the bus has shut
    down. The bus does not re-execute the process: a restart ends this coroutine with
    ``bus.execv`` set, for the caller to act on (``wspbus._process.reexec``) once the loop is closed.
    """
    loop = asyncio.get_running_loop()
    bus.loop = loop
    installed: list[int] = []
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


async def _off_loop(func: Callable[[], T]) -> T:
    """Run a blocking bus call on a worker thread; the loop stays free to serve its listeners."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = func()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_fail, done, exc)
        else:
            loop.call_soon_threadsafe(_succeed, done, result)

    _in_worker(run, "wspbus %s" % getattr(func, "__name__", "call"))
    return await done


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
