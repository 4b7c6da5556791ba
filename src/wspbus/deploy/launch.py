"""Put a configured site on a bus: its apps, servers and plugins; then run it.

``deploy()`` builds everything from a SiteConfig and raises ConfigError for any mistake, before
anything starts. ``launch()`` is what ``wspbus serve`` runs; ``quickstart()`` is the one-call
API for a single app. The set of plugins is decided in one place, plugin_table.build_plugins();
``run()`` and ``start()`` also run a supervisor (deploy/supervisor), which builds its bus differently.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from .._core.bus import Bus, ChannelFailures, StartupError, states
from .._process.bus import Bus as ProcessBus
from ..plugins.pidfile import check_location
from ..plugins.status import StatusFile
from ..servers.httpserver import HTTPServer
from ..servers.protocols import protocols_of
from ..servers.sockets.binds import Bind
from . import converters, precheck
from .config import ConfigError, ServerConfig, SiteConfig, convert, default_binds
from .exits import EX_CONFIG, EX_INTERRUPTED, EX_OK, EX_UNAVAILABLE
from .paste import load_site as load_paste_site
from .plugin_table import build_plugins
from .process_bus import process_bus
from .reload_socket import ReloadSocket
from .site import Site, SiteError, add_pythonpath, import_module, parse_app_spec

__all__ = ["Deployment", "Startable", "deploy", "launch", "quickstart", "run"]

#: What a Ctrl-C while the site loads ends the command with (and EX_INTERRUPTED).
INTERRUPTED = "wspbus: interrupted while loading the site"
#: Servers that speak websockets only with a library of their own choosing installed.
NEEDS_WEBSOCKET_LIBRARY = ("uvicorn",)


@dataclass
class Deployment:
    """A site put on a bus, not started yet."""

    bus: Bus
    site: Site
    config: SiteConfig
    servers: list[HTTPServer] = field(default_factory=list)
    plugins: dict[str, Any] = field(default_factory=dict)

    def urls(self) -> list[str]:
        """Where the servers listen (real ports once started)."""
        return [server.url for server in self.servers]

    def banner(self) -> list[str]:
        lines = ["serving %s" % url for url in self.urls()]
        lines += ["mounted %s" % line for line in self.site.describe()]
        if self.config.reload:
            lines.append("autoreload is on: saving an imported file restarts the site")
        return lines

    def failure(self, reasons: list[BaseException]) -> tuple[int, str]:
        """The exit status and the one line for a start that failed for ``reasons``."""
        return could_not_start(reasons)


class Startable(Protocol):
    """What start() and run() need of a site put on a bus: a Deployment, or a supervisor of workers."""

    bus: Bus
    config: SiteConfig
    plugins: dict[str, Any]

    def banner(self) -> list[str]: ...

    def failure(self, reasons: list[BaseException]) -> tuple[int, str]: ...


# -- building -----------------------------------------------------------------------------


def prepare_process(config: SiteConfig) -> None:
    """--chdir and --pythonpath, then --import (modules that subscribe their own plugins)."""
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError("%s: chdir: cannot change to %s: %s" % (config.source, config.chdir, exc.strerror)) from None
    add_pythonpath(config.pythonpath or [os.getcwd()])  # as `python -m` would, also for the console script
    for name in config.imports:
        try:
            import_module(name)
        except SiteError as exc:
            raise ConfigError("%s: import: %s" % (config.source, exc)) from None


def build_site(config: SiteConfig) -> Site:
    if config.paste is not None:  # --paste FILE.ini: Paste Deploy loads the app
        return load_paste_site(config)
    if not config.apps:
        raise ConfigError("%s: no app to serve (give APP arguments or [[app]] tables)" % config.source)
    try:
        return Site.from_specs([parse_app_spec(app.target, None if app.mount in ("", "/") else app.mount, app.protocol)
                                for app in config.apps])
    except SiteError as exc:
        raise ConfigError("%s: %s" % (config.source, exc)) from None




def subscribe_all(parts: list[Any], source: str) -> None:
    """Subscribe every part in order; if one fails, unsubscribe those before it (ConfigError)."""
    done: list[Any] = []
    for part in parts:
        subscribe = getattr(part, "subscribe", None)
        if not callable(subscribe):
            continue
        try:
            subscribe()
        except (ValueError, OSError) as exc:  # e.g. a log file that cannot be opened
            for earlier in reversed(done):
                earlier.unsubscribe()
            raise ConfigError("%s: %s" % (source, exc)) from None
        done.append(part)


def build_servers(bus: Bus, site: Site, config: SiteConfig, health: Any = None) -> list[HTTPServer]:
    """One HTTPServer per bind; each speaks the site's protocol unless its server cannot.

    ``health``: a wspbus.plugins.health.Health whose endpoints answer before the site's apps.
    """
    result: list[HTTPServer] = []
    apps: dict[tuple[str, int | None], Any] = {}  # servers of one protocol and thread count serve one app: one lifespan, one loop
    for number, server_config in enumerate(config.servers or [ServerConfig()], 1):
        where = "%s: [[server]] #%d" % (config.source, number) if config.servers else config.source
        try:
            protocol = _server_protocol(server_config.server, site.protocol)
        except ValueError as exc:  # an unknown server name in a SiteConfig built by code
            raise ConfigError("%s server: %s" % (where, exc)) from None
        app = apps.get((protocol, server_config.threads))
        if app is None:
            app = site.app(protocol, threads=server_config.threads)
            if health is not None:
                app = health.wrap_asgi(app) if protocol == "asgi" else health.wrap_wsgi(app)
            apps[protocol, server_config.threads] = app
        for bind in server_config.binds or default_binds():
            try:
                server = HTTPServer(bus, app, Bind.parse(bind), server=server_config.server,
                                    protocol=protocol, access_log=bool(config.access_log),
                                    threads=server_config.threads, limits=server_config.limits,
                                    shared_listener=(config.workers or 1) > 1)
            except ValueError as exc:
                raise ConfigError("%s server: %s" % (where, exc)) from None
            result.append(server)
    return result


def _server_protocol(name: str, wanted: str) -> str:
    """``wanted``, unless the named server speaks only the other protocol."""
    protocols = protocols_of(name)
    return wanted if wanted in protocols else protocols[0]


def deploy(bus: Bus, config: SiteConfig, site: Site | None = None, *, own_process: bool = True,
           warn: bool = True) -> Deployment:
    """Prepare the process and put the site, its servers and plugins on ``bus`` (not started).

    Everything is built before anything is subscribed, so a mistake leaves the bus untouched.
    ``warn``: log what the site cannot do (websockets); False where another process of the same
    site says it (the supervisor's workers but one).
    """
    if site is None:
        prepare_process(config)
        site = build_site(config)
    deployment = Deployment(bus, site, config)
    deployment.plugins = build_plugins(bus, config, own_process=own_process, binds=deployment.urls)
    deployment.servers = build_servers(bus, site, config, deployment.plugins.get("health"))
    parts = list(deployment.plugins.values())
    parts.sort(key=lambda part: part is not deployment.plugins.get("drain"))  # it takes over SIGTERM first
    if config.pidfile:
        check_pidfile_location(config)
        parts.append(StatusFile(bus, config.pidfile, deployment))
    subscribe_all(parts + deployment.servers, config.source)
    if warn and any(server.server in NEEDS_WEBSOCKET_LIBRARY for server in deployment.servers) and not websocket_library():
        bus.log("This ASGI site cannot accept websockets: no websocket library is installed "
                "(pip install websockets)", level=30)  # now that the log is routed
    bus.subscribe("stop", site.close, priority=90)  # once the servers stopped: the adapters' threads go
    bus.graceful_timeout = config.graceful_timeout
    return deployment


def websocket_library() -> str | None:
    """The name of an installed library uvicorn does websockets with, if any."""
    import importlib.util

    return next((name for name in ("websockets", "wsproto") if importlib.util.find_spec(name) is not None), None)


def check_pidfile_location(config: SiteConfig) -> None:
    """A PID file path that cannot work (no such directory, a link, a directory others may write)
    is a configuration mistake, told before anything starts."""
    assert config.pidfile is not None
    try:
        check_location(os.path.abspath(config.pidfile))
    except StartupError as exc:
        raise ConfigError("%s: pidfile: %s" % (config.source, exc)) from None


# -- running ------------------------------------------------------------------------------


def start(deployment: Startable, out: TextIO | None = None) -> int:
    """Start the bus and print the banner; if it fails, one line on stderr and its exit status
    (``deployment.failure()``: EX_UNAVAILABLE for a Deployment).

    A daemon's launching process (waiting for the daemon's start) prints the same line and exits
    with the same status. A start cut short by an exit (a SIGTERM) prints no banner.
    """
    daemon = deployment.plugins.get("daemon")
    if daemon is not None:
        daemon.owner_reports_failure = True
        daemon.launcher_lines = lambda: ["wspbus: daemon started, pid %d" % os.getpid(),
                                         *("wspbus: " + line for line in deployment.banner())]
    reasons = start_bus(deployment.bus, deployment.plugins.get("logs"))
    if reasons:
        status, line = deployment.failure(reasons)
        if daemon is not None:
            daemon.report_start_failure(status, line)
        print(line, file=sys.stderr, flush=True)
        return status
    if not deployment.bus.exit_begun:
        announce(deployment, out)
    return EX_OK


def start_bus(bus: Bus, logs: Any = None) -> list[BaseException]:
    """Start ``bus``, holding back what the ``logs`` router (a LogRouter, or None) writes meanwhile;
    why it failed, or [] once it started (a worker of a supervisor starts its bus this way too).

    A failure its listeners told (StartupError: one line says it all) keeps the held records off
    the terminal, unless the level is debug; a log file gets them all the same. A bug (any other
    exception) keeps its traceback on the terminal.
    """
    held = logs.hold() if logs is not None else None
    try:
        bus.start()
    except Exception as exc:
        reasons: list[BaseException] = exc.get_instances() if isinstance(exc, ChannelFailures) else [exc]
        if held is not None:
            told = all(isinstance(reason, StartupError) for reason in reasons)
            held.release(terminal=not told or logs.level <= logging.DEBUG)
        return reasons
    finally:
        if held is not None:
            held.release()
    return []


def could_not_start(reasons: list[BaseException]) -> tuple[int, str]:
    """EX_UNAVAILABLE and its line: what a failed start ends with, unless the site knows better."""
    return EX_UNAVAILABLE, "wspbus: error: the site could not start: %s" % start_failure(reasons)


def start_failure(reasons: list[BaseException]) -> str:
    """What made the start fail, once: the failing listeners' messages, each on one line."""
    return "; ".join(dict.fromkeys(" ".join(str(reason).split()) or type(reason).__name__ for reason in reasons))


