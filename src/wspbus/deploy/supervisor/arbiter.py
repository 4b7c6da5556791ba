"""The Arbiter: the supervisor's bus plugin that owns the workers.

The supervisor's bus runs the plugins a site needs once (signals, daemon, PID file, privileges,
systemd, draining, the listening sockets); the Arbiter ties its workers to that bus:

* 'start' (priority 80: after the sockets are bound at 75 and privileges dropped at 77) starts
  generation 1 and returns once every worker serves, so the bus is STARTED (the daemon's
  launcher exits 0, systemd hears READY=1) only when the site answers; a worker that cannot
  start fails the start with its one line, and the command ends 69 (or 78) without retrying
  (130 for a Ctrl-C meanwhile, as a single process interrupted while loading the site);
* 'stop' stops every worker at once and returns once all have exited, SIGKILLing those still
  running at ``graceful_timeout``;
* 'graceful' and 'drain' are passed on to every worker; SIGHUP starts a rolling reload;
  SIGTTIN and SIGTTOU add or remove a worker.

The workers' lives are followed on an asyncio loop in a thread of its own (pool.py); the bus's
threads hand it work with call_soon/submit and never share state with it otherwise.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from ..._core.bus import StartupError
from ...plugins.base import SimplePlugin
from ...plugins.health import DRAIN_CHANNEL
from ...plugins.signals import _stdin_is_a_tty
from ...servers.loop import LoopThread
from ..config import SiteConfig
from .control_socket import ControlSocket
from .heartbeat import BEATS_PER_TIMEOUT
from .listeners import Listeners
from .pool import Pool, PoolOptions
from .process import WorkerFailed, WorkerProcess, spawn_worker
from .recycling import request_limit
from .settings import to_dict, worker_config

__all__ = ["Arbiter", "StartInterrupted", "WorkerStartError"]


class StartInterrupted(StartupError):
    """Ctrl-C while the first workers were starting: the command ends as an interrupted load (130)."""


class WorkerStartError(StartupError):
    """The first generation could not start: ``status`` is the command's exit status (69 or 78)."""

    def __init__(self, failure: WorkerFailed) -> None:
        super().__init__(failure.line)
        self.status = failure.status


