"""The layers, proven from the source: every import of every wspbus module, read with ``ast``.

Modeled on trio's export tests: the rules of docs/design.md are checked on the code itself, so
an import that breaks them fails here, naming the file, the line and the rule.

* No import cycles, lazy (function-level) ones included.
* The core imports only the stdlib and itself.
* Each layer imports only from the layers before it:
  _core < _process < aio < plugins < servers < deploy < testing. The public front
  (``wspbus/__init__.py``, ``__main__.py``) may import any layer; importing the front counts
  as importing what the front imports at its top level (the core and the process's bus).
* The core, the process layer and the plugins import only the stdlib and wspbus.
* ``import wspbus`` loads nothing outside _core and _process.

Every import statement counts, wherever it is: at the top, inside a function, under
``if TYPE_CHECKING``. Relative imports are resolved; ``from package import name`` counts as
importing the submodule ``name`` when there is one, else the package (its ``__init__.py``).
A lazy map (``lazy_exports``) is not an import of its package: the name's user imports it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import wspbus

PACKAGE = Path(wspbus.__file__).parent
LAYERS = ("_core", "_process", "aio", "plugins", "servers", "deploy", "testing")
FRONT = ("wspbus", "wspbus.__main__")
STDLIB_ONLY = ("_core", "_process", "plugins")


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    target: str  # absolute module name (a wspbus module if it is one, else as written)
    where: str  # file:line
    lazy: bool  # inside a function
    optional: bool = False  # in a try whose ImportError is handled: the module works without it

    def __str__(self) -> str:
        return "%s imports %s%s" % (self.where, self.target, " (in a function)" if self.lazy else "")


def module_name(path: Path) -> str:
    parts = ["wspbus", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, filename: str, modules: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.filename = filename
        self.modules = modules
        self.depth = 0  # functions around the node
        self.optional = 0  # try blocks around the node that handle an ImportError
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Try(self, node: ast.Try) -> None:
        handles = any(_names_import_error(handler.type) for handler in node.handlers)
        self.optional += handles
        for statement in node.body:
            self.visit(statement)
        self.optional -= handles
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = ".".join(parts[:len(parts) - (node.level - 1)])
            base = anchor + ("." + node.module if node.module else "")
        for alias in node.names:
            submodule = base + "." + alias.name
            self._add(submodule if submodule in self.modules else base, node)

    def _add(self, target: str, node: ast.stmt) -> None:
        where = "%s:%d" % (self.filename, node.lineno)
        self.found.append(Import(self.module, target, where, self.depth > 0, self.optional > 0))


def _names_import_error(caught: ast.expr | None) -> bool:
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError") for name in names)


def collect_imports(files: dict[str, Path]) -> list[Import]:
    modules = set(files)
    found: list[Import] = []
    for module, path in files.items():
        collector = _ImportCollector(module, path.name == "__init__.py", str(path.relative_to(PACKAGE.parent)),
                                     modules)
        collector.visit(ast.parse(path.read_text(), str(path)))
        found.extend(collector.found)
    return found


def is_wspbus(target: str) -> bool:
    return target == "wspbus" or target.startswith("wspbus.")


def is_stdlib(target: str) -> bool:
    return target.partition(".")[0] in sys.stdlib_module_names


def layer_of(module: str) -> str:
    if module in FRONT:
        return "front"
    part = module.split(".")[1]
    return part if part in LAYERS else "no layer"


FILES = source_files()
MODULES = set(FILES)
IMPORTS = collect_imports(FILES)


# -- (a) no cycles ---------------------------------------------------------------------------

def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle through each strongly connected group of modules (Tarjan), as its imports."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if is_wspbus(imp.target) and imp.target in MODULES:
            edges.setdefault(imp.importer, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, {}):
                groups.append(group)

    for node in sorted(MODULES):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(group)[0], group, edges) for group in groups]


def _cycle_in(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest way from ``start`` back to itself inside ``group`` (breadth first)."""
    paths: list[list[Import]] = [[imp] for nxt, imp in sorted(edges[start].items()) if nxt in group]
    seen: set[str] = set()
    while paths:
        path = paths.pop(0)
        last = path[-1].target
        if last == start:
            return path
        if last in seen:
            continue
        seen.add(last)
        paths.extend(path + [imp] for nxt, imp in sorted(edges[last].items()) if nxt in group)
    raise AssertionError("no cycle through %s" % start)


def test_there_are_no_import_cycles():
    cycles = import_cycles(IMPORTS)
    if cycles:
        pytest.fail("%d import cycle(s):\n%s" % (len(cycles), "\n".join(
            "  " + " -> ".join([path[0].importer] + [imp.target for imp in path]) + "\n"
            + "".join("      %s\n" % imp for imp in path) for path in cycles)), pytrace=False)


