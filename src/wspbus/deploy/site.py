"""A site: apps, WSGI or ASGI, mounted under path prefixes and served as one app.

An app is named as ``module:attribute`` (``module:factory()`` calls a factory, literal arguments
allowed), optionally mounted with ``/prefix=module:attribute``. Its protocol is detected from
the callable (an ``async`` callable, or one taking ``(scope, receive, send)``, is ASGI) and can be
forced. The site picks the server side: WSGI when every app is WSGI, ASGI as soon as one app is
ASGI (async apps keep lifespan, websockets and their event loop; WSGI apps run on a thread pool).
Apps on the other side of the protocol boundary are adapted by servers/bridge.py.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..servers.bridge import AsgiAsWsgi, WsgiAsAsgi
from ..servers.protocols import PROTOCOLS
from ..servers.reporting import one_line
from . import dispatch
from .mounts import Mount, SiteError, mount_app, name_of, normalize_prefix

__all__ = ["AppSpec", "Mount", "Site", "SiteError", "load_app", "mount_app", "parse_app_spec"]

DEFAULT_ATTRIBUTES = ("application", "app")
#: Frames in files under it are wspbus's own, never the place a deployer's mistake is.
PACKAGE_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

#: (args, kwargs) of a factory call.
Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class AppSpec:
    """A parsed ``[/prefix=]module[:attribute[(args)]]``, with the protocol it was declared with."""

    prefix: str
    module: str
    attribute: str | None
    call: Call | None  # when the target is a factory call
    protocol: str | None = None  # None or 'auto': detected from the app

    @property
    def target(self) -> str:
        """The target as the deployer wrote it, without the prefix."""
        text = self.module + (":" + self.attribute if self.attribute else "")
        if self.call is not None:
            args, kwargs = self.call
            text += "(%s)" % ", ".join([*map(repr, args), *("%s=%r" % kv for kv in kwargs.items())])
        return text


def parse_app_spec(text: str, prefix: str | None = None, protocol: str | None = None) -> AppSpec:
    """Parse ``[/prefix=]module[:attr[.attr][(literal args)]]``; SiteError when malformed."""
    spec = text.strip()
    if prefix is None and spec.startswith("/"):
        prefix, sep, spec = spec.partition("=")
        if not sep:
            raise SiteError("app %r: expected '/prefix=module:callable'" % text)
    module, _, attribute = spec.partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise SiteError("app %r: expected 'module:callable' with a dotted module name" % text)
    call = None
    if attribute.endswith(")"):
        attribute, call = _parse_call(text, attribute)
    if attribute and not all(part.isidentifier() for part in attribute.split(".")):
        raise SiteError("app %r: %r is not a dotted attribute name" % (text, attribute))
    return AppSpec(normalize_prefix(prefix or ""), module, attribute or None, call, protocol)


def _parse_call(text: str, expression: str) -> tuple[str, Call]:
    try:
        node = ast.parse(expression, mode="eval").body
        if not isinstance(node, ast.Call):
            raise ValueError
        name = ast.unparse(node.func)
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        if len(kwargs) != len(node.keywords):
            raise ValueError
    except (SyntaxError, ValueError):
        raise SiteError("app %r: a factory call takes literal arguments only, as in 'module:create_app(\"prod\")'"
                        % text) from None
    return name, (args, kwargs)


def load_app(spec: AppSpec) -> Callable[..., Any]:
    """Import the module and return the callable the spec names (calling a factory)."""
    module = _import(spec)
    names = [spec.attribute] if spec.attribute else list(DEFAULT_ATTRIBUTES)
    for name in names:
        try:
            obj = functools.reduce(getattr, name.split("."), module)
        except AttributeError:
            continue
        break
    else:
        wanted = " or ".join(repr(n) for n in names)
        raise SiteError("app %r: module %r has no attribute %s" % (spec.target, spec.module, wanted))
    if spec.call is not None:
        obj = _call_factory(spec, spec.call, obj)
    if not callable(obj):
        raise SiteError("app %r is not callable (it is %s)" % (spec.target, type(obj).__name__))
    return obj


def _import(spec: AppSpec) -> ModuleType:
    try:
        return import_module(spec.module)
    except SiteError as exc:
        raise SiteError("app %r: %s" % (spec.target, exc)) from None


def import_module(name: str) -> ModuleType:
    """importlib.import_module, failing with a one-line SiteError that says why."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise SiteError("no module named %r (check --pythonpath / --chdir)" % exc.name) from None
        raise SiteError("importing %r failed: %s" % (name, one_line_at(exc))) from None
    except Exception as exc:
        raise SiteError("importing %r failed: %s" % (name, one_line_at(exc))) from None


