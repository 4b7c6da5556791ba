"""Heartbeats: a worker says it is alive (Heartbeat); the supervisor notices when it stops (HungWorkers).

Only with ``--worker-timeout S``. The worker sends a ``heartbeat`` message (with its counts)
every S/4 seconds: from its event loop when the site is ASGI (a loop blocked by a synchronous
call in a handler falls silent), else from a thread of its own (a Python thread runs only while
it can take the GIL, so a worker stuck in a call that holds the GIL, or stopped altogether,
falls silent). A thread that beats proves the interpreter runs, not that the server serves: a
worker whose request threads are all stuck (stuck.py) sends ``stuck`` with the reason instead,
and no more beats while it lasts. The supervisor keeps one deadline per worker and pushes it back
at each message; a silent worker, or one that says it is stuck, has its stacks dumped and is
replaced. No file is touched and polled.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the worker imports this module too, and needs no supervisor side
    from .process import WorkerProcess

__all__ = ["BEATS_PER_TIMEOUT", "Heartbeat", "HungWorkers", "KILL_GRACE"]

#: Heartbeats sent per worker timeout: three may be lost or late before the worker is judged hung.
BEATS_PER_TIMEOUT = 4
#: After SIGABRT (a hung worker dumping its stacks), how long before SIGKILL.
KILL_GRACE = 1.0


class _Sender(Protocol):
    def send(self, kind: str, **fields: int | str) -> bool: ...


class Heartbeat:
    """Sends ``heartbeat`` every ``interval`` seconds until the channel is gone or stop() is called.

    When the site has an event loop (an ASGI site: ``loop_of()`` returns it), each beat is sent
    from that loop, so a loop blocked by a synchronous call in a handler falls silent too, even
    though it released the GIL; otherwise it is sent from this thread. While ``stuck()`` gives a
    reason, the beat is withheld, and the reason sent once as ``stuck``.
    """

    def __init__(self, channel: _Sender, interval: float, stats: Callable[[], dict[str, int]],
                 loop_of: Callable[[], asyncio.AbstractEventLoop | None] = lambda: None,
                 stuck: Callable[[], str | None] = lambda: None) -> None:
        self.channel = channel
        self.interval = interval
        self.stats = stats
        self.loop_of = loop_of
        self.stuck = stuck
        self._stopped = threading.Event()
        self._said_stuck = False

    def start(self) -> None:
        threading.Thread(target=self._beat, name="wspbus heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            if self._withheld():
                continue
            loop = self.loop_of()
            if loop is None or loop.is_closed():
                self._send()
                continue
            try:
                loop.call_soon_threadsafe(self._send)
            except RuntimeError:
                self._send()  # the loop closed in between

    def _withheld(self) -> bool:
        """Stuck: say so (once) and send no beat; the supervisor replaces this worker (an older
        supervisor, which ignores ``stuck``, at the end of the silence that follows)."""
        reason = self.stuck()
        if reason is not None and not self._said_stuck:
            self.channel.send("stuck", reason=reason)
        self._said_stuck = reason is not None
        return self._said_stuck

    def _send(self) -> None:
        if not self.channel.send("heartbeat", **self.stats()):
            self._stopped.set()  # the supervisor is gone; the channel reader ends the worker


class HungWorkers:
    """The supervisor's side: one deadline per serving worker, pushed back by anything it says.

    One timer per worker, re-armed at ``last heard + timeout`` when it falls; a worker silent for
    the whole timeout, or one that says it is stuck (``stuck()``), gets SIGABRT (its faulthandler
    writes every thread's stack to the log and the process ends), then SIGKILL if it is still
    there ``KILL_GRACE`` later. Its end is a crash like any other: the pool replaces it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, log: Callable[..., None]) -> None:
        self.loop = loop
        self.timeout = timeout
        self.log = log

    def watch(self, worker: "WorkerProcess") -> None:
        """Start watching a worker that just reported STARTED."""
        self.loop.call_later(self.timeout, self._check, worker)

    def _check(self, worker: "WorkerProcess") -> None:
        """At the deadline: heard since? then wait for the next one; else the worker is hung."""
        if not worker.alive or worker.stop_requested:
            return
        silent = time.monotonic() - worker.last_heard
        if silent < self.timeout:
            self.loop.call_later(self.timeout - silent, self._check, worker)
            return
        self._replace(worker, "sent no heartbeat for %.1f s" % silent)

    def stuck(self, worker: "WorkerProcess", reason: str) -> None:
        """The worker says it is hung though it can still say so (stuck.py): ``reason`` says why."""
        if worker.alive and not worker.stop_requested:
            self._replace(worker, reason)

    def _replace(self, worker: "WorkerProcess", why: str) -> None:
        self.log("%r %s (--worker-timeout %g): dumping its stacks to the log (SIGABRT) and replacing it"
                 % (worker, why, self.timeout), level=40)
        worker.signal(signal.SIGABRT)
        self.loop.call_later(KILL_GRACE, self._kill_if_alive, worker)

    def _kill_if_alive(self, worker: "WorkerProcess") -> None:
        if worker.alive:
            worker.signal(signal.SIGKILL)
