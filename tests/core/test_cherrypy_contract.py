"""Where the bus once drifted from CherryPy's, and the rule now (design: "The contract is proven
by its real client"; issue #10). Each test is what CherryPy's own code or tests do to its bus."""

from __future__ import annotations

import threading

import pytest

from wspbus import Bus, states


def test_listeners_take_a_new_channel_as_a_set_as_cherrypy_declares_before_request(bus):
    calls = []
    bus.listeners["before_request"] = set()
    assert "before_request" in bus.listeners and bus.listeners["before_request"] == set()
    bus.publish("before_request")  # declared, no listener: nothing runs, nothing fails

    def first():
        calls.append("first")

    def second():
        calls.append("second")

    bus.listeners["before_request"].add(first)
    bus.listeners["before_request"] = {first, second}  # replacing the set keeps first, adds second
    bus.publish("before_request")
    bus.listeners["before_request"].discard(first)
    bus.publish("before_request")
    assert sorted(calls[:2]) == ["first", "second"] and calls[2:] == ["second"]
    assert bus.listeners["before_request"] == {second}


def test_a_listener_added_through_the_set_keeps_its_priority_and_runs_in_order(bus):
    calls = []

    def late():
        calls.append("late")
    late.priority = 90
    bus.subscribe("ch", lambda: calls.append("early"), priority=10)
    bus.listeners["ch"].add(late)
    bus.subscribe("ch", lambda: calls.append("middle"))
    bus.listeners["ch"].add(late)  # already there: a set's add does nothing
    bus.publish("ch")
    assert calls == ["early", "middle", "late"]


def test_a_deleted_channel_is_gone_and_its_listeners_no_longer_run(bus):
    calls = []
    bus.subscribe("tick", lambda: calls.append(1))
    del bus.listeners["tick"]
    assert "tick" not in bus.listeners and bus.publish("tick") == []
    with pytest.raises(KeyError):
        bus.listeners["tick"]
    assert calls == []


def test_setdefault_returns_the_live_set_of_the_channel(bus):
    live = bus.listeners.setdefault("acquire_thread", set())
    bus.subscribe("acquire_thread", print)
    assert print in live and bus.listeners.setdefault("acquire_thread", set()) == {print}


def test_a_bus_starts_again_after_exit_as_cherrypys_test_harness_does(bus):
    calls = []
    for channel in ("start", "stop", "exit"):
        bus.subscribe(channel, lambda c=channel: calls.append(c))
    bus.start()
    bus.exit()
    bus.start()
    assert bus.state is states.STARTED and not bus.exit_begun
    bus.exit()
    assert calls == ["start", "stop", "exit"] * 2 and bus.state is states.EXITING


def test_a_start_while_an_exit_is_still_running_is_refused(bus):
    stopping, release = threading.Event(), threading.Event()
    bus.subscribe("stop", lambda: (stopping.set(), release.wait(10)))
    bus.start()
    exiting = threading.Thread(target=bus.exit)
    exiting.start()
    try:
        assert stopping.wait(5)
        with pytest.raises(RuntimeError, match="cannot start the bus while it is exiting"):
            bus.start()
    finally:
        release.set()
        exiting.join(10)


def test_a_new_bus_has_no_listener_that_fails_on_any_publish_cherrypy_makes():
    fresh = Bus()
    for channel in list(fresh.listeners):
        fresh.publish(channel)
        fresh.publish(channel, arg=79347)
        fresh.publish(channel, "message", 20, "extra")


def test_stop_and_exit_listeners_run_on_the_thread_that_publishes(bus):
    threads = []
    bus.subscribe("stop", lambda: threads.append(threading.current_thread()))
    bus.subscribe("exit", lambda: threads.append(threading.current_thread()))
    bus.start()
    bus.stop()
    caller = threading.Thread(target=bus.exit, name="request thread")
    caller.start()
    caller.join(10)
    assert threads == [threading.main_thread(), caller, caller]


def test_exit_from_a_request_thread_is_not_held_up_by_a_server_waiting_for_its_requests(bus):
    """As cheroot does, a server's stop waits for its request threads except the current one.

    Run on another thread, that stop would wait for the very request that asked for the exit,
    until the graceful timeout (10 s here; 30 s by default).
    """
    requests: list[threading.Thread] = []

    def stop_server():
        for request in requests:
            if request is not threading.current_thread():
                request.join()

    bus.subscribe("stop", stop_server)
    bus.start()
    request = threading.Thread(target=bus.exit, name="request asking for the exit")
    requests.append(request)
    request.start()
    request.join(5)
    assert not request.is_alive() and bus.state is states.EXITING