def announce(deployment: Startable, out: TextIO | None = None) -> None:
    """Print where the site serves and what is mounted (a daemon logs it: its stdout is gone).

    Nothing if the bus is not STARTED: an exit asked for while it was starting abandoned the start.
    """
    if deployment.bus.state is not states.STARTED:
        return
    out = out or sys.stdout
    for line in deployment.banner():
        out.write("wspbus: %s\n" % line)  # one write: print() writes the newline apart, and a log line may come between
        if deployment.config.daemon:
            deployment.bus.log(line[0].upper() + line[1:])
    out.flush()


def launch(config: SiteConfig, bus: Bus | None = None, site: Site | None = None) -> int:
    """Deploy, start and block until the site exits; the process's exit status."""
    bus = process_bus(bus)
    if site is None:
        if precheck.check_requested():  # this process is a reload's check of the new code
            return run_check(config)
        if isinstance(bus, ProcessBus):
            bus.restart_check = precheck.check_new_code  # a reload into code that fails is refused
            if config.pidfile:
                ReloadSocket(bus, config.pidfile).subscribe()  # `wspbus reload` learns the outcome
    return run(bus, functools.partial(deploy, config=config, site=site))


def run_check(config: SiteConfig) -> int:
    """check_site() with run()'s answers to a mistake (one line, 78) and to Ctrl-C."""
    try:
        return check_site(config)
    except (ConfigError, KeyboardInterrupt) as exc:
        return loading_stopped(exc)


