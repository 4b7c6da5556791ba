"""Serve a Paste Deploy site: ``wspbus serve --paste FILE.ini[#name]`` (gunicorn's option, pserve's meaning).

The ini file is read by Paste Deploy itself, through plaster (what ``pserve`` uses): apps, filters,
pipelines and composites, ``%(here)s``, ``[DEFAULT]`` and ``#name`` mean what Paste Deploy says.
What wspbus takes from the file, as ``pserve`` does:

* the app named ``name`` (default ``main``), served at the root as one WSGI app;
* the logging sections, applied with ``logging.config.fileConfig`` (``here`` and ``__file__``
  defined) before the app is loaded, when the file has a ``[loggers]`` section;
* ``[server:main]``'s address (``host``/``port``, or waitress's ``listen`` and ``unix_socket``),
  its server when wspbus has an adapter for it (waitress), and waitress's ``threads``, unless the
  site names its own servers (``--bind``, ``--server``, ``--threads`` or ``[[server]]``).

Whoever builds the site reads the file: the serving process itself, or each worker of a
supervised site, never a process that does not serve. PasteDeploy and plaster are the ``paste``
extra; they are imported only when a site names an ini file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..servers.reporting import one_line
from . import converters
from .config import ConfigError, ServerConfig, SiteConfig, convert
from .mounts import mount_app
from .site import Site, one_line_at

__all__ = ["load_site", "prepare", "watched_files"]

#: Paste Deploy's name for the app when ``#name`` is not given.
DEFAULT_NAME = "main"
#: The server section pserve reads (``--server-name`` defaults to 'main' there too).
SERVER_SECTION = "server:main"
#: A server named in ``use = egg:DIST#...`` -> wspbus's adapter for it.
SERVERS = {"waitress": "waitress"}


class PasteFile:
    """An ini file and the name of the app in it, as ``--paste FILE.ini[#name]`` gives them."""

    def __init__(self, spec: str) -> None:
        path, _, name = spec.partition("#")
        self.path = os.path.abspath(path)
        self.name = name or DEFAULT_NAME

    def __str__(self) -> str:
        return "%s#%s" % (self.path, self.name)

    def loader(self) -> Any:
        """plaster's Paste Deploy loader for the file; ConfigError if it cannot be read as one."""
        if not os.path.isfile(self.path):
            raise ConfigError("%s: no such Paste Deploy file (expected FILE.ini[#name])" % self.path)
        try:
            import plaster  # type: ignore[import-untyped]  # plaster ships no types
        except ImportError:
            raise ConfigError("%s: serving a Paste Deploy file needs PasteDeploy and plaster-pastedeploy "
                              "(pip install 'wspbus[paste]')" % self.path) from None
        loader = plaster.get_loader("file+ini://%s#%s" % (self.path, self.name), protocols=["wsgi"])
        self.sections(loader)  # a file configparser cannot read fails here, with its line
        return loader

    def sections(self, loader: Any) -> list[str]:
        sections: list[str] = self._read(loader.get_sections)
        return sections

    def settings(self, loader: Any, section: str) -> dict[str, Any]:
        """A section's own settings, ``%(here)s`` and [DEFAULT] interpolated as Paste Deploy does."""
        return dict(self._read(lambda: loader.get_settings(section)))

    def _read(self, read: Callable[[], Any]) -> Any:
        """``read()``, its failure to read the file as an ini file turned into one ConfigError line."""
        import configparser

        try:
            return read()
        except configparser.Error as exc:
            mistake = _ini_mistake(exc).replace("Error in file %s: " % self.path, "")  # Paste Deploy's prefix
            raise ConfigError("%s: not a valid ini file: %s" % (self.path, mistake)) from None
        except UnicodeDecodeError as exc:
            raise ConfigError("%s: not a valid ini file: %s" % (self.path, exc)) from None
        except OSError as exc:
            raise ConfigError("%s: cannot read the file: %s" % (self.path, exc.strerror or exc)) from None


def _ini_mistake(exc: Exception) -> str:
    """configparser's complaint without the file name it repeats: the line, and what was expected."""
    errors = getattr(exc, "errors", None) or [(getattr(exc, "lineno", None), getattr(exc, "line", None))]
    lineno, line = errors[0]
    if lineno is None or line is None:
        return _one_line(getattr(exc, "message", exc))
    return "line %d: %r (expected [section] headers and 'key = value' lines)" % (lineno, str(line).strip())


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())


