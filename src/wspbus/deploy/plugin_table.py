"""Which plugins a site's bus gets, built from its configuration: the table of built-in plugins,
the [plugins.NAME] tables checked against each plugin's signature, third-party [[plugin]] entries.

``build_plugins()`` decides the set in one place, for a single process (launch.deploy) and for a
supervisor's own bus (supervisor/supervise.py), which asks only for the plugins that concern it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._core.bus import Bus
from .config import ConfigError, PluginConfig, SiteConfig
from .paste import watched_files
from .site import SiteError, import_module

__all__ = ["BUILTIN_PLUGINS", "DEFAULT_ON_PLUGINS", "OPT_IN_PLUGINS", "SWITCHABLE_PLUGINS", "build_plugins",
           "check_plugin_tables"]

#: [plugins.NAME] -> the class, as "module:Class" under the wspbus package.
BUILTIN_PLUGINS = {
    "signals": "plugins.signals:SignalHandler", "logs": "plugins.logs:LogRouter",
    "daemon": "plugins.daemon:Daemonizer", "pidfile": "plugins.pidfile:PIDFile",
    "privileges": "plugins.privileges:DropPrivileges", "reload": "plugins.reload:Autoreloader",
    "threads": "plugins.threads:ThreadManager", "systemd": "plugins.systemd:SystemdNotifier",
    "drain": "plugins.drain:Drainer", "health": "plugins.health:Health", "reaper": "plugins.reaper:ChildReaper",
}
#: The plugins' arguments the site fills in (from [site] or its own objects): not settings of a table.
SITE_FILLED = {"logs": ("error_log", "access_log", "level"), "pidfile": ("pidfile",),
               "privileges": ("uid", "gid", "umask"), "drain": ("signal_handler",), "systemd": ("binds",)}
#: Plugins that are on when their [plugins.NAME] table is present (``enabled = false`` turns one off).
OPT_IN_PLUGINS = ("threads", "systemd", "drain", "health")
#: Plugins on in a process of the site's own unless ``enabled = false``: the reaper does nothing
#: unless the site is PID 1 (a container); systemd notification only when systemd asks for it.
DEFAULT_ON_PLUGINS: dict[str, Callable[[], bool]] = {"reaper": lambda: True, "systemd": lambda: bool(os.environ.get("NOTIFY_SOCKET"))}
#: Plugins an ``enabled`` setting of their table turns on or off.
SWITCHABLE_PLUGINS = (*OPT_IN_PLUGINS, *DEFAULT_ON_PLUGINS)


def _plugin_class(name: str, where: str) -> Callable[..., Any]:
    if name not in BUILTIN_PLUGINS:
        raise ConfigError("%s: unknown plugin %r (expected one of: %s; a third-party plugin goes in "
                          "[[plugin]] with path = \"pkg.module:Class\")" % (where, name, ", ".join(BUILTIN_PLUGINS)))
    module_name, _, attribute = BUILTIN_PLUGINS[name].partition(":")
    plugin_class: Callable[..., Any] = getattr(importlib.import_module("wspbus." + module_name), attribute)
    return plugin_class


def _import_class(plugin: PluginConfig) -> Callable[..., Any]:
    if plugin.path is None:
        raise ConfigError("%s path: missing (expected \"pkg.module:Class\")" % plugin.where)
    module_name, _, attribute = plugin.path.partition(":")
    try:
        module = import_module(module_name)
    except SiteError as exc:
        raise ConfigError("%s path: %s" % (plugin.where, exc)) from None
    try:
        plugin_class: Callable[..., Any] = getattr(module, attribute)
    except AttributeError:
        raise ConfigError("%s path: module %r has no attribute %r" % (plugin.where, module_name, attribute)) from None
    return plugin_class


def check_settings(factory: Callable[..., Any], where: str, options: Mapping[str, Any],
                   filled: Iterable[str] = (), extra: Iterable[str] = ()) -> None:
    """ConfigError naming the first key of ``options`` that ``factory(bus, ...)`` does not take as
    a setting: not in its signature, or filled in by the site (``filled``); ``extra`` keys are ours."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    settable = [*extra, *(name for name in accepted if name not in filled)]
    for key in options:
        if key not in settable:
            raise ConfigError("%s %s: unknown setting (expected one of: %s)"
                              % (where, key, ", ".join(settable) or "no settings"))