def _call_factory(spec: AppSpec, call: Call, factory: Any) -> Any:
    if not callable(factory):
        raise SiteError("app %r: %r is not a callable factory" % (spec.target, spec.attribute))
    args, kwargs = call
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        raise SiteError("app %r: the factory failed: %s" % (spec.target, one_line_at(exc, factory))) from None


def one_line_at(exc: BaseException, culprit: object = None) -> str:
    """``Type: message (at file:line)`` for an exception raised by the deployer's code.

    The place is the last frame outside wspbus; when every frame is ours (the call itself was
    refused, e.g. a factory called without the arguments it needs), where ``culprit`` is defined.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return "%s: %s (at %s:%s)" % (type(exc).__name__, exc.msg, exc.filename, exc.lineno)
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith(("<frozen", PACKAGE_DIRECTORY))]
    place = "%s:%s" % (frames[-1].filename, frames[-1].lineno) if frames else defined_at(culprit)
    return "%s (at %s)" % (one_line(exc), place) if place else one_line(exc)


def defined_at(obj: object) -> str | None:
    """``file:line`` where a function or class is defined, if Python knows."""
    if obj is None:
        return None
    try:
        return "%s:%d" % (inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1])  # type: ignore[arg-type]
    except (OSError, TypeError):  # a builtin, or code without a source file
        return None


class Site:
    """Apps mounted under distinct prefixes; longest prefix wins."""

    def __init__(self, mounts: Iterable[Mount]) -> None:
        self.mounts: list[Mount] = sorted(mounts, key=lambda m: len(m.prefix), reverse=True)
        if not self.mounts:
            raise SiteError("no app to serve: name at least one app ('module:callable')")
        seen: set[str] = set()
        for mount in self.mounts:
            if mount.protocol not in PROTOCOLS:
                raise SiteError("app %r: protocol %r, expected 'wsgi' or 'asgi'" % (mount.target, mount.protocol))
            if mount.prefix in seen:
                raise SiteError("two apps are mounted at %r" % mount.path)
            seen.add(mount.prefix)
        self._bridges: list[WsgiAsAsgi | AsgiAsWsgi] = []  # the protocol adapters app() made

    @classmethod
    def from_specs(cls, specs: Iterable[str | AppSpec], protocol: str | None = None) -> Site:
        """Load every app; ``protocol`` ('wsgi'/'asgi') forces it, else each spec's own, else detected.

        Every spec is parsed before any app is imported, so a malformed one is reported first.
        """
        parsed = [spec if isinstance(spec, AppSpec) else parse_app_spec(spec) for spec in specs]
        return cls([mount_app(spec.prefix, load_app(spec), protocol or spec.protocol, spec.target) for spec in parsed])

    @classmethod
    def from_apps(cls, apps: Callable[..., Any] | Mapping[str, Callable[..., Any]], protocol: str | None = None) -> Site:
        """A site of loaded apps: one app (at the root) or ``{prefix: app}``; ``protocol`` forces theirs."""
        mapping = apps if isinstance(apps, Mapping) else {"/": apps}
        return cls([mount_app(prefix, app, protocol) for prefix, app in mapping.items()])

    @property
    def protocol(self) -> str:
        """The protocol the site's server should speak: 'asgi' as soon as one app is ASGI."""
        return "asgi" if any(m.protocol == "asgi" for m in self.mounts) else "wsgi"

    def app(self, protocol: str | None = None, *, threads: int | None = None) -> Callable[..., Any]:
        """The whole site as one app speaking ``protocol`` (default: the site's own)."""
        protocol = protocol or self.protocol
        if protocol == "wsgi":
            return dispatch.wsgi_site(self.mounts, self._bridges)
        if protocol == "asgi":
            return dispatch.asgi_site(self.mounts, self._bridges, threads=threads)
        raise SiteError("protocol %r, expected 'wsgi' or 'asgi'" % protocol)

    def close(self) -> None:
        """Give back the threads of the adapters of apps served across the protocol boundary
        (an ASGI app's event loop, a WSGI app's thread pool). Call it once no server serves the
        site (a deployed site does it at 'stop'); the next request brings them back."""
        for bridge in self._bridges:
            bridge.close()

    def describe(self) -> list[str]:
        """One line per mount, shortest prefix first: '/api -> pkg.api:app (asgi)'."""
        return ["%s -> %s (%s)" % (m.path, m.target or name_of(m.app), m.protocol) for m in reversed(self.mounts)]


def add_pythonpath(entries: Iterable[str]) -> None:
    """Put ``entries`` first on sys.path, in order, once each."""
    for entry in reversed(list(entries)):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
