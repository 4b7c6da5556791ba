"""The site configuration as it crosses to a worker: what the worker runs, and in what form.

The supervisor has the whole SiteConfig; a worker gets a copy without the duties that must exist
once per site (daemon, PID file, systemd, draining, reaping: the supervisor's) and whose binds name
the listening sockets it inherits (``fd://N``), so the site's servers serve the sockets the
supervisor bound instead of binding their own.

``--user``/``--group``/``--umask`` are the workers' to apply: each worker imports the site with the
privileges it was started with and drops them at 'start' (priority 77, after its servers took
their sockets), exactly as a single process does. The supervisor keeps them, as gunicorn's and
nginx's master processes do, so that it can start workers from an interpreter and a site only
root may read; it runs no code of the site, and its control socket is its owner's alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from ..config import AppConfig, ConfigError, PluginConfig, ServerConfig, SiteConfig

__all__ = ["SUPERVISOR_PLUGINS", "from_dict", "server_configs", "to_dict", "worker_config"]

#: [plugins.NAME] tables the supervisor runs; a worker runs every other one.
SUPERVISOR_PLUGINS = ("drain", "reaper", "systemd")


def server_configs(config: SiteConfig) -> list[ServerConfig]:
    """The site's servers, the default one when none is configured (as deploy() builds them)."""
    return config.servers or [ServerConfig()]


def worker_config(config: SiteConfig, listener_fds: list[list[int]]) -> SiteConfig:
    """The worker's copy of ``config``; ``listener_fds[i][j]`` serves server i's bind j."""
    worker = copy.deepcopy(config)
    worker.servers = [dataclasses.replace(server, binds=["fd://%d" % fd for fd in fds])
                      for server, fds in zip(server_configs(config), listener_fds)]
    worker.daemon = False
    worker.pidfile = None
    for name in SUPERVISOR_PLUGINS:
        table = worker.plugins.get(name)
        if table is not None:
            table.options["enabled"] = False
    return worker


def to_dict(config: SiteConfig) -> dict[str, Any]:
    """``config`` as plain values; ConfigError if a plugin setting cannot cross (a TOML date, say)."""
    record = dataclasses.asdict(config)
    try:
        json.dumps(record)
    except (TypeError, ValueError) as exc:
        raise ConfigError("%s: with workers, plugin settings must be strings, numbers, booleans, lists "
                          "or tables (%s)" % (config.source, exc)) from None
    return record


def from_dict(record: dict[str, Any]) -> SiteConfig:
    """The SiteConfig ``to_dict()`` made."""
    fields = dict(record)
    fields["servers"] = [ServerConfig(**server) for server in fields.get("servers", [])]
    fields["apps"] = [AppConfig(**app) for app in fields.get("apps", [])]
    fields["plugins"] = {name: PluginConfig(**table) for name, table in fields.get("plugins", {}).items()}
    fields["extra_plugins"] = [PluginConfig(**table) for table in fields.get("extra_plugins", [])]
    return SiteConfig(**fields)
