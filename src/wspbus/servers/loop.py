"""An asyncio event loop running in a thread of its own, until closed.

What runs on it from several places (the uvicorn servers of one app's binds, an ASGI app adapted
to WSGI) shares that one loop, so that what the app made at startup belongs to the loop that
serves every request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "close_loop"]

T = TypeVar("T")


class LoopThread:
    """``loop`` runs forever in a daemon thread; ``close()`` cancels what is left and ends both."""

    def __init__(self, name: str, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
        self.loop = (loop_factory or asyncio.new_event_loop)()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coroutine`` on the loop; its future, for any thread to wait on."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (not from the loop's own thread)."""
        return self.submit(coroutine).result()

    def call_soon(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` on the loop's thread; nothing if the loop has closed already."""
        try:
            self.loop.call_soon_threadsafe(callback)
        except RuntimeError:
            pass  # closed: there is nothing left to tell

    def close(self) -> None:
        """Stop the loop, cancel the tasks left on it, close it and wait for its thread."""
        self.call_soon(self.loop.stop)
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            close_loop(self.loop)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the app left running, then close the loop (as asyncio.run does)."""
    try:
        leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
