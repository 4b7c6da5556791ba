"""The import map a restart hands over: a head start that never serves stale code."""

from __future__ import annotations

import compileall
import os
import sys
import textwrap
import time

import pytest

# Three incarnations of one process. Between the first and the second, one package's module is
# edited in place (its directory is unchanged: the map holds for the whole package) and another
# package gains a subpackage that shadows one of its modules (its directory changed: nothing
# from it may come from the map).
PROGRAM = """
import importlib, importlib.util, os, sys, threading
import wspbus
from pathlib import Path

root = Path(sys.argv[1])
sys.path.insert(0, str(root))
incarnation = int(os.environ.get("INCARNATION", "0"))
names = ["edited.a", "edited.b", "edited.sub", "edited.sub.c", "shadowed.a", "shadowed.b", "late.m",
         "toplevel"]
modules = {name: importlib.import_module(name) for name in names}
for name, module in modules.items():
    assert module.__cached__ == importlib.util.cache_from_source(module.__file__), name
    print(incarnation, name, type(module.__loader__).__name__, module.VALUE, flush=True)
def target(fd):
    try:
        return os.readlink("/proc/self/fd/%s" % fd)
    except OSError:  # the listing's own descriptor, closed by now
        return ""
fds = [target(fd) for fd in os.listdir("/proc/self/fd")]
print(incarnation, "env", os.environ.get("PYTHONPATH"), os.environ.get("WSPBUS_IMPORT_MAP"),
      any("wspbus-import-map" in target for target in fds),
      any(entry.endswith("_restart_site") for entry in sys.path), flush=True)

bus = wspbus.Bus()
bus.start()
if incarnation == 0:
    (root / "edited" / "a.py").write_text("VALUE = 'a, edited'\\n")  # in place: same directory entry
    (root / "shadowed" / "b").mkdir()
    (root / "shadowed" / "b" / "__init__.py").write_text("VALUE = 'b, the package'\\n")
    os.utime(root / "shadowed", (0, 0))  # the map must not rely on the time alone
os.environ["INCARNATION"] = str(incarnation + 1)
threading.Thread(target=bus.restart if incarnation < 2 else bus.exit).start()
bus.block()
"""

# Run after the map is taken over and before the program: a change the map cannot know of.
USER_SITECUSTOMIZE = """
import os
print('user sitecustomize ran', flush=True)
if os.environ.get('INCARNATION') == '1':
    package = os.path.join(os.environ['TREE'], 'late', 'm')
    os.mkdir(package)
    with open(os.path.join(package, '__init__.py'), 'w') as init:
        init.write("VALUE = 'm, the package'")
"""


def make_tree(root):
    files = {
        "edited/__init__.py": "",
        "edited/a.py": "VALUE = 'a'\n",
        "edited/b.py": "VALUE = 'b'\n",
        "edited/sub/__init__.py": "VALUE = 'sub'\n",
        "edited/sub/c.py": "VALUE = 'c'\n",
        "shadowed/__init__.py": "",
        "shadowed/a.py": "VALUE = 'a'\n",
        "shadowed/b.py": "VALUE = 'b, the module'\n",
        "late/__init__.py": "",
        "late/m.py": "VALUE = 'm, the module'\n",
        "toplevel.py": "VALUE = 'top'\n",
        "program.py": textwrap.dedent(PROGRAM),
        "usersite/sitecustomize.py": USER_SITECUSTOMIZE,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    compileall.compile_dir(str(root), quiet=1)
    an_hour_ago = time.time() - 3600  # as a deployed tree: no directory that is changing now
    for directory, _, _ in os.walk(root):
        os.utime(directory, (an_hour_ago, an_hour_ago))


def run_three_incarnations(spawn, tmp_path, *flags, env=None):
    make_tree(tmp_path)
    child = spawn([sys.executable, *flags, str(tmp_path / "program.py"), str(tmp_path)],
                  env={"PYTHONPATH": str(tmp_path / "usersite"), "PYTHONDONTWRITEBYTECODE": "",
                       "TREE": str(tmp_path), **(env or {})})
    assert child.wait() == 0
    seen = {}
    for line in child.output().splitlines():
        if line[:1].isdigit():
            incarnation, name, rest = line.split(" ", 2)
            seen[int(incarnation), name] = rest
    return child, seen


def test_a_restart_imports_through_the_map_and_gets_fresh_code(spawn, tmp_path):
    child, seen = run_three_incarnations(spawn, tmp_path)
    for incarnation in (1, 2):  # the second restart maps what the first loaded through the map
        for name in ("edited.a", "edited.b", "edited.sub", "edited.sub.c"):
            assert seen[incarnation, name].startswith("HandedOverLoader "), (incarnation, name)
    assert seen[0, "edited.a"] == "SourceFileLoader a"
    assert seen[1, "edited.a"] == "HandedOverLoader a, edited"  # the source changed: recompiled
    assert seen[1, "edited.sub"] == "HandedOverLoader sub"


def test_a_module_shadowed_before_the_restart_is_searched_as_usual(spawn, tmp_path):
    child, seen = run_three_incarnations(spawn, tmp_path)
    assert seen[0, "shadowed.b"] == "SourceFileLoader b, the module"
    assert seen[1, "shadowed.b"] == "SourceFileLoader b, the package"  # the new package wins
    assert seen[1, "shadowed.a"] == "HandedOverLoader a"  # still the first file found


def test_a_directory_changed_after_the_restart_is_searched_as_usual(spawn, tmp_path):
    child, seen = run_three_incarnations(spawn, tmp_path)
    assert seen[0, "late.m"] == "SourceFileLoader m, the module"
    assert seen[1, "late.m"] == "SourceFileLoader m, the package"


def test_top_level_modules_are_never_mapped(spawn, tmp_path):
    child, seen = run_three_incarnations(spawn, tmp_path)
    for incarnation in (0, 1, 2):  # top-level modules depend on all of sys.path: never mapped
        assert seen[incarnation, "toplevel"] == "SourceFileLoader top"


def test_the_new_process_keeps_nothing_of_the_hand_over(spawn, tmp_path):
    child, seen = run_three_incarnations(spawn, tmp_path)
    usersite = str(tmp_path / "usersite")
    for incarnation in (0, 1, 2):
        # PYTHONPATH as the user set it, no variable, no descriptor, nothing on sys.path
        assert seen[incarnation, "env"] == "%s None False False" % usersite
    assert child.lines.count("user sitecustomize ran") == 3  # still run, in every incarnation


@pytest.mark.parametrize("flags, env", [(["-E"], {}), ([], {"WSPBUS_NO_IMPORT_MAP": "1"})],
                         ids=["python -E", "WSPBUS_NO_IMPORT_MAP"])
def test_no_map_when_the_interpreter_ignores_the_environment_or_it_is_turned_off(spawn, tmp_path, flags, env):
    child, seen = run_three_incarnations(spawn, tmp_path, *flags, env=env)
    for incarnation in (1, 2):
        assert seen[incarnation, "edited.b"] == "SourceFileLoader b"
    assert seen[1, "edited.a"] == "SourceFileLoader a, edited"
