"""The site's configuration: a TOML file (schema in the README, "The configuration file") and command-line overrides.

Every value is checked where it is read, so a mistake is reported as one line naming the file,
the key and what was expected (``ConfigError``; the command exits 78, ``exits.EX_CONFIG``). Relative paths
in a file are relative to the file's directory; on the command line, to the current directory.
The tables here say which converter reads each key; converters.py says what each accepts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..servers.request_head import HeadLimits
from ..servers.sockets.activation import passed_binds
from . import converters

__all__ = ["AppConfig", "ConfigError", "PluginConfig", "ServerConfig", "SiteConfig", "load"]

DEFAULT_BIND = "127.0.0.1:8080"

#: A TOML table, as tomllib reads it.
Table = dict[str, Any]
#: key -> (the attribute it sets, the converter that checks it).
Fields = dict[str, tuple[str, Callable[[Any], Any]]]


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is the one line to show the deployer."""


# -- the configuration --------------------------------------------------------------------


@dataclass
class ServerConfig:
    binds: list[str] = field(default_factory=list)  # none named: default_binds()
    server: str = "auto"
    threads: int | None = None
    # What a request head may hold and how long it may take to arrive (servers/request_head.py).
    max_request_line: int = HeadLimits.max_request_line
    max_header_field: int = HeadLimits.max_header_field
    max_headers: int = HeadLimits.max_headers
    head_timeout: float = HeadLimits.head_timeout

    @property
    def limits(self) -> HeadLimits:
        return HeadLimits(self.max_request_line, self.max_header_field, self.max_headers, self.head_timeout)


@dataclass
class AppConfig:
    target: str
    mount: str = "/"
    protocol: str = "auto"


@dataclass
class PluginConfig:
    """A plugin to build: a built-in one by name or a third-party class by ``path``."""

    name: str
    where: str  # e.g. "site.toml: [plugins.reload]", for messages
    options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


@dataclass
class SiteConfig:
    source: str = "command line"
    graceful_timeout: float | None = 30.0
    chdir: str | None = None
    pythonpath: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    user: int | None = None
    group: int | None = None
    umask: int | None = None
    daemon: bool = False
    pidfile: str | None = None
    reload: bool = False
    log_file: str | None = None
    access_log: str | None = None
    log_level: str = "info"
    paste: str | None = None  # FILE.ini[#name]: the site is that Paste Deploy file's app (deploy/paste.py)
    workers: int | None = None  # worker processes under the supervisor (deploy/supervisor); None: 1
    # The bounds on each worker (deploy/supervisor/options.py; seconds, None: no bound).
    start_timeout: float | None = 60.0
    worker_timeout: float | None = None
    max_requests: int | None = None
    max_requests_jitter: int = 0
    max_worker_memory: int | None = None  # MB
    servers: list[ServerConfig] = field(default_factory=list)
    apps: list[AppConfig] = field(default_factory=list)
    plugins: dict[str, PluginConfig] = field(default_factory=dict)
    extra_plugins: list[PluginConfig] = field(default_factory=list)


def default_binds() -> list[str]:
    """Where a server with no bind listens: on the sockets passed to the process (socket
    activation), else on DEFAULT_BIND."""
    return passed_binds() or [DEFAULT_BIND]


def _site_fields(base: str) -> Fields:
    """[site] key -> (SiteConfig attribute, converter)."""
    return {
        "graceful_timeout": ("graceful_timeout", converters.seconds),
        "chdir": ("chdir", converters.path(base)),
        "pythonpath": ("pythonpath", converters.paths(base)),
        "import": ("imports", converters.texts),
        "user": ("user", converters.user),
        "group": ("group", converters.group),
        "umask": ("umask", converters.umask),
        "daemon": ("daemon", converters.flag),
        "pidfile": ("pidfile", converters.path(base)),
        "reload": ("reload", converters.flag),
        "log_file": ("log_file", converters.path(base)),
        "access_log": ("access_log", converters.path(base)),
        "log_level": ("log_level", converters.log_level),
        "paste": ("paste", converters.paste(base)),
        "workers": ("workers", converters.positive_int),
        "start_timeout": ("start_timeout", converters.positive_seconds),
        "worker_timeout": ("worker_timeout", converters.positive_seconds),
        "max_requests": ("max_requests", converters.positive_int),
        "max_requests_jitter": ("max_requests_jitter", converters.whole_number),
        "max_worker_memory": ("max_worker_memory", converters.positive_int),
    }


SERVER_FIELDS: Fields = {"bind": ("binds", converters.bind), "server": ("server", converters.server_name),
                         "threads": ("threads", converters.positive_int),
                         "max_request_line": ("max_request_line", converters.positive_int),
                         "max_header_field": ("max_header_field", converters.positive_int),
                         "max_headers": ("max_headers", converters.positive_int),
                         "head_timeout": ("head_timeout", converters.timeout)}
APP_FIELDS: Fields = {"target": ("target", converters.text), "mount": ("mount", converters.text),
                      "protocol": ("protocol", converters.protocol)}
TOP_LEVEL = ("site", "server", "app", "plugins", "plugin")


