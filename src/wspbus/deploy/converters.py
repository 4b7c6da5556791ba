"""The converters of the configuration's values: each checks one value and returns it as the
configuration holds it, or raises Expected("what was expected") or Wrong("the whole complaint").

config.py says which key each converter reads and turns the complaint into a ConfigError naming
the file and the key; a converter knows nothing of where its value came from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from ..servers.protocols import protocols_of
from ..servers.sockets.binds import Bind

__all__ = ["Expected", "Wrong", "bind", "file_binds", "flag", "group", "log_level", "paste", "path", "paths",
           "plugin_path", "positive_int", "positive_seconds", "protocol", "seconds", "server_name", "text", "texts",
           "timeout", "umask", "user", "whole_number"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Expected(ValueError):
    """Raised by a converter: the argument says what was expected."""


class Wrong(ValueError):
    """Raised by a converter: the argument is the whole complaint."""


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Expected("a non-empty string")
    return value


def texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise Expected("a string or a list of strings")
    return list(value)


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Expected("true or false")
    return value


def seconds(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Expected("a number of seconds (inf for no limit)") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise Expected("a number of seconds (inf for no limit)")
    return None if math.isinf(value) else float(value)


def timeout(value: Any) -> float:
    number = seconds(value) if not isinstance(value, str) or value != "inf" else None
    if not number:
        raise Expected("a number of seconds above 0")
    return number


def positive_int(value: Any) -> int:
    return whole_number(value, least=1)


def whole_number(value: Any, least: int = 0) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise Expected("a whole number of at least %d" % least)
    return value


def positive_seconds(value: Any) -> float | None:
    """A bound that cannot be 0 (a worker's timeouts): seconds above 0, or inf for none."""
    try:
        number = seconds(value)
    except Expected:
        number = 0.0
    if number is not None and not number > 0:
        raise Expected("a number of seconds above 0 (inf for no limit)")
    return number


def umask(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.removeprefix("0o"), 8)
        except ValueError:
            raise Expected("an octal mask such as 0o022 or \"027\"") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
        raise Expected("an octal mask such as 0o022 or \"027\"")
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
    raise Expected("an existing %s name or %sid (no %s %r on this system)" % (what, what[0], what, value))


def user(value: Any) -> int:
    import pwd

    return _account(value, lambda name: pwd.getpwnam(name).pw_uid, lambda uid: pwd.getpwuid(uid).pw_uid, "user")


def group(value: Any) -> int:
    import grp

    return _account(value, lambda name: grp.getgrnam(name).gr_gid, lambda gid: grp.getgrgid(gid).gr_gid, "group")


def log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise Expected("one of %s" % ", ".join(LOG_LEVELS))
    return value.lower()


def protocol(value: Any) -> str:
    if value not in ("auto", "wsgi", "asgi"):
        raise Expected("'auto', 'wsgi' or 'asgi'")
    return str(value)


def bind(value: Any) -> list[str]:
    binds = texts(value)
    for entry in binds:
        try:
            Bind.parse(entry)
        except ValueError as exc:
            raise Wrong(str(exc)) from None
    return binds


def file_binds(base: str) -> Callable[[Any], list[str]]:
    """A file's binds: a relative ``unix:PATH`` is relative to the file's directory (``@NAME`` is no file)."""
    def convert(value: Any) -> list[str]:
        binds = []
        for entry in bind(value):
            parsed = Bind.parse(entry)
            is_file = parsed.kind == "unix" and not parsed.path.startswith("@")
            binds.append("unix:" + path(base)(parsed.path) if is_file else entry)
        return binds
    return convert


def server_name(value: Any) -> str:
    name = text(value)
    try:
        protocols_of(name)
    except ValueError as exc:  # an unknown name (a missing package is reported when it starts)
        raise Wrong(str(exc)) from None
    return name


def plugin_path(value: Any) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise Expected("a dotted path such as \"pkg.module:PluginClass\"")
    return value


def path(base: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value == "-":
            return "-"
        return os.path.normpath(os.path.join(base, os.path.expanduser(text(value))))
    return convert


def paste(base: str) -> Callable[[Any], str]:
    """FILE.ini[#name]: the file relative to ``base``; the name after '#' is Paste Deploy's business."""
    def convert(value: Any) -> str:
        file, sep, name = text(value).partition("#")
        return path(base)(file) + sep + name
    return convert


def paths(base: str) -> Callable[[Any], list[str]]:
    return lambda value: [path(base)(v) for v in texts(value)]