def paste_file(config: SiteConfig) -> PasteFile:
    assert config.paste is not None
    return PasteFile(config.paste)


def prepare(config: SiteConfig) -> None:
    """Before the command line's servers apply: no other apps; ``[server:main]`` unless the site has servers."""
    if config.paste is None:
        return
    if config.apps:
        raise ConfigError("%s: --paste serves the ini file's app; expected no APP arguments or [[app]] tables "
                          "besides it" % config.source)
    if not config.servers:
        server = server_section(paste_file(config))
        if server is not None:
            config.servers = [server]


def server_section(paste: PasteFile) -> ServerConfig | None:
    """The ``[server:main]`` section as a ServerConfig; None if the file has none (or no address in it)."""
    loader = paste.loader()
    if SERVER_SECTION not in paste.sections(loader):
        return None
    settings = paste.settings(loader, SERVER_SECTION)
    where = "%s: [%s] " % (paste.path, SERVER_SECTION)
    binds = _binds(settings)
    if not binds:
        return None
    server = ServerConfig(binds=convert(where, "listen" if "listen" in settings else "host/port",
                                        converters.bind, binds))
    dist = str(settings.get("use", "")).removeprefix("egg:").partition("#")[0].lower()
    server.server = SERVERS.get(dist, "auto")
    if server.server == "waitress" and "threads" in settings:
        server.threads = convert(where, "threads", converters.positive_int, settings["threads"])
    return server


def _binds(settings: dict[str, Any]) -> list[str]:
    """waitress's ``listen`` (``*`` is every address), or ``host``/``port``, and ``unix_socket``."""
    binds = []
    if settings.get("listen"):
        for address in str(settings["listen"]).split():
            host, _, port = address.rpartition(":")
            binds.append("%s:%s" % ("0.0.0.0" if host in ("*", "") else host, port))
    elif settings.get("host") or settings.get("port"):
        host = str(settings.get("host") or "0.0.0.0")  # waitress's defaults
        binds.append("%s:%s" % ("[%s]" % host if ":" in host and not host.startswith("[") else host,
                                settings.get("port") or 8080))
    if settings.get("unix_socket"):
        binds.append("unix:" + str(settings["unix_socket"]))
    return binds


def load_site(config: SiteConfig) -> Site:
    """Apply the file's logging sections, load its app with Paste Deploy: a Site of that one WSGI app."""
    paste = paste_file(config)
    loader = paste.loader()
    if "loggers" in paste.sections(loader):
        _setup_logging(paste, loader)
    app = _load_app(paste, loader)
    return Site([mount_app("/", app, "wsgi", str(paste))])


def _setup_logging(paste: PasteFile, loader: Any) -> None:
    """pserve's: fileConfig with ``here`` and ``__file__``, loggers that exist already kept."""
    try:
        loader.setup_logging()
    except Exception as exc:  # fileConfig evaluates the file's class and args: any error can come out
        raise ConfigError("%s: the logging sections do not configure logging: %s"
                          % (paste.path, one_line(exc))) from None  # where in logging.config says nothing


def _load_app(paste: PasteFile, loader: Any) -> Any:
    try:
        return loader.get_wsgi_app()
    except LookupError as exc:
        if "No section %r" % paste.name in str(exc):
            raise ConfigError("%s: no app named %r (expected a section [app:%s], [pipeline:%s], "
                              "[composite:%s] or [filter-app:%s])"
                              % (paste.path, paste.name, *[paste.name] * 4)) from None
        raise ConfigError("%s#%s: the app does not load: %s" % (paste.path, paste.name, _one_line(exc))) from None
    except Exception as exc:  # the deployer's factory, an import, a bad 'use': all reported alike
        raise ConfigError("%s#%s: the app does not load: %s" % (paste.path, paste.name, one_line_at(exc))) from None


def watched_files(config: SiteConfig) -> list[str]:
    """The files whose change should reload the site: the ini file itself."""
    return [] if config.paste is None else [paste_file(config).path]
