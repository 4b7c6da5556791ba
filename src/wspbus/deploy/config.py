"""The site's configuration: a TOML file (schema in the README, "The configuration file") and command-line overrides.

Every value is checked where it is read, so a mistake is reported as one line naming the file,
the key and what was expected (``ConfigError``; the command exits 78, ``exits.EX_CONFIG``). Relative paths
in a file are relative to the file's directory; on the command line, to the current directory.
Past 400 lines because every key's converter and table sit together: one place says what each
key accepts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..servers.protocols import protocols_of
from ..servers.request_head import HeadLimits
from ..servers.sockets.activation import passed_binds
from ..servers.sockets.binds import Bind

__all__ = ["AppConfig", "ConfigError", "PluginConfig", "ServerConfig", "SiteConfig", "load"]

DEFAULT_BIND = "127.0.0.1:8080"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

#: A TOML table, as tomllib reads it.
Table = dict[str, Any]
#: key -> (the attribute it sets, the converter that checks it).
Fields = dict[str, tuple[str, Callable[[Any], Any]]]


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is the one line to show the deployer."""


class _Expected(ValueError):
    """Raised by a converter: the argument says what was expected."""


class _Wrong(ValueError):
    """Raised by a converter: the argument is the whole complaint."""


# -- converters: value -> checked value, or _Expected("what was expected") ------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Expected("a non-empty string")
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Expected("a string or a list of strings")
    return list(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Expected("true or false")
    return value


def _seconds(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _Expected("a number of seconds (inf for no limit)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _Expected("a number of seconds (inf for no limit)")
    return None if math.isinf(value) else float(value)


def _timeout(value: Any) -> float:
    seconds = _seconds(value) if not isinstance(value, str) or value != "inf" else None
    if not seconds:
        raise _Expected("a number of seconds above 0")
    return seconds


def _positive_int(value: Any) -> int:
    return _whole_number(value, least=1)


def _whole_number(value: Any, least: int = 0) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _Expected("a whole number of at least %d" % least)
    return value


def _positive_seconds(value: Any) -> float | None:
    """A bound that cannot be 0 (a worker's timeouts): seconds above 0, or inf for none."""
    try:
        seconds = _seconds(value)
    except _Expected:
        seconds = 0.0
    if seconds is not None and not seconds > 0:
        raise _Expected("a number of seconds above 0 (inf for no limit)")
    return seconds


def _umask(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.removeprefix("0o"), 8)
        except ValueError:
            raise _Expected("an octal mask such as 0o022 or \"027\"") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise _Expected("an octal mask such as 0o022 or \"027\"")
    return value


def _account(value: Any, by_name: Callable[[str], int], by_id: Callable[[int], int], what: str) -> int:
    """A user or group given by name or by number (a string of digits is a number unless it is a name)."""
    try:
        if isinstance(value, str):
            try:
                return by_name(value)
            except KeyError:
                if not (value.isascii() and value.isdigit()):
                    raise
            return by_id(int(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return by_id(value)
    except (KeyError, OverflowError, ValueError):  # out of the id range (-5, 2**40); a NUL in a name
        pass
    raise _Expected("an existing %s name or %sid (no %s %r on this system)" % (what, what[0], what, value))


def _user(value: Any) -> int:
    import pwd

    return _account(value, lambda name: pwd.getpwnam(name).pw_uid, lambda uid: pwd.getpwuid(uid).pw_uid, "user")


def _group(value: Any) -> int:
    import grp

    return _account(value, lambda name: grp.getgrnam(name).gr_gid, lambda gid: grp.getgrgid(gid).gr_gid, "group")


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise _Expected("one of %s" % ", ".join(LOG_LEVELS))
    return value.lower()


def _protocol(value: Any) -> str:
    if value not in ("auto", "wsgi", "asgi"):
        raise _Expected("'auto', 'wsgi' or 'asgi'")
    return str(value)


def _bind(value: Any) -> list[str]:
    binds = _texts(value)
    for text in binds:
        try:
            Bind.parse(text)
        except ValueError as exc:
            raise _Wrong(str(exc)) from None
    return binds


def _file_binds(base: str) -> Callable[[Any], list[str]]:
    """A file's binds: a relative ``unix:PATH`` is relative to the file's directory (``@NAME`` is no file)."""
    def convert(value: Any) -> list[str]:
        binds = []
        for text in _bind(value):
            bind = Bind.parse(text)
            is_file = bind.kind == "unix" and not bind.path.startswith("@")
            binds.append("unix:" + _path(base)(bind.path) if is_file else text)
        return binds
    return convert


def _server_name(value: Any) -> str:
    name = _text(value)
    try:
        protocols_of(name)
    except ValueError as exc:  # an unknown name (a missing package is reported when it starts)
        raise _Wrong(str(exc)) from None
    return name


def _plugin_path(value: Any) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise _Expected("a dotted path such as \"pkg.module:PluginClass\"")
    return value


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


def _path(base: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value == "-":
            return "-"
        return os.path.normpath(os.path.join(base, os.path.expanduser(_text(value))))
    return convert


def _paste(base: str) -> Callable[[Any], str]:
    """FILE.ini[#name]: the file relative to ``base``; the name after '#' is Paste Deploy's business."""
    def convert(value: Any) -> str:
        path, sep, name = _text(value).partition("#")
        return _path(base)(path) + sep + name
    return convert


def _paths(base: str) -> Callable[[Any], list[str]]:
    return lambda value: [_path(base)(v) for v in _texts(value)]


def _site_fields(base: str) -> Fields:
    """[site] key -> (SiteConfig attribute, converter)."""
    return {
        "graceful_timeout": ("graceful_timeout", _seconds),
        "chdir": ("chdir", _path(base)),
        "pythonpath": ("pythonpath", _paths(base)),
        "import": ("imports", _texts),
        "user": ("user", _user),
        "group": ("group", _group),
        "umask": ("umask", _umask),
        "daemon": ("daemon", _flag),
        "pidfile": ("pidfile", _path(base)),
        "reload": ("reload", _flag),
        "log_file": ("log_file", _path(base)),
        "access_log": ("access_log", _path(base)),
        "log_level": ("log_level", _log_level),
        "paste": ("paste", _paste(base)),
        "workers": ("workers", _positive_int),
        "start_timeout": ("start_timeout", _positive_seconds),
        "worker_timeout": ("worker_timeout", _positive_seconds),
        "max_requests": ("max_requests", _positive_int),
        "max_requests_jitter": ("max_requests_jitter", _whole_number),
        "max_worker_memory": ("max_worker_memory", _positive_int),
    }


SERVER_FIELDS: Fields = {"bind": ("binds", _bind), "server": ("server", _server_name), "threads": ("threads", _positive_int),
                         "max_request_line": ("max_request_line", _positive_int),
                         "max_header_field": ("max_header_field", _positive_int),
                         "max_headers": ("max_headers", _positive_int), "head_timeout": ("head_timeout", _timeout)}
APP_FIELDS: Fields = {"target": ("target", _text), "mount": ("mount", _text), "protocol": ("protocol", _protocol)}
TOP_LEVEL = ("site", "server", "app", "plugins", "plugin")


def convert(where: str, key: str, converter: Callable[[Any], Any], value: Any) -> Any:
    """Run ``converter``; turn its complaint into a ConfigError naming ``where`` and ``key``."""
    try:
        return converter(value)
    except _Expected as exc:
        raise ConfigError("%s%s: expected %s, got %s" % (where, key, exc, _show(value))) from None
    except _Wrong as exc:
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
        _fill(server, table, {**SERVER_FIELDS, "bind": ("binds", _file_binds(base))},
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
        path = convert(where + " ", "path", _plugin_path, options.pop("path"))
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
    seconds = convert("", "--drain-delay", _seconds, delay)
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
        binds=convert("", "--bind", _bind, binds) if binds else base.binds,
        server=convert("", "--server", _server_name, server) if server else base.server,
        threads=convert("", "--threads", _positive_int, threads) if threads is not None else base.threads,
    )
    config.servers = [merged]


def command_line_apps(specs: list[str], protocol: str | None, config: SiteConfig) -> None:
    """APP arguments replace the file's [[app]] tables; --protocol forces theirs (or the file's)."""
    if specs:
        config.apps = [AppConfig(target=spec) for spec in specs]
    if protocol is not None:
        for app in config.apps:
            app.protocol = protocol
