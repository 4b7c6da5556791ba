"""A log that cannot be written says so once, then counts (issue 11, item 7).

On main, 2,000 lines to a full disk printed logging's 'Logging error' traceback 2,000 times
on stderr (1.7 MB here; 4.6 MB in the report) and unsubscribe() raised the last OSError.
"""

from __future__ import annotations

import logging

from wspbus import Bus
from wspbus.plugins._repeats import RepeatLimiter
from wspbus.plugins.logs import LogRouter

FULL_DISK = """
import sys
from wspbus import Bus
from wspbus.plugins.logs import LogRouter

bus = Bus()
router = LogRouter(bus, error_log="/dev/full")
router.subscribe()
for number in range(2000):
    bus.log("line %d" % number)
router.unsubscribe()
print("done", flush=True)
"""


def test_a_full_disk_is_reported_in_one_line_then_counted(spawn):
    child = spawn(FULL_DISK)
    assert child.wait() == 0
    output = child.output()
    assert output.endswith("done") and "Logging error" not in output and len(output) < 1000, output
    lines = output.splitlines()
    assert lines[0] == ("wspbus: cannot write to /dev/full: [Errno 28] No space left on device; "
                        "repeats of this are counted")
    assert any("repeated 1999 times" in line for line in lines[1:]), output


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_identical_messages_are_written_once_per_window_with_a_count():
    clock = Clock()
    limiter = RepeatLimiter(window=10, clock=clock)
    assert limiter.admit("a") == (True, 0, 0.0)
    clock.now = 1
    assert limiter.admit("b") == (True, 0, 0.0)
    for clock.now in (2, 3, 9):
        assert limiter.admit("a") == (False, 0, 0.0)
    clock.now = 12
    assert limiter.admit("a") == (True, 3, 9.0)  # three repeats, the last 9 s after the first
    clock.now = 13
    assert limiter.admit("a") == (False, 0, 0.0)
    assert limiter.flush() == [("a", 1, 1.0)]
    assert limiter.admit("a") == (True, 0, 0.0)


def test_the_limiter_forgets_quiet_messages_past_its_memory():
    clock = Clock()
    limiter = RepeatLimiter(window=10, memory=3, clock=clock)
    for key in "abc":
        limiter.admit(key)
    limiter.admit("a")  # counted: remembered
    limiter.admit("d")  # b and c, quiet, are forgotten
    assert limiter.admit("b") == (True, 0, 0.0)
    assert limiter.flush() == [("a", 1, 0.0)]


def test_the_error_log_writes_an_identical_error_once_then_a_count(capsys):
    bus = Bus()
    router = LogRouter(bus)
    router.subscribe()
    try:
        for _ in range(5):
            bus.log("the same failure", level=40)
            bus.log("Bus news", level=20)
        logging.getLogger("asyncio").error("a loop's failure")  # asyncio's log reaches the error log
    finally:
        router.unsubscribe()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "ERROR the same failure", *["INFO Bus news"] * 5, "ERROR a loop's failure",
        "ERROR the same failure ... repeated 4 times in the last %s s" % lines[-1].rsplit(" ", 2)[1]]