def construct(factory: Callable[..., Any], bus: Bus, where: str, options: dict[str, Any], **filled: Any) -> Any:
    """``factory(bus, **filled, **options)``, checking ``options`` against its signature first."""
    check_settings(factory, where, options, filled)
    try:
        return factory(bus, **filled, **options)
    except (TypeError, ValueError, OSError, KeyError) as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None


def check_plugin_tables(config: SiteConfig) -> dict[str, bool]:
    """Check every [plugins.NAME] table, whether its plugin is on or not (ConfigError for a typo);
    name -> whether the table leaves its plugin on (``enabled``)."""
    enabled: dict[str, bool] = {}
    for name, table in config.plugins.items():
        check_settings(_plugin_class(name, table.where), table.where, table.options, SITE_FILLED.get(name, ()),
                       ("enabled",) if name in SWITCHABLE_PLUGINS else ())
        value = table.options.get("enabled", True) if name in SWITCHABLE_PLUGINS else True
        if not isinstance(value, bool):
            raise ConfigError("%s enabled: expected true or false, got %r" % (table.where, value))
        enabled[name] = value
    return enabled


def _wanted_plugins(config: SiteConfig, own_process: bool) -> dict[str, dict[str, Any]]:
    """Built-in plugin name -> the arguments the site fills in, in construction order."""
    wanted: dict[str, dict[str, Any]] = {}
    if own_process:
        wanted["signals"] = {}
        wanted["logs"] = {"error_log": config.log_file or "-", "access_log": config.access_log,
                          "level": logging.getLevelName(config.log_level.upper())}
    if config.daemon:
        wanted["daemon"] = {}
    if config.pidfile:
        wanted["pidfile"] = {"pidfile": config.pidfile}
    if config.user is not None or config.group is not None or config.umask is not None:
        wanted["privileges"] = {"uid": config.user, "gid": config.group, "umask": config.umask}
    if config.reload:
        wanted["reload"] = {}
    for name, enabled in check_plugin_tables(config).items():
        if name in SWITCHABLE_PLUGINS and enabled and (own_process or name not in ("drain", "reaper")):
            wanted[name] = {}
    if own_process:
        for name, wanted_by_default in DEFAULT_ON_PLUGINS.items():
            if name not in config.plugins and wanted_by_default():
                wanted[name] = {}
    return wanted


def build_plugins(bus: Bus, config: SiteConfig, *, own_process: bool = True,
                  binds: Callable[[], list[str]] | None = None) -> dict[str, Any]:
    """Every plugin the configuration asks for, constructed (not subscribed): name -> plugin.

    ``own_process`` False (a site inside a test process): no signal handling, no log routing.
    Third-party [[plugin]] entries are keyed by their ``where`` text.
    """
    built: dict[str, Any] = {}
    for name, filled in _wanted_plugins(config, own_process).items():
        if name == "drain":
            filled = {"signal_handler": built.get("signals")}
        elif name == "systemd":
            filled = {"binds": binds}
        table = config.plugins.get(name) or PluginConfig(name, "%s: [plugins.%s]" % (config.source, name))
        options = {k: v for k, v in table.options.items() if k != "enabled"}
        built[name] = construct(_plugin_class(name, table.where), bus, table.where, options, **filled)
    for extra in config.extra_plugins:
        built[extra.where] = construct(_import_class(extra), bus, extra.where, extra.options)
    if "reload" in built:
        built["reload"].files.update(watched_files(config))
    return built
