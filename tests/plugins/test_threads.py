"""ThreadManager with real worker threads publishing 'acquire_thread'/'release_thread'."""

from __future__ import annotations

import threading

import pytest

from wspbus import Bus, ChannelFailures
from wspbus.plugins.threads import ThreadManager

DEADLINE = 10.0


class Hooks:
    """Records ('start'|'stop', number, thread ident) as the manager publishes them."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()
        bus.subscribe("start_thread", lambda i: self._record("start", i))
        bus.subscribe("stop_thread", lambda i: self._record("stop", i))

    def _record(self, kind: str, number: int) -> None:
        with self._lock:
            self.events.append((kind, number, threading.get_ident()))

    def numbers(self, kind: str) -> list[int]:
        return [number for k, number, _ in self.events if k == kind]


@pytest.fixture
def manager(bus):
    manager = ThreadManager(bus)
    manager.subscribe()
    return manager


@pytest.fixture
def hooks(bus):
    return Hooks(bus)


def in_thread(target) -> threading.Thread:
    """Run ``target`` in a new thread and wait for it to end."""
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    return thread


def test_channels_are_declared(bus):
    ThreadManager(bus)
    for channel in ("acquire_thread", "release_thread", "start_thread", "stop_thread"):
        assert channel in bus.listeners


def test_acquire_publishes_start_thread_once_in_the_acquiring_thread(bus, manager, hooks):
    def work():
        bus.publish("acquire_thread")
        bus.publish("acquire_thread")  # a second acquire by the same thread is a no-op

    thread = in_thread(work)
    assert hooks.events == [("start", 1, thread.ident)]
    assert manager.threads == {thread: 1}


def test_release_publishes_stop_thread_and_forgets_the_thread(bus, manager, hooks):
    def work():
        bus.publish("acquire_thread")
        bus.publish("release_thread")
        bus.publish("release_thread")  # nothing left to release

    thread = in_thread(work)
    assert hooks.events == [("start", 1, thread.ident), ("stop", 1, thread.ident)]
    assert manager.threads == {}


def test_numbers_are_never_reused(bus, manager, hooks):
    release_first = threading.Event()

    def first():
        bus.publish("acquire_thread")
        release_first.wait(DEADLINE)
        bus.publish("release_thread")

    holder = threading.Thread(target=first)
    holder.start()
    in_thread(lambda: bus.publish("acquire_thread"))  # number 2, still held
    release_first.set()
    holder.join(DEADLINE)
    in_thread(lambda: bus.publish("acquire_thread"))
    # CherryPy's len(threads) + 1 would have given the third thread 2, a number still in use.
    assert hooks.numbers("start") == [1, 2, 3]
    assert sorted(manager.threads.values()) == [2, 3]


def test_a_new_thread_reusing_a_dead_threads_ident_is_still_started(bus, manager, hooks):
    first = in_thread(lambda: bus.publish("acquire_thread"))  # ends without releasing
    threads = [first]
    while threads[-1].ident != first.ident and len(threads) < 50:  # the OS reuses idents
        threads.append(in_thread(lambda: bus.publish("acquire_thread")))
    assert threads[-1].ident == first.ident, "the OS reused no ident; nothing was tested"
    assert hooks.numbers("start") == list(range(1, len(threads) + 1))


def test_stop_releases_every_remaining_thread(bus, manager, hooks):
    for _ in range(3):
        in_thread(lambda: bus.publish("acquire_thread"))
    bus.start()
    bus.stop()
    assert sorted(hooks.numbers("stop")) == [1, 2, 3]
    assert manager.threads == {}


def test_graceful_releases_every_thread(bus, manager, hooks):
    in_thread(lambda: bus.publish("acquire_thread"))
    bus.graceful()
    assert hooks.numbers("stop") == [1]
    assert manager.threads == {}


def test_many_threads_acquiring_at_once_get_distinct_numbers(bus, manager, hooks):
    count = 32
    barrier = threading.Barrier(count)

    def work():
        barrier.wait(DEADLINE)
        bus.publish("acquire_thread")
        bus.publish("acquire_thread")

    workers = [threading.Thread(target=work) for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(DEADLINE)
    assert sorted(hooks.numbers("start")) == list(range(1, count + 1))
    assert sorted(manager.threads.values()) == list(range(1, count + 1))
    assert set(manager.threads) == set(workers)


def test_stop_while_a_thread_is_starting_still_pairs_its_stop_after_its_start(bus, manager):
    events: list[str] = []
    starting, finish_start = threading.Event(), threading.Event()

    def slow_start(number):
        events.append("start %d begins" % number)
        starting.set()
        finish_start.wait(DEADLINE)
        events.append("start %d ends" % number)

    bus.subscribe("start_thread", slow_start)
    bus.subscribe("stop_thread", lambda number: events.append("stop %d" % number))
    worker = threading.Thread(target=lambda: bus.publish("acquire_thread"))
    worker.start()
    assert starting.wait(DEADLINE)
    bus.stop()  # releases everything while thread 1 is still inside 'start_thread'
    finish_start.set()
    worker.join(DEADLINE)
    assert events == ["start 1 begins", "start 1 ends", "stop 1"]
    assert manager.threads == {}


def test_a_failing_stop_thread_listener_does_not_skip_the_others(bus, manager, hooks):
    def fail_for_one(number):
        if number == 1:
            raise RuntimeError("cannot close connection 1")

    bus.subscribe("stop_thread", fail_for_one)
    in_thread(lambda: bus.publish("acquire_thread"))
    in_thread(lambda: bus.publish("acquire_thread"))
    with pytest.raises(ChannelFailures, match="cannot close connection 1"):
        manager.stop()
    assert sorted(hooks.numbers("stop")) == [1, 2]
    assert manager.threads == {}


def test_unsubscribe_stops_listening(bus, manager, hooks):
    manager.unsubscribe()
    in_thread(lambda: bus.publish("acquire_thread"))
    assert hooks.events == [] and manager.threads == {}
