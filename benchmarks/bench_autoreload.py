"""Autoreloader benchmark: idle cost and save-to-fresh-code time with 10,000 imported modules.

    python benchmarks/bench_autoreload.py [--modules 10000] [--idle 4] [--rounds 3]

For each configuration a child process imports every generated module, prints a marker
read from ``marker.py``, and runs a bus. Measured from outside the child:

* idle CPU: the child's CPU time over ``--idle`` seconds of doing nothing, as % of one
  core, from /proc/PID/stat (utime+stime, clock ticks) and from the kernel's per-process
  CPU clock (nanoseconds; the ticks are too coarse for figures well under 1%);
* detect: from the save of ``marker.py`` to the child's "Restarting because" log line;
* fresh: from the save to the marker line of the re-executed child, after it imported all
  the modules again (so it includes Python's own import time: shown for the first start,
  and for the restarted process, which wspbus gives a head start: see wspbus._process.import_map).

Configurations: wspbus' Autoreloader with each backend (inotify, watchfiles, stat),
CherryPy's Autoreloader on cherrypy.engine (its default, frequency 1 s), and each bus with
no reloader at all, which tells the reloader's share from the bus's own.
"""

from __future__ import annotations

import argparse
import compileall
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

CHILD = """
import importlib, os, sys, time
root, mode, packages, per_package = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, root)
began = time.perf_counter()
for p in range(packages):
    for m in range(per_package):
        importlib.import_module("pkg%03d.m%03d" % (p, m))
imported = time.perf_counter() - began
import marker
print("MARKER %s imported %d modules in %.3f s" % (marker.VALUE, len(sys.modules), imported))

def show(msg, level=20):
    if "Restarting because" in msg:
        print("RESTARTING")

if mode.startswith("wspbus"):
    from wspbus import Bus
    bus = Bus()
    bus.subscribe("log", show)
    if mode != "wspbus-bare":
        from wspbus.plugins import Autoreloader
        Autoreloader(bus, backend=mode.split("-")[1]).subscribe()
else:
    import cherrypy
    bus = cherrypy.engine
    cherrypy.server.unsubscribe()        # no HTTP server: the reloader and the bus only
    cherrypy.log.screen = False
    bus.subscribe("log", show)
    if mode == "cherrypy-bare":
        bus.autoreload.unsubscribe()
bus.start()
print("READY")
bus.block()
"""

CONFIGS = [
    ("wspbus-inotify", "wspbus Autoreloader, inotify backend"),
    ("wspbus-watchfiles", "wspbus Autoreloader, watchfiles backend"),
    ("wspbus-stat", "wspbus Autoreloader, stat backend"),
    ("cherrypy", "CherryPy Autoreloader (cherrypy.engine)"),
    ("wspbus-bare", "wspbus bus, no reloader"),
    ("cherrypy-bare", "CherryPy engine, no reloader"),
]
DEADLINE = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def generate(root: Path, packages: int, per_package: int) -> None:
    """Small modules, ``per_package`` to a directory, compiled ahead as a deployed site's are."""
    for p in range(packages):
        package = root / ("pkg%03d" % p)
        package.mkdir()
        (package / "__init__.py").write_text("")
        for m in range(per_package):
            (package / ("m%03d.py" % m)).write_text(
                "VALUE = %d\n\n\ndef add(x):\n    return x + VALUE\n" % m)
    write_marker(root, 0)
    compileall.compile_dir(str(root), quiet=1, workers=os.cpu_count() or 1)
    (root / "child.py").write_text(textwrap.dedent(CHILD))


def write_marker(root: Path, value: int) -> None:
    # A new size every time: no reloader is caught by bytecode that looks fresh.
    (root / "marker.py").write_text("VALUE = %d  # %s\n" % (value, "." * value))