def loading_stopped(exc: ConfigError | KeyboardInterrupt) -> int:
    """One line for what stopped the site's loading, and the exit status: a mistake (78), or
    Ctrl-C while a slow app imports (nothing runs yet, nothing to tell but that)."""
    if isinstance(exc, ConfigError):
        print("wspbus: error: %s" % exc, file=sys.stderr, flush=True)
        return EX_CONFIG
    print(INTERRUPTED, file=sys.stderr, flush=True)
    return EX_INTERRUPTED


def run(bus: Bus, build: Callable[[Bus], Startable]) -> int:
    """``build(bus)`` (a ConfigError is one line and 78), start, block until the bus exits; the exit status.

    What ``wspbus serve`` does with a single process (``build`` is deploy) and with a supervisor.
    """
    try:
        deployment = build(bus)
    except (ConfigError, KeyboardInterrupt) as exc:
        return loading_stopped(exc)
    status = start(deployment)
    if status != EX_OK:
        return status
    bus.block()
    return bus.exit_code


def check_site(config: SiteConfig) -> int:
    """In the child a reload runs first (deploy.precheck): import what the site imports, start nothing."""
    prepare_process(config)
    build_site(config)
    return EX_OK


def quickstart(app: Callable[..., Any] | Mapping[str, Callable[..., Any]], bind: str = "127.0.0.1:8080", *,
               server: str = "auto", protocol: str | None = None, reload: bool = False,
               threads: int | None = None, graceful_timeout: float | None = 30.0, bus: Bus | None = None) -> int:
    """Serve ``app`` (or ``{prefix: app}``) on the process bus with signals handled; block until exit.

    Prints where it serves. Returns the exit status (0 after a clean stop: SIGTERM, Ctrl-C).
    A bad argument raises ValueError; a failing start raises what the failing listener raised.
    """
    bus = process_bus(bus)
    site = Site.from_apps(app, protocol)
    binds = convert("quickstart() ", "bind", converters.bind, bind)
    server = convert("quickstart() ", "server", converters.server_name, server)
    config = SiteConfig(source="quickstart()", graceful_timeout=graceful_timeout, reload=reload,
                        servers=[ServerConfig(binds=binds, server=server, threads=threads)])
    deployment = deploy(bus, config, site)
    bus.start()
    announce(deployment)
    bus.block()
    return bus.exit_code
