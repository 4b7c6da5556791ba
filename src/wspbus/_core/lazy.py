"""Names a package exports without importing their modules until first use.

``import wspbus`` must cost next to nothing and pull in nothing beyond the stdlib, yet
``wspbus.quickstart``, ``wspbus.plugins.Daemonizer`` and ``wspbus.servers.HTTPServer`` should be
one attribute away. A package lists where each name lives and gets its module ``__getattr__``.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: import wspbus stays cheap
if TYPE_CHECKING:
    from typing import Any


def lazy_exports(package: dict[str, Any], homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` (its globals()); ``homes`` maps each name
    to the submodule, relative to the package, that defines it."""
    name_of_package = package["__name__"]

    def __getattr__(name: str) -> Any:
        import importlib  # on first use: importlib (and warnings) are not loaded by a bare interpreter

        home = homes.get(name)
        if home is None:
            raise AttributeError("module %r has no attribute %r" % (name_of_package, name))
        value = getattr(importlib.import_module("." + home, name_of_package), name)
        package[name] = value  # later lookups are plain module attributes
        return value

    def __dir__() -> list[str]:
        return sorted(set(package) | set(homes))

    return __getattr__, __dir__