class Child:
    """The benchmarked process; its output lines are queued with their arrival time."""

    def __init__(self, root: Path, mode: str, packages: int, per_package: int) -> None:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(root / "child.py"), str(root), mode, str(packages), str(per_package)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=str(root), start_new_session=True, text=True)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put((time.monotonic(), None))

    def expect(self, pattern: str) -> tuple[float, re.Match]:
        """Wait for a line matching ``pattern``; (its arrival time, the match)."""
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                arrived, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit("benchmark child: no line matching %r within %g s" % (pattern, DEADLINE))
            if line is None:
                raise SystemExit("benchmark child ended before a line matching %r" % pattern)
            match = re.search(pattern, line)
            if match:
                return arrived, match

    def cpu_seconds(self) -> tuple[float, float]:
        """(utime+stime from /proc in seconds, the process CPU clock in seconds)."""
        with open("/proc/%d/stat" % self.proc.pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        process_cpu_clock = ((~self.proc.pid) << 3) | 2  # Linux: CPUCLOCK_SCHED of a process
        return ticks / CLOCK_TICKS, time.clock_gettime(process_cpu_clock)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(DEADLINE)
        self.proc.stdout.close()


def measure(root: Path, mode: str, args) -> dict:
    write_marker(root, 0)
    child = Child(root, mode, args.packages, args.per_package)
    try:
        _, marker = child.expect(r"^MARKER 0 imported (\d+) modules in (\S+) s")
        child.expect(r"^READY$")
        time.sleep(0.5)  # let start-up work (baselines, first passes) finish
        ticks_before, clock_before = child.cpu_seconds()
        time.sleep(args.idle)  # the idle window itself
        ticks_after, clock_after = child.cpu_seconds()
        result = {
            "modules": int(marker.group(1)),
            "import": float(marker.group(2)),
            "idle_ticks": 100 * (ticks_after - ticks_before) / args.idle,
            "idle_clock": 100 * (clock_after - clock_before) / args.idle,
            "detect": [], "fresh": [], "reimport": [],
        }
        if not mode.endswith("bare"):
            for value in range(1, args.rounds + 1):
                _save_and_time(child, root, value, args.rounds, result)
        return result
    finally:
        child.kill()


def _save_and_time(child: Child, root: Path, value: int, rounds: int, result: dict) -> None:
    if value > 1:
        child.expect(r"^READY$")
        time.sleep(1.2)  # CherryPy's reloader takes its baseline on its first pass, 1 s after start
    # Saves spread over the polling period, so periodic stat passes are not timed at one phase.
    time.sleep((value - 1) / rounds)
    write_marker(root, value)
    saved = time.monotonic()
    detected, _ = child.expect(r"^RESTARTING$")
    fresh, marker = child.expect(r"^MARKER %d imported \d+ modules in (\S+) s" % value)
    result["detect"].append(detected - saved)
    result["fresh"].append(fresh - saved)
    result["reimport"].append(float(marker.group(1)))


def report(results: dict, args) -> None:
    print()
    print("%d generated modules in %d directories; idle window %g s; %d saves per reloader"
          % (args.packages * args.per_package, args.packages, args.idle, args.rounds))
    print()
    row = "%-40s %10s %11s %7s %7s %12s %7s %9s"
    header = row % ("configuration", "idle %core", "idle %core", "detect", "fresh", "fresh minus", "import",
                    "re-import")
    print(header)
    print(row % ("", "(ticks)", "(cpu clock)", "ms", "ms", "re-import ms", "s", "s"))
    print("-" * len(header))
    for mode, label in CONFIGS:
        r = results[mode]
        print(row % (label, "%.2f" % r["idle_ticks"], "%.3f" % r["idle_clock"], _median_ms(r["detect"]),
                     _median_ms(r["fresh"]), _median_ms([f - i for f, i in zip(r["fresh"], r["reimport"], strict=True)]), "%.2f" % r["import"],
                     "%.2f" % statistics.median(r["reimport"]) if r["reimport"] else "-"))
    print("(latencies and re-import: medians of the saves; import: the first start's import of all the modules)")
    for mode, label in CONFIGS:
        if results[mode]["fresh"]:
            print("save -> fresh code, each save, %s: %s ms" % (
                mode, ", ".join("%.0f" % (1000 * value) for value in results[mode]["fresh"])))
    print()
    cherry = results["cherrypy"]
    for mode in ("wspbus-inotify", "wspbus-watchfiles", "wspbus-stat"):
        ours = results[mode]
        print("CherryPy / %-18s idle CPU x%.1f   detect x%.1f   fresh x%.1f" % (
            mode, _ratio(cherry["idle_clock"], ours["idle_clock"]),
            _ratio(statistics.median(cherry["detect"]), statistics.median(ours["detect"])),
            _ratio(statistics.median(cherry["fresh"]), statistics.median(ours["fresh"]))))
    bare = results["wspbus-bare"]["idle_clock"]
    own = ", ".join("%s %.3f%%" % (mode.split("-")[1], results[mode]["idle_clock"] - bare)
                    for mode in ("wspbus-inotify", "wspbus-watchfiles", "wspbus-stat"))
    print("Reloader's own idle cost (minus its bus alone): %s, CherryPy %.3f%%"
          % (own, cherry["idle_clock"] - results["cherrypy-bare"]["idle_clock"]))


def _median_ms(values: list[float]) -> str:
    return "%.0f" % (1000 * statistics.median(values)) if values else "-"


def _ratio(theirs: float, ours: float) -> float:
    return theirs / ours if ours > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=10_000, help="modules to generate (default 10000)")
    parser.add_argument("--idle", type=float, default=4.0, help="seconds of idle measurement (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="saves timed per reloader (default 3)")
    args = parser.parse_args()
    if args.modules < 100 or args.idle <= 0 or args.rounds < 1:
        parser.error("need --modules >= 100, --idle > 0 and --rounds >= 1")
    args.per_package = 100
    args.packages = args.modules // args.per_package
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_autoreload_") as tmp:
        root = Path(tmp)
        generate(root, args.packages, args.per_package)
        print("generated and compiled in %.1f s" % (time.monotonic() - began), flush=True)
        results = {}
        for mode, label in CONFIGS:
            results[mode] = measure(root, mode, args)
            print("measured %s" % label, flush=True)
    report(results, args)
    print("\ntotal run time %.0f s" % (time.monotonic() - began))


if __name__ == "__main__":
    main()
