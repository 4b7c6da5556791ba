"""PerpetualTimer, BackgroundTask and Monitor with real threads, waited on with Events and deadlines."""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from wspbus.plugins.tasks import BackgroundTask, Monitor, PerpetualTimer, next_deadline

DEADLINE = 10.0
TASK_CLASSES = [PerpetualTimer, BackgroundTask]


@pytest.fixture
def bus_log(bus):
    """The (message, level) pairs the bus logs."""
    records: list[tuple[str, int]] = []
    bus.subscribe("log", lambda msg, level=20: records.append((msg, level)))
    return records


class Counter:
    """A task function that records when it ran and sets ``done`` at the ``target``-th run."""

    def __init__(self, target: int, fail_first: bool = False) -> None:
        self.target = target
        self.fail_first = fail_first
        self.times: list[float] = []
        self.done = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        if len(self.times) >= self.target:
            self.done.set()
        if self.fail_first and len(self.times) == 1:
            raise RuntimeError("first run fails")


@contextmanager
def running(task):
    """Start ``task``; cancel it and wait for its thread to end when the block is done."""
    task.start()
    try:
        yield task
    finally:
        task.cancel()
        task.join(DEADLINE)
    assert not task.is_alive()


def live_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


@pytest.mark.parametrize("task_class", TASK_CLASSES)
def test_runs_repeatedly_and_never_before_its_interval(task_class):
    interval = 0.02
    counter = Counter(target=5)
    begun = time.monotonic()
    with running(task_class(interval, counter)):
        assert counter.done.wait(DEADLINE), "only %d runs" % len(counter.times)
    # Run k (from 1) is due at start + k * interval and never earlier: no sub-interval ticks.
    for k, ran_at in enumerate(counter.times[:5], start=1):
        assert ran_at - begun >= k * interval - 1e-6


@pytest.mark.parametrize("task_class", TASK_CLASSES)
def test_cancel_during_a_long_interval_returns_at_once(task_class):
    task = task_class(60, Counter(target=1))
    task.start()
    begun = time.monotonic()
    task.cancel()
    task.join(DEADLINE)
    elapsed = time.monotonic() - begun
    assert not task.is_alive()
    assert elapsed < 0.5, "cancel took %.3f s" % elapsed


def context_switches(thread: threading.Thread) -> int:
    """How many times the kernel has put ``thread`` to sleep and woken it (Linux /proc)."""
    status = Path("/proc/self/task/%d/status" % thread.native_id).read_text()
    return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))


def settled_context_switches(thread: threading.Thread) -> int:
    """The count once ``thread`` has gone to sleep: unchanged over 50 ms (start-up is noisy)."""
    deadline = time.monotonic() + DEADLINE
    last = context_switches(thread)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        current, last = last, context_switches(thread)
        if current == last:
            return last
    raise AssertionError("thread %r never went to sleep" % thread.name)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("task_class", TASK_CLASSES)
def test_a_waiting_task_does_not_wake_before_its_interval(task_class):
    with running(task_class(60, print)) as task:
        before = settled_context_switches(task)
        time.sleep(0.3)  # a quiet spell: a thread polling on a tick would wake here
        wakeups = context_switches(task) - before
    assert wakeups == 0


@pytest.mark.parametrize("task_class", TASK_CLASSES)
def test_failing_run_is_logged_and_later_runs_happen(task_class, bus, bus_log):
    counter = Counter(target=3, fail_first=True)
    with running(task_class(0.01, counter, bus=bus)):
        assert counter.done.wait(DEADLINE)
    errors = [msg for msg, level in bus_log if level == 40]
    assert len(errors) == 1
    assert "Error in periodic task" in errors[0]
    assert "Traceback" in errors[0] and "RuntimeError: first run fails" in errors[0]


