"""One app of a site: where it is mounted, what it is, which protocol it speaks.

Apart from site.py (loading apps) and dispatch.py (serving them as one app), which both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..servers.protocols import detect_protocol

__all__ = ["Mount", "SiteError", "mount_app", "name_of", "normalize_prefix"]


class SiteError(ValueError):
    """A mistake in how the site is described: the message is one line meant for the deployer."""


@dataclass(frozen=True)
class Mount:
    """One app of the site: where it is mounted, what it is, and which protocol it speaks."""

    prefix: str
    app: Callable[..., Any]
    protocol: str
    target: str = ""

    @property
    def path(self) -> str:
        return self.prefix or "/"


def normalize_prefix(prefix: str) -> str:
    """'' or '/' for the root, else '/a/b' (no trailing slash); SiteError when malformed."""
    if prefix in ("", "/"):
        return ""
    if not prefix.startswith("/"):
        raise SiteError("mount point %r must start with '/'" % prefix)
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise SiteError("mount point %r is not a clean path (no '//', '.' or '..')" % prefix)
    return prefix.rstrip("/")


def mount_app(prefix: str, app: Callable[..., Any], protocol: str | None = None, target: str = "") -> Mount:
    """A Mount for an already loaded app; detects the protocol unless one is given."""
    if protocol is None or protocol == "auto":
        protocol = detect_protocol(app)
    return Mount(normalize_prefix(prefix), app, protocol, target or name_of(app))


def name_of(app: Any) -> str:
    """``module:qualname`` of an app (of its class, for an instance)."""
    module = getattr(app, "__module__", None) or type(app).__module__
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return "%s:%s" % (module, name)
