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

Once it serves, a worker does not stop on a SIGTERM of its own: it may be one signal of many sent
to the whole group (systemd's KillMode=control-group, ``kill -- -PGID``), and the supervisor,
which got one too, drains and stops the site; or an admin's, meant for this worker alone, and the
supervisor replaces it, the new worker ready first. So the worker tells the supervisor
(``terminate``) and serves on until told to ``retire`` or ``stop``; a supervisor that does not
acknowledge (``hold``) within the graceful timeout (ORDERS_WAIT_FLOOR to ORDERS_WAIT) is hung, and the worker
stops on its own. The supervisor stops a serving worker with a message, not a signal, and a stop
is a stop: however many signals come, a worker stops once (SIGKILL remains for the impatient).
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
#: Servers that pass an app's ``Connection: close`` on to the client (which then sends no other request on it).
CLOSE_HONOURED = ("cheroot", "uvicorn", "granian")
#: The longest a worker that got SIGTERM waits for the supervisor to acknowledge it (``hold``).
ORDERS_WAIT = 5.0
#: ... and at least this long, however short the graceful timeout (the wait is for a message, not a request).
ORDERS_WAIT_FLOOR = 1.0


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
        self._terminate_told = False
        self._held = threading.Event()
        self._orders_wait = ORDERS_WAIT

    def run(self) -> int:
        """The worker's exit status: 0 after a clean stop, 69/78 when it could not start."""
        setup = self.channel.receive()
        if setup is None or setup.get("kind") != "config":
            return 1  # the supervisor went away before it said what to serve
        config = from_dict(setup["config"])
        config.reload = config.reload and bool(setup.get("autoreload"))  # one watcher per site is enough
        self.bus.graceful_timeout = config.graceful_timeout
        if config.graceful_timeout is not None:
            self._orders_wait = min(ORDERS_WAIT, max(ORDERS_WAIT_FLOOR, config.graceful_timeout))
        self._ignore_group_signals()
        self._dump_stacks_on_abort(config)
        try:
            logs = self._route_logs(config)
            self.deployment = self._build(config, warn=setup.get("slot", 0) == 0)
        except ConfigError as exc:
            return self._failed(EX_CONFIG, str(exc))
        self._handle_signals()  # not before: a SIGTERM while the site imports ends it there and then
        if setup.get("draining"):  # started during a drain: not ready from its first request on
            self.bus.publish("drain")
        reasons = start_bus(self.bus, logs)  # as `wspbus serve` starts a site: the terminal hears one line
        if reasons:
            return self._failed(EX_UNAVAILABLE, start_failure(reasons))
        if not self._begin_serving(setup):
            self.bus.log("SIGTERM while starting: stopping now that the start is over")
            self.bus.exit()
            return int(self.bus.exit_code)
        self.bus.block()
        return int(self.bus.exit_code)

    def _begin_serving(self, setup: Message) -> bool:
        """Report STARTED; False if a SIGTERM came during the start. Under the gate, so that the
        supervisor hears 'started' before any 'terminate' (it replaces only a worker that serves)."""
        with self._gate:
            if self._stop_when_started:
                return False
            self._watch_limits(setup)
            self._report_started(setup)
            self._serving = True
            return True

    def _terminate(self) -> None:
        """The 'SIGTERM' listener: during the start, stop once the start is over (an exit must not
        race a start, or the bus ends STARTED after EXITED, a worker that neither serves nor ends);
        once serving, tell the supervisor, once, and serve on until it says what to do."""
        with self._gate:
            if not self._serving:
                self._stop_when_started = True
                return
            told, self._terminate_told = self._terminate_told, True
        if self.bus.exit_begun:
            self.bus.log("SIGTERM while stopping: the stop under way goes on (a worker stops once)")
        elif told:
            self.bus.log("SIGTERM again: the supervisor knows already (a worker stops once)")
        elif not self.channel.send("terminate"):
            self.bus.exit()  # the supervisor is gone: nobody will replace this worker or stop it
        else:
            self.bus.log("SIGTERM: the supervisor replaces this worker (the new one first) or stops the "
                         "site; serving until it says which")
            threading.Thread(target=self._await_hold, name="wspbus SIGTERM", daemon=True).start()

    def _await_hold(self) -> None:
        """A supervisor that does not acknowledge a SIGTERM at once is hung: stop on our own."""
        if not self._held.wait(self._orders_wait) and not self.bus.exit_begun:
            self.bus.log("The supervisor did not answer within %g s: stopping on its own" % self._orders_wait,
                         level=30)
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
        """SIGTERM goes to _terminate, SIGUSR1 is 'graceful'; without SignalHandler's rule that a
        second SIGTERM ends the process at once: a worker stopping gracefully may get SIGTERM from
        systemd or a group kill as well, and must not cut its requests short for it (module docstring)."""
        from ...plugins.signals import SignalHandler

        handler = SignalHandler(self.bus)
        handler.terminating = frozenset()
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
            elif kind == "stop":
                self.bus.log("The supervisor says stop: stopping")
                self.bus.exit()
            elif kind == "hold":
                self._held.set()
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