def test_failing_run_without_a_bus_goes_to_the_wspbus_logger(caplog):
    counter = Counter(target=2, fail_first=True)
    with caplog.at_level(logging.ERROR, logger="wspbus"), running(BackgroundTask(0.01, counter)):
        assert counter.done.wait(DEADLINE)
    [record] = [r for r in caplog.records if r.name == "wspbus"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


def test_arguments_are_passed():
    received = []
    done = threading.Event()

    def record(*args, **kwargs):
        received.append((args, kwargs))
        done.set()

    with running(PerpetualTimer(0.01, record, args=[1, 2], kwargs={"key": "value"})):
        assert done.wait(DEADLINE)
    assert received[0] == ((1, 2), {"key": "value"})


@pytest.mark.parametrize("task_class", TASK_CLASSES)
@pytest.mark.parametrize("interval", [0, -1])
def test_non_positive_interval_is_refused(task_class, interval):
    with pytest.raises(ValueError, match="interval must be a number of seconds > 0"):
        task_class(interval, print)


def test_background_task_is_a_daemon_with_a_running_flag():
    counter = Counter(target=1)
    task = BackgroundTask(0.01, counter)
    assert task.daemon and not task.running
    task.start()
    assert counter.done.wait(DEADLINE)
    assert task.running
    task.cancel()
    task.join(DEADLINE)
    assert not task.running


def test_missed_runs_are_skipped_on_the_same_grid():
    assert next_deadline(10.0, 1.0, 10.5) == 11.0  # on time: the next slot
    assert next_deadline(10.0, 1.0, 13.2) == 14.0  # a run overran: skip 11, 12, 13, no burst
    assert next_deadline(10.0, 1.0, 12.0) == 13.0  # landing on "now" is already past


# -- Monitor -----------------------------------------------------------------------------------


def test_monitor_has_a_thread_only_while_the_bus_is_started(bus, bus_log):
    counter = Counter(target=2)
    monitor = Monitor(bus, counter, frequency=0.01, name="probe monitor")
    monitor.subscribe()
    assert monitor.thread is None and not live_threads("probe monitor")
    bus.start()
    assert counter.done.wait(DEADLINE)
    assert live_threads("probe monitor") == [monitor.thread]
    bus.stop()
    assert monitor.thread is None and not live_threads("probe monitor")
    runs = len(counter.times)
    assert ("Stopped monitor thread 'probe monitor'.", 20) in bus_log
    bus.start()  # a stopped bus can start again, and so can the monitor
    counter.done.clear()
    counter.target = runs + 1
    assert counter.done.wait(DEADLINE)


def test_monitor_start_priority_is_70(bus):
    monitor = Monitor(bus, print)
    assert monitor.start.priority == 70


def test_monitor_with_zero_frequency_starts_no_thread(bus):
    monitor = Monitor(bus, print, frequency=0, name="idle monitor")
    monitor.subscribe()
    bus.start()
    assert monitor.thread is None and not live_threads("idle monitor")


def test_graceful_replaces_the_monitor_thread(bus):
    counter = Counter(target=1)
    monitor = Monitor(bus, counter, frequency=0.01)
    monitor.subscribe()
    bus.start()
    assert counter.done.wait(DEADLINE)
    first = monitor.thread
    bus.graceful()
    assert not first.is_alive()
    assert monitor.thread is not first and monitor.thread.is_alive()
    assert monitor.thread.name == "Monitor"
    counter.done.clear()
    counter.target = len(counter.times) + 1
    assert counter.done.wait(DEADLINE)


def test_stop_waits_for_a_run_in_progress(bus):
    entered, release, stopped = threading.Event(), threading.Event(), threading.Event()

    def slow_run():
        entered.set()
        release.wait(DEADLINE)

    Monitor(bus, slow_run, frequency=0.01).subscribe()
    bus.start()
    assert entered.wait(DEADLINE)
    stopper = threading.Thread(target=lambda: (bus.stop(), stopped.set()))
    stopper.start()
    assert not stopped.wait(0.2), "stop returned while the run was still going"
    release.set()
    assert stopped.wait(DEADLINE)
    stopper.join(DEADLINE)


@pytest.mark.parametrize("action", ["stop", "exit"])
def test_callback_that_stops_the_bus_does_not_wait_for_itself(bus, bus_log, action):
    done = threading.Event()

    def stop_the_bus():
        getattr(bus, action)()
        done.set()

    monitor = Monitor(bus, stop_the_bus, frequency=0.01, name="self-stopping")
    monitor.subscribe()
    bus.start()
    begun = time.monotonic()
    assert done.wait(DEADLINE)
    assert time.monotonic() - begun < 2.0  # far below graceful_timeout (10 s)
    assert not [msg for msg, level in bus_log if "did not return" in msg]
    assert monitor.thread is None


def test_graceful_on_a_stopped_bus_starts_no_thread(bus):
    monitor = Monitor(bus, lambda: None, frequency=60)
    monitor.subscribe()
    bus.start()
    bus.stop()
    bus.graceful()  # a SIGUSR1 after a stop
    assert monitor.thread is None
    bus.start()
    bus.graceful()
    assert monitor.thread is not None and monitor.thread.is_alive()