class Arbiter(SimplePlugin):
    """Start, watch, reload, scale and stop the site's worker processes."""

    def __init__(self, bus: Any, config: SiteConfig, listeners: Listeners, options: PoolOptions, *,
                 control: ControlSocket | None = None) -> None:
        super().__init__(bus)
        self.config = config
        self.listeners = listeners
        self.options = options
        self.control = control
        self.pool: Pool | None = None
        #: Set by whoever wants to hear of changes (the status file) and of reloads (systemd).
        self.on_change: Callable[[], None] = lambda: None
        self.on_reload: Callable[[bool], None] = lambda begins: None
        self._thread: LoopThread | None = None
        self._setup: dict[str, Any] = {}
        self._gate = threading.Lock()  # the first start, and a stop or a Ctrl-C that may come during it
        self._starting = False
        #: A stop came while generation 1 was starting (a SIGTERM during the start): its failure is no error.
        self.interrupted = False
        #: A Ctrl-C came while generation 1 was starting (loading the site): the start fails as interrupted.
        self._abandoned = False

    def subscribe(self) -> None:
        self.bus.declare_channel(DRAIN_CHANNEL)
        self.bus.declare_channel("health")
        super().subscribe()

    # -- the bus's transitions ---------------------------------------------------------------

    def start(self) -> None:
        """Start generation 1 and return once every worker serves; WorkerStartError otherwise."""
        if self.pool is not None and self.pool.generation and not self.pool.stopping:
            return
        self._setup = {"config": to_dict(worker_config(self.config, self.listeners.fds())),
                       "heartbeat": self._heartbeat_interval()}
        if self._thread is None:
            self._thread = LoopThread("wspbus supervisor")
        self.pool = self._new_pool()
        with self._gate:
            self._starting = True
        failure: WorkerFailed | None = None
        try:
            self._run(self.pool.first_start())
        except WorkerFailed as exc:
            failure = exc
        with self._gate:
            self._starting = False
            abandoned, interrupted = self._abandoned, self.interrupted
        if abandoned:
            raise StartInterrupted("interrupted while loading the site")
        if interrupted:
            return  # a stop (a SIGTERM) came during the start: the bus's exit stands, no failure
        if failure is not None:
            raise WorkerStartError(failure)
        if self.control is not None:
            self._run(self.control.serve(self.answer))

    start.priority = 80  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop every worker in parallel; bounded by the graceful timeout (then SIGKILL)."""
        pool = self.pool
        if pool is None or self._thread is None:
            return
        with self._gate:
            self.interrupted = self._starting
        if self.control is not None:
            self._thread.call_soon(self.control.close_server)
        self._run(pool.stop_all())

    stop.priority = 20  # type: ignore[attr-defined]

    def exit(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.close()

    def graceful(self) -> None:
        """Pass 'graceful' on (the workers reopen their log files)."""
        self._call_soon(lambda pool: pool.broadcast("graceful"))

    def drain(self) -> None:
        """Pass the drain on; return once every worker answers not-ready (or after a second)."""
        if self.pool is not None and self._thread is not None:
            self._run(self.pool.drain())

    def health(self) -> bool:
        """The 'health' listener (systemd's watchdog asks it): some worker of the generation serves."""
        pool = self.pool
        return pool is not None and any(w.state == "serving" and w.generation == pool.generation
                                        for w in list(pool.workers))

    # -- signals -----------------------------------------------------------------------------

    def handle_SIGHUP(self) -> None:
        """Reload (a rolling one), unless stdin is a terminal: then it hung up, and we exit."""
        if _stdin_is_a_tty():
            self.bus.log("SIGHUP with a terminal on stdin: the terminal went away; exiting.")
            self.bus.exit()
        else:
            self.reload()

    def handle_SIGINT(self) -> None:
        """Ctrl-C: exit. While the first workers start (they load the site), stop them instead: the
        start fails as a single process's does when Ctrl-C interrupts its loading (one line, 130)."""
        with self._gate:
            abandon = self._starting and not self.interrupted
            self._abandoned = self._abandoned or abandon
        if abandon:
            self._call_soon(lambda pool: pool.abandon_start())
        else:
            self.bus.exit()

    def handle_SIGTTIN(self) -> None:
        self._call_soon(lambda pool: pool.add_worker())

    def handle_SIGTTOU(self) -> None:
        self._call_soon(lambda pool: pool.remove_worker())

    def reload(self) -> concurrent.futures.Future[int]:
        """Start a rolling reload; the future gives the new generation, or raises WorkerFailed."""
        if self._thread is None or self.pool is None:
            refused: concurrent.futures.Future[int] = concurrent.futures.Future()
            refused.set_exception(WorkerFailed(1, "the site is not running"))
            return refused
        return self._thread.submit(self._reload(self.pool))

    async def _reload(self, pool: Pool) -> int:
        return await pool.request_reload()

    # -- the control socket ------------------------------------------------------------------

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request: reload (answered once its outcome is known) or status."""
        pool = self.pool
        command = request.get("command")
        if pool is None:
            return {"ok": False, "error": "the site is not running"}
        if command == "reload":
            try:
                generation = await pool.request_reload()
            except WorkerFailed as failure:
                return {"ok": False, "error": failure.line}
            return {"ok": True, "generation": generation, "pids": [w.pid for w in pool.workers
                                                                   if w.generation == generation]}
        if command == "status":
            workers = await pool.collect_stats()
            return {"ok": True, "pid": os.getpid(), "generation": pool.generation, "target_workers": pool.target,
                    "workers": workers}
        return {"ok": False, "error": "unknown command %r (expected reload or status)" % (command,)}

    # -- plumbing ----------------------------------------------------------------------------

    def _new_pool(self) -> Pool:
        assert self._thread is not None
        pool = Pool(self._thread.loop, self.options, self._spawn, self.bus.log)
        pool.changed = lambda: self.on_change()
        pool.reload_began = lambda: self.on_reload(True)
        pool.reload_ended = lambda: self.on_reload(False)
        return pool

    def _spawn(self, generation: int, slot: int) -> WorkerProcess:
        fds = [fd for server in self.listeners.fds() for fd in server]
        options = self.options
        setup = {**self._setup, "generation": generation, "slot": slot, "autoreload": slot == 0,
                 "max_requests": request_limit(options.max_requests, options.max_requests_jitter),
                 "max_rss": options.max_worker_memory,
                 "draining": self.pool.draining if self.pool is not None else False}  # a replacement during a drain
        return spawn_worker(generation, slot, fds, setup)

    def _heartbeat_interval(self) -> float | None:
        timeout = self.options.worker_timeout
        return None if timeout is None else timeout / BEATS_PER_TIMEOUT

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self._thread is not None
        return self._thread.run(coroutine)

    def _call_soon(self, action: Callable[[Pool], None]) -> None:
        pool, thread = self.pool, self._thread
        if pool is not None and thread is not None:
            thread.call_soon(lambda: action(pool))