def convert(where: str, key: str, converter: Callable[[Any], Any], value: Any) -> Any:
    """Run ``converter``; turn its complaint into a ConfigError naming ``where`` and ``key``."""
    try:
        return converter(value)
    except converters.Expected as exc:
        raise ConfigError("%s%s: expected %s, got %s" % (where, key, exc, _show(value))) from None
    except converters.Wrong as exc:
        raise ConfigError("%s%s: %s" % (where, key, exc)) from None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fill(target: Any, table: Any, fields: Fields, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError("%s: expected a table, got %s" % (where.rstrip(": "), _show(table)))
    for key, value in table.items():
        if key not in fields:
            raise ConfigError("%s%s: unknown key (expected one of: %s)" % (where, key, ", ".join(fields)))
        attribute, converter = fields[key]
        setattr(target, attribute, convert(where, key, converter, value))


def _array_of_tables(document: Table, key: str, where: str) -> list[Table]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError("%s: %s: expected an array of tables ([[%s]])" % (where, key, key))
    return value


def load(path: str) -> SiteConfig:
    """Read and check a TOML site file."""
    import tomllib

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError("%s: no such configuration file" % path) from None
    except OSError as exc:
        raise ConfigError("%s: cannot read the configuration file: %s" % (path, exc.strerror)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s: not valid TOML: %s" % (path, exc)) from None
    return from_document(document, path)


def from_document(document: Table, source: str) -> SiteConfig:
    """Check a parsed TOML document; ``source`` names it in messages and anchors relative paths."""
    base = os.path.dirname(os.path.abspath(source))
    config = SiteConfig(source=source)
    for key in document:
        if key not in TOP_LEVEL:
            raise ConfigError("%s: %s: unknown key (expected tables: [site], [[server]], [[app]], "
                              "[plugins.NAME], [[plugin]])" % (source, key))
    _fill(config, document.get("site", {}), _site_fields(base), "%s: [site] " % source)
    for number, table in enumerate(_array_of_tables(document, "server", source), 1):
        server = ServerConfig()
        _fill(server, table, {**SERVER_FIELDS, "bind": ("binds", converters.file_binds(base))},
              "%s: [[server]] #%d " % (source, number))
        config.servers.append(server)
    for number, table in enumerate(_array_of_tables(document, "app", source), 1):
        where = "%s: [[app]] #%d " % (source, number)
        if "target" not in table:
            raise ConfigError("%starget: missing (expected \"module:callable\")" % where)
        app = AppConfig(target="")
        _fill(app, table, APP_FIELDS, where)
        config.apps.append(app)
    _read_plugins(config, document, source)
    return config


def _read_plugins(config: SiteConfig, document: Table, source: str) -> None:
    plugins = document.get("plugins", {})
    if not isinstance(plugins, dict):
        raise ConfigError("%s: plugins: expected tables [plugins.NAME]" % source)
    for name, options in plugins.items():
        where = "%s: [plugins.%s]" % (source, name)
        if not isinstance(options, dict):
            raise ConfigError("%s: expected a table of settings, got %s" % (where, _show(options)))
        config.plugins[name] = PluginConfig(name, where, dict(options))
    for number, table in enumerate(_array_of_tables(document, "plugin", source), 1):
        where = "%s: [[plugin]] #%d" % (source, number)
        if "path" not in table:
            raise ConfigError("%s path: missing (expected \"pkg.module:PluginClass\")" % where)
        options = dict(table)
        path = convert(where + " ", "path", converters.plugin_path, options.pop("path"))
        config.extra_plugins.append(PluginConfig(path, where, options, path=path))


def override(config: SiteConfig, options: dict[str, Any]) -> SiteConfig:
    """Apply command-line values (keyed by [site] key; None = not given) on top of ``config``.

    A list given on the command line (--bind, --import, --pythonpath, APPs) replaces the file's.
    """
    fields = _site_fields(os.getcwd())
    for key, value in options.items():
        if value is None or key not in fields:
            continue
        attribute, converter = fields[key]
        setattr(config, attribute, convert("", "--" + key.replace("_", "-"), converter, value))
    return config


def command_line_drain(delay: str | float | None, config: SiteConfig) -> None:
    """--drain-delay: turn the Drainer on with this delay (on top of any [plugins.drain] settings)."""
    if delay is None:
        return
    seconds = convert("", "--drain-delay", converters.seconds, delay)
    if seconds is None or seconds < 0:
        raise ConfigError("--drain-delay: expected a number of seconds of 0 or more, got %r" % (delay,))
    table = config.plugins.get("drain") or PluginConfig("drain", "--drain-delay")
    table.options["drain_delay"] = seconds
    table.options["enabled"] = True
    config.plugins["drain"] = table


def command_line_servers(binds: list[str] | None, server: str | None, threads: int | None,
                         config: SiteConfig) -> None:
    """--bind/--server/--threads: replace the file's servers by one built from these options."""
    if binds is None and server is None and threads is None:
        return
    base = config.servers[0] if config.servers else ServerConfig()
    merged = dataclasses.replace(
        base,
        binds=convert("", "--bind", converters.bind, binds) if binds else base.binds,
        server=convert("", "--server", converters.server_name, server) if server else base.server,
        threads=convert("", "--threads", converters.positive_int, threads) if threads is not None else base.threads,
    )
    config.servers = [merged]


def command_line_apps(specs: list[str], protocol: str | None, config: SiteConfig) -> None:
    """APP arguments replace the file's [[app]] tables; --protocol forces theirs (or the file's)."""
    if specs:
        config.apps = [AppConfig(target=spec) for spec in specs]
    if protocol is not None:
        for app in config.apps:
            app.protocol = protocol