def test_the_cycle_finder_finds_a_lazy_cycle_and_names_its_path():
    """The test above must not pass for want of looking."""
    made_up = [Import("wspbus._core.bus", "wspbus._core.states", "bus.py:1", False),
               Import("wspbus._core.states", "wspbus._core.waking", "states.py:2", False),
               Import("wspbus._core.waking", "wspbus._core.bus", "waking.py:3", True)]
    cycles = import_cycles(made_up)
    assert [[imp.where for imp in path] for path in cycles] == [["bus.py:1", "states.py:2", "waking.py:3"]]


# -- (b), (c), (d) the layers ----------------------------------------------------------------

def check(rule: Callable[[Import], bool], what: str) -> None:
    broken = [imp for imp in IMPORTS if not rule(imp)]
    if broken:
        pytest.fail("%s:\n%s" % (what, "\n".join("  %s" % imp for imp in broken)), pytrace=False)


def test_the_core_imports_only_the_stdlib_and_itself():
    def allowed(imp: Import) -> bool:
        if layer_of(imp.importer) != "_core":
            return True
        return imp.target.startswith("wspbus._core.") or imp.target == "wspbus._core" or (
            not is_wspbus(imp.target) and is_stdlib(imp.target))

    check(allowed, "_core may import only the stdlib and wspbus._core")


def _front_layers() -> dict[str, int]:
    """What importing a front module amounts to: the last layer it imports at its top level."""
    reach = {}
    for front in FRONT:
        eager = [LAYERS.index(layer_of(imp.target)) for imp in IMPORTS
                 if imp.importer == front and not imp.lazy and is_wspbus(imp.target) and imp.target not in FRONT]
        reach[front] = max(eager, default=0)
    return reach


def test_each_layer_imports_only_from_the_layers_before_it():
    front_reach = _front_layers()

    def allowed(imp: Import) -> bool:
        layer = layer_of(imp.importer)
        if layer == "front" or not is_wspbus(imp.target):
            return True
        target = layer_of(imp.target)
        if target == "no layer" or layer == "no layer":
            return False
        reach = front_reach[imp.target] if target == "front" else LAYERS.index(target)
        return reach <= LAYERS.index(layer)

    check(allowed, "each layer may import only from those before it (%s)" % " < ".join(LAYERS))


def test_every_module_is_in_a_layer():
    assert [m for m in sorted(MODULES) if layer_of(m) == "no layer"] == []


def test_core_process_and_plugins_import_only_the_stdlib_and_wspbus():
    """An optional extra (imported in a try that handles its ImportError) is allowed outside
    the core: the plugin works without it (the Autoreloader's watchfiles backend)."""
    def allowed(imp: Import) -> bool:
        layer = layer_of(imp.importer)
        return (layer not in STDLIB_ONLY or is_wspbus(imp.target) or is_stdlib(imp.target)
                or (imp.optional and layer != "_core"))

    check(allowed, "%s may import only the stdlib and wspbus" % ", ".join(STDLIB_ONLY))


SAMPLE = """
from __future__ import annotations
from typing import TYPE_CHECKING
from . import states
from .errors import ChannelFailures
from .. import _process
if TYPE_CHECKING:
    import asyncio
try:
    from watchfiles import watch
except (OSError, ImportError):
    import glob
class Late:
    async def run(self):
        from .coroutines import CoroutineListener
        import wspbus.plugins.base
"""


def test_the_imports_are_found_wherever_they_are():
    """Relative, lazy, TYPE_CHECKING and optional imports are all seen, and resolved."""
    modules = {"wspbus._core.states", "wspbus._core.errors", "wspbus._core.coroutines", "wspbus._process",
               "wspbus.plugins.base"}
    collector = _ImportCollector("wspbus._core.bus", False, "bus.py", modules)
    collector.visit(ast.parse(SAMPLE))
    assert [(imp.target, imp.lazy, imp.optional) for imp in collector.found] == [
        ("__future__", False, False),
        ("typing", False, False),
        ("wspbus._core.states", False, False),  # a submodule: that module, not the package
        ("wspbus._core.errors", False, False),
        ("wspbus._process", False, False),  # a package: its __init__
        ("asyncio", False, False),
        ("watchfiles", False, True),
        ("glob", False, False),  # in the handler: not optional
        ("wspbus._core.coroutines", True, False),
        ("wspbus.plugins.base", True, False),
    ]


# -- import wspbus stays cheap ---------------------------------------------------------------

def test_import_wspbus_loads_only_the_core_and_the_process_bus():
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import wspbus"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = [line.rpartition("|")[2].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:") and "|" in line]
    ours = [name for name in imported if is_wspbus(name)]
    assert "wspbus" in ours
    outside = [name for name in ours if name != "wspbus"
               and not name.startswith(("wspbus._core", "wspbus._process"))]
    assert outside == [], "import wspbus loaded %s" % outside
    assert "asyncio" not in imported  # a coroutine listener's business, imported when one is subscribed


def test_import_wspbus_does_not_load_typing_or_re():
    """typing and re cost ~6 ms of a ~10 ms import when a site hook has not loaded them already
    (benchmarks/bench_import.py): the core imports them only for the type checker, or where used."""
    script = "import sys; import wspbus; print(' '.join(m for m in ('typing', 're') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
