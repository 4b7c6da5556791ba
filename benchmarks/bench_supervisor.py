"""What the supervisor costs, and that it sleeps: ``python benchmarks/bench_supervisor.py [--idle SECONDS]``.

1. Start time (the command to its banner, median of 5) and resident memory of every process, for
   a hello app served by a single process, by a supervisor with one worker, and with four.
2. Idle wake-ups: the context switches (voluntary + involuntary) of every thread of a supervisor
   with two idle workers over ``--idle`` seconds (default 30), read from /proc/PID/task/*/status.

Figures are in docs/supervisor.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HELLO = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
'''
MODES = {"single process": ["--single-process"], "supervisor + 1 worker": ["--workers", "1"],
         "supervisor + 4 workers": ["--workers", "4"]}


def resident(pid: int) -> int:
    with open("/proc/%d/status" % pid) as file:
        return int(re.search(r"VmRSS:\s+(\d+)", file.read()).group(1)) * 1024


def children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (workers are started from the supervisor's loop thread)."""
    found = []
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, task)) as file:
            found += [int(child) for child in file.read().split()]
    return found


def context_switches(pid: int) -> int:
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, task)) as file:
            total += sum(int(n) for n in re.findall(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", file.read(), re.M))
    return total


def serve(directory: str, mode: list[str]) -> tuple[subprocess.Popen[str], float]:
    """Start ``wspbus serve`` on the hello app; return once its banner is complete."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "wspbus", "serve", "-b", "127.0.0.1:0", *mode, "hello:app"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=directory)
    assert process.stdout is not None
    last = "wspbus: mounted" if mode[0] == "--single-process" else "wspbus: supervisor"
    for line in process.stdout:
        if line.startswith(last):
            break
    return process, time.monotonic() - started


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(30)


def cost(directory: str) -> None:
    for label, mode in MODES.items():
        times, memory = [], {}
        for _ in range(5):
            process, took = serve(directory, mode)
            times.append(took)
            memory = {pid: resident(pid) for pid in [process.pid, *children(process.pid)]}
            stop(process)
        print("%-24s start %4.0f ms (median of 5)   resident %s = %.1f MB" % (
            label, statistics.median(times) * 1000, " + ".join("%.1f" % (m / 1e6) for m in memory.values()),
            sum(memory.values()) / 1e6))


def idle(directory: str, seconds: float) -> None:
    process, _ = serve(directory, ["--workers", "2"])
    try:
        time.sleep(1.0)  # let the start settle
        before = context_switches(process.pid)
        time.sleep(seconds)
        after = context_switches(process.pid)
    finally:
        stop(process)
    print("idle supervisor (2 workers): %d context switches in %g s" % (after - before, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "hello.py"), "w") as file:
            file.write(HELLO)
        cost(directory)
        idle(directory, args.idle)


if __name__ == "__main__":
    main()
