"""The pool's decisions, with the test speaking each worker's side of the channel.

Each worker is a real process (it ignores SIGTERM, so that what the pool sends it stays to be
seen) watched by the pool as any worker is: its pidfd, its channel. The test plays the worker:
it says 'started', 'failed', 'terminate', and reads what the pool told it. These are the races a
real worker hits only now and then.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from wspbus.deploy.supervisor.channel import LineReader, encode
from wspbus.deploy.supervisor.pool import Pool, PoolOptions
from wspbus.deploy.supervisor.process import WorkerProcess

DEADLINE = 10.0
STAND_IN = "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); sys.stdin.read()"


class PlayedWorker:
    """A process standing in for a worker, and the worker's end of its channel."""

    def __init__(self, generation: int, slot: int) -> None:
        ours, self._theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-c", STAND_IN], stdin=subprocess.PIPE)
        self.handle = WorkerProcess(generation, slot, self.process, ours)
        self._reader = LineReader()
        self.heard: list[str] = []
        self._heard_more = asyncio.Event()

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        self._theirs.setblocking(False)
        loop.add_reader(self._theirs.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self._theirs.recv(65536)
        except BlockingIOError:
            return
        self.heard += [str(message["kind"]) for message in self._reader.feed(data)]
        self._heard_more.set()

    async def hears(self, kind: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while kind not in self.heard:
                self._heard_more.clear()
                await self._heard_more.wait()

    def says(self, kind: str, **fields: object) -> None:
        self._theirs.sendall(encode(kind, **fields))

    def ends(self, loop: asyncio.AbstractEventLoop) -> None:
        """The process exits (its stdin closes); its end of the channel closes."""
        if self._theirs.fileno() >= 0:
            loop.remove_reader(self._theirs.fileno())
            self._theirs.close()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()


class Played:
    """The pool's spawner: every worker it starts is played by the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.workers: list[PlayedWorker] = []
        self._spawned = asyncio.Event()

    def __call__(self, generation: int, slot: int) -> WorkerProcess:
        worker = PlayedWorker(generation, slot)
        worker.listen(self.loop)
        self.workers.append(worker)
        self._spawned.set()
        return worker.handle

    async def count(self, number: int) -> list[PlayedWorker]:
        async with asyncio.timeout(DEADLINE):
            while len(self.workers) < number:
                self._spawned.clear()
                await self._spawned.wait()
        return self.workers

    def end_all(self) -> None:
        for worker in self.workers:
            worker.ends(self.loop)


async def settled(awaitable: object) -> None:
    async with asyncio.timeout(DEADLINE):
        await awaitable  # type: ignore[misc]


def run_with_pool(workers: int, scenario) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        played = Played(loop)
        pool = Pool(loop, PoolOptions(workers=workers, graceful_timeout=5.0), played, lambda *args, **kw: None)
        try:
            await scenario(pool, played)
        finally:
            stopping = asyncio.ensure_future(pool.stop_all())
            played.end_all()
            await settled(stopping)
            for worker in played.workers:
                worker.process.wait(DEADLINE)

    asyncio.run(main())


def test_a_stop_that_crosses_a_workers_started_still_reaches_it():
    """The pool sends SIGTERM to a worker still starting; if the worker reported 'started' just
    before it (so it takes the signal for someone else's and waits for orders), the pool's reading
    of 'started' sends the stop it waits for."""
    async def scenario(pool: Pool, played: Played) -> None:
        starting = asyncio.ensure_future(pool.first_start())
        (worker,) = await played.count(1)
        stopping = asyncio.ensure_future(pool.stop_all())
        await asyncio.sleep(0)  # the stop is under way: SIGTERM sent to a worker the pool sees starting
        assert worker.handle.stop_requested and worker.heard == []
        worker.says("started")
        await worker.hears("stop")
        worker.ends(asyncio.get_running_loop())
        await settled(stopping)
        await settled(starting)

    run_with_pool(1, scenario)


def test_a_failed_reload_stops_the_replacements_started_in_its_generation():
    """A worker of the new generation SIGTERMed by someone else is replaced (a third worker in
    it); when the reload then fails, that replacement goes with the rest of its generation."""
    async def scenario(pool: Pool, played: Played) -> None:
        starting = asyncio.ensure_future(pool.first_start())
        for worker in await played.count(2):
            worker.says("started")
        await settled(starting)
        reloading = pool.request_reload()
        first, second = (await played.count(4))[2:]
        first.says("started")
        first.says("terminate")
        await first.hears("hold")
        replacement = (await played.count(5))[4]
        second.says("failed", status=78, error="boom")
        second.ends(asyncio.get_running_loop())
        with pytest.raises(Exception, match="boom"):
            await settled(reloading)
        assert replacement.handle.stop_requested and first.handle.stop_requested
        assert pool.generation == 1 and all(w.handle.generation == 1 for w in played.workers[:2])

    run_with_pool(2, scenario)
