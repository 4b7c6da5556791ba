"""A worker process: ``python -m wspbus.deploy.supervisor.worker``, started by the supervisor.

A fresh interpreter (the supervisor never imports the site, so every worker, and every reload,
imports the site's current code). It gets the listening sockets as inherited descriptors and one
end of a socketpair (channel.py); it reads its configuration there, builds the site with the same
deploy code as ``wspbus serve`` on its own bus (``wspbus.bus``: the site's ``--import`` plugins
subscribe there, its 'start'/'stop' listeners and ASGI lifespan run here), and answers with
``started`` or ``failed`` (one line). Then it serves until SIGTERM, or until the supervisor is gone.

Signals a terminal sends to the whole process group (SIGINT, SIGHUP, SIGTTIN, SIGTTOU) are the
supervisor's to act on: a worker ignores them, and ends when the supervisor tells it to. Until its
site is built, SIGTERM keeps its default action: a worker still importing the site has nothing to
finish, and ends at once (a Ctrl-C or a stop must not wait for a slow import).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import Any, TextIO

from ...plugins.logs import LogRouter
from ..config import ConfigError, SiteConfig
from ..exits import EX_CONFIG, EX_UNAVAILABLE
from ..launch import Deployment, build_site, deploy, prepare_process, start_bus, start_failure
from .channel import Message, WorkerChannel
from .counting import RequestCounter, counted_site, resident_bytes
from .heartbeat import BEATS_PER_TIMEOUT, Heartbeat
from .recycling import Recycler
from .stacks import FAULT_FD_ENV
from .stuck import StuckThreads
from .settings import from_dict

__all__ = ["main"]

#: Each line of a worker's error log names the worker: one log, several processes.
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s [worker %(process)d] %(message)s"
IGNORED_SIGNALS = ("SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU")
#: Servers that close a connection when the app's response says ``Connection: close``.
CLOSE_HONOURED = ("cheroot", "uvicorn", "granian")


class Worker:
    """One worker's life: configure, build, start, report, serve, obey the supervisor."""

    def __init__(self, channel: WorkerChannel, bus: Any) -> None:
        self.channel = channel
        self.bus = bus
        self.counter = RequestCounter()
        self.deployment: Deployment | None = None
        self.heartbeat: Heartbeat | None = None
        self._fault_file: TextIO | None = None
        self._gate = threading.Lock()
        self._serving = False
        self._stop_when_started = False

    def run(self) -> int:
        """The worker's exit status: 0 after a clean stop, 69/78 when it could not start."""
        setup = self.channel.receive()
        if setup is None or setup.get("kind") != "config":
            return 1  # the supervisor went away before it said what to serve
        config = from_dict(setup["config"])
        config.reload = config.reload and bool(setup.get("autoreload"))  # one watcher per site is enough
        self.bus.graceful_timeout = config.graceful_timeout
        self._ignore_group_signals()
        self._dump_stacks_on_abort(config)
        try:
            logs = self._route_logs(config)
            self.deployment = self._build(config, warn=setup.get("slot", 0) == 0)
        except ConfigError as exc:
            return self._failed(EX_CONFIG, str(exc))
        self._handle_signals()  # not before: a SIGTERM while the site imports ends it there and then
        reasons = start_bus(self.bus, logs)  # as `wspbus serve` starts a site: the terminal hears one line
        if reasons:
            return self._failed(EX_UNAVAILABLE, start_failure(reasons))
        if not self._begin_serving():
            self.bus.log("SIGTERM while starting: stopping now that the start is over")
            self.bus.exit()
            return int(self.bus.exit_code)
        self._watch_limits(setup)
        self._report_started(setup)
        self.bus.block()
        return int(self.bus.exit_code)

    def _begin_serving(self) -> bool:
        """From now on SIGTERM exits at once; False if one came during the start."""
        with self._gate:
            self._serving = True
            return not self._stop_when_started

    def _terminate(self) -> None:
        """SIGTERM: exit; during the start, once the start is over (an exit must not race a start,
        or the bus ends STARTED after EXITED, a worker that neither serves nor ends)."""
        with self._gate:
            if not self._serving:
                self._stop_when_started = True
                return
        self.bus.exit()

    # -- building ---------------------------------------------------------------------------

    def _build(self, config: SiteConfig, warn: bool) -> Deployment:
        """The site on this worker's bus; ``warn``: say what the site cannot do (one worker says it)."""
        prepare_process(config)
        site = counted_site(build_site(config), self.counter)
        deployment = deploy(self.bus, config, site, own_process=False, warn=warn)
        if "reload" in deployment.plugins:
            # A restart of a worker (the autoreloader's, or the site's own) is a rolling reload of
            # all of them: new workers first, then this one goes, so the site never stops serving.
            self.bus.restart = self._ask_for_reload
        return deployment

    def _ask_for_reload(self) -> None:
        self.bus.log("Asking the supervisor to reload the workers")
        self.channel.send("reload")

    def _route_logs(self, config: SiteConfig) -> LogRouter:
        try:
            router = LogRouter(self.bus, error_log=config.log_file or "-", access_log=config.access_log,
                               level=logging.getLevelName(config.log_level.upper()),
                               error_format=WORKER_LOG_FORMAT)
            router.subscribe()
        except ValueError as exc:
            raise ConfigError("%s: %s" % (config.source, exc)) from None
        return router

    def _ignore_group_signals(self) -> None:
        """What a terminal sends the whole process group is the supervisor's to act on (and SIGUSR1
        waits for the handler the worker has once its site is built)."""
        for name in (*IGNORED_SIGNALS, "SIGUSR1"):
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    def _handle_signals(self) -> None:
        """SIGTERM stops the worker (after its start, if it comes during it); SIGUSR1 is 'graceful'."""
        from ...plugins.signals import SignalHandler

        handler = SignalHandler(self.bus)
        handler.handlers = {"SIGTERM": self._terminate, "SIGUSR1": self.bus.graceful}
        handler.subscribe()

    def _dump_stacks_on_abort(self, config: SiteConfig) -> None:
        """SIGABRT (the supervisor's answer to a hung worker) writes every thread's stack to the log:
        into the pipe the supervisor reads (stacks.py), which logs each line naming this worker."""
        fault_fd = os.environ.pop(FAULT_FD_ENV, "")
        if fault_fd.isdigit():
            os.set_inheritable(int(fault_fd), False)  # a process the site starts must not hold it open
            faulthandler.enable(file=int(fault_fd), all_threads=True)
            return
        # A supervisor that passed no pipe: an older wspbus (a reload's workers run the code installed now).
        target: TextIO = sys.stderr
        if config.log_file and config.log_file != "-":
            try:
                target = self._fault_file = open(config.log_file, "a", encoding="utf-8")
            except OSError:
                pass  # the log router reports the unusable file; stderr still gets the stacks
        faulthandler.enable(file=target, all_threads=True)

    # -- reporting --------------------------------------------------------------------------

    def _failed(self, status: int, line: str) -> int:
        self.channel.send("failed", status=status, error=line)
        return status

    def _report_started(self, setup: Message) -> None:
        assert self.deployment is not None
        self.channel.send("started", urls=self.deployment.urls(), mounts=self.deployment.site.describe())
        self.bus.watch_state(self._state_changed)
        threading.Thread(target=self._obey, name="wspbus supervisor channel", daemon=True).start()
        interval = setup.get("heartbeat")
        if isinstance(interval, (int, float)) and interval > 0:
            stuck = StuckThreads(self.deployment.servers, interval * BEATS_PER_TIMEOUT)
            self.heartbeat = Heartbeat(self.channel, float(interval), self.stats, lambda: self.counter.loop,
                                       stuck.reason)
            self.heartbeat.start()

    def _watch_limits(self, setup: Message) -> None:
        """--max-requests and --max-worker-memory: ask to be replaced once past either."""
        recycler = Recycler(lambda reason: self.channel.send("recycle", reason=reason),
                            setup.get("max_requests"), setup.get("max_rss"))
        if recycler.active:
            self.counter.on_count = recycler.counted

    def _state_changed(self, state: Any) -> None:
        """Tell the supervisor when the bus leaves STARTED: the servers stop accepting now."""
        if state.name == "STOPPING":
            self.channel.send("stopping")

    def stats(self) -> dict[str, int]:
        return {"requests": self.counter.count, "rss": resident_bytes()}

    def _obey(self) -> None:
        """Act on the supervisor's messages until it closes the channel, then exit."""
        while (message := self.channel.receive()) is not None:
            kind = message.get("kind")
            if kind == "drain":
                self.bus.publish("drain")
                self.channel.send("drained", ask=message.get("ask"))
            elif kind == "graceful":
                self.bus.graceful()
            elif kind == "stats":
                self.channel.send("stats", ask=message.get("ask"), **self.stats())
            elif kind == "retire":
                self._retire(float(message.get("linger", 0)))
            elif kind == "rearm":
                self._rearm_autoreload()
        if not self.bus.exit_begun:
            self.bus.log("The supervisor is gone (its channel closed): exiting", level=30)
            self.bus.exit()

    def _rearm_autoreload(self) -> None:
        """The reload this worker asked for failed: watch again, so the next good save reloads."""
        reloader = self.deployment.plugins.get("reload") if self.deployment is not None else None
        if reloader is not None:
            reloader.graceful()

    def _retire(self, linger: float) -> None:
        """Answer with Connection: close for ``linger`` seconds (if the servers honour it), then exit."""
        assert self.deployment is not None
        if linger > 0 and all(server.server in CLOSE_HONOURED for server in self.deployment.servers):
            self.bus.log("Retiring: answering with Connection: close for %g s, then stopping" % linger)
            self.counter.closing = True
            timer = threading.Timer(linger, self.bus.exit)
            timer.daemon = True
            timer.start()
        else:
            self.bus.exit()


def main() -> int:
    import wspbus

    try:
        channel = WorkerChannel.from_environment()
    except RuntimeError as exc:
        print("wspbus worker: %s" % exc, file=sys.stderr)
        return 64
    return Worker(channel, wspbus.bus).run()


if __name__ == "__main__":
    sys.exit(main())
