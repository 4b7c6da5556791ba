"""The bus side by side with CherryPy's (and magicbus, when installed), in one run.

    python benchmarks/bench_bus.py [--quick]

Prints absolute figures and, more importantly, ratios: absolute times on a shared machine are
noisy, ratios measured in the same run hold. Targets (issue "The bus itself"): publish to 10
listeners >= 2.5x CherryPy's speed and within 1.5x of a bare guarded loop; wake-up < 1 ms;
``import wspbus`` < 10 ms and < +2 MB over a bare interpreter.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
import timeit


def load_buses():
    buses = {"wspbus": importlib.import_module("wspbus").Bus}
    for name, module in (("cherrypy", "cherrypy.process.wspbus"), ("magicbus", "magicbus.base")):
        try:
            buses[name] = importlib.import_module(module).Bus
        except ImportError:
            print("(%s not installed: pip install -e '.[bench]')" % name)
    return buses


def quiet_bus(bus_class):
    bus = bus_class()
    for channel in ("log",):
        for listener in list(getattr(bus, "listeners", {}).get(channel, ())):
            bus.unsubscribe(channel, listener)
    return bus


def listeners(count):
    return [lambda: None for _ in range(count)]


def bare_guarded_loop(funcs):
    """What publish() must be close to: call each function, keep going past failures."""
    output = []
    failures = None
    for func in funcs:
        try:
            output.append(func())
        except Exception as exc:
            failures = failures or []
            failures.append(exc)
    if failures:
        raise RuntimeError(failures)
    return output


def best_per_call(stmt, number):
    runs = timeit.repeat(stmt, number=number, repeat=7)
    return min(runs) / number


def bench_publish(buses, count, number):
    results = {}
    for name, bus_class in buses.items():
        bus = quiet_bus(bus_class)
        for func in listeners(count):
            bus.subscribe("bench", func)
        results[name] = best_per_call(lambda: bus.publish("bench"), number)
    if count:
        funcs = listeners(count)
        results["bare loop"] = best_per_call(lambda: bare_guarded_loop(funcs), number)
    return results


def bench_wakeup(buses, rounds):
    """Median time from a state change in one thread to wait() returning in another."""
    results = {}
    for name, bus_class in buses.items():
        if not hasattr(bus_class.states, "STARTED"):
            continue  # magicbus names its states differently; its wait is pipe-based (~0.2 ms)
        samples = []
        for _ in range(rounds):
            bus = quiet_bus(bus_class)
            changed_at = []
            waiter_ready = threading.Event()

            def change_state():
                waiter_ready.wait()
                time.sleep(0.02)  # let the waiter park inside wait()
                changed_at.append(time.perf_counter())
                bus.state = bus.states.STARTED

            changer = threading.Thread(target=change_state)
            changer.start()
            waiter_ready.set()
            bus.wait(bus.states.STARTED)
            samples.append(time.perf_counter() - changed_at[0])
            changer.join()
        results[name] = statistics.median(samples)
    return results


PEAK_RSS = "import re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def child_cost(code, runs):
    """Median time ``code`` takes, timed inside fresh interpreters (their start-up, which varies
    by milliseconds from one process to the next, is not counted), and median peak RSS (KiB,
    the child's own VmHWM)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    timed = "import time; began = time.perf_counter(); %s; print(time.perf_counter() - began); "
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", timed % code + PEAK_RSS], env=env,
                             check=True, capture_output=True, text=True).stdout.split()
        times.append(float(out[-2]))
        rss.append(int(out[-1]))
    return statistics.median(times), statistics.median(rss)


def bench_import(runs):
    # Installed packages carry bytecode; give ours the same (this machine sets DONTWRITEBYTECODE).
    import compileall
    import wspbus
    compileall.compile_dir(os.path.dirname(wspbus.__file__), quiet=1)
    base_time, base_rss = child_cost("pass", runs)
    results = {}
    for name, module in (("wspbus", "wspbus"), ("cherrypy", "cherrypy.process.wspbus"), ("magicbus", "magicbus")):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        took, rss = child_cost("import %s" % module, runs)
        results[name] = (took - base_time, (rss - base_rss) / 1024)
    return results


def show(title, results, unit, scale, reference="wspbus"):
    print("\n%s" % title)
    ours = results[reference]
    for name, value in results.items():
        ratio = "" if name == reference else "   %s/wspbus = %.2fx" % (name, value / ours)
        print("  %-10s %10.3f %s%s" % (name, value * scale, unit, ratio))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    options = parser.parse_args()
    number = 20_000 if options.quick else 200_000
    buses = load_buses()

    publish10 = bench_publish(buses, 10, number)
    show("publish() to 10 listeners", publish10, "us", 1e6)
    show("publish() to no listener", bench_publish(buses, 0, number), "us", 1e6)
    wakeup = bench_wakeup(buses, 5 if options.quick else 15)
    show("state change -> wait() returns (median)", wakeup, "ms", 1e3)

    imports = bench_import(5 if options.quick else 15)
    print("\nimport cost over a bare interpreter (median of fresh processes)")
    for name, (took, mb) in imports.items():
        print("  %-10s %+8.1f ms  %+6.1f MB peak RSS" % (name, took * 1e3, mb))

    print("\ntargets")
    checks = [
        ("publish 10: CherryPy/wspbus >= 2.5x", publish10.get("cherrypy", 0) / publish10["wspbus"], 2.5, "ge"),
        ("publish 10: wspbus/bare loop <= 1.5x", publish10["wspbus"] / publish10["bare loop"], 1.5, "le"),
        ("wake-up < 1 ms", wakeup["wspbus"] * 1e3, 1.0, "le"),
        ("import time < 10 ms", imports["wspbus"][0] * 1e3, 10.0, "le"),
        ("import peak memory < +2 MB", imports["wspbus"][1], 2.0, "le"),
    ]
    for label, value, bound, sense in checks:
        met = value >= bound if sense == "ge" else value <= bound
        print("  %-40s %8.2f  %s" % (label, value, "met" if met else "MISSED"))


if __name__ == "__main__":
    main()
