"""The bus core in one process: the CherryPy contract, thread safety, failures, bounded shutdown."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import wspbus
from wspbus import Bus, ChannelFailures, states


class LogRecorder:
    def __init__(self, bus: Bus):
        self.entries: list[tuple[str, int]] = []
        bus.subscribe("log", self)

    def __call__(self, msg, level=20):
        self.entries.append((msg, level))

    @property
    def messages(self):
        return [msg for msg, _ in self.entries]


def test_states_are_the_cherrypy_five():
    assert [s.name for s in states] == ["STOPPED", "STARTING", "STARTED", "STOPPING", "EXITING"]
    assert Bus.states is states and wspbus.states is states
    assert repr(states.STARTED) == "states.STARTED"
    assert Bus().state is states.STOPPED


def test_builtin_channels_are_listed(bus):
    assert {"start", "stop", "exit", "graceful", "log", "main"} <= set(bus.listeners)


def test_lower_priority_runs_first_and_ties_keep_subscription_order(bus):
    calls = []
    for name, priority in [("b", 50), ("a", 10), ("c", 50), ("d", 90), ("e", 50)]:
        bus.subscribe("ch", lambda n=name: calls.append(n), priority=priority)
    bus.publish("ch")
    assert calls == ["a", "b", "c", "e", "d"]


def test_priority_defaults_to_the_callbacks_attribute(bus):
    calls = []

    def late():
        calls.append("late")
    late.priority = 80

    def early():
        calls.append("early")

    bus.subscribe("ch", late)
    bus.subscribe("ch", early)
    bus.publish("ch")
    assert calls == ["early", "late"]


def test_subscribing_twice_only_updates_the_priority(bus):
    calls = []
    first = lambda: calls.append("first")  # noqa: E731
    second = lambda: calls.append("second")  # noqa: E731
    bus.subscribe("ch", first)
    bus.subscribe("ch", second)
    bus.subscribe("ch", first, priority=90)
    bus.publish("ch")
    assert calls == ["second", "first"]
    assert len(bus.listeners["ch"]) == 2


def test_subscribe_as_decorator_returns_the_callback(bus):
    @bus.subscribe("ch")
    def handler():
        return "ran"

    assert callable(handler) and handler() == "ran"
    assert bus.publish("ch") == ["ran"]


def test_bound_methods_subscribe_and_unsubscribe_by_equality(bus):
    class Plugin:
        def start(self):
            return "started"

    plugin = Plugin()
    bus.subscribe("ch", plugin.start)
    assert bus.publish("ch") == ["started"]
    bus.unsubscribe("ch", plugin.start)
    assert bus.publish("ch") == []


def test_unknown_channel_publishes_nothing(bus):
    assert bus.publish("nobody-listens", 1, x=2) == []
    bus.unsubscribe("nobody-listens", print)  # unknown pairs are ignored


def test_publish_passes_arguments_and_returns_results_in_order(bus):
    bus.subscribe("add", lambda a, b=0: a + b, priority=1)
    bus.subscribe("add", lambda a, b=0: a * b, priority=2)
    assert bus.publish("add", 3, b=4) == [7, 12]


def test_every_listener_runs_and_failures_are_raised_together(bus):
    log = LogRecorder(bus)
    ran = []

    def fail_one():
        raise ValueError("one")

    def fail_two():
        raise KeyError("two")

    bus.subscribe("ch", fail_one, priority=1)
    bus.subscribe("ch", lambda: ran.append("middle"), priority=2)
    bus.subscribe("ch", fail_two, priority=3)
    with pytest.raises(ChannelFailures) as info:
        bus.publish("ch")
    assert ran == ["middle"]
    instances = info.value.get_instances()
    assert [type(e) for e in instances] == [ValueError, KeyError]
    assert str(info.value) == "ValueError('one')\nKeyError('two')"
    errors = [msg for msg, level in log.entries if level == 40]
    assert len(errors) == 2 and "Traceback" in errors[0] and "fail_one" in errors[0]


def test_keyboard_interrupt_propagates_at_once(bus):
    ran = []

    def interrupt():
        raise KeyboardInterrupt

    bus.subscribe("ch", interrupt, priority=1)
    bus.subscribe("ch", lambda: ran.append("later"), priority=2)
    with pytest.raises(KeyboardInterrupt):
        bus.publish("ch")
    assert ran == []


def test_system_exit_code_becomes_1_after_an_earlier_failure(bus):
    def fail():
        raise RuntimeError("boom")

    def leave():
        raise SystemExit(0)

    bus.subscribe("ch", fail, priority=1)
    bus.subscribe("ch", leave, priority=2)
    with pytest.raises(SystemExit) as info:
        bus.publish("ch")
    assert info.value.code == 1


def test_channel_failures_is_falsy_until_an_exception_is_recorded():
    failures = ChannelFailures()
    assert not failures and failures.get_instances() == []
    try:
        raise OSError("disk")
    except OSError:
        failures.handle_exception()
    assert failures and str(failures) == "OSError('disk')"
    failures.get_instances().clear()
    assert len(failures.get_instances()) == 1


def test_transitions_log_the_exact_lines_and_pass_through_each_state(bus):
    log = LogRecorder(bus)
    seen = []
    bus.watch_state(seen.append)
    bus.start()
    assert bus.state is states.STARTED
    bus.graceful()
    assert bus.state is states.STARTED
    bus.exit()
    assert seen == [states.STARTING, states.STARTED, states.STOPPING, states.STOPPED, states.EXITING]
    assert log.messages == ["Bus STARTING", "Bus STARTED", "Bus graceful", "Bus STOPPING",
                            "Bus STOPPED", "Bus EXITING", "Bus EXITED"]


def test_each_transition_publishes_its_channel(bus):
    calls = []
    for channel in ("start", "stop", "exit", "graceful"):
        bus.subscribe(channel, lambda c=channel: calls.append(c))
    bus.start()
    bus.graceful()
    bus.stop()
    bus.stop()  # stop without a start still publishes
    bus.exit()
    assert calls == ["start", "graceful", "stop", "stop", "stop", "exit"]


def test_second_exit_does_nothing(bus):
    exits = []
    bus.subscribe("exit", lambda: exits.append(1))
    bus.start()
    bus.exit()
    bus.exit()
    assert exits == [1]


def test_failing_start_listener_stops_what_started_and_reraises_its_error(bus):
    log = LogRecorder(bus)
    events = []
    error = ValueError("database unreachable")

    def open_db():
        events.append("db open")

    def bind_port():
        raise error

    bus.subscribe("start", open_db, priority=10)
    bus.subscribe("start", bind_port, priority=20)
    bus.subscribe("stop", lambda: events.append("db closed"))
    bus.subscribe("exit", lambda: events.append("exit"))
    with pytest.raises(ChannelFailures) as info:
        bus.start()
    assert info.value.get_instances() == [error]
    assert events == ["db open", "db closed", "exit"]
    assert bus.state is states.EXITING and bus.exit_code == 1
    assert any(m.startswith("Shutting down due to error in start listener:") for m in log.messages)


def test_hung_stop_listener_is_named_and_a_watchdog_runs_the_rest():
    """The listener keeps the thread that called exit(); the rest of the exit goes on elsewhere."""
    bus = Bus(graceful_timeout=0.2)
    log = LogRecorder(bus)
    release = threading.Event()
    ran = []

    def stuck_until_released():
        ran.append(("stuck", threading.current_thread().name))
        release.wait()

    bus.subscribe("stop", stuck_until_released, priority=10)
    bus.subscribe("stop", lambda: ran.append(("stop after", threading.current_thread().name)), priority=20)
    bus.subscribe("exit", lambda: ran.append(("exit", threading.current_thread().name)))
    bus.start()
    caller = threading.Thread(target=bus.exit, name="caller")
    caller.start()
    try:
        bus.wait(states.EXITING)
        bus._wait_exit_done()
        assert ran == [("stuck", "caller"), ("stop after", "wspbus stop watchdog"),
                       ("exit", "wspbus stop watchdog")]
        stuck = [m for m in log.messages if "did not return within" in m]
        assert len(stuck) == 1 and "stuck_until_released" in stuck[0] and "'stop'" in stuck[0]
        assert "'caller'" in stuck[0] and caller.is_alive()
    finally:
        release.set()
    caller.join(5)  # back from its listener, the caller runs nothing more
    assert not caller.is_alive() and len(ran) == 3


def test_failing_stop_listener_does_not_prevent_exit(bus):
    exits = []

    def broken():
        raise RuntimeError("socket already gone")

    bus.subscribe("stop", broken)
    bus.subscribe("exit", lambda: exits.append(1))
    bus.start()
    with pytest.raises(ChannelFailures):
        bus.exit()
    assert exits == [1] and bus.state is states.EXITING


def test_log_with_traceback_appends_the_current_exception(bus):
    log = LogRecorder(bus)
    try:
        raise LookupError("missing")
    except LookupError:
        bus.log("it failed", level=40, traceback=True)
    msg, level = log.entries[-1]
    assert level == 40 and msg.startswith("it failed\n") and "LookupError: missing" in msg


def test_log_channel_reaches_the_stdlib_logger(bus, caplog):
    with caplog.at_level(logging.INFO, logger="wspbus"):
        bus.start()
        bus.log("custom", level=30)
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("wspbus", 20, "Bus STARTED") in records
    assert ("wspbus", 30, "custom") in records
    bus.unsubscribe("log", bus.log_to_stdlib)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wspbus"):
        bus.log("silenced")
    assert caplog.records == []


def test_listeners_setdefault_declares_a_channel_for_simple_plugins(bus):
    from wspbus.plugins import SimplePlugin

    class Counter(SimplePlugin):
        def __init__(self, bus):
            super().__init__(bus)
            bus.listeners.setdefault("tick", set())
            self.ticks = 0

        def tick(self):
            self.ticks += 1

    counter = Counter(bus)
    counter.subscribe()
    bus.publish("tick")
    counter.unsubscribe()
    bus.publish("tick")
    assert counter.ticks == 1


def test_concurrent_subscribe_unsubscribe_publish_lose_nothing(bus):
    threads_count, per_thread = 8, 150
    errors = []
    barrier = threading.Barrier(threads_count * 2)
    calls = [0] * threads_count

    def subscriber(index):
        mine = [lambda i=index: calls.__setitem__(i, calls[i] + 1) for _ in range(per_thread)]
        barrier.wait()
        try:
            for cb in mine:
                bus.subscribe("shared", cb)
                bus.subscribe("scratch", cb)
            for cb in mine[::2]:
                bus.unsubscribe("shared", cb)
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    def publisher():
        barrier.wait()
        try:
            for _ in range(100):
                bus.publish("shared")
                bus.publish("scratch")
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=subscriber, args=(i,)) for i in range(threads_count)]
    threads += [threading.Thread(target=publisher) for _ in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(bus.listeners["scratch"]) == threads_count * per_thread
    assert len(bus.listeners["shared"]) == threads_count * per_thread // 2
    before = list(calls)
    bus.publish("shared")
    assert [after - b for after, b in zip(calls, before)] == [per_thread // 2] * threads_count


def test_start_with_callback_runs_after_started_in_a_new_thread(bus):
    seen = {}
    done = threading.Event()

    def callback(a, b=None):
        seen.update(state=bus.state, args=(a, b), thread=threading.current_thread())
        done.set()

    thread = bus.start_with_callback(callback, args=(1,), kwargs={"b": 2})
    assert done.wait(5)
    thread.join(5)
    assert seen["state"] is states.STARTED and seen["args"] == (1, 2)
    assert seen["thread"] is thread and thread.name.startswith("Bus Callback ")


def test_import_wspbus_loads_only_the_stdlib(spawn):
    child = spawn("""
        import sys
        before = set(sys.modules)
        import wspbus
        new = sorted(set(sys.modules) - before)
        foreign = [m for m in new if m.split('.')[0] not in sys.stdlib_module_names
                   and m.split('.')[0] != 'wspbus']
        print('foreign:', foreign)
    """)
    assert child.expect(r"^foreign: (.*)$").group(1) == "[]"
    assert child.wait() == 0


def test_a_failing_start_listener_ends_the_start_at_once(bus):
    ran = []

    def refuse():
        raise RuntimeError("another instance is running")

    bus.subscribe("start", refuse, priority=70)
    bus.subscribe("start", lambda: ran.append("bind port"), priority=75)
    with pytest.raises(ChannelFailures):
        bus.start()
    assert ran == []


def test_a_startup_error_is_logged_as_one_line(bus):
    from wspbus import StartupError

    log = LogRecorder(bus)

    def bind():
        raise StartupError("cannot bind 127.0.0.1:8080: address already in use")

    bus.subscribe("start", bind)
    with pytest.raises(ChannelFailures) as info:
        bus.start()
    assert str(info.value.get_instances()[0]) == "cannot bind 127.0.0.1:8080: address already in use"
    errors = [msg for msg, level in log.entries if level == 40]
    assert all("Traceback" not in msg and "\n" not in msg for msg in errors)
    assert errors[-1] == ("Shutting down due to error in start listener: "
                          "StartupError('cannot bind 127.0.0.1:8080: address already in use')")


def test_exit_begun_tells_an_exit_from_a_plain_stop(bus):
    seen = []
    bus.subscribe("stop", lambda: seen.append(bus.exit_begun))
    bus.start()
    bus.stop()
    bus.start()
    bus.exit()
    assert seen == [False, True]


def test_a_relieved_caller_does_not_run_the_later_listeners_again():
    bus = Bus(graceful_timeout=0.2)
    release = threading.Event()
    closes = []
    bus.subscribe("stop", lambda: release.wait(10), priority=10)
    bus.subscribe("stop", lambda: closes.append(threading.current_thread().name), priority=20)
    bus.start()
    caller = threading.Thread(target=bus.exit)
    caller.start()
    bus.wait(states.EXITING)
    release.set()  # the overrunning listener returns now; its thread must not go on
    caller.join(5)
    assert not caller.is_alive() and closes == ["wspbus stop watchdog"]


def test_start_with_callback_lets_its_thread_end_when_the_start_fails(bus):
    called = []

    def refuse():
        raise OSError("port in use")

    bus.subscribe("start", refuse)
    with pytest.raises(ChannelFailures):
        bus.start_with_callback(called.append, args=("ran",))
    callback_threads = [t for t in threading.enumerate() if t.name.startswith("Bus Callback ")]
    for thread in callback_threads:
        thread.join(5)
    assert not any(t.is_alive() for t in callback_threads) and called == []


def test_a_restart_during_an_exit_does_not_bring_the_process_back(bus):
    stopping = threading.Event()
    release = threading.Event()
    bus.subscribe("stop", lambda: (stopping.set(), release.wait(10)))
    bus.start()
    exiting = threading.Thread(target=bus.exit)
    exiting.start()
    assert stopping.wait(5)
    bus.restart()  # e.g. a SIGHUP from logrotate arriving during a SIGTERM's shutdown
    release.set()
    exiting.join(10)
    assert bus.execv is False and bus.state is states.EXITING


def test_system_exit_from_a_stop_listener_still_completes_the_exit(bus):
    exits = []

    def leave():
        raise SystemExit(3)

    bus.subscribe("stop", leave)
    bus.subscribe("exit", lambda: exits.append(True))
    bus.start()
    with pytest.raises(SystemExit):
        bus.exit()
    assert bus.state is states.EXITING and exits == [True]
    bus._wait_exit_done()  # would wait forever if the exit had been left half done


def test_a_broken_state_watcher_is_logged_and_the_transition_goes_on(bus):
    log = LogRecorder(bus)

    def broken(state):
        raise RuntimeError("Event loop is closed")

    bus.watch_state(broken)
    bus.start()
    bus.exit()
    assert bus.state is states.EXITING
    assert any(msg.startswith("Error in state watcher") for msg, level in log.entries if level == 40)


def test_an_exit_during_the_start_ends_it_without_starting_more_or_reaching_started(bus):
    """SIGTERM while the bus starts: the exit's stop runs at once; the start must not go on to
    start more services after it, nor set STARTED over EXITING (block() would never return)."""
    started = []
    exit_done = threading.Event()

    def exit_meanwhile():
        started.append("db")
        exiting = threading.Thread(target=lambda: (bus.exit(), exit_done.set()))
        exiting.start()
        assert exit_done.wait(5)

    bus.subscribe("start", exit_meanwhile, priority=10)
    bus.subscribe("start", lambda: started.append("server"), priority=20)
    bus.start()
    assert started == ["db"] and bus.state is states.EXITING


def test_hung_stop_and_exit_listeners_share_one_bound():
    """graceful_timeout bounds the whole exit, not each hung listener anew (issue #11 item 4)."""
    bus = Bus(graceful_timeout=0.5)
    log = LogRecorder(bus)
    release = threading.Event()
    bus.subscribe("stop", lambda: release.wait(), priority=10)
    bus.subscribe("stop", lambda: release.wait(), priority=20)
    bus.subscribe("exit", lambda: release.wait())
    bus.start()
    began = time.monotonic()
    caller = threading.Thread(target=bus.exit, name="caller", daemon=True)
    caller.start()
    try:
        bus.wait(states.EXITING)
        bus._wait_exit_done()
        took = time.monotonic() - began
        stuck = [m for m in log.messages if "did not return within" in m]
        assert len(stuck) == 3, log.messages
        # Each of the three would have had its own 0.5 s before: 1.5 s in all.
        assert took < 0.5 + 0.5, "the exit took %.2f s" % took
    finally:
        release.set()
    caller.join(5)
