"""The workers of a site and their generations, run on the supervisor's event loop.

Everything here runs on one asyncio loop (one thread), so the pool's state needs no lock, and
the loop sleeps in its selector until something happens: a worker's message, a worker's end (its
pidfd), a deadline (a back-off, a graceful timeout, a heartbeat), or a call from another thread.
An idle supervisor does not wake.

A *generation* is the set of workers started from the same code. The first start is generation
1; it fails the command if a worker cannot start. A reload starts generation g+1 beside g, and
only once every new worker reported STARTED are the old ones stopped, so some worker is always
ready; a generation that cannot start is discarded and g keeps serving. Reload requests that
arrive while one runs are merged into the next one, which imports the newest code.

A worker that gets SIGTERM from someone else asks to be replaced (``terminate``); it is, with
overlap, as one past its limits is, unless the site drains or stops: then it stops with the
others. Serving workers are stopped with a message, so however many signals reach a worker (a
signal sent to the whole group, then the supervisor's stop), it stops once.

(About 460 lines: generations, replacements, recycling, a worker's SIGTERM and the stop share one
state on one thread; what stands alone is in backoff.py, heartbeat.py and recycling.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .backoff import Backoff
from .channel import Message
from .heartbeat import KILL_GRACE, HungWorkers
from .process import WorkerFailed, WorkerProcess, describe_exit

__all__ = ["Pool", "PoolOptions"]

#: When the replacement of a worker past its limits could not start: the next try.
RECYCLE_RETRY = 10.0
#: A worker's SIGTERM may be one of a signal sent to the whole group (Ctrl-C, systemd's
#: KillMode=control-group, ``kill -- -PGID``), which reaches the supervisor at the same moment; the
#: supervisor's own signal has begun its stop (or drain) well within this, and the worker then just
#: stops with the others. Not a guess that correctness hangs on: a replacement started anyway is
#: stopped with the rest, and the old worker stops once.
SIGTERM_SETTLE = 0.3
#: How long a replaced worker answers with ``Connection: close`` before it stops (see counting.py):
#: long enough for a busy keep-alive client to send one more request and be told to reconnect.
RETIRE_LINGER = 0.5

Log = Callable[..., None]
T = TypeVar("T")


@dataclass
class PoolOptions:
    """How many workers, and the bounds on their lives (seconds; None: no bound)."""

    workers: int = 1
    graceful_timeout: float | None = 30.0
    start_timeout: float | None = 60.0
    worker_timeout: float | None = None
    max_requests: int | None = None
    max_requests_jitter: int = 0
    #: Resident bytes past which a worker is replaced (--max-worker-memory).
    max_worker_memory: int | None = None


class Pool:
    """Workers, generations, reloads, replacements and the stop; all on ``loop``'s thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: PoolOptions,
                 spawner: Callable[[int, int], WorkerProcess], log: Log) -> None:
        self.loop = loop
        self.options = options
        self.spawner = spawner
        self.log = log
        self.target = options.workers
        self.workers: list[WorkerProcess] = []
        self.generation = 0
        self.backoff = Backoff()
        self.stopping = False
        self.draining = False
        #: The last 'started' message: where the site listens and what is mounted.
        self.site_report: Message = {}
        #: Called (on the loop) after any change a status reader would want to see.
        self.changed: Callable[[], None] = lambda: None
        #: Called as a rolling reload begins and ends (systemd's RELOADING=1 / READY=1).
        self.reload_began: Callable[[], None] = lambda: None
        self.reload_ended: Callable[[], None] = lambda: None
        self._generations = itertools.count(1)
        self._asks = itertools.count(1)
        self._answers: dict[tuple[int, int], asyncio.Future[Message]] = {}
        self._next_reload: asyncio.Future[int] | None = None
        self._reloads: asyncio.Task[None] | None = None
        self.hung = HungWorkers(loop, options.worker_timeout, log) if options.worker_timeout else None
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks

    # -- starting workers ---------------------------------------------------------------------

    def _spawn(self, generation: int, slot: int) -> WorkerProcess:
        worker = self.spawner(generation, slot)
        worker.watch(self.loop, self._on_message, self._on_exit, self._log_stacks)
        self.workers.append(worker)
        self.changed()
        return worker

    async def _start_generation(self, generation: int, slots: Iterable[int]) -> list[WorkerProcess]:
        """Start one worker per slot; return once all serve, or raise the first failure
        (after stopping the others: some may already serve)."""
        workers: list[WorkerProcess] = []
        try:
            for slot in slots:
                workers.append(self._spawn(generation, slot))
            await self._all_started(workers)
        except OSError as exc:
            self._stop_all_now(workers)
            raise WorkerFailed(69, "cannot start a worker process: %s" % exc) from None
        except WorkerFailed:
            self._stop_all_now(workers)
            raise
        return workers

    async def _all_started(self, workers: list[WorkerProcess]) -> None:
        futures = {worker.started: worker for worker in workers if worker.started is not None}
        done, pending = await asyncio.wait(futures, timeout=self.options.start_timeout,
                                           return_when=asyncio.FIRST_EXCEPTION)
        for future in done:
            failure = future.exception()
            if failure is not None:
                raise failure
        if pending:
            late = futures[next(iter(pending))]
            raise WorkerFailed(69, "%r did not start within %s s" % (late, self.options.start_timeout))

    async def first_start(self) -> None:
        """Generation 1; WorkerFailed ends the command (no restart loop for a site that cannot start)."""
        generation = next(self._generations)
        await self._start_generation(generation, range(self.target))
        self.generation = generation
        self.log("Generation %d serves: %s" % (generation, self._pids(generation)))

    # -- messages and ends -------------------------------------------------------------------

    def _on_message(self, worker: WorkerProcess, message: Message) -> None:
        kind = message.get("kind")
        if kind == "started":
            self._started(worker, message)
        elif kind == "failed":
            worker.failure = message
        elif kind == "stopping":
            worker.note_stopping()
        elif kind in ("stats", "heartbeat", "drained"):
            worker.requests = int(message.get("requests", worker.requests))
            worker.rss = int(message.get("rss", worker.rss))
            answer = self._answers.pop((worker.pid, message.get("ask") or 0), None)
            if answer is not None and not answer.done():
                answer.set_result(message)
        elif kind == "recycle":
            self._recycle(worker, str(message.get("reason")))
        elif kind == "stuck" and self.hung is not None:
            self.hung.stuck(worker, str(message.get("reason")))
        elif kind == "terminate":
            worker.send("hold")  # heard: it serves on until it is retired or stopped
            self.loop.call_later(SIGTERM_SETTLE, self._recycle, worker, "it received SIGTERM (not from the supervisor)")
        elif kind == "reload":
            self.log("%r saw a source file change: reloading" % worker)
            self.request_reload().add_done_callback(lambda outcome: self._reload_asked(worker, outcome))

    def _log_stacks(self, worker: WorkerProcess, lines: list[str]) -> None:
        """A worker's stack dump (it hung, or crashed in C): each line names it (stacks.py)."""
        for line in lines:
            self.log(line, level=40)

    def _started(self, worker: WorkerProcess, message: Message) -> None:
        if worker.stop_requested:
            # Our SIGTERM crossed its 'started' on the way: the worker took it for someone else's
            # and asks to be replaced ('terminate'); what it waits for is this stop.
            worker.send("stop")
        worker.state = "serving" if not worker.stop_requested else worker.state
        worker.serving_since = time.monotonic()
        worker.report = self.site_report = message
        if self.draining:
            worker.send("drain")
        if worker.started is not None and not worker.started.done():
            worker.started.set_result(message)
        if self.hung is not None:
            self.hung.watch(worker)
        self.changed()

    def _on_exit(self, worker: WorkerProcess) -> None:
        """A worker ended: forget it; replace it if it served and nobody asked it to end."""
        assert worker.exited is not None
        status = worker.exited.result()
        if worker in self.workers:
            self.workers.remove(worker)
        for key in [key for key in self._answers if key[0] == worker.pid]:
            self._answers.pop(key).cancel()
        unexpected = not worker.stop_requested and not self.stopping
        if unexpected and worker.serving_since is not None:
            self.log("%r %s; replacing it" % (worker, describe_exit(status)), level=40)
            self._replace_later(worker.slot, worker.generation, self.backoff.died(worker.slot, worker.serving_since))
        elif worker.stop_requested and worker.serving_since is not None and status not in (0, -signal.SIGTERM):
            self.log("%r %s while stopping" % (worker, describe_exit(status)), level=30)
        self.changed()

    # -- replacing ---------------------------------------------------------------------------

    def _replace_later(self, slot: int, generation: int, delay: float) -> None:
        if delay:
            self.log("Worker slot %d died %d times in a row soon after starting: its replacement starts in %g s"
                     % (slot, self.backoff.deaths(slot), delay), level=30)
        self.loop.call_later(delay, self._replace_now, slot, generation)

    def _replace_now(self, slot: int, generation: int) -> None:
        if self._slot_wanted(slot, generation):
            self._task(self._replace(slot))

    def _slot_wanted(self, slot: int, generation: int) -> bool:
        """The slot of that generation still needs a worker (no stop, no reload or scale-down since)."""
        if self.stopping or slot >= self.target or generation != self.generation:
            return False
        return not any(w.slot == slot and w.generation == generation and not w.stop_requested for w in self.workers)

    async def _replace(self, slot: int) -> None:
        generation = self.generation
        try:
            worker = self._spawn(generation, slot)
            assert worker.started is not None
            await worker.started
        except (WorkerFailed, OSError) as failure:
            if self.stopping:
                return  # stopped on purpose: no failure to report
            self.log("A replacement worker for slot %d could not start: %s" % (slot, failure), level=40)
            self._replace_later(slot, generation, self.backoff.died(slot, None))
            return
        self.log("%r replaces the worker of slot %d" % (worker, slot))

    def _recycle(self, worker: WorkerProcess, reason: str) -> None:
        """A worker past its limits, or that got SIGTERM: start its replacement, retire it once the
        new one serves. Not while the site drains or stops: the worker stops with the others then."""
        if self.stopping or self.draining or worker.stop_requested or worker.state != "serving" or worker.recycling:
            return
        worker.recycling = True
        self.log("%r is replaced because %s; its replacement starts first" % (worker, reason))
        self._task(self._renew(worker, reason))

    async def _renew(self, worker: WorkerProcess, reason: str) -> None:
        new: WorkerProcess | None = None
        try:
            new = self._spawn(worker.generation, worker.slot)
            assert new.started is not None
            await new.started
        except (WorkerFailed, OSError) as failure:
            if self.stopping or (new is not None and new.stop_requested):
                return  # stopped on purpose (the site stops, or a reload retires its generation): no failure
            self.log("The replacement of %r could not start: %s; it keeps serving, next try in %g s"
                     % (worker, failure, RECYCLE_RETRY), level=40)
            worker.recycling = False
            self.loop.call_later(RECYCLE_RETRY, self._recycle, worker, reason)
            return
        self._replace_all([worker])

    # -- reloading ---------------------------------------------------------------------------

    def request_reload(self) -> asyncio.Future[int]:
        """A future for the generation that will serve the code as it is now (or its failure).

        A request made while a reload runs is merged with any other made meanwhile into the next
        reload, which starts once the running one is over.
        """
        if self.stopping or not self.generation:
            refused: asyncio.Future[int] = self.loop.create_future()
            refused.set_exception(WorkerFailed(1, "the site is %s" % ("stopping" if self.stopping else "starting")))
            return _quiet(refused)
        if self._next_reload is None:
            self._next_reload = _quiet(self.loop.create_future())
        future = self._next_reload
        if self._reloads is None or self._reloads.done():
            self._reloads = self._task(self._run_reloads())
        return future

    def _reload_asked(self, worker: WorkerProcess, outcome: asyncio.Future[int]) -> None:
        """A worker's autoreloader asked for the reload that failed: it must watch on (the old code serves)."""
        if not outcome.cancelled() and outcome.exception() is not None and worker.alive and not worker.stop_requested:
            worker.send("rearm")

    async def _run_reloads(self) -> None:
        while self._next_reload is not None and not self.stopping:
            future, self._next_reload = self._next_reload, None
            try:
                future.set_result(await self._reload())
            except WorkerFailed as failure:
                future.set_exception(failure)
        if self._next_reload is not None:
            self._next_reload.set_exception(WorkerFailed(1, "the site is stopping"))
            self._next_reload = None

    async def _reload(self) -> int:
        generation = next(self._generations)
        self.log("Reload: starting generation %d (%d worker%s)" % (generation, self.target, "s"[:self.target > 1]))
        self.reload_began()
        try:
            await self._start_generation(generation, range(self.target))
        except WorkerFailed as failure:
            # Every worker of the failed generation goes, the replacements started meanwhile too
            # (a worker of it SIGTERMed by someone else during the start is replaced by one more).
            self._stop_all_now([worker for worker in self.workers if worker.generation == generation])
            if self.stopping:
                raise WorkerFailed(1, "the site is stopping") from None
            self.log("Reload failed: generation %d could not start: %s; generation %d keeps serving"
                     % (generation, failure.line, self.generation), level=40)
            raise
        finally:
            self.reload_ended()
        old = [worker for worker in self.workers if worker.generation != generation]
        self.generation = generation
        await self._stopped_accepting(old, self._replace_all(old))
        self.log("Generation %d serves: %s; the old workers no longer accept connections, finish their "
                 "requests and exit" % (generation, self._pids(generation)))
        return generation

    async def _stopped_accepting(self, workers: list[WorkerProcess], linger: float) -> None:
        """Wait until ``workers`` have begun to stop (their servers stop accepting), or were killed
        at their deadline: from then on new connections reach the new generation."""
        stopping = [worker.stopping for worker in workers if worker.stopping is not None]
        timeout = self.options.graceful_timeout
        if stopping:
            await asyncio.wait(stopping, timeout=None if timeout is None else linger + timeout + KILL_GRACE)

    # -- stopping ----------------------------------------------------------------------------

    def _retire(self, worker: WorkerProcess, timeout: float | None, linger: float) -> None:
        """Have ``worker`` stop: stop accepting, finish its requests; SIGKILL it after the timeout.

        A serving worker is told on its channel: with ``linger``, one that others replace first
        answers with Connection: close this long ('retire'); else, for a stop of the site, it
        stops at once ('stop'). A message, not a signal: a worker that also gets SIGTERM from a
        signal sent to the whole group still stops once. A worker still starting reads no
        messages yet: it gets SIGTERM. (One that reads none while serving is hung: the deadline
        below SIGKILLs it, which is all a SIGTERM could have done.)
        """
        if worker.stop_requested or not worker.alive:
            return
        if worker.state != "serving":
            linger = 0.0
            worker.signal(signal.SIGTERM)
        elif linger:
            worker.send("retire", linger=linger)
        else:
            worker.send("stop")
        worker.stop_requested = True
        worker.state = "stopping"
        if timeout is not None:
            deadline = self.loop.call_later(linger + timeout, self._kill_straggler, worker, linger + timeout)
            assert worker.exited is not None
            worker.exited.add_done_callback(lambda _: deadline.cancel())
        self.changed()

    def _replace_all(self, workers: Iterable[WorkerProcess]) -> float:
        """Retire workers that others have replaced (with the Connection: close linger); the linger."""
        timeout = self.options.graceful_timeout
        linger = RETIRE_LINGER if timeout is None else min(RETIRE_LINGER, timeout)
        for worker in list(workers):
            self._retire(worker, timeout, linger)
        return linger

    def _stop_all_now(self, workers: Iterable[WorkerProcess]) -> None:
        """SIGTERM workers nobody replaces (a stop of the site, a generation that failed to start)."""
        for worker in list(workers):
            self._retire(worker, self.options.graceful_timeout, 0.0)

    def _kill_straggler(self, worker: WorkerProcess, after: float) -> None:
        if worker.alive:
            self.log("%r still running %g s after it was asked to stop: killing it (SIGKILL)" % (worker, after),
                     level=30)
            worker.signal(signal.SIGKILL)

    def abandon_start(self) -> None:
        """Stop every worker now, first_start() failing (a Ctrl-C while the first generation starts)."""
        self.stopping = True
        self._stop_all_now(self.workers)

    async def stop_all(self) -> None:
        """Stop every worker at once; return when all have exited (stragglers SIGKILLed at the bound)."""
        self.stopping = True
        self._stop_all_now(self.workers)
        ending = [worker.exited for worker in self.workers if worker.exited is not None]
        if ending:
            await asyncio.wait(ending)
        self.changed()

    # -- telling the workers -----------------------------------------------------------------

    def broadcast(self, kind: str) -> None:
        """Send ``kind`` ('graceful') to every serving worker."""
        for worker in self.workers:
            if worker.state == "serving":
                worker.send(kind)

    async def drain(self, timeout: float = 1.0) -> None:
        """Every worker (and every later one) answers not-ready; return once they said so (bounded)."""
        self.draining = True
        await self._ask_all("drain", timeout)

    async def collect_stats(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Every worker's record, with counts each serving worker reports now (within ``timeout``)."""
        await self._ask_all("stats", timeout)
        return self.records()

    async def _ask_all(self, kind: str, timeout: float) -> None:
        """Send ``kind`` to every serving worker; wait until each answered (its answer echoes ``ask``)."""
        ask = next(self._asks)
        waiting = []
        for worker in self.workers:
            if worker.state == "serving":
                answer: asyncio.Future[Message] = self.loop.create_future()
                self._answers[worker.pid, ask] = answer
                waiting.append(answer)
                worker.send(kind, ask=ask)
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for key in [key for key in self._answers if key[1] == ask]:
            self._answers.pop(key).cancel()

    def records(self) -> list[dict[str, Any]]:
        return [worker.record() for worker in sorted(self.workers, key=lambda w: (w.generation, w.slot))]

    # -- scaling -----------------------------------------------------------------------------

    def add_worker(self) -> None:
        """One worker more (SIGTTIN)."""
        if self.stopping:
            return
        self.target += 1
        self.log("SIGTTIN: %d workers" % self.target)
        self._replace_now(self.target - 1, self.generation)

    def remove_worker(self) -> None:
        """One worker less (SIGTTOU), never fewer than one."""
        if self.stopping or self.target <= 1:
            self.log("SIGTTOU: keeping the last worker", level=30)
            return
        self.target -= 1
        self.log("SIGTTOU: %d worker%s" % (self.target, "s"[:self.target > 1]))
        self.backoff.forget(self.target)
        self._replace_all(w for w in self.workers if w.slot >= self.target)

    def _task(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coroutine`` on the loop, holding on to its task until it is done."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _pids(self, generation: int) -> str:
        pids = [str(w.pid) for w in self.workers if w.generation == generation]
        return "pid%s %s" % ("s"[:len(pids) > 1], ", ".join(pids))


def _quiet(future: asyncio.Future[int]) -> asyncio.Future[int]:
    """A future whose failure nobody need await (a SIGHUP's reload) without asyncio complaining."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future
