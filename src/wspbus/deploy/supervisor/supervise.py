"""``wspbus serve --workers N``: put the supervisor on its bus, start it, block until it exits.

The supervisor's bus gets the plugins a site must have once, built by the same code as a single
process's (plugin_table.build_plugins) from the tables that concern it (signals, logs, daemon, PID
file, systemd, drain, reaper), then the status file, the listening sockets, the control socket
and the Arbiter. Everything else in the configuration (the apps, --import, the site's own
[[plugin]] tables, health, threads, autoreload, and dropping privileges: see settings.py) is
the workers'.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass, field
from typing import Any

from ..._core.bus import Bus
from ..config import SiteConfig
from ..exits import EX_CONFIG, EX_INTERRUPTED
from ..launch import INTERRUPTED, check_pidfile_location, could_not_start, run, subscribe_all
from ..plugin_table import build_plugins, check_plugin_tables
from ..process_bus import process_bus
from .arbiter import Arbiter, StartInterrupted, WorkerStartError
from .control_socket import ControlSocket
from .listeners import Listeners
from .pool import PoolOptions
from .settings import SUPERVISOR_PLUGINS, to_dict
from .status import ReportedSite, SupervisorStatusFile

__all__ = ["Supervisor", "build", "supervise"]

#: The supervisor's own stop listeners may run this long past the graceful timeout: the Arbiter
#: SIGKILLs workers at the timeout and then waits for the kernel to end them.
STOP_MARGIN = 0.4


@dataclass
class Supervisor:
    """A supervisor put on a bus, not started yet."""

    bus: Bus
    config: SiteConfig
    arbiter: Arbiter
    reported: ReportedSite
    plugins: dict[str, Any] = field(default_factory=dict)

    def failure(self, reasons: list[BaseException]) -> tuple[int, str]:
        """A worker's own status and line (78 for a configuration or an app that does not import),
        else 69 and what failed, as launch says it."""
        for reason in reasons:
            if isinstance(reason, StartInterrupted):
                return EX_INTERRUPTED, INTERRUPTED
            if isinstance(reason, WorkerStartError) and reason.status == EX_CONFIG:
                return EX_CONFIG, "wspbus: error: %s" % reason
        return could_not_start(reasons)

    def banner(self) -> list[str]:
        pool = self.arbiter.pool
        pids = ", ".join(str(w.pid) for w in pool.workers) if pool is not None else ""
        count = len(pool.workers) if pool is not None else 0
        lines = ["serving %s" % url for url in self.reported.urls()]
        lines += ["mounted %s" % mount for mount in self.reported.describe()]
        lines.append("supervisor %d, %d worker%s: %s" % (os.getpid(), count, "s"[:count != 1], pids))
        if self.config.reload:
            lines.append("autoreload is on: saving an imported file reloads the workers")
        return lines


def supervisor_config(config: SiteConfig) -> SiteConfig:
    """The part of ``config`` the supervisor itself runs: its plugin tables, none of the site's."""
    own = copy.deepcopy(config)
    own.plugins = {name: table for name, table in config.plugins.items() if name in SUPERVISOR_PLUGINS}
    own.extra_plugins = []
    own.reload = False
    own.imports = []
    own.user = own.group = own.umask = None  # the workers drop privileges (settings.py says why)
    return own


def build(bus: Bus, config: SiteConfig, options: PoolOptions) -> Supervisor:
    """Construct and subscribe the supervisor's plugins; ConfigError for any mistake, bus untouched."""
    to_dict(config)  # a setting that cannot cross to the workers is a mistake now, not at their start
    check_plugin_tables(config)  # the workers' tables too: a typo is told before anything starts
    if config.pidfile:
        check_pidfile_location(config)
    listeners = Listeners(bus, config)
    control = ControlSocket(bus, config.pidfile) if config.pidfile else None
    arbiter = Arbiter(bus, config, listeners, options, control=control)
    reported = ReportedSite(config, lambda: arbiter.pool)
    plugins = build_plugins(bus, supervisor_config(config), own_process=True, binds=reported.urls)
    _hand_signals_to(arbiter, plugins.get("signals"))
    parts: list[Any] = sorted(plugins.values(), key=lambda part: part is not plugins.get("drain"))
    if config.pidfile:
        status = SupervisorStatusFile(bus, config.pidfile, reported)
        arbiter.on_change = status.refresh
        parts.append(status)
    parts += [listeners, *([control] if control else []), arbiter]
    subscribe_all(parts, config.source)
    _tell_systemd_of_reloads(arbiter, plugins.get("systemd"))
    bus.graceful_timeout = None if config.graceful_timeout is None else config.graceful_timeout + STOP_MARGIN
    return Supervisor(bus, config, arbiter, reported, plugins)


def _hand_signals_to(arbiter: Arbiter, signals: Any) -> None:
    """SIGHUP reloads the workers (instead of re-executing); SIGTTIN/SIGTTOU scale them; SIGINT during
    the first start ends the command as an interrupted load."""
    if signals is None:
        return
    signals.handlers["SIGHUP"] = arbiter.handle_SIGHUP
    signals.handlers["SIGINT"] = arbiter.handle_SIGINT
    signals.handlers["SIGTTIN"] = arbiter.handle_SIGTTIN
    signals.handlers["SIGTTOU"] = arbiter.handle_SIGTTOU


def _tell_systemd_of_reloads(arbiter: Arbiter, notifier: Any) -> None:
    """RELOADING=1 while a new generation starts, READY=1 once it serves (or was discarded)."""
    if notifier is None or not getattr(notifier, "enabled", False):
        return
    from ...plugins.systemd import monotonic_usec

    def reloading(begins: bool) -> None:
        if begins:
            notifier.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="Reloading: starting new workers")
        else:
            notifier.send(READY=1, STATUS=notifier.status_text(arbiter.bus.state))

    arbiter.on_reload = reloading


def supervise(config: SiteConfig, options: PoolOptions, bus: Bus | None = None) -> int:
    """Build, start and block until the supervisor exits; the process's exit status (as launch() runs a site)."""
    return run(process_bus(bus), functools.partial(build, config=config, options=options))
