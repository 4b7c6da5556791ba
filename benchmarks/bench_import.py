"""What ``import wspbus`` costs, measured exactly as the peers' imports are, side by side.

    python benchmarks/bench_import.py [--runs N]

Every figure is ``python -X importtime -c "import MODULE"`` in a fresh process (so the import is
cold: nothing of it is in ``sys.modules`` yet), same interpreter, median of N runs after one
warm-up run per module (so every module, ours included, is read from its bytecode, as an
installed package is). The figure is the cumulative time of what the ``import`` statement loaded:
the sum of the cumulative column of its top-level entries (``import cherrypy.process.wspbus``
loads the ``cherrypy`` package first, and that counts).

Two columns:

* ``python``: the interpreter as it starts here. Site hooks (``.pth`` files) may already have
  imported stdlib modules such as ``typing`` or ``re``; those are then free for everyone.
* ``python -S``: no site hooks (``site-packages`` is put on PYTHONPATH instead), so every stdlib
  module an import needs is counted. This is the honest figure for a lean interpreter.

Peers: magicbus (``import magicbus``) and CherryPy's bus (``import cherrypy.process.wspbus``),
skipped when not installed (``pip install -e '.[bench]'``). Ratios are peer / wspbus.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import site
import statistics
import subprocess
import sys

#: (label, module to import), wspbus first: the ratios are against it.
SUBJECTS = (("wspbus", "wspbus"), ("magicbus", "magicbus"), ("cherrypy bus", "cherrypy.process.wspbus"))
MODES = {"python": [], "python -S": ["-S"]}


#: This checkout's source: the wspbus measured is the one next to this file.
SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def child_environment() -> dict[str, str]:
    """Our source first on the path, then site-packages (for -S, which drops them from sys.path)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    paths = [SOURCE, *site.getsitepackages(), *environment.get("PYTHONPATH", "").split(os.pathsep)]
    environment["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return environment


def importtime_lines(flags: list[str], statement: str, environment: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, *flags, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, env=environment, timeout=120, check=True)
    return [line for line in result.stderr.splitlines() if line.startswith("import time:") and "|" in line]


def statement_cost_ms(flags: list[str], module: str, startup_lines: int, environment: dict[str, str]) -> float:
    """Cumulative milliseconds of the top-level imports made by ``import module``.

    The interpreter's own start-up imports come first and are the same in every run of the same
    flags: they are skipped by count (measured once with ``-c pass``).
    """
    lines = importtime_lines(flags, "import " + module, environment)[startup_lines:]
    total_us = 0
    for line in lines:
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level entry: its cumulative time includes its children
            total_us += int(cumulative)
    return total_us / 1000


def measure(runs: int) -> dict[str, dict[str, float]]:
    """mode -> label -> median cumulative ms."""
    # Installed packages carry bytecode; give ours the same (this machine may not write it).
    compileall.compile_dir(os.path.join(SOURCE, "wspbus"), quiet=1)
    environment = child_environment()
    subjects = [(label, module) for label, module in SUBJECTS
                if importlib.util.find_spec(module.partition(".")[0]) is not None]
    figures: dict[str, dict[str, float]] = {}
    for mode, flags in MODES.items():
        startup = len(importtime_lines(flags, "pass", environment))
        samples: dict[str, list[float]] = {label: [] for label, _ in subjects}
        for _, module in subjects:
            statement_cost_ms(flags, module, startup, environment)  # warm-up: file cache, bytecode
        for _ in range(runs):  # interleaved: a busy spell on a shared machine hits every subject alike
            for label, module in subjects:
                samples[label].append(statement_cost_ms(flags, module, startup, environment))
        figures[mode] = {label: statistics.median(values) for label, values in samples.items()}
    return figures


def show(figures: dict[str, dict[str, float]], runs: int) -> None:
    labels = list(next(iter(figures.values())))
    print("import cost, cumulative ms (python -X importtime -c 'import M', median of %d fresh processes)" % runs)
    print("  %-14s %s" % ("", "".join("%22s" % mode for mode in figures)))
    for label in labels:
        cells = []
        for mode in figures:
            value, ours = figures[mode][label], figures[mode]["wspbus"]
            ratio = "" if label == "wspbus" else " (%.1fx)" % (value / ours)
            cells.append("%22s" % ("%.1f ms%s" % (value, ratio)))
        print("  %-14s %s" % (label, "".join(cells)))
    print("  (x: that import's cost / wspbus's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per figure (default 15)")
    options = parser.parse_args()
    show(measure(options.runs), options.runs)


if __name__ == "__main__":
    main()
